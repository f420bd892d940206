//! Unmodified `etcdctl` with a `remote-c2` certificate.

use std::time::Instant;

use etcd_harness::TestEtcd;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{DEADLINE, TestApiserver, current_revision, direct, run};

const DENIED: &str = "etcdserver: permission denied";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_reads_and_watches_state_but_cannot_write() {
    let etcd = TestEtcd::start().await.unwrap();
    let api = TestApiserver::start(&etcd).await;
    for (key, value) in [
        ("cilium/state/ip/v1/default/10.0.0.1", "ip-a"),
        ("cilium/state/nodes/v1/c1/n1", "node-1"),
        ("cilium/policies/v1/secret", "local only"),
    ] {
        let (ok, _, err) = run(direct(&etcd, &["put", key, value])).await;
        assert!(ok, "{err}");
    }

    // Reads inside cilium/state/.
    let (ok, out, err) = run({
        let mut c = api.etcdctl("remote-c2");
        c.args(["get", "--prefix", "cilium/state/"]);
        c
    })
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "cilium/state/ip/v1/default/10.0.0.1",
            "ip-a",
            "cilium/state/nodes/v1/c1/n1",
            "node-1"
        ]
    );
    let (ok, out, err) = run({
        let mut c = api.etcdctl("remote-c2");
        c.args(["get", "cilium/cluster-config/c1", "--print-value-only"]);
        c
    })
    .await;
    assert!(ok, "{err}");
    assert!(out.contains(r#""id":1"#), "{out}");

    // Everything else, and every write, is refused with etcd's words.
    for args in [
        &["get", "--prefix", "cilium/"][..],
        &["get", "cilium/policies/v1/secret"],
        &["get", "--from-key", "cilium/state/"],
        &["put", "cilium/state/ip/v1/default/10.0.0.2", "x"],
        &["del", "cilium/state/ip/v1/default/10.0.0.1"],
        &["lease", "grant", "60"],
    ] {
        let (ok, _, err) = run({
            let mut c = api.etcdctl("remote-c2");
            c.args(args);
            c
        })
        .await;
        assert!(!ok, "{args:?} must be refused");
        let printed = err
            .lines()
            .find(|l| l.starts_with("Error: "))
            .unwrap_or_default();
        assert!(printed.contains(DENIED), "{args:?}: {err}");
    }

    // Health checks work.
    let (ok, out, err) = run({
        let mut c = api.etcdctl("remote-c2");
        c.args(["endpoint", "status", "-w", "simple"]);
        c
    })
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("3.4."), "{out}");

    // A watch of a refused range is canceled as etcd cancels it.
    let (ok, out, err) = run({
        let mut c = api.etcdctl("remote-c2");
        c.args(["watch", "--prefix", "cilium/"]);
        c
    })
    .await;
    assert!(!ok);
    let printed = format!("{out}{err}");
    assert!(
        printed.contains(
            "watch was canceled (rpc error: code = PermissionDenied desc = etcdserver: permission denied)"
        ),
        "{printed}"
    );

    // A watch of state sees a write made directly in etcd.
    let revision = current_revision(&etcd).await;
    let mut watch = {
        let mut c = api.etcdctl("remote-c2");
        c.args([
            "watch",
            "--prefix",
            "cilium/state/",
            &format!("--rev={}", revision + 1),
        ]);
        tokio::process::Command::from(c)
    };
    let mut child = watch
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (ok, _, err) = run(direct(
        &etcd,
        &["put", "cilium/state/ip/v1/default/10.0.0.9", "ip-z"],
    ))
    .await;
    assert!(ok, "{err}");
    let mut seen = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while seen.len() < 3 {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .expect("etcdctl watch prints the event")
            .unwrap()
            .expect("etcdctl watch keeps running");
        seen.push(line);
    }
    assert_eq!(seen, ["PUT", "cilium/state/ip/v1/default/10.0.0.9", "ip-z"]);
    child.kill().await.unwrap();
    assert_eq!(
        api.metric(
            "clustermesh_apiserver_requests_total",
            r#"client="remote-c2",method="Put",verdict="denied""#
        )
        .await,
        1.0
    );
}
