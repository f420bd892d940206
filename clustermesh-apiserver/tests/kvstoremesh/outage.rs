//! A remote whose apiserver stops: the cache is kept and the status says
//! unreachable; what changed meanwhile is reconciled exactly once it is
//! back; with a short service cache TTL, its services (only) leave the
//! cache after the TTL and come back with it.

use etcd_harness::TestEtcd;
use kvstore::{StoreValue, values::MirrorStatus};

use crate::{
    harness::{
        Mesh, Remote, cache, cache_becomes, expected_cache, list, name, node, node_key,
        sample_state, service, service_key,
    },
    support::eventually,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_remote_keeps_its_cache_and_reconciles() {
    let c2 = name("c2");
    let local = TestEtcd::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut remote, mut state) =
        Remote::start_published("c2", 2, dir.path(), "service-cache-ttl: 3s\n").await;
    let mesh = Mesh::start(&local, dir.path(), |_| {}).await;
    mesh.wait_ready().await;
    cache_becomes(&local, &expected_cache(&c2, &state), "initially").await;

    remote.stop_apiserver().await;
    let view = mesh
        .remote_until("c2", "c2 reported unreachable", |v| {
            !v.connected && v.unreachable_since.is_some()
        })
        .await;
    assert!(!view.ready);
    assert_eq!(
        view.last_error_kind.as_deref(),
        Some("unreachable"),
        "{view:?}"
    );
    assert!(view.failures >= 1);
    let status = eventually("the status key to say unreachable", || async {
        let statuses = list(&local, "cilium/kvstoremesh/v1/").await;
        let status = MirrorStatus::decode("c2", statuses.get("cilium/kvstoremesh/v1/c2")?).ok()?;
        (!status.connected).then_some(status)
    })
    .await;
    assert!(status.unreachable_since.is_some(), "{status:?}");
    // Kept while unreachable (the TTL has not run out yet).
    assert_eq!(cache(&local).await, expected_cache(&c2, &state));

    // The remote changes while kvstoremesh cannot see it.
    let gone = node_key(&c2, "n2");
    state.remove(&gone);
    remote.delete(&gone).await;
    state.insert(node_key(&c2, "n3"), node(&c2, 2, "n3"));
    state.insert(service_key(&c2, "echo"), service(&c2, 2, "echo", 9090));
    remote.put_all(&state).await;

    // After the TTL its services go, and only they.
    let services = "cilium/cache/services/v1/c2/";
    let without_services = eventually("the services dropped after the TTL", || async {
        let c = cache(&local).await;
        (!c.keys().any(|k| k.starts_with(services))).then_some(c)
    })
    .await;
    let mut before = expected_cache(&c2, &sample_state(&c2, 2));
    before.retain(|k, _| !k.starts_with(services));
    assert_eq!(without_services, before, "everything else is kept");

    remote.start_apiserver().await;
    cache_becomes(
        &local,
        &expected_cache(&c2, &state),
        "after the remote is back",
    )
    .await;
    mesh.remote_until("c2", "c2 ready again", |v| {
        v.ready && v.unreachable_since.is_none() && v.last_error.is_none()
    })
    .await;

    mesh.stop().await;
    remote.stop().await;
}
