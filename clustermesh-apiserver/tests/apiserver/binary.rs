//! The `clustermesh-apiserver` binary: exit codes, environment variables,
//! a clean stop on SIGTERM.

use std::process::Command;

use clustermesh_apiserver::env;
use etcd_harness::{TestEtcd, free_port};

use crate::support::{ChildGuard, Pki, eventually, http_get, run};

const BIN: &str = env!("CARGO_BIN_EXE_clustermesh-apiserver");

fn apiserver() -> Command {
    let mut cmd = Command::new(BIN);
    // Only what each test sets.
    for (key, _) in std::env::vars() {
        if key.starts_with("CLUSTERMESH_APISERVER_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[tokio::test]
async fn bad_flags_and_unreadable_files_exit_64() {
    let pki = Pki::new("ca");
    let server = pki.server("apiserver");
    let tls = [
        format!("--tls-cert={}", server.cert.display()),
        format!("--tls-key={}", server.key.display()),
        format!("--tls-client-ca={}", pki.ca_file().display()),
    ];
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--cluster-id=1".into()], "--cluster-name"),
        (
            vec![
                "--cluster-name=c1".into(),
                "--cluster-id=1".into(),
                "--etcd-endpoints=http://127.0.0.1:1".into(),
                "--tls-cert=/nonexistent.crt".into(),
                tls[1].clone(),
                tls[2].clone(),
            ],
            "cannot read --tls-cert /nonexistent.crt",
        ),
        (
            vec![
                "--cluster-name=c1".into(),
                "--cluster-id=999".into(),
                "--etcd-endpoints=http://127.0.0.1:1".into(),
                tls[0].clone(),
                tls[1].clone(),
                tls[2].clone(),
            ],
            "invalid --cluster-id 999",
        ),
        (
            vec![
                "--cluster-name=c1".into(),
                "--cluster-id=1".into(),
                "--etcd-endpoints=http://127.0.0.1:1".into(),
                "--listen=nowhere".into(),
                tls[0].clone(),
                tls[1].clone(),
                tls[2].clone(),
            ],
            "--listen",
        ),
        (
            // Readable but not a certificate: found when loading.
            vec![
                "--cluster-name=c1".into(),
                "--cluster-id=1".into(),
                "--etcd-endpoints=http://127.0.0.1:1".into(),
                format!("--tls-cert={}", server.key.display()),
                tls[1].clone(),
                tls[2].clone(),
            ],
            "loading the TLS files failed",
        ),
    ];
    for (args, expected) in cases {
        let mut cmd = apiserver();
        cmd.args(&args);
        let output = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let help = apiserver().arg("--help").output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--tls-client-ca"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_from_environment_serves_and_stops_on_sigterm() {
    let etcd = TestEtcd::start().await.unwrap();
    let pki = Pki::new("ca");
    let server = pki.server("apiserver");
    let (port, health_port) = (free_port(), free_port());
    let mut cmd = apiserver();
    cmd.env(env::CLUSTER_NAME, "c1")
        .env(env::CLUSTER_ID, "7")
        .env(env::ETCD_ENDPOINTS, etcd.endpoint())
        .env(env::LISTEN, format!("127.0.0.1:{port}"))
        .env(env::HEALTH_LISTEN, format!("127.0.0.1:{health_port}"))
        .env(env::TLS_CERT, &server.cert)
        .env(env::TLS_KEY, &server.key)
        .env(env::TLS_CLIENT_CA, pki.ca_file());
    let mut child = ChildGuard::spawn(cmd).unwrap();
    let health: std::net::SocketAddr = format!("127.0.0.1:{health_port}").parse().unwrap();
    eventually("the binary to be ready", || async {
        matches!(http_get(health, "/readyz").await, Ok((200, _))).then_some(())
    })
    .await;

    let remote = pki.client("remote-c2");
    let mut get = Command::new("etcdctl");
    get.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://127.0.0.1:{port}"))
        .arg(format!("--cacert={}", pki.ca_file().display()))
        .arg(format!("--cert={}", remote.cert.display()))
        .arg(format!("--key={}", remote.key.display()))
        .args(["get", "cilium/cluster-config/c1", "--print-value-only"]);
    let (ok, out, err) = run(get).await;
    assert!(ok, "{err}");
    assert!(out.contains(r#""id":7"#), "{out}");

    // SAFETY: kill(2) on our own child, which has not been reaped.
    unsafe {
        libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = eventually("the binary to exit after SIGTERM", || {
        let status = child.0.try_wait().unwrap();
        async move { status }
    })
    .await;
    assert!(status.success(), "{status:?}");
}
