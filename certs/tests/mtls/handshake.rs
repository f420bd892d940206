//! Who a server built from `ServerTls` accepts, and which servers a
//! `ClientTls` client accepts.

use certs::{CertName, ClientTls, LoadError};

use crate::support::{
    Pki, SERVER_NAME, Session, TestServer, expired, fast_config, raw_client_config, read,
};

#[tokio::test]
async fn accepts_client_of_trusted_ca_and_gives_server_its_common_name() {
    let pki = Pki::new("mesh-ca");
    let mut server = TestServer::start(pki.server("apiserver")).await;
    let client = ClientTls::load(pki.client("remote-c2"), fast_config()).unwrap();

    let mut session = Session::connect(client.rustls_config(), server.addr, SERVER_NAME)
        .await
        .unwrap();

    assert_eq!(
        server.next_outcome().await,
        Ok(Some("remote-c2".to_owned()))
    );
    assert_eq!(session.greeting, "hello remote-c2");
    assert_eq!(session.echo("ping").await.unwrap(), "ping");
}

#[tokio::test]
async fn accepts_server_by_ip_address_san() {
    let pki = Pki::new("mesh-ca");
    let mut server = TestServer::start(pki.server("apiserver")).await;
    let client = ClientTls::load(pki.client("admin-c1"), fast_config()).unwrap();

    let session = Session::connect(client.rustls_config(), server.addr, "127.0.0.1")
        .await
        .unwrap();

    assert_eq!(session.greeting, "hello admin-c1");
    assert!(server.next_outcome().await.is_ok());
}

#[tokio::test]
async fn refuses_client_without_certificate() {
    let pki = Pki::new("mesh-ca");
    let mut server = TestServer::start(pki.server("apiserver")).await;
    let anonymous = raw_client_config(&read(&pki.path("ca.crt")), None);

    let result = Session::connect(anonymous, server.addr, SERVER_NAME).await;

    assert!(result.is_err(), "anonymous client got a greeting");
    let err = server.next_outcome().await.unwrap_err();
    assert!(err.contains("peer sent no certificates"), "{err}");
}

#[tokio::test]
async fn refuses_client_of_another_ca() {
    let pki = Pki::new("mesh-ca");
    let stranger = Pki::new("stranger-ca");
    let mut server = TestServer::start(pki.server("apiserver")).await;
    // Trusts our CA to verify the server, but its own identity is from elsewhere.
    let mut files = stranger.client("remote-c9");
    files.ca_bundle = pki.path("ca.crt");
    let client = ClientTls::load(files, fast_config()).unwrap();

    let result = Session::connect(client.rustls_config(), server.addr, SERVER_NAME).await;

    assert!(result.is_err(), "client of another CA got a greeting");
    let err = server.next_outcome().await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn refuses_expired_client_certificate() {
    let pki = Pki::new("mesh-ca");
    let mut server = TestServer::start(pki.server("apiserver")).await;
    let old = pki
        .ca
        .issue_client(&CertName::new("remote-c2").unwrap(), expired())
        .unwrap();
    let files = old.write(pki.dir.path()).unwrap();

    // Our own client refuses to load it, with a clear error ...
    let err = ClientTls::load(files.clone(), fast_config()).unwrap_err();
    assert!(matches!(err, LoadError::Expired { .. }), "{err}");
    assert!(err.to_string().contains("remote-c2.crt"), "{err}");
    // ... and a client that sends it anyway is refused by the server.
    let config = raw_client_config(
        &read(&files.ca_bundle),
        Some((old.cert_pem().as_bytes(), old.key_pem().as_bytes())),
    );
    let result = Session::connect(config, server.addr, SERVER_NAME).await;

    assert!(result.is_err(), "expired client got a greeting");
    let err = server.next_outcome().await.unwrap_err();
    assert!(err.contains("certificate expired"), "{err}");
}

#[tokio::test]
async fn client_refuses_server_whose_names_do_not_match() {
    let pki = Pki::new("mesh-ca");
    let wrong = pki
        .ca
        .issue_server(
            &CertName::new("apiserver").unwrap(),
            &["other.example".to_owned()],
            &["10.9.9.9".parse().unwrap()],
            certs::Validity::days(1).unwrap(),
        )
        .unwrap()
        .write(pki.dir.path())
        .unwrap();
    let server = TestServer::start(wrong).await;
    let client = ClientTls::load(pki.client("remote-c2"), fast_config()).unwrap();

    for name in [SERVER_NAME, "127.0.0.1"] {
        let err = Session::connect(client.rustls_config(), server.addr, name)
            .await
            .err()
            .unwrap_or_else(|| panic!("client accepted a server not valid for {name}"));
        assert!(format!("{err:#}").contains("not valid for name"), "{err:#}");
    }
}

#[tokio::test]
async fn client_refuses_server_of_untrusted_ca() {
    let pki = Pki::new("mesh-ca");
    let stranger = Pki::new("stranger-ca");
    let server = TestServer::start(stranger.server("apiserver")).await;
    let client = ClientTls::load(pki.client("remote-c2"), fast_config()).unwrap();

    let err = Session::connect(client.rustls_config(), server.addr, SERVER_NAME)
        .await
        .err()
        .expect("client accepted a server of an untrusted CA");
    assert!(format!("{err:#}").contains("UnknownIssuer"), "{err:#}");
}

#[tokio::test]
async fn trusts_every_ca_of_a_bundle_and_only_those() {
    let c1 = Pki::new("c1-ca");
    let c2 = Pki::new("c2-ca");
    let c3 = Pki::new("c3-ca");
    // Cluster c1's server trusts the CAs of c1 and c2.
    let mut files = c1.server("apiserver");
    files.ca_bundle = c1.path("bundle.crt");
    std::fs::write(
        &files.ca_bundle,
        format!("{}{}", c1.ca.cert_pem(), c2.ca.cert_pem()),
    )
    .unwrap();
    let mut server = TestServer::start(files).await;

    for (pki, name, accepted) in [
        (&c1, "admin-c1", true),
        (&c2, "remote-c2", true),
        (&c3, "remote-c3", false),
    ] {
        let mut client_files = pki.client(name);
        client_files.ca_bundle = c1.path("ca.crt");
        let client = ClientTls::load(client_files, fast_config()).unwrap();
        let result = Session::connect(client.rustls_config(), server.addr, SERVER_NAME).await;
        assert_eq!(result.is_ok(), accepted, "{name}: {:?}", result.err());
        let outcome = server.next_outcome().await;
        if accepted {
            assert_eq!(outcome, Ok(Some(name.to_owned())));
        } else {
            assert!(outcome.is_err(), "{name}: {outcome:?}");
        }
    }
}
