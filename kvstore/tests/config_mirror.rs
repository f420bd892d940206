//! The remote-cluster config mirror against a real etcd: a config goes only
//! for a delete, never because the etcd lost its data, whether the mirror
//! ran through the loss or was down during it.

mod common;

use std::path::Path;

use common::{client, wait_until};
use etcd_harness::TestEtcd;
use kvstore::{
    Client, ClusterName, StoreValue, keys, remote::ConfigMirror, values::RemoteClusterRecord,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn record(name: &str) -> RemoteClusterRecord {
    RemoteClusterRecord {
        cluster: name.into(),
        id: 2,
        endpoints: vec!["https://127.0.0.1:1".into()],
        ca_bundle: "CA".into(),
        cert: "CERT".into(),
        key: "KEY".into(),
        pod_cidr_pools: vec!["10.2.0.0/16".parse().unwrap()],
        service_cache_ttl: None,
    }
}

fn c2_key() -> String {
    keys::remote_cluster_record(&ClusterName::new("c2").unwrap())
}

struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), tokio::task::JoinError>>,
}

impl Running {
    fn start(client: &Client, dir: &Path) -> Self {
        let mirror = ConfigMirror {
            client: client.clone(),
            dir: dir.to_owned(),
            local: ClusterName::new("c1").unwrap(),
            through_cache: None,
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(mirror.run(shutdown.clone()));
        Self { shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

async fn stored(c: &Client) -> Option<RemoteClusterRecord> {
    let kv = c.get(&c2_key()).await.ok()??;
    RemoteClusterRecord::decode("c2", &kv.value).ok()
}

/// c2's record stored, a mirror running, the config mirrored and the mark
/// stored.
async fn mirrored_c2(etcd: &TestEtcd) -> (Client, tempfile::TempDir, Running) {
    let c = client(etcd).await;
    let tmp = tempfile::tempdir().unwrap();
    c.put(&c2_key(), record("c2").encode()).await.unwrap();
    let mirror = Running::start(&c, tmp.path());
    wait_until("c2's config is mirrored and the mark stored", || async {
        tmp.path().join("c2").exists()
            && c.get(keys::REMOTE_CLUSTER_RECORDS_MARK)
                .await
                .is_ok_and(|kv| kv.is_some())
    })
    .await;
    (c, tmp, mirror)
}

#[tokio::test]
async fn a_running_mirror_keeps_its_config_and_stores_the_record_again_after_a_data_loss() {
    let mut etcd = TestEtcd::start().await.unwrap();
    let (c, tmp, mirror) = mirrored_c2(&etcd).await;
    let config = std::fs::read_to_string(tmp.path().join("c2")).unwrap();

    // The wipe takes the record; only the mirror writes it again (it may
    // have done so before this test's next read).
    etcd.wipe_and_restart().await.unwrap();
    wait_until("the record is stored again", || async {
        stored(&c).await == Some(record("c2"))
    })
    .await;
    assert!(
        c.get(keys::REMOTE_CLUSTER_RECORDS_MARK)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("c2")).unwrap(),
        config,
        "the config stayed as it was"
    );

    // A delete it watches still removes the config.
    c.delete(&c2_key()).await.unwrap();
    wait_until("the config goes with the record", || async {
        !tmp.path().join("c2").exists()
    })
    .await;
    mirror.stop().await;
}

#[tokio::test]
async fn a_mirror_started_after_a_data_loss_keeps_its_config_and_stores_the_record_again() {
    let mut etcd = TestEtcd::start().await.unwrap();
    let (c, tmp, mirror) = mirrored_c2(&etcd).await;
    mirror.stop().await;

    // The etcd loses its data while the node is down; other components
    // write to the new one before the agent starts.
    etcd.wipe_and_restart().await.unwrap();
    for i in 0..50 {
        c.put(&format!("cilium/state/nodes/v1/c1/n{i}"), "x")
            .await
            .unwrap();
    }
    let mirror = Running::start(&c, tmp.path());
    wait_until("the record is stored again", || async {
        stored(&c).await == Some(record("c2"))
    })
    .await;
    assert!(tmp.path().join("c2").exists(), "the config stayed");
    mirror.stop().await;
}

#[tokio::test]
async fn a_disconnect_while_the_mirror_was_down_removes_the_config() {
    let etcd = TestEtcd::start().await.unwrap();
    let (c, tmp, mirror) = mirrored_c2(&etcd).await;
    mirror.stop().await;

    c.delete(&c2_key()).await.unwrap();
    let mirror = Running::start(&c, tmp.path());
    wait_until("the config goes", || async {
        !tmp.path().join("c2").exists()
    })
    .await;
    assert!(stored(&c).await.is_none(), "a disconnect is not undone");
    assert!(!tmp.path().join(".clustermesh-mirror/c2").exists());
    mirror.stop().await;
}
