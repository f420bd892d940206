//! `clustermesh-apiserver kvstoremesh`: its flags, exit codes, and a real
//! run that is ready with no remotes and stops on SIGTERM.

use std::process::Command;

use clustermesh_apiserver::kvstoremesh_env;
use etcd_harness::{TestEtcd, free_port};

use crate::support::{ChildGuard, eventually, http_get, run};

const BIN: &str = env!("CARGO_BIN_EXE_clustermesh-apiserver");

fn kvstoremesh() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("CLUSTERMESH_") {
            cmd.env_remove(key);
        }
    }
    cmd.arg("kvstoremesh");
    cmd
}

#[tokio::test]
async fn help_and_bad_flags() {
    let (ok, out, _) = run({
        let mut c = kvstoremesh();
        c.arg("--help");
        c
    })
    .await;
    assert!(ok);
    for flag in [
        "--clustermesh-config",
        "--per-cluster-ready-timeout",
        "--global-ready-timeout",
        "--drain-delay",
        "--service-cache-ttl",
        "CLUSTERMESH_KVSTOREMESH_DRAIN_DELAY",
    ] {
        assert!(out.contains(flag), "{flag} missing from:\n{out}");
    }
    for (args, expected) in [
        (vec!["--cluster-id=1"], "--cluster-name"),
        (
            vec![
                "--cluster-name=c1",
                "--cluster-id=0",
                "--etcd-endpoints=http://127.0.0.1:1",
                "--clustermesh-config=/nonexistent",
            ],
            "from 1 to 255",
        ),
    ] {
        let mut cmd = kvstoremesh();
        cmd.args(&args);
        let output = cmd.output().unwrap();
        assert_eq!(output.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn runs_from_the_environment_and_stops_on_sigterm() {
    let etcd = TestEtcd::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = kvstoremesh();
    cmd.env(kvstoremesh_env::CLUSTER_NAME, "c1")
        .env(kvstoremesh_env::CLUSTER_ID, "1")
        .env(kvstoremesh_env::ETCD_ENDPOINTS, etcd.endpoint())
        .env(kvstoremesh_env::CLUSTERMESH_CONFIG, dir.path())
        .env(kvstoremesh_env::HEALTH_LISTEN, format!("127.0.0.1:{port}"));
    let mut child = ChildGuard::spawn(cmd).unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    eventually("the binary to be ready with no remotes", || async {
        matches!(http_get(addr, "/readyz").await, Ok((200, _))).then_some(())
    })
    .await;
    let (code, body) = http_get(addr, "/status").await.unwrap();
    assert_eq!(code, 200);
    assert!(body.contains(r#""cluster":"c1""#), "{body}");
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.0.id() as i32, libc::SIGTERM);
    }
    let status = tokio::task::spawn_blocking(move || {
        let status = child.0.wait().unwrap();
        drop(child);
        status
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}");
}
