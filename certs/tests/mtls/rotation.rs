//! Rotation while a server runs: new handshakes see new files, established
//! connections continue, broken files are ignored.

use std::{fs, os::unix::fs::symlink, path::Path};

use certs::{CertName, ClientTls, ServerTls, TlsFiles, Validity};

use crate::support::{Pki, SERVER_NAME, Session, TestServer, fast_config, read, replace, wait_for};

fn serial_of(files: &TlsFiles) -> String {
    certs::CertificateInfo::from_pem_file(&files.cert).unwrap()[0]
        .serial
        .clone()
}

#[tokio::test]
async fn server_certificate_rotation_reaches_new_handshakes_and_spares_established_ones() {
    let pki = Pki::new("mesh-ca");
    let files = pki.server("apiserver");
    let old_serial = serial_of(&files);
    let server = TestServer::start(files.clone()).await;
    let client = ClientTls::load(pki.client("remote-c2"), fast_config()).unwrap();
    let mut established = Session::connect(client.rustls_config(), server.addr, SERVER_NAME)
        .await
        .unwrap();
    assert_eq!(established.server_serial, old_serial);

    let new_serial = serial_of(&pki.server("apiserver"));
    assert_ne!(new_serial, old_serial);
    server.wait_for(|s| s.reloads >= 1).await;

    let fresh = Session::connect(client.rustls_config(), server.addr, SERVER_NAME)
        .await
        .unwrap();
    assert_eq!(fresh.server_serial, new_serial);
    assert_eq!(server.handle.material().certificate().serial, new_serial);
    // The connection made before the rotation still works.
    assert_eq!(established.echo("still here").await.unwrap(), "still here");
}

#[tokio::test]
async fn ca_bundle_rotation_admits_new_ca_and_retires_old_one() {
    let old = Pki::new("old-ca");
    let new = Pki::new("new-ca");
    let files = old.server("apiserver");
    let mut server = TestServer::start(files.clone()).await;
    let client_of = |pki: &Pki, name: &str| {
        let mut files = pki.client(name);
        files.ca_bundle = old.path("ca.crt");
        ClientTls::load(files, fast_config()).unwrap()
    };
    let old_client = client_of(&old, "remote-old");
    let new_client = client_of(&new, "remote-new");
    let addr = server.addr;
    let attempt = async |client: &ClientTls| {
        Session::connect(client.rustls_config(), addr, SERVER_NAME)
            .await
            .is_ok()
    };

    assert!(
        !attempt(&new_client).await,
        "new CA trusted before rotation"
    );
    assert!(server.next_outcome().await.is_err());

    // Overlap: both CAs trusted.
    let bundle = format!("{}{}", old.ca.cert_pem(), new.ca.cert_pem());
    replace(&files.ca_bundle, bundle.as_bytes());
    server.wait_for(|s| s.reloads >= 1).await;
    assert_eq!(server.handle.material().ca_certificates().len(), 2);
    assert!(
        attempt(&new_client).await,
        "new CA not trusted during overlap"
    );
    assert!(
        attempt(&old_client).await,
        "old CA not trusted during overlap"
    );

    // Old CA retired.
    replace(&files.ca_bundle, new.ca.cert_pem().as_bytes());
    server.wait_for(|s| s.reloads >= 2).await;
    assert!(
        attempt(&new_client).await,
        "new CA not trusted after rotation"
    );
    assert!(
        !attempt(&old_client).await,
        "old CA still trusted after rotation"
    );
}

#[tokio::test]
async fn broken_files_are_rejected_and_the_old_material_keeps_serving() {
    let pki = Pki::new("mesh-ca");
    let files = pki.server("apiserver");
    let serial = serial_of(&files);
    let server = TestServer::start(files.clone()).await;
    let client = ClientTls::load(pki.client("remote-c2"), fast_config()).unwrap();
    let good_cert = read(&files.cert);
    let good_key = read(&files.key);

    // Garbage certificate.
    replace(
        &files.cert,
        b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    );
    server.wait_for(|s| s.failures >= 1).await;
    let session = Session::connect(client.rustls_config(), server.addr, SERVER_NAME)
        .await
        .unwrap();
    assert_eq!(session.server_serial, serial);

    // A valid certificate with somebody else's key.
    replace(&files.cert, &good_cert);
    let stranger_key = pki
        .ca
        .issue_client(&CertName::new("other").unwrap(), Validity::days(1).unwrap())
        .unwrap();
    replace(&files.key, stranger_key.key_pem().as_bytes());
    server.wait_for(|s| s.failures >= 2).await;
    let session = Session::connect(client.rustls_config(), server.addr, SERVER_NAME)
        .await
        .unwrap();
    assert_eq!(session.server_serial, serial);

    // Empty CA bundle.
    replace(&files.key, &good_key);
    let good_ca = read(&files.ca_bundle);
    replace(&files.ca_bundle, b"");
    server.wait_for(|s| s.failures >= 3).await;
    assert!(
        Session::connect(client.rustls_config(), server.addr, SERVER_NAME)
            .await
            .is_ok()
    );

    // Repaired, and a newly issued certificate is taken.
    replace(&files.ca_bundle, &good_ca);
    let new_serial = serial_of(&pki.server("apiserver"));
    server.wait_for(|s| s.reloads >= 1).await;
    let session = Session::connect(client.rustls_config(), server.addr, SERVER_NAME)
        .await
        .unwrap();
    assert_eq!(session.server_serial, new_serial);
}

/// The layout of a Kubernetes secret volume: the visible names are symlinks
/// into `..data`, itself a symlink to a timestamped directory; an update
/// writes a new directory and renames a new `..data` over the old one.
struct SecretVolume<'a> {
    root: &'a Path,
    generation: u32,
}

impl<'a> SecretVolume<'a> {
    const FILES: [&'static str; 3] = ["tls.crt", "tls.key", "ca.crt"];

    fn create(root: &'a Path, contents: [&[u8]; 3]) -> Self {
        let mut volume = Self {
            root,
            generation: 0,
        };
        volume.update(contents);
        for name in Self::FILES {
            symlink(format!("..data/{name}"), root.join(name)).unwrap();
        }
        volume
    }

    fn update(&mut self, contents: [&[u8]; 3]) {
        let old = format!("..2026_11_26_00_00_{:02}", self.generation);
        self.generation += 1;
        let dir = format!("..2026_11_26_00_00_{:02}", self.generation);
        fs::create_dir(self.root.join(&dir)).unwrap();
        for (name, bytes) in Self::FILES.iter().zip(contents) {
            fs::write(self.root.join(&dir).join(name), bytes).unwrap();
        }
        symlink(&dir, self.root.join("..data_tmp")).unwrap();
        fs::rename(self.root.join("..data_tmp"), self.root.join("..data")).unwrap();
        let _ = fs::remove_dir_all(self.root.join(old));
    }

    fn files(&self) -> TlsFiles {
        TlsFiles::new(
            self.root.join("tls.crt"),
            self.root.join("tls.key"),
            self.root.join("ca.crt"),
        )
    }
}

#[tokio::test]
async fn kubernetes_secret_update_by_symlink_swap_is_reloaded() {
    let pki = Pki::new("mesh-ca");
    let issued = pki.server("apiserver");
    let secret = tempfile::tempdir().unwrap();
    let mut volume = SecretVolume::create(
        secret.path(),
        [
            &read(&issued.cert),
            &read(&issued.key),
            &read(&issued.ca_bundle),
        ],
    );
    let server = TestServer::start(volume.files()).await;
    let client = ClientTls::load(pki.client("remote-c2"), fast_config()).unwrap();
    assert!(
        Session::connect(client.rustls_config(), server.addr, SERVER_NAME)
            .await
            .is_ok()
    );

    for round in 1..=2 {
        let renewed = pki.server("apiserver");
        let serial = serial_of(&renewed);
        volume.update([
            &read(&renewed.cert),
            &read(&renewed.key),
            &read(&renewed.ca_bundle),
        ]);
        server.wait_for(|s| s.reloads >= round).await;
        let session = Session::connect(client.rustls_config(), server.addr, SERVER_NAME)
            .await
            .unwrap();
        assert_eq!(session.server_serial, serial, "round {round}");
    }
}

#[tokio::test]
async fn client_identity_rotation_reaches_the_server() {
    let pki = Pki::new("mesh-ca");
    let mut server = TestServer::start(pki.server("apiserver")).await;
    let files = pki.client("remote-c2");
    let client = ClientTls::load(files.clone(), fast_config()).unwrap();
    let handle = client.handle();
    let config = client.rustls_config();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn(client.run(shutdown.clone()));

    let first = Session::connect(config.clone(), server.addr, SERVER_NAME)
        .await
        .unwrap();
    assert_eq!(first.greeting, "hello remote-c2");
    assert_eq!(
        server.next_outcome().await,
        Ok(Some("remote-c2".to_owned()))
    );

    // Same files, new identity (e.g. the operator re-issued it under a new name).
    pki.ca
        .issue_client(
            &CertName::new("remote-c2-renamed").unwrap(),
            Validity::days(1).unwrap(),
        )
        .unwrap()
        .write_to(&files.cert, &files.key)
        .unwrap();
    wait_for(&handle, |s| s.reloads >= 1).await;

    let second = Session::connect(config, server.addr, SERVER_NAME)
        .await
        .unwrap();
    assert_eq!(second.greeting, "hello remote-c2-renamed");
    shutdown.cancel();
    watcher.await.unwrap().unwrap();
}

#[tokio::test]
async fn run_returns_when_shut_down() {
    let pki = Pki::new("mesh-ca");
    let tls = ServerTls::load(pki.server("apiserver"), fast_config()).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn(tls.run(shutdown.clone()));
    shutdown.cancel();
    tokio::time::timeout(crate::support::DEADLINE, watcher)
        .await
        .expect("run did not return after shutdown")
        .unwrap()
        .unwrap();
}
