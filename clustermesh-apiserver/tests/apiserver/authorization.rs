//! Ranges and watches reaching outside what a remote may read are refused,
//! with etcd's code and message; ranges inside are served.

use etcd_client::{GetOptions, WatchOptions};
use etcd_harness::TestEtcd;
use tonic::Code;

use crate::support::{TestApiserver, direct_client};

fn denied<T: std::fmt::Debug>(result: Result<T, etcd_client::Error>, what: &str) {
    match result {
        Err(etcd_client::Error::GRpcStatus(s)) => {
            assert_eq!(s.code(), Code::PermissionDenied, "{what}");
            assert_eq!(s.message(), "etcdserver: permission denied", "{what}");
        }
        other => panic!("{what} must be refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_ranges_must_stay_inside_allowed_prefixes() {
    let etcd = TestEtcd::start().await.unwrap();
    let api = TestApiserver::start(&etcd).await;
    let mut direct = direct_client(&etcd).await;
    for key in [
        "cilium/state/ip/v1/default/10.0.0.1",
        "cilium/state/ip/v1/default/10.0.0.2",
        "cilium/synced/c1/cilium/state/ip/v1",
        "cilium/synced/c10/cilium/state/ip/v1",
        "cilium/cluster-config/c10",
        "cilium/.heartbeat",
        "cilium/cache/ip/v1/c3/10.0.0.3",
    ] {
        direct.put(key, "v", None).await.unwrap();
    }
    let mut remote = api.etcd_client("remote-c2").await;

    let count = |r: Result<etcd_client::GetResponse, etcd_client::Error>| r.unwrap().kvs().len();
    assert_eq!(
        count(
            remote
                .get("cilium/state/", Some(GetOptions::new().with_prefix()))
                .await
        ),
        2
    );
    assert_eq!(
        count(
            remote
                .get("cilium/state/ip/v1/", Some(GetOptions::new().with_prefix()))
                .await
        ),
        2
    );
    // Strictly inside a prefix: [10.0.0.1, 10.0.0.2).
    let inside = GetOptions::new().with_range("cilium/state/ip/v1/default/10.0.0.2");
    assert_eq!(
        count(
            remote
                .get("cilium/state/ip/v1/default/10.0.0.1", Some(inside))
                .await
        ),
        1
    );
    assert_eq!(
        count(
            remote
                .get("cilium/synced/c1/", Some(GetOptions::new().with_prefix()))
                .await
        ),
        1
    );
    assert_eq!(count(remote.get("cilium/cluster-config/c1", None).await), 1);
    assert_eq!(count(remote.get("cilium/.heartbeat", None).await), 1);
    assert_eq!(
        count(
            remote
                .get("cilium/cache/", Some(GetOptions::new().with_prefix()))
                .await
        ),
        1
    );

    denied(
        remote
            .get("cilium/", Some(GetOptions::new().with_prefix()))
            .await,
        "prefix cilium/",
    );
    denied(
        remote
            .get("", Some(GetOptions::new().with_all_keys()))
            .await,
        "all keys",
    );
    denied(
        remote
            .get("cilium/state/", Some(GetOptions::new().with_from_key()))
            .await,
        "from key",
    );
    denied(
        remote
            .get(
                "cilium/state/z",
                Some(GetOptions::new().with_range("cilium/synced/c1/x")),
            )
            .await,
        "a range leaving cilium/state/",
    );
    denied(
        remote
            .get("cilium/synced/c1", Some(GetOptions::new().with_prefix()))
            .await,
        "synced/c1 without slash covers c10",
    );
    denied(
        remote
            .get(
                "cilium/cluster-config/c1",
                Some(GetOptions::new().with_prefix()),
            )
            .await,
        "cluster-config/c1 as a prefix",
    );
    denied(
        remote.get("cilium/cluster-config/c10", None).await,
        "another cluster's config",
    );
    denied(
        remote
            .get("cilium/synced/c10/", Some(GetOptions::new().with_prefix()))
            .await,
        "another cluster's canaries",
    );

    // Watches: each refused create gets etcd's created+canceled response; the
    // stream stays usable for allowed ones.
    let (mut sender, mut responses) = remote
        .watch("cilium/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap()
        .split();
    let refused = responses.message().await.unwrap().unwrap();
    assert!(refused.created() && refused.canceled());
    assert_eq!(
        refused.cancel_reason(),
        "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
    );
    sender
        .watch("cilium/state/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let created = responses.message().await.unwrap().unwrap();
    assert!(created.created() && !created.canceled(), "{created:?}");
    let watch_id = created.watch_id();
    direct
        .put("cilium/state/ip/v1/default/10.0.0.9", "new", None)
        .await
        .unwrap();
    let event = responses.message().await.unwrap().unwrap();
    assert_eq!(event.watch_id(), watch_id);
    assert_eq!(
        event.events()[0].kv().unwrap().key(),
        b"cilium/state/ip/v1/default/10.0.0.9"
    );
    // Cancel is confirmed as etcd confirms it.
    sender.cancel(watch_id).await.unwrap();
    let canceled = responses.message().await.unwrap().unwrap();
    assert!(canceled.canceled() && !canceled.created());
    assert_eq!(canceled.watch_id(), watch_id);
}

/// A range is etcd's own answer, byte for byte what etcd sends (the
/// apiserver forwards it without decoding): a page of several MiB, a
/// limited page that says there is more, and the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_inside_are_etcds_own_answer() {
    let etcd = TestEtcd::start().await.unwrap();
    let api = TestApiserver::start(&etcd).await;
    let mut direct = direct_client(&etcd).await;
    let prefix = "cilium/state/ip/v1/default/";
    // 3,000 values of 1 KiB: a 3 MiB answer.
    let value = "v".repeat(1024);
    for i in 0..3_000u32 {
        let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 0xff, i & 0xff);
        direct
            .put(format!("{prefix}{ip}"), value.as_str(), None)
            .await
            .unwrap();
    }
    direct
        .put(format!("{prefix}10.0.0.1"), "changed", None)
        .await
        .unwrap();
    let mut remote = api.etcd_client("remote-c2").await;
    let revision = direct
        .get(prefix, None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    for options in [
        GetOptions::new().with_prefix().with_revision(revision),
        GetOptions::new()
            .with_prefix()
            .with_revision(revision)
            .with_limit(100),
        GetOptions::new()
            .with_prefix()
            .with_revision(revision)
            .with_count_only(),
    ] {
        let through = remote.get(prefix, Some(options.clone())).await.unwrap();
        let own = direct.get(prefix, Some(options)).await.unwrap();
        let header = |r: &etcd_client::GetResponse| {
            let h = r.header().unwrap();
            (h.cluster_id(), h.member_id(), h.revision(), h.raft_term())
        };
        assert_eq!(header(&through), header(&own));
        assert_eq!((through.count(), through.more()), (own.count(), own.more()));
        let kvs = |r: &etcd_client::GetResponse| {
            r.kvs()
                .iter()
                .map(|kv| {
                    let revisions = (kv.create_revision(), kv.mod_revision(), kv.version());
                    (
                        kv.key().to_vec(),
                        kv.value().to_vec(),
                        revisions,
                        kv.lease(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(kvs(&through), kvs(&own));
    }
    let all = remote
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(all.kvs().len(), 3_000);
    assert!(all.kvs().iter().any(|kv| kv.value() == b"changed"));
}
