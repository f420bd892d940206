//! A remote whose file is removed: its cluster config leaves the local
//! etcd at once, its cache, canaries and status after the drain delay.

use std::time::Duration;

use etcd_harness::TestEtcd;

use crate::{
    harness::{Mesh, Remote, cache, cache_becomes, expected_cache, list, name},
    support::eventually,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_remote_is_drained_after_the_delay() {
    let c2 = name("c2");
    let local = TestEtcd::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (remote, state) = Remote::start_published("c2", 2, dir.path(), "").await;
    let mesh = Mesh::start(&local, dir.path(), |c| {
        c.drain_delay = Duration::from_secs(3);
    })
    .await;
    mesh.wait_ready().await;
    let expected = expected_cache(&c2, &state);
    cache_becomes(&local, &expected, "before the removal").await;
    assert!(!list(&local, "cilium/synced/c2/").await.is_empty());

    std::fs::remove_file(dir.path().join("c2")).unwrap();
    eventually("the cluster config withdrawn", || async {
        list(&local, "cilium/cluster-config/c2")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(
        cache(&local).await,
        expected,
        "the cache stays during the drain delay"
    );

    eventually("the cache, canaries and status deleted", || async {
        let left = [
            cache(&local).await,
            list(&local, "cilium/synced/c2/").await,
            list(&local, "cilium/kvstoremesh/v1/c2").await,
        ];
        left.iter().all(|l| l.is_empty()).then_some(())
    })
    .await;
    eventually("c2 gone from /status", || async {
        mesh.status().await.remotes.is_empty().then_some(())
    })
    .await;
    assert!(
        !mesh.metrics().await.contains("target_cluster=\"c2\""),
        "c2's series are gone"
    );

    mesh.stop().await;
    remote.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_comes_back_cancels_the_drain() {
    let c2 = name("c2");
    let local = TestEtcd::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (remote, state) = Remote::start_published("c2", 2, dir.path(), "").await;
    let delay = Duration::from_secs(2);
    let mesh = Mesh::start(&local, dir.path(), |c| c.drain_delay = delay).await;
    mesh.wait_ready().await;
    let expected = expected_cache(&c2, &state);
    cache_becomes(&local, &expected, "before the removal").await;
    let file = std::fs::read(dir.path().join("c2")).unwrap();

    std::fs::remove_file(dir.path().join("c2")).unwrap();
    let removed_at = tokio::time::Instant::now();
    eventually("the cluster config withdrawn", || async {
        list(&local, "cilium/cluster-config/c2")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    std::fs::write(dir.path().join("c2"), file).unwrap();
    eventually("the cluster config back", || async {
        (!list(&local, "cilium/cluster-config/c2").await.is_empty()).then_some(())
    })
    .await;
    mesh.remote_until("c2", "c2 ready again", |v| v.ready).await;

    // Proving that nothing happens needs the time it would have happened
    // in: watch the cache until well past the drain's deadline.
    let mut watcher = crate::support::direct_client(&local).await;
    let mut events = watcher
        .watch(
            "cilium/cache/",
            Some(etcd_client::WatchOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let until = removed_at + delay * 2;
    loop {
        match tokio::time::timeout_at(until, events.message()).await {
            Err(_) => break,
            Ok(message) => {
                let message = message.unwrap().expect("the watch stays open");
                assert!(
                    message
                        .events()
                        .iter()
                        .all(|e| e.event_type() != etcd_client::EventType::Delete),
                    "the cache was drained although its file came back: {message:?}"
                );
            }
        }
    }
    assert_eq!(cache(&local).await, expected);

    mesh.stop().await;
    remote.stop().await;
}
