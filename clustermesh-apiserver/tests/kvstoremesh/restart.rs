//! kvstoremesh restarted while the remote changed: the new one deletes
//! exactly what the remote deleted meanwhile (before its canaries), and
//! never a key that still exists remotely.

use etcd_harness::TestEtcd;
use kvstore::keys::{Source, StateKind};

use crate::{
    harness::{Mesh, Remote, cache_becomes, cache_key, expected_cache, name, node, node_key},
    support::{current_revision, direct_client, watch_until},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_never_deletes_what_still_exists_remotely() {
    let c2 = name("c2");
    let local = TestEtcd::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (remote, mut state) = Remote::start_published("c2", 2, dir.path(), "").await;
    let mesh = Mesh::start(&local, dir.path(), |_| {}).await;
    mesh.wait_ready().await;
    cache_becomes(&local, &expected_cache(&c2, &state), "before the restart").await;
    mesh.stop().await;
    let stopped_at = current_revision(&local).await;

    // The remote changes while kvstoremesh is down.
    let gone = node_key(&c2, "n2");
    state.remove(&gone);
    remote.delete(&gone).await;
    state.insert(node_key(&c2, "n3"), node(&c2, 2, "n3"));
    remote.put_all(&state).await;

    let mesh = Mesh::start(&local, dir.path(), |_| {}).await;
    mesh.wait_ready().await;
    let expected = expected_cache(&c2, &state);
    cache_becomes(&local, &expected, "after the restart").await;

    let until = current_revision(&local).await;
    let (events, _) = watch_until(
        direct_client(&local).await,
        "cilium/",
        stopped_at + 1,
        || Some(until),
    )
    .await
    .unwrap();
    let deletes: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "DELETE")
        .map(|e| e.key.as_str())
        .collect();
    for key in &deletes {
        assert!(
            !expected.contains_key(*key),
            "{key} still exists remotely but was deleted: {events:?}"
        );
    }
    let gone_cache = cache_key(&c2, &gone);
    let deleted_at = events
        .iter()
        .position(|e| e.kind == "DELETE" && e.key == gone_cache)
        .unwrap_or_else(|| panic!("{gone_cache} not deleted: {events:?}"));
    let canary = StateKind::Nodes.canary(&c2, Source::Cache);
    let canary_at = events
        .iter()
        .position(|e| e.kind == "PUT" && e.key == canary)
        .unwrap_or_else(|| panic!("{canary} not rewritten: {events:?}"));
    assert!(
        deleted_at < canary_at,
        "the stale node is deleted before the new canary: {events:?}"
    );

    mesh.stop().await;
    remote.stop().await;
}
