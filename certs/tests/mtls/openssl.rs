//! Interop with OpenSSL: what we issue verifies with `openssl verify`, and
//! `openssl s_client` completes mutual TLS with our server. OpenSSL is only a
//! test oracle here; no code path of ours uses it.

use std::{
    path::Path,
    process::{Command, Output, Stdio},
};

use certs::{TlsFiles, TlsMaterial};

use tokio::io::AsyncWriteExt;

use crate::support::{DEADLINE, Pki, SERVER_NAME, TestServer};

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the openssl binary is installed")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn openssl_verify_accepts_issued_certificates_for_their_purpose() {
    let pki = Pki::new("mesh-ca");
    let server = pki.server("apiserver");
    let client = pki.client("remote-c2");
    let ca = s(&server.ca_bundle);

    for (purpose, cert, extra) in [
        (
            "sslserver",
            &server.cert,
            vec!["-verify_hostname", SERVER_NAME],
        ),
        ("sslserver", &server.cert, vec!["-verify_ip", "127.0.0.1"]),
        ("sslclient", &client.cert, vec![]),
    ] {
        let mut args = vec!["verify", "-CAfile", ca, "-purpose", purpose];
        args.extend(extra);
        args.push(s(cert));
        let out = openssl(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(": OK"), "{}", text(&out));
    }

    // And it refuses what it should: a client cert for server use, a wrong host.
    for args in [
        vec![
            "verify",
            "-CAfile",
            ca,
            "-purpose",
            "sslserver",
            s(&client.cert),
        ],
        vec![
            "verify",
            "-CAfile",
            ca,
            "-verify_hostname",
            "evil.example",
            s(&server.cert),
        ],
    ] {
        assert!(!openssl(&args).status.success(), "{args:?} passed");
    }
}

#[test]
fn openssl_reads_our_keys_as_the_keys_of_our_certificates() {
    let pki = Pki::new("mesh-ca");
    let server = pki.server("apiserver");
    for (cert, key) in [
        (pki.path("ca.crt"), pki.path("ca.key")),
        (server.cert.clone(), server.key.clone()),
    ] {
        let from_cert = openssl(&["x509", "-in", s(&cert), "-noout", "-pubkey"]);
        let from_key = openssl(&["pkey", "-in", s(&key), "-pubout"]);
        assert!(from_cert.status.success() && from_key.status.success());
        assert_eq!(from_cert.stdout, from_key.stdout, "{}", cert.display());
    }
    let ca = openssl(&["x509", "-in", s(&pki.path("ca.crt")), "-noout", "-text"]);
    let ca = text(&ca);
    assert!(ca.contains("CA:TRUE, pathlen:0"), "{ca}");
    assert!(ca.contains("Certificate Sign"), "{ca}");
}

/// Runs `openssl s_client` against `addr`, says `bye` (the test server then
/// closes) and returns (success, output).
async fn s_client(addr: std::net::SocketAddr, args: Vec<String>) -> (bool, String) {
    let mut child = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            SERVER_NAME,
            "-verify_hostname",
            SERVER_NAME,
            "-verify_return_error",
            // Keep reading until the server closes instead of quitting at the
            // end of stdin, which could come before the server's greeting.
            "-ign_eof",
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the openssl binary is installed");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"bye\n").await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("openssl s_client did not finish in time")
        .unwrap();
    (out.status.success(), text(&out))
}

#[tokio::test]
async fn openssl_s_client_completes_mutual_tls_with_our_server() {
    let pki = Pki::new("mesh-ca");
    let mut server = TestServer::start(pki.server("apiserver")).await;
    let client = pki.client("remote-c2");
    let ca = s(&client.ca_bundle).to_owned();

    let (ok, out) = s_client(
        server.addr,
        vec![
            "-CAfile".into(),
            ca.clone(),
            "-cert".into(),
            s(&client.cert).into(),
            "-key".into(),
            s(&client.key).into(),
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    assert!(out.contains("hello remote-c2"), "{out}");
    assert_eq!(
        server.next_outcome().await,
        Ok(Some("remote-c2".to_owned()))
    );

    // Without a client certificate the server refuses.
    let (_, out) = s_client(server.addr, vec!["-CAfile".into(), ca]).await;
    assert!(!out.contains("hello"), "{out}");
    assert!(server.next_outcome().await.is_err());
}

#[tokio::test]
async fn loads_material_made_by_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        let out = openssl(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    };
    // An RSA CA and an EC leaf with a SEC1 ("EC PRIVATE KEY") key, as older
    // tooling produces them.
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=openssl-ca",
        "-keyout",
        &path("ca.key"),
        "-out",
        &path("ca.crt"),
    ]);
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &path("leaf.key"),
    ]);
    run(&[
        "req",
        "-new",
        "-key",
        &path("leaf.key"),
        "-subj",
        "/CN=remote-c7",
        "-out",
        &path("leaf.csr"),
    ]);
    std::fs::write(path("ext.cnf"), "extendedKeyUsage=clientAuth\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &path("leaf.csr"),
        "-CA",
        &path("ca.crt"),
        "-CAkey",
        &path("ca.key"),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &path("ext.cnf"),
        "-out",
        &path("leaf.crt"),
    ]);

    let material = TlsMaterial::load(&TlsFiles::new(
        path("leaf.crt"),
        path("leaf.key"),
        path("ca.crt"),
    ))
    .unwrap();
    assert_eq!(
        material.certificate().common_name.as_deref(),
        Some("remote-c7")
    );
    assert_eq!(
        material.ca_certificates()[0].common_name.as_deref(),
        Some("openssl-ca")
    );
}
