//! The etcd client against a real etcd: operations, pagination, leases, locks,
//! TLS and the errors a user sees.

mod common;

use std::time::Duration;

use common::{client, wait_until};
use etcd_harness::{EtcdOptions, ServerTls, TestEtcd, free_port};
use kvstore::{Client, ClientConfig, Error, ErrorKind, KeyPrefix, TlsConfig};

#[tokio::test]
async fn get_put_create_cas_delete() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;

    assert_eq!(c.get("a").await.unwrap(), None);
    c.put("a", "1").await.unwrap();
    let a = c.get("a").await.unwrap().unwrap();
    assert_eq!(a.value, b"1");

    assert!(
        c.create("b", "x", None).await.unwrap(),
        "create-only on a new key"
    );
    assert!(
        !c.create("b", "y", None).await.unwrap(),
        "create-only on an existing key"
    );
    assert_eq!(c.get("b").await.unwrap().unwrap().value, b"x");

    assert!(
        !c.update_if("a", "2", a.mod_revision + 100, None)
            .await
            .unwrap()
    );
    assert!(c.update_if("a", "2", a.mod_revision, None).await.unwrap());
    assert!(
        !c.update_if("a", "3", a.mod_revision, None).await.unwrap(),
        "stale revision"
    );
    assert!(
        c.update_if("new", "n", 0, None).await.unwrap(),
        "0 means must not exist"
    );

    let b = c.get("b").await.unwrap().unwrap();
    assert!(!c.delete_if("b", b.mod_revision - 1).await.unwrap());
    assert!(c.delete_if("b", b.mod_revision).await.unwrap());
    assert!(c.delete("a").await.unwrap());
    assert!(!c.delete("a").await.unwrap());
}

#[tokio::test]
async fn paginated_list_is_one_snapshot_and_prefixes_are_exact() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    for i in 0..250 {
        c.put(&format!("nodes/c1/n{i:03}"), format!("{i}"))
            .await
            .unwrap();
    }
    c.put("nodes/c10/n1", "other cluster").await.unwrap();
    c.put("nodes/c1", "the prefix itself without slash")
        .await
        .unwrap();

    let prefix = KeyPrefix::new("nodes/c1");
    // The default pager grows its pages to a byte budget: 7, then the rest.
    let mut pager = c.pager(&prefix, 7);
    let mut sizes = Vec::new();
    while let Some(page) = pager.next_page().await.unwrap() {
        sizes.push(page.len());
    }
    assert_eq!(sizes, [7, 243]);

    let mut pager = c.pager(&prefix, 7).with_fixed_page_size();
    assert_eq!(pager.count(), 0, "not known before the first page");
    let first = pager.next_page().await.unwrap().unwrap();
    assert_eq!(first.len(), 7);
    assert_eq!(
        pager.count(),
        250,
        "the whole range, counted by the first page"
    );
    let revision = pager.revision();
    // A write after the first page must not show up in later pages.
    c.put("nodes/c1/zzz", "late").await.unwrap();
    let mut all = first.to_kvs();
    while let Some(page) = pager.next_page().await.unwrap() {
        all.extend(page.to_kvs());
    }
    assert_eq!(pager.revision(), revision);
    assert_eq!(
        all.len(),
        250,
        "pages at one revision, nothing of c10 or the late write"
    );
    assert!(all.iter().all(|kv| kv.key.starts_with("nodes/c1/n")));
    assert_eq!(c.count(&prefix).await.unwrap(), 251);

    assert_eq!(c.delete_prefix(&prefix).await.unwrap(), 251);
    assert_eq!(
        c.count(&KeyPrefix::new("nodes/c10")).await.unwrap(),
        1,
        "c10 untouched"
    );
    assert!(c.get("nodes/c1").await.unwrap().is_some());
}

#[tokio::test]
async fn lease_expiry_removes_leased_keys() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let lease = c.grant_lease(Duration::from_secs(2)).await.unwrap();
    c.put_leased("leased", "v", lease).await.unwrap();
    c.put("plain", "v").await.unwrap();
    assert!(c.lease_ttl(lease).await.unwrap().is_some());
    wait_until("the leased key expires", || async {
        c.get("leased").await.unwrap().is_none()
    })
    .await;
    assert!(c.get("plain").await.unwrap().is_some());
    assert_eq!(c.lease_ttl(lease).await.unwrap(), None);

    let lease = c.grant_lease(Duration::from_secs(60)).await.unwrap();
    assert!(c.create("k", "v", Some(lease)).await.unwrap());
    c.revoke_lease(lease).await.unwrap();
    assert!(
        c.get("k").await.unwrap().is_none(),
        "revoke deletes at once"
    );
}

#[tokio::test]
async fn lock_excludes_a_second_holder() {
    let etcd = TestEtcd::start().await.unwrap();
    let a = client(&etcd).await;
    let b = client(&etcd).await;
    let la = a.grant_lease(Duration::from_secs(30)).await.unwrap();
    let lb = b.grant_lease(Duration::from_secs(30)).await.unwrap();

    let guard = a.lock("locks/x", la, Duration::from_secs(5)).await.unwrap();
    let err = b
        .lock("locks/x", lb, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LockTimeout { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Timeout);

    let waiter = tokio::spawn(async move { b.lock("locks/x", lb, Duration::from_secs(10)).await });
    a.unlock(guard).await.unwrap();
    let guard_b = waiter
        .await
        .unwrap()
        .expect("second holder gets the lock after unlock");
    assert!(guard_b.key.starts_with(b"locks/x/"));

    // A lock dies with its lease.
    let c = client(&etcd).await;
    let lc = c.grant_lease(Duration::from_secs(30)).await.unwrap();
    a.revoke_lease(lb).await.unwrap();
    c.lock("locks/x", lc, Duration::from_secs(5))
        .await
        .expect("lock freed by lease revoke");
}

#[tokio::test]
async fn clear_errors_for_bad_config_and_unreachable_etcd() {
    let err = Client::connect(&ClientConfig::new(Vec::<String>::new()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no endpoints"), "{err}");
    let err = Client::connect(&ClientConfig::new(["127.0.0.1:2379"]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("http://"), "{err}");
    let err = Client::connect(&ClientConfig::new(["https://127.0.0.1:2379"]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no TLS configuration"), "{err}");

    let port = free_port();
    let mut config = ClientConfig::new([format!("http://127.0.0.1:{port}")]);
    config.connect_timeout = Duration::from_millis(500);
    let err = Client::connect(&config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{}", err.full_message());
    assert!(
        err.to_string().contains(&port.to_string()),
        "names the endpoint: {err}"
    );
}

#[tokio::test]
async fn a_peer_that_closes_the_connection_is_not_unreachable() {
    // Accepts, then closes every connection (as a server that refuses the
    // client, or is going away, does).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            drop(conn);
        }
    });
    let mut config = ClientConfig::new([format!("http://{addr}")]);
    config.connect_timeout = Duration::from_secs(2);
    let err = Client::connect(&config).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::ConnectionClosed,
        "{}",
        err.full_message()
    );
    // A TLS client gets the same when the peer closes during the handshake.
    let pki = Pki::new();
    let mut config = ClientConfig::new([format!("https://{addr}")]).with_tls(pki.tls("ca", None));
    config.connect_timeout = Duration::from_secs(2);
    let err = Client::connect(&config).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::ConnectionClosed,
        "{}",
        err.full_message()
    );
    server.abort();
}

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, a server cert for 127.0.0.1 and a client cert, as PEM files.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = Self { dir };
        let (ca_cert, ca_key) = pki.ca("ca");
        pki.leaf("server", &ca_cert, &ca_key, true);
        pki.leaf("client", &ca_cert, &ca_key, false);
        let (other_cert, other_key) = pki.ca("other-ca");
        pki.leaf("other-client", &other_cert, &other_key, false);
        pki
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn ca(&self, name: &str) -> (rcgen::CertificateParams, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(self.path(&format!("{name}.crt")), cert.pem()).unwrap();
        (params, key)
    }

    fn leaf(
        &self,
        name: &str,
        ca: &rcgen::CertificateParams,
        ca_key: &rcgen::KeyPair,
        server: bool,
    ) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        let issuer = rcgen::Issuer::from_params(ca, ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(self.path(&format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
    }

    fn tls(&self, ca: &str, client: Option<&str>) -> TlsConfig {
        let cert = client.map(|c| {
            (
                self.path(&format!("{c}.crt")),
                self.path(&format!("{c}.key")),
            )
        });
        TlsConfig::from_files(
            &self.path(&format!("{ca}.crt")),
            cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        )
        .unwrap()
    }
}

#[tokio::test]
async fn mutual_tls() {
    let pki = Pki::new();
    let etcd = TestEtcd::start_with(EtcdOptions {
        tls: Some(ServerTls {
            cert: pki.path("server.crt"),
            key: pki.path("server.key"),
            client_ca: Some(pki.path("ca.crt")),
        }),
        ..EtcdOptions::default()
    })
    .await
    .unwrap();
    assert!(etcd.endpoint().starts_with("https://"));
    let config = |tls: TlsConfig| {
        let mut c = ClientConfig::new([etcd.endpoint()]).with_tls(tls);
        c.connect_timeout = Duration::from_secs(2);
        c
    };

    let ok = Client::connect(&config(pki.tls("ca", Some("client"))))
        .await
        .expect("valid client cert");
    ok.put("k", "v").await.unwrap();
    assert_eq!(ok.get("k").await.unwrap().unwrap().value, b"v");

    let err = Client::connect(&config(pki.tls("ca", None)))
        .await
        .unwrap_err();
    // Under TLS 1.3 the server refuses the client after the handshake: the
    // client sees the connection closed (or, if it reads it first, the alert).
    assert!(
        matches!(err.kind(), ErrorKind::ConnectionClosed | ErrorKind::Tls),
        "no client cert refused: {}",
        err.full_message()
    );
    let err = Client::connect(&config(pki.tls("ca", Some("other-client"))))
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::ConnectionClosed | ErrorKind::Tls),
        "client cert of another CA refused: {}",
        err.full_message()
    );
    let err = Client::connect(&config(pki.tls("other-ca", Some("client"))))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::UnknownCa,
        "server cert not trusted: {}",
        err.full_message()
    );
}
