use std::{process::Command, time::Duration};

use anyhow::{Context, Result, bail};
use tokio::time::Instant;

use crate::etcd::{EtcdOptions, TestEtcd};

/// Members of a [`TestEtcdCluster`].
pub const CLUSTER_SIZE: usize = 3;
/// Attempts with fresh ports when another process took one of ours.
const START_ATTEMPTS: usize = 5;
/// How long an election may take before [`TestEtcdCluster::leader`] fails:
/// etcd's election timeout is 1 s, a loaded machine needs a few rounds.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Three real etcd processes forming one etcd cluster, each a [`TestEtcd`]
/// (own free ports, own temp dir, killed and removed on drop): for tests of
/// failover between members. Members are numbered 0, 1, 2.
#[derive(Debug)]
pub struct TestEtcdCluster {
    members: Vec<TestEtcd>,
}

impl TestEtcdCluster {
    /// Starts a plain-HTTP three-member cluster and waits until every member
    /// is healthy (a leader is elected).
    pub async fn start() -> Result<Self> {
        Self::start_with(EtcdOptions::default()).await
    }

    /// Starts a three-member cluster whose members all run with `options`.
    pub async fn start_with(options: EtcdOptions) -> Result<Self> {
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let mut members = (0..CLUSTER_SIZE)
                .map(|i| TestEtcd::unstarted(options.clone(), &format!("m{i}")))
                .collect::<Result<Vec<_>>>()?;
            let initial_cluster = members
                .iter()
                .map(TestEtcd::initial_cluster_entry)
                .collect::<Vec<_>>()
                .join(",");
            for m in &mut members {
                m.set_initial_cluster(initial_cluster.clone());
            }
            let mut cluster = Self { members };
            match cluster.spawn_all_and_wait().await {
                Ok(()) => return Ok(cluster),
                Err(e) if cluster.members.iter().any(TestEtcd::ports_taken) => {
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.expect("at least one attempt")).context("etcd ports kept being taken")
    }

    async fn spawn_all_and_wait(&mut self) -> Result<()> {
        let mut starts = Vec::with_capacity(self.members.len());
        for m in &mut self.members {
            starts.push(m.spawn()?);
        }
        for (m, start) in self.members.iter_mut().zip(starts) {
            m.wait_ready(start)
                .await
                .with_context(|| format!("member {}", m.name()))?;
        }
        Ok(())
    }

    /// Every member's client URL, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(TestEtcd::endpoint).collect()
    }

    /// One member.
    pub fn member(&self, i: usize) -> &TestEtcd {
        &self.members[i]
    }

    /// One member, to pause or stop it.
    pub fn member_mut(&mut self, i: usize) -> &mut TestEtcd {
        &mut self.members[i]
    }

    /// The member whose client URL is `endpoint`.
    pub fn member_index(&self, endpoint: &str) -> Option<usize> {
        self.members.iter().position(|m| m.endpoint() == endpoint)
    }

    /// Kills member `i` (SIGKILL), as a crash would. Data is kept.
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Starts member `i` again with its data and waits until it is healthy
    /// (it rejoins the cluster).
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        self.members[i].restart().await
    }

    /// The index of the leader among the running members, waiting (30 s at
    /// most) until exactly one of them says it leads (etcd's
    /// `etcd_server_is_leader` gauge): after a kill, this waits out the
    /// election.
    pub async fn leader(&mut self) -> Result<usize> {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            let mut leaders = Vec::new();
            for i in 0..self.members.len() {
                if !self.members[i].is_running() {
                    continue;
                }
                if let Ok(v) = self.members[i].metric("etcd_server_is_leader").await
                    && v >= 1.0
                {
                    leaders.push(i);
                }
            }
            if let [leader] = leaders[..] {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                bail!("no single etcd leader within {LEADER_TIMEOUT:?} (leaders: {leaders:?})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An `etcdctl` command (API v3) pointed at every member.
    pub fn etcdctl(&self) -> Command {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints().join(",")));
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etcdctl_ok(cmd: &mut Command) -> String {
        let out = cmd.output().expect("run etcdctl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[tokio::test]
    async fn three_members_survive_a_killed_leader_and_clean_up() {
        let mut cluster = TestEtcdCluster::start().await.expect("start the cluster");
        let endpoints = cluster.endpoints();
        assert_eq!(endpoints.len(), 3);
        let unique: std::collections::HashSet<_> = endpoints.iter().collect();
        assert_eq!(unique.len(), 3, "distinct ports: {endpoints:?}");
        let list = etcdctl_ok(cluster.etcdctl().args(["member", "list"]));
        assert_eq!(list.lines().count(), 3, "{list}");

        etcdctl_ok(cluster.etcdctl().args(["put", "k", "v1"]));
        let leader = cluster.leader().await.expect("a leader");
        cluster.kill(leader);
        assert!(!cluster.member_mut(leader).is_running());
        let new_leader = cluster.leader().await.expect("a new leader");
        assert_ne!(new_leader, leader);
        // The two left have a quorum: writes go on.
        let survivor = (0..3).find(|i| *i != leader).unwrap();
        etcdctl_ok(cluster.member(survivor).etcdctl().args(["put", "k", "v2"]));

        cluster
            .restart(leader)
            .await
            .expect("restart the old leader");
        // The restarted member caught up with the write it missed.
        let value =
            etcdctl_ok(
                cluster
                    .member(leader)
                    .etcdctl()
                    .args(["get", "k", "--print-value-only"]),
            );
        assert_eq!(value, "v2");

        let dirs: Vec<_> = (0..3)
            .map(|i| cluster.member(i).dir().to_path_buf())
            .collect();
        let pids: Vec<_> = (0..3).map(|i| cluster.member(i).pid().unwrap()).collect();
        drop(cluster);
        for dir in dirs {
            assert!(!dir.exists(), "temp dir {dir:?} removed on drop");
        }
        for pid in pids {
            // SAFETY: signal 0 only checks whether the process exists.
            let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
            assert!(!alive, "etcd {pid} killed on drop");
        }
    }
}
