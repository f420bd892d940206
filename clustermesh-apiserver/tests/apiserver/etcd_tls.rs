//! etcd itself behind mutual TLS (`--etcd-ca`, `--etcd-cert`, `--etcd-key`).

use etcd_client::WatchOptions;
use etcd_harness::{EtcdOptions, ServerTls, TestEtcd};
use kvstore::{ClientConfig, TlsConfig};

use crate::support::{DEADLINE, Pki, TestApiserver, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_with_an_etcd_that_requires_client_certificates() {
    let etcd_pki = Pki::new("etcd-ca");
    let server = etcd_pki.server("etcd");
    let etcd = TestEtcd::start_with(EtcdOptions {
        tls: Some(ServerTls {
            cert: server.cert.clone(),
            key: server.key.clone(),
            client_ca: Some(etcd_pki.ca_file()),
        }),
        ..EtcdOptions::default()
    })
    .await
    .unwrap();
    let client = etcd_pki.client("apiserver-etcd-client");
    let etcd_tls =
        TlsConfig::from_files(&etcd_pki.ca_file(), Some((&client.cert, &client.key))).unwrap();
    let api = TestApiserver::start_with(&etcd, |config| {
        config.etcd = ClientConfig::new(etcd.endpoints()).with_tls(etcd_tls.clone());
    })
    .await;

    let mut remote = api.etcd_client("remote-c2").await;
    let got = remote.get("cilium/cluster-config/c1", None).await.unwrap();
    assert_eq!(got.kvs().len(), 1);
    let mut watch = remote
        .watch("cilium/state/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(watch.message().await.unwrap().unwrap().created());
    let (ok, _, err) = run({
        let mut c = etcd.etcdctl();
        c.arg(format!("--cacert={}", etcd_pki.ca_file().display()))
            .arg(format!("--cert={}", client.cert.display()))
            .arg(format!("--key={}", client.key.display()))
            .args(["put", "cilium/state/nodes/v1/c1/n1", "n1"]);
        c
    })
    .await;
    assert!(ok, "{err}");
    let event = tokio::time::timeout(DEADLINE, watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.events()[0].kv().unwrap().value(), b"n1");
}
