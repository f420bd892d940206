//! A remote's state is mirrored byte for byte, only after the remote's
//! canaries, with the cache canaries after the full list; the cluster
//! config, status key, `/readyz`, `/status` and metrics say so; live
//! changes follow; invalid values are skipped and counted.

use etcd_harness::TestEtcd;
use kvstore::{
    StoreValue,
    keys::{Source, StateKind},
    values::{MirrorStatus, Node},
};

use crate::{
    harness::{
        Mesh, Remote, cache, cache_becomes, cache_canaries, expected_cache, identity_key, ip_key,
        list, name, node, node_key, sample_state, service, service_key,
    },
    support::{current_revision, direct_client, sum_metric, watch_until},
};

const CLUSTER_CONFIG: &str =
    r#"{"id":2,"capabilities":{"syncedCanaries":true,"cached":true,"maxConnectedClusters":255}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_a_remote_byte_for_byte_after_its_canaries() {
    let c2 = name("c2");
    let remote = Remote::start("c2", 2).await;
    let local = TestEtcd::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    remote.write_config(dir.path(), "");
    let mut state = sample_state(&c2, 2);
    remote.put_all(&state).await;
    // Refused by kvstoremesh: malformed, and a node naming another cluster.
    remote.put(&node_key(&c2, "broken"), "{not json").await;
    remote
        .put(
            &node_key(&c2, "n9"),
            Node::new(&name("c9"), "n9", 9).encode(),
        )
        .await;
    let start = current_revision(&local).await;

    let mesh = Mesh::start(&local, dir.path(), |_| {}).await;

    // The cluster config at once, as a cache with canaries.
    let direct = direct_client(&local).await;
    crate::support::eventually("the remote's cluster config published locally", || {
        let mut direct = direct.clone();
        async move {
            let got = direct.get("cilium/cluster-config/c2", None).await.ok()?;
            let kv = got.kvs().first()?;
            (kv.value() == CLUSTER_CONFIG.as_bytes() && kv.lease() != 0).then_some(())
        }
    })
    .await;
    // Nothing is listed before the remote's canaries exist.
    let view = mesh
        .remote_until("c2", "kvstoremesh waiting for the remote's canaries", |v| {
            v.connected && v.last_error_kind.as_deref() == Some("not-synced")
        })
        .await;
    assert!(!view.ready, "{view:?}");
    assert_eq!(mesh.readyz().await, 503);
    assert_eq!(
        cache(&local).await.len(),
        0,
        "nothing mirrored before the remote's canaries"
    );
    // Service exports are not published by this remote: empty, and synced.
    assert_eq!(cache_canaries(&local, &c2).await, ["serviceexports"]);

    remote.write_canaries().await;
    mesh.wait_ready().await;
    cache_becomes(&local, &expected_cache(&c2, &state), "after the canaries").await;
    assert_eq!(
        cache_canaries(&local, &c2).await,
        ["nodes", "services", "serviceexports", "identities", "ip"]
    );

    // Each cache canary was written after every key of its kind.
    let until = current_revision(&local).await;
    let (events, _) = watch_until(direct_client(&local).await, "cilium/", start + 1, || {
        Some(until)
    })
    .await
    .unwrap();
    for kind in StateKind::ALL {
        let canary = kind.canary(&c2, Source::Cache);
        let prefix = kind.prefix(&c2, Source::Cache).to_string();
        let canary_at = events
            .iter()
            .position(|e| e.kind == "PUT" && e.key == canary)
            .unwrap_or_else(|| panic!("no {canary} in {events:?}"));
        assert!(
            events
                .iter()
                .skip(canary_at)
                .all(|e| !e.key.starts_with(&prefix)),
            "{kind:?}: a cache key written after the canary: {events:?}"
        );
    }

    // The status key for the local agents.
    let statuses = list(&local, "cilium/kvstoremesh/v1/").await;
    let status = MirrorStatus::decode("c2", &statuses["cilium/kvstoremesh/v1/c2"]).unwrap();
    assert!(status.connected && status.ready, "{status:?}");
    assert_eq!(status.last_error, None);

    // /status counts, with the refusals.
    let view = mesh
        .remote_until("c2", "c2 ready in /status", |v| v.ready)
        .await;
    assert_eq!(view.cluster_id, Some(2));
    let entries: Vec<(&str, u64)> = view.entries.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        entries,
        [
            ("identities", 2),
            ("ip", 2),
            ("nodes", 2),
            ("serviceexports", 0),
            ("services", 1)
        ]
    );
    let invalid: Vec<(&str, u64)> = view.invalid.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        invalid,
        [("nodes/invalid-cluster", 1), ("nodes/malformed", 1)]
    );
    assert_eq!(view.failures, 0);
    let all = mesh.status().await;
    assert_eq!(all.cluster, "c1");
    assert!(all.ready);

    let metrics = mesh.metrics().await;
    let metric = |name: &str, filter: &str| sum_metric(&metrics, name, filter);
    assert_eq!(metric("clustermesh_kvstoremesh_remote_clusters", ""), 1.0);
    assert_eq!(
        metric(
            "clustermesh_kvstoremesh_remote_cluster_readiness_status",
            "target_cluster=\"c2\""
        ),
        1.0
    );
    assert_eq!(
        metric("clustermesh_kvstoremesh_entries", "kind=\"nodes\""),
        2.0
    );
    assert_eq!(
        metric(
            "clustermesh_kvstoremesh_invalid_values",
            "reason=\"invalid-cluster\""
        ),
        1.0
    );
    assert!(metrics.contains("clustermesh_kvstoremesh_bootstrap_seconds"));
    assert!(metrics.contains("process_"), "process metrics");

    // Live changes: an invalid value first (skipped), then valid ones.
    remote.put(&ip_key("10.2.0.9"), "{\"IP\":").await;
    state.insert(node_key(&c2, "n3"), node(&c2, 2, "n3"));
    state.insert(service_key(&c2, "echo"), service(&c2, 2, "echo", 9090));
    let gone = identity_key(2 << 16 | 257);
    state.remove(&gone);
    state.remove(&node_key(&c2, "n1"));
    remote.put_all(&state).await;
    remote.delete(&gone).await;
    remote.delete(&node_key(&c2, "n1")).await;
    cache_becomes(&local, &expected_cache(&c2, &state), "after live changes").await;
    mesh.remote_until("c2", "the live refusal counted", |v| {
        v.invalid.get("ip/malformed") == Some(&1)
    })
    .await;

    mesh.stop().await;
    remote.stop().await;
}
