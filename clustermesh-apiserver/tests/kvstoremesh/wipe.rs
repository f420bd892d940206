//! The remote's etcd is wiped and restarted (a new etcd cluster, revisions
//! from 1) and republishes less: the cache is swept to exactly the new
//! state.

use std::collections::BTreeMap;

use etcd_harness::TestEtcd;

use crate::harness::{
    Mesh, Remote, cache_becomes, expected_cache, identity_key, ip_key, name, node_key,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_remote_etcd_is_swept_to_its_new_state() {
    let c2 = name("c2");
    let local = TestEtcd::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut remote, state) = Remote::start_published("c2", 2, dir.path(), "").await;
    let mesh = Mesh::start(&local, dir.path(), |_| {}).await;
    mesh.wait_ready().await;
    cache_becomes(&local, &expected_cache(&c2, &state), "before the wipe").await;

    remote.etcd.wipe_and_restart().await.unwrap();
    let smaller: BTreeMap<String, Vec<u8>> = state
        .into_iter()
        .filter(|(k, _)| {
            [
                node_key(&c2, "n1"),
                identity_key(2 << 16 | 257),
                ip_key("10.2.0.1"),
            ]
            .contains(k)
        })
        .collect();
    remote.put_all(&smaller).await;
    remote.write_canaries().await;
    cache_becomes(&local, &expected_cache(&c2, &smaller), "after the wipe").await;
    mesh.remote_until("c2", "c2 ready after the wipe", |v| {
        v.ready && v.entries.get("nodes") == Some(&1)
    })
    .await;

    mesh.stop().await;
    remote.stop().await;
}
