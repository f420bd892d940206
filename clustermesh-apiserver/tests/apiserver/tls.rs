//! Who gets in: no certificate, another CA, an unknown common name.

use std::process::Command;

use etcd_harness::TestEtcd;
use kvstore::{ClientConfig, ErrorKind, TlsConfig};

use crate::support::{Pki, TestApiserver, eventually, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_trusted_certificates_with_known_names_get_in() {
    let etcd = TestEtcd::start().await.unwrap();
    let api = TestApiserver::start(&etcd).await;

    // No client certificate: the handshake fails.
    let mut no_cert = Command::new("etcdctl");
    no_cert
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", api.endpoint()))
        .arg(format!("--cacert={}", api.pki.ca_file().display()))
        .arg("--dial-timeout=2s")
        .args(["get", "cilium/state/x"]);
    let (ok, _, err) = run(no_cert).await;
    assert!(!ok, "a client without a certificate must be refused: {err}");
    let config = ClientConfig::new([api.endpoint()])
        .with_tls(TlsConfig::from_files(&api.pki.ca_file(), None).unwrap());
    let e = kvstore::Client::connect(&config).await.unwrap_err();
    // With TLS 1.3 the client may only see the connection close after the
    // server refused its certificate; the server's count says why.
    assert!(refused(&e), "{}", e.full_message());
    eventually(
        "the no-certificate handshake failure to be counted",
        || async {
            (api.metric(
                "clustermesh_apiserver_tls_handshake_failures_total",
                r#"reason="no-certificate""#,
            )
            .await
                >= 1.0)
                .then_some(())
        },
    )
    .await;

    // A certificate from another CA: the handshake fails.
    let other = Pki::new("other-ca");
    let intruder = other.client("remote-c2");
    let config = ClientConfig::new([api.endpoint()]).with_tls(
        TlsConfig::from_files(&api.pki.ca_file(), Some((&intruder.cert, &intruder.key))).unwrap(),
    );
    let e = kvstore::Client::connect(&config).await.unwrap_err();
    // With TLS 1.3 the client may only see the connection close after the
    // server refused its certificate; the server's count says why.
    assert!(refused(&e), "{}", e.full_message());
    let mut other_ca = Command::new("etcdctl");
    other_ca
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", api.endpoint()))
        .arg(format!("--cacert={}", api.pki.ca_file().display()))
        .arg(format!("--cert={}", intruder.cert.display()))
        .arg(format!("--key={}", intruder.key.display()))
        .arg("--dial-timeout=2s")
        .args(["get", "cilium/state/x"]);
    let (ok, _, err) = run(other_ca).await;
    assert!(!ok, "a certificate from another CA must be refused: {err}");
    eventually("the unknown-CA handshake failure to be counted", || async {
        (api.metric(
            "clustermesh_apiserver_tls_handshake_failures_total",
            r#"reason="unknown-ca""#,
        )
        .await
            >= 1.0)
            .then_some(())
    })
    .await;

    // Trusted, but a name that is neither remote-<cluster> nor admin-c1:
    // connected, and refused every request with etcd's error.
    for cn in ["intruder", "admin-c2", "local-c2"] {
        let client = api.client(cn).await;
        let e = match client {
            Ok(_) => panic!("{cn}: even the status call must be refused"),
            Err(e) => e,
        };
        assert_eq!(
            e.kind(),
            ErrorKind::PermissionDenied,
            "{cn}: {}",
            e.full_message()
        );
        let (ok, _, err) = run({
            let mut c = api.etcdctl(cn);
            c.args(["get", "--prefix", "cilium/state/"]);
            c
        })
        .await;
        assert!(!ok);
        assert!(
            err.contains("Error: etcdserver: permission denied"),
            "{cn}: {err}"
        );
    }
    assert!(
        api.metric(
            "clustermesh_apiserver_requests_total",
            r#"client="unknown",method="Range",verdict="denied""#
        )
        .await
            >= 3.0
    );
    assert!(
        api.metric(
            "clustermesh_tls_certificate_expiry_seconds",
            r#"role="apiserver-server",kind="cert""#
        )
        .await
            > 3600.0
    );
}

fn refused(e: &kvstore::Error) -> bool {
    matches!(e.kind(), ErrorKind::Tls | ErrorKind::ConnectionClosed)
}
