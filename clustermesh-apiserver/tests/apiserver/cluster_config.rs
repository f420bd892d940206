//! `cilium/cluster-config/c1` is published on a lease, rewritten after it
//! is deleted or changed, and readiness follows etcd; while etcd is down,
//! answers carry the `etcd-unreachable` reason.

use clustermesh_apiserver::{REASON_ETCD_UNREACHABLE, REASON_METADATA_KEY};
use etcd_harness::TestEtcd;

use crate::support::{TestApiserver, direct_client, eventually, http_get};

const KEY: &str = "cilium/cluster-config/c1";
const EXPECTED: &str =
    r#"{"id":1,"capabilities":{"syncedCanaries":true,"maxConnectedClusters":255}}"#;

async fn published(client: &mut etcd_client::Client) -> Option<(String, i64)> {
    let got = client.get(KEY, None).await.ok()?;
    let kv = got.kvs().first()?;
    Some((String::from_utf8_lossy(kv.value()).into_owned(), kv.lease()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_config_is_published_and_rewritten() {
    let mut etcd = TestEtcd::start().await.unwrap();
    let api = TestApiserver::start(&etcd).await;
    let mut direct = direct_client(&etcd).await;

    let (value, lease) = published(&mut direct).await.expect("published once ready");
    assert_eq!(value, EXPECTED);
    assert_ne!(lease, 0, "the key is attached to a lease");

    direct.delete(KEY, None).await.unwrap();
    eventually("the deleted cluster config to be rewritten", || async {
        published(&mut direct.clone())
            .await
            .filter(|(v, _)| v == EXPECTED)
    })
    .await;

    direct.put(KEY, r#"{"id":99}"#, None).await.unwrap();
    eventually("the changed cluster config to be rewritten", || async {
        published(&mut direct.clone())
            .await
            .filter(|(v, l)| v == EXPECTED && *l != 0)
    })
    .await;
    let (status, body) = http_get(api.health_addr, "/readyz").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let ready: daemon::Health = serde_json::from_str(&body).unwrap();
    assert_eq!(ready.status, "ready", "{body}");
    assert!(
        ready.checks["cluster-config"].ok && ready.checks["etcd"].ok,
        "{body}"
    );
    let (status, _) = http_get(api.health_addr, "/healthz").await.unwrap();
    assert_eq!(status, 200);

    // Not ready while etcd is down; ready again once it is back.
    let mut remote = api.etcd_client("remote-c2").await;
    etcd.kill();
    let body = eventually("/readyz to report etcd down", || async {
        match http_get(api.health_addr, "/readyz").await {
            Ok((503, body)) => Some(body),
            _ => None,
        }
    })
    .await;
    assert!(body.contains("etcd at http://127.0.0.1:"), "{body}");
    // A request answered while etcd is down says so in etcd's words, and
    // in metadata a client can match without reading them.
    let status = match remote.get(KEY, None).await {
        Err(etcd_client::Error::GRpcStatus(status)) => status,
        other => panic!("a get while etcd is down answered {other:?}"),
    };
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("etcdserver: request timed out, etcd unreachable: "),
        "{status:?}"
    );
    assert_eq!(
        status
            .metadata()
            .get(REASON_METADATA_KEY)
            .and_then(|v| v.to_str().ok()),
        Some(REASON_ETCD_UNREACHABLE),
        "{status:?}"
    );
    etcd.restart().await.unwrap();
    api.wait_ready().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_config_returns_at_once_after_etcd_is_wiped() {
    let mut etcd = TestEtcd::start().await.unwrap();
    let api = TestApiserver::start(&etcd).await;
    let mut direct = direct_client(&etcd).await;
    let (_, first_lease) = published(&mut direct).await.expect("published once ready");

    // A wiped etcd forgets the key and the lease. The session's TTL is 15
    // minutes: the key must come back on a new lease long before that.
    etcd.wipe_and_restart().await.unwrap();
    let direct = direct_client(&etcd).await;
    let (value, lease) = eventually("the cluster config back on a new lease", || async {
        published(&mut direct.clone())
            .await
            .filter(|(_, l)| *l != 0 && *l != first_lease)
    })
    .await;
    assert_eq!(value, EXPECTED);
    assert_ne!(lease, first_lease);
    api.wait_ready().await;
    api.stop().await;
}
