//! Helpers for the multi-cluster tests and benchmarks: a [`TestMesh`] that
//! is removed when dropped (also when a test panics), polling with
//! deadlines, and shortcuts into the mesh's agents.
//!
//! The tests run the workspace's binaries from `target/<profile>/`; build the
//! workspace first (`make test` does, through `cargo nextest run --workspace`).

use std::{
    net::SocketAddr,
    ops::{Deref, DerefMut},
    time::{Duration, Instant},
};

mod pinger;
pub mod proc_stats;
pub mod propagation;
mod real_cluster;
pub mod scale;

pub use pinger::Pinger;
pub use real_cluster::{
    ClusterInit, ClusterSpec, Hosts, Pod, READY_TIMEOUT, RealCluster, RemoteWatch, UnitDaemon,
    WatchReport, arg, clustermesh, mesh_ca, tls_etcd_options,
};

use agent::{IpCacheView, StatusView};
use localmesh::{Mesh, MeshSpec};

/// How long tests wait for the mesh to react before failing.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Whether the multi-cluster test or benchmark `what` can run (it needs root):
/// skipped with the reason otherwise, and a failure under `CI=true`
/// ([`netns::root_or_skip`]).
pub fn can_run(what: &str) -> bool {
    netns::root_or_skip(what)
}

/// Fails unless the mesh's binaries are in the directory the benchmarks
/// run them from (`make bench` builds them in release mode first).
pub fn require_binaries() -> anyhow::Result<()> {
    for bin in [
        "clustermesh-agent",
        "clustermesh-apiserver",
        "clustermesh-operator",
        "clustermesh-cni",
        "clustermesh",
    ] {
        let path = localmesh::default_bin_dir().join(bin);
        if !path.exists() {
            anyhow::bail!(
                "{} is missing: run `cargo build --release --workspace --bins` first (make bench does)",
                path.display()
            );
        }
    }
    Ok(())
}

/// How a service's switch between clusters looked to a client
/// ([`TestMesh::switch`]).
#[derive(Debug, Clone, Copy)]
pub struct Switch {
    /// From the triggering change to the first answer from the new side.
    pub seconds: f64,
    /// Requests that failed (timed out or were refused) meanwhile.
    pub failed: u32,
    /// Requests still answered by the old side meanwhile.
    pub other_answers: u32,
}

/// A mesh that is torn down on drop.
pub struct TestMesh {
    mesh: Option<Mesh>,
    dir: tempfile::TempDir,
}

impl TestMesh {
    /// A mesh of `clusters` × `nodes`, connected, with the sample workloads.
    pub fn up(clusters: u8, nodes: u8) -> anyhow::Result<Self> {
        Self::up_with(clusters, nodes, |_| {})
    }

    pub fn up_with(
        clusters: u8,
        nodes: u8,
        configure: impl FnOnce(&mut MeshSpec),
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("clustermesh-test-")
            .tempdir()?;
        let mut spec = MeshSpec::new(dir.path().join("mesh"));
        spec.clusters = clusters;
        spec.nodes = nodes;
        configure(&mut spec);
        let started = Instant::now();
        let result = Mesh::up(&spec, &mut |msg| {
            eprintln!("[{:>5.1}s] {msg}", started.elapsed().as_secs_f64())
        });
        match result {
            Ok(mesh) => Ok(Self {
                mesh: Some(mesh),
                dir,
            }),
            Err(e) => {
                let _ = Mesh::down(&spec.dir, &mut |_| {});
                Err(e)
            }
        }
    }

    /// The status of one agent.
    pub fn status(&self, cluster: &str, node: &str) -> StatusView {
        self.agent_api(cluster, node)
            .unwrap()
            .get("/v1/status")
            .expect("agent status")
    }

    /// The ipcache of one agent, as programmed.
    pub fn ipcache(&self, cluster: &str, node: &str) -> Vec<IpCacheView> {
        self.agent_api(cluster, node)
            .unwrap()
            .get("/v1/ipcache")
            .expect("agent ipcache")
    }

    /// `(prefix, identity)` of the ipcache entries a node has programmed whose
    /// prefix starts with `pool` (e.g. `10.2.` for cluster c2's pods), sorted.
    pub fn programmed(&self, cluster: &str, node: &str, pool: &str) -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = self
            .ipcache(cluster, node)
            .into_iter()
            .filter(|e| e.prefix.starts_with(pool))
            .map(|e| (e.prefix, e.identity))
            .collect();
        v.sort();
        v
    }

    /// `(prefix, identity)` of the ipcache entries a node has programmed
    /// inside `remote`'s pod pools (both families), sorted: what
    /// [`TestMesh::published`] says for `remote` once the node has it all.
    pub fn programmed_from(&self, cluster: &str, node: &str, remote: &str) -> Vec<(String, u32)> {
        let pools: Vec<ipnet::IpNet> = self
            .state
            .cluster(remote)
            .expect("the remote cluster")
            .pod_cidr_pools()
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect();
        let mut v: Vec<(String, u32)> = self
            .ipcache(cluster, node)
            .into_iter()
            .filter(|e| {
                e.prefix
                    .parse::<ipnet::IpNet>()
                    .is_ok_and(|n| pools.iter().any(|p| p.contains(&n)))
            })
            .map(|e| (e.prefix, e.identity))
            .collect();
        v.sort();
        v
    }

    /// `(prefix, identity)` of the ipcache entries in a cluster's etcd, sorted.
    pub fn published(&self, cluster: &str) -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = self
            .list(cluster, &kvstore::keys::ipcache())
            .expect("list the cluster's ipcache")
            .into_iter()
            .filter_map(|kv| {
                let key = kvstore::keys::ipcache().strip(&kv.key)?.to_string();
                let pair = <kvstore::values::IpIdentityPair as kvstore::StoreValue>::decode(
                    &key, &kv.value,
                )
                .ok()?;
                Some((pair.prefix().to_string(), pair.id.get()))
            })
            .collect();
        v.sort();
        v
    }

    /// Whether a request from `cluster/pod` to `to` is answered (short timeout).
    pub fn reaches(&self, cluster: &str, pod: &str, to: SocketAddr) -> bool {
        self.request(cluster, pod, to, Duration::from_millis(800))
            .is_ok()
    }

    /// Whether a connection from `cluster/pod` to `to` is dropped: the attempt
    /// times out. Any other failure (a refusal, a missing pod) is not a
    /// denial: it is printed and the answer is `false`. Every check that
    /// expects a denial first shows the same pod reaching the same server.
    pub fn denied(&self, cluster: &str, pod: &str, to: SocketAddr) -> bool {
        match self.connect_times_out(cluster, pod, to, Duration::from_millis(800)) {
            Ok(timed_out) => timed_out,
            Err(error) => {
                eprintln!("not a denial: {error:#}");
                false
            }
        }
    }

    /// Sends requests from `cluster/pod` to `frontend` back to back until
    /// one is answered by a server whose name satisfies `arrived`, and says
    /// how long that took from `since` (e.g. just before the last local
    /// backend was removed) and how many requests failed meanwhile. Panics
    /// after [`DEADLINE`]: a switch that does not complete is a failure.
    pub fn switch(
        &self,
        cluster: &str,
        pod: &str,
        frontend: SocketAddr,
        since: Instant,
        arrived: impl Fn(&str) -> bool,
    ) -> Switch {
        let mut failed = 0;
        let mut other_answers = 0;
        loop {
            match self.request(cluster, pod, frontend, Duration::from_millis(250)) {
                Ok((server, _)) if arrived(&server) => {
                    return Switch {
                        seconds: since.elapsed().as_secs_f64(),
                        failed,
                        other_answers,
                    };
                }
                Ok(_) => other_answers += 1,
                Err(_) => failed += 1,
            }
            assert!(
                since.elapsed() < DEADLINE,
                "the service did not switch within {DEADLINE:?} ({failed} requests failed, {other_answers} answered by the old side)"
            );
        }
    }

    /// Stores a policy document in `cluster`'s etcd, as `policy apply` does.
    pub fn apply_policy(
        &self,
        cluster: &str,
        doc: &kvstore::values::PolicyDocument,
    ) -> anyhow::Result<()> {
        use kvstore::StoreValue;
        self.put(
            cluster,
            &kvstore::keys::policies().key(&doc.key()),
            doc.encode(),
        )
    }

    /// Runs the `clustermesh` CLI on this mesh (`--dir` added).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(localmesh::default_bin_dir().join("clustermesh"))
            .args(args)
            .args(["--dir", &self.state.dir.to_string_lossy()])
            .output()
            .expect("run clustermesh")
    }

    /// The address of a workload's echo server.
    pub fn echo_addr(&self, cluster: &str, pod: &str) -> SocketAddr {
        let e = self.state.endpoint(cluster, pod).expect("endpoint");
        SocketAddr::from((e.ip, e.port.expect("an echo server")))
    }
}

impl Deref for TestMesh {
    type Target = Mesh;
    fn deref(&self) -> &Mesh {
        self.mesh.as_ref().expect("mesh")
    }
}

impl DerefMut for TestMesh {
    fn deref_mut(&mut self) -> &mut Mesh {
        self.mesh.as_mut().expect("mesh")
    }
}

impl Drop for TestMesh {
    fn drop(&mut self) {
        if let Some(mesh) = self.mesh.take() {
            if std::thread::panicking() {
                print_logs(&mesh);
            }
            if let Err(e) = Mesh::down(&mesh.state.dir, &mut |_| {}) {
                eprintln!("removing the test mesh failed: {e:#}");
            }
        }
        let _ = &self.dir;
    }
}

fn print_logs(mesh: &Mesh) {
    for c in &mesh.state.clusters {
        let kube = c
            .kube
            .iter()
            .flat_map(|k| [&k.apiserver, &k.controller_manager]);
        let kvstoremesh = c.kvstoremesh.iter().map(|k| &k.process);
        let procs = [&c.etcd, &c.operator, &c.apiserver, &c.relay]
            .into_iter()
            .chain(kube)
            .chain(kvstoremesh)
            .flatten()
            .chain(c.nodes.iter().filter_map(|n| n.agent.as_ref()));
        for p in procs {
            eprintln!(
                "---- {} (last lines) ----\n{}",
                p.log.display(),
                localmesh::log_tail(&p.log, 25)
            );
        }
    }
}

/// A policy admitting clients (`app: client`) of the echo servers' own
/// cluster only to their port 8080: applied in c2, it denies c1's client.
pub fn echo_admits_local_clients() -> kvstore::values::PolicyDocument {
    kvstore::values::PolicyDocument::parse(
        r#"
kind: CiliumNetworkPolicy
metadata: {name: echo-ingress, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: echo}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
"#,
    )
    .expect("a valid policy")
}

/// A command's stdout and stderr, as one text.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Polls `f` until it returns true; panics with `what` after `DEADLINE`.
pub fn wait_for(what: &str, f: impl FnMut() -> bool) {
    assert!(
        netns::wait_until(DEADLINE, f),
        "timed out after {DEADLINE:?} waiting for {what}"
    );
}
