//! The `clustermesh-operator` binary: flags, exit codes, and fail-over
//! between two real processes.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::{
    OperatorProcess, TTL, client, get_leader, register_node, run_binary, wait_for, wait_until,
};
use etcd_harness::TestEtcd;
use kvstore::keys;
use operator::get_assignment;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[test]
fn bad_flags_exit_64_with_a_clear_message() {
    let base = [
        "--cluster-name",
        "c5",
        "--cluster-id",
        "5",
        "--etcd-endpoints",
        "http://127.0.0.1:1",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![], "--cluster-name"),
        (vec!["--cluster-name".into(), "c5".into()], "--cluster-id"),
        (
            with(&["--cluster-id", "300"]),
            "the argument '--cluster-id <ID>' cannot be used multiple times",
        ),
        (
            vec![
                "--cluster-name".into(),
                "C_5".into(),
                "--cluster-id".into(),
                "5".into(),
                "--etcd-endpoints".into(),
                "http://127.0.0.1:1".into(),
            ],
            "invalid --cluster-name: cluster name \"C_5\" is invalid",
        ),
        (
            vec![
                "--cluster-name".into(),
                "c5".into(),
                "--cluster-id".into(),
                "300".into(),
                "--etcd-endpoints".into(),
                "http://127.0.0.1:1".into(),
            ],
            "invalid --cluster-id: cluster ID 300 is out of range",
        ),
        (
            with(&["--pod-cidr-pool", "10.1.2.0/16"]),
            "invalid --pod-cidr-pool: pool 10.1.2.0/16 is not a network address; did you mean 10.1.0.0/16?",
        ),
        (
            with(&[
                "--pod-cidr-pool",
                "10.1.0.0/16",
                "--node-cidr-mask-size",
                "40",
            ]),
            "must be between the pool's /16 and /32",
        ),
        (with(&["--session-ttl", "soon"]), "--session-ttl"),
        (with(&["--health-listen", "nowhere"]), "--health-listen"),
        (
            with(&["--identity-gc-rate-limit", "0"]),
            "--identity-gc-rate-limit 0: must be at least 1",
        ),
        (
            vec![
                "--cluster-name".into(),
                "c5".into(),
                "--cluster-id".into(),
                "5".into(),
                "--etcd-endpoints".into(),
                "https://127.0.0.1:1".into(),
                "--etcd-ca".into(),
                "/nonexistent/ca.pem".into(),
            ],
            "cannot load the etcd TLS files: read /nonexistent/ca.pem: No such file or directory",
        ),
        (
            vec![
                "--cluster-name".into(),
                "c5".into(),
                "--cluster-id".into(),
                "5".into(),
                "--etcd-endpoints".into(),
                "https://127.0.0.1:1".into(),
            ],
            "https:// endpoints need --etcd-ca",
        ),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stderr) = run_binary(&args);
        assert_eq!(code, Some(64), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in:\n{stderr}"
        );
    }
    let (code, stderr) = run_binary(&["--help"]);
    assert_eq!(code, Some(0), "{stderr}");
}

/// Polls both processes' `/healthz` and counts moments when both say they lead.
fn watch_for_two_leaders(addrs: Vec<SocketAddr>, stop: CancellationToken) -> Arc<AtomicUsize> {
    let overlaps = Arc::new(AtomicUsize::new(0));
    let o = overlaps.clone();
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            let mut leaders = 0;
            for addr in &addrs {
                if let Ok((200, body)) = common::http_get(*addr, "/healthz").await
                    && serde_json::from_str::<operator::HealthReport>(&body).is_ok_and(|h| h.leader)
                {
                    leaders += 1;
                }
            }
            if leaders > 1 {
                o.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    overlaps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_binaries_fail_over_when_the_leader_is_killed() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let ipam = [
        "--pod-cidr-pool",
        "10.1.0.0/16",
        "--ipam-release-delay",
        "1m",
    ];
    let mut a = OperatorProcess::spawn(
        &OperatorProcess::args(&etcd.endpoint(), "op-a", &ipam),
        "op-a",
    );
    let mut b = OperatorProcess::spawn(
        &OperatorProcess::args(&etcd.endpoint(), "op-b", &ipam),
        "op-b",
    );
    let (addr_a, addr_b) = (a.health_addr().await, b.health_addr().await);
    let stop = CancellationToken::new();
    let overlaps = watch_for_two_leaders(vec![addr_a, addr_b], stop.clone());

    let leader_id = wait_for("one operator leads", || async {
        let (ha, hb) = (a.health(addr_a).await?, b.health(addr_b).await?);
        match (ha.leader, hb.leader) {
            (true, false) => Some(ha.id),
            (false, true) => Some(hb.id),
            _ => None,
        }
    })
    .await;
    assert_eq!(get_leader(&c).await.as_deref(), Some(leader_id.as_str()));
    register_node(&c, "n1").await;
    let n1 = wait_for("n1 gets a pod CIDR", || async {
        get_assignment(&c, "n1").await.unwrap()
    })
    .await;

    let (leader, follower, follower_addr) = if leader_id == "op-a" {
        (&mut a, &mut b, addr_b)
    } else {
        (&mut b, &mut a, addr_a)
    };
    leader.kill();
    let killed = Instant::now();
    wait_for("the survivor leads", || async {
        follower.health(follower_addr).await.filter(|h| h.leader)
    })
    .await;
    let took = killed.elapsed();
    assert!(
        took <= TTL + Duration::from_secs(3),
        "fail-over took {took:?} with a {TTL:?} session TTL"
    );
    assert_eq!(get_leader(&c).await, Some(follower.id.clone()));

    // The new leader serves new nodes and keeps what the old one assigned.
    register_node(&c, "n2").await;
    let n2 = wait_for("n2 gets a pod CIDR", || async {
        get_assignment(&c, "n2").await.unwrap()
    })
    .await;
    assert_ne!(n2.ipv4, n1.ipv4);
    assert_eq!(get_assignment(&c, "n1").await.unwrap(), Some(n1));
    wait_until("the heartbeat is on the new leader's lease", || async {
        let hb = c.get(keys::HEARTBEAT).await.unwrap();
        let key = c.get(keys::OPERATOR_LEADER).await.unwrap();
        matches!((hb, key), (Some(hb), Some(key)) if hb.lease == key.lease)
    })
    .await;

    stop.cancel();
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "two processes led at once"
    );
    // SIGTERM: a clean exit that gives the leadership up at once.
    assert_eq!(follower.terminate().await, Some(0));
    assert_eq!(get_leader(&c).await, None);
    assert!(
        follower
            .log()
            .iter()
            .any(|l| l.contains("resigned the leadership")),
        "the log says the leader resigned"
    );
}
