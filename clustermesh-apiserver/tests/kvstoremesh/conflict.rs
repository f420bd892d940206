//! Two remotes that claim the same cluster ID: the second one is refused
//! (`id-conflict`), nothing of it is mirrored and no cluster config is
//! published for it; the first one is mirrored as usual.

use etcd_harness::TestEtcd;

use crate::harness::{Mesh, Remote, cache, expected_cache, list, name, sample_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_claiming_another_remotes_id_is_refused() {
    let (c2, c3) = (name("c2"), name("c3"));
    let local = TestEtcd::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (first, state) = Remote::start_published("c2", 2, dir.path(), "").await;
    let mesh = Mesh::start(&local, dir.path(), |_| {}).await;
    mesh.wait_ready().await;
    crate::harness::cache_becomes(&local, &expected_cache(&c2, &state), "c2 mirrored").await;

    // c3 says it is cluster 2 as well.
    let second = Remote::start("c3", 2).await;
    second.put_all(&sample_state(&c3, 2)).await;
    second.write_canaries().await;
    second.write_config(dir.path(), "");
    let view = mesh
        .remote_until("c3", "c3 refused", |v| {
            v.last_error_kind.as_deref() == Some("id-conflict")
        })
        .await;
    assert!(!view.connected && !view.ready, "{view:?}");
    assert!(
        view.last_error.as_deref().unwrap_or("").contains("c2"),
        "{view:?}"
    );
    assert!(list(&local, "cilium/cluster-config/c3").await.is_empty());
    assert_eq!(cache(&local).await, expected_cache(&c2, &state));
    assert!(mesh.remote("c2").await.unwrap().ready);

    mesh.stop().await;
    first.stop().await;
    second.stop().await;
}
