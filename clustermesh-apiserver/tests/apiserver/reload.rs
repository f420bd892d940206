//! A rotated server certificate is used for new connections while
//! established watch streams keep running.

use certs::{CertName, Validity};
use etcd_client::WatchOptions;
use etcd_harness::TestEtcd;

use crate::support::{DEADLINE, TestApiserver, direct_client, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificate_is_served_without_dropping_streams() {
    let etcd = TestEtcd::start().await.unwrap();
    let api = TestApiserver::start(&etcd).await;
    let mut client = api.etcd_client("remote-c2").await;
    let mut stream = client
        .watch("cilium/state/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(stream.message().await.unwrap().unwrap().created());
    let old_serial = serial_in_metrics(&api).await;

    // Rotate: a new certificate and key written over the old files.
    let renewed = api
        .pki
        .ca
        .issue_server(
            &CertName::new("apiserver").unwrap(),
            &["localhost".to_owned()],
            &[std::net::Ipv4Addr::LOCALHOST.into()],
            Validity::days(2).unwrap(),
        )
        .unwrap();
    renewed
        .write_to(&api.server_files.cert, &api.server_files.key)
        .unwrap();
    let new_serial = eventually("the new certificate to be loaded", || async {
        let serial = serial_in_metrics(&api).await;
        (serial != old_serial).then_some(serial)
    })
    .await;
    assert_eq!(new_serial, renewed.info().unwrap().serial);

    // New connections work (and get the new certificate, per the metric);
    // the old stream still delivers.
    let mut fresh = api.etcd_client("remote-c3").await;
    fresh.get("cilium/state/x", None).await.unwrap();
    direct_client(&etcd)
        .await
        .put(
            "cilium/state/ip/v1/default/10.1.1.1",
            "after-rotation",
            None,
        )
        .await
        .unwrap();
    let response = tokio::time::timeout(DEADLINE, stream.message())
        .await
        .unwrap()
        .expect("the established stream survives the rotation")
        .unwrap();
    assert_eq!(
        response.events()[0].kv().unwrap().value(),
        b"after-rotation"
    );
}

async fn serial_in_metrics(api: &TestApiserver) -> String {
    let metrics = api.metrics().await;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("clustermesh_tls_certificate_expiry_seconds")
                && l.contains(r#"kind="cert""#)
        })
        .expect("the certificate is in the metrics")
        .to_owned();
    let start = line.find("serial=\"").unwrap() + 8;
    let end = start + line[start..].find('"').unwrap();
    line[start..end].to_owned()
}
