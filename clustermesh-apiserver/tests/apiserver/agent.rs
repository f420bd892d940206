//! An agent's view: the kvstore crate's list-then-watch (etcd-client
//! underneath) reads a remote cluster through its apiserver.

use std::time::Duration;

use etcd_harness::TestEtcd;
use kvstore::{Event, RawEntry, WatchStore, WatchStoreConfig, keys};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::support::{CLUSTER, DEADLINE, TestApiserver, direct_client};

async fn next(rx: &mut mpsc::Receiver<Event<RawEntry>>) -> Event<RawEntry> {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("an event in time")
        .expect("the store runs")
}

fn upsert(key: &str, value: &str) -> Event<RawEntry> {
    Event::Upsert {
        key: key.to_owned(),
        value: RawEntry {
            key: key.to_owned(),
            value: value.as_bytes().to_vec(),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_store_lists_and_watches_through_the_apiserver() {
    let etcd = TestEtcd::start().await.unwrap();
    let api = TestApiserver::start(&etcd).await;
    let mut direct = direct_client(&etcd).await;
    let prefix = keys::ipcache();
    for ip in ["10.0.0.1", "10.0.0.2"] {
        direct.put(prefix.key(ip), ip, None).await.unwrap();
    }

    let client = api.client("remote-c2").await.unwrap();
    let cluster = kvstore::ClusterName::new(CLUSTER).unwrap();
    let canary = keys::canary(&cluster, keys::IPCACHE_STORE);
    let (store, mut rx) = WatchStore::<RawEntry>::new(
        client,
        WatchStoreConfig::new(prefix.clone()).with_canary(canary.clone()),
    );
    let stats = store.stats();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(store.run(shutdown.clone()));

    // It waits for the canary (a watch of cilium/synced/c1/… through the
    // apiserver), then lists.
    tokio::time::timeout(DEADLINE, async {
        while !stats.is_waiting_for_canary() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the store waits for the canary");
    direct
        .put(canary.as_str(), "2026-11-26T00:00:00Z", None)
        .await
        .unwrap();
    let mut listed = vec![next(&mut rx).await, next(&mut rx).await];
    listed.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        listed,
        [
            upsert("10.0.0.1", "10.0.0.1"),
            upsert("10.0.0.2", "10.0.0.2")
        ]
    );
    assert_eq!(next(&mut rx).await, Event::Synced);

    direct
        .put(prefix.key("10.0.0.3"), "three", None)
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await, upsert("10.0.0.3", "three"));
    direct.delete(prefix.key("10.0.0.1"), None).await.unwrap();
    assert_eq!(
        next(&mut rx).await,
        Event::Delete {
            key: "10.0.0.1".into()
        }
    );
    assert!(stats.is_watching());
    assert_eq!(stats.errors(), 0, "{:?}", stats.last_error());
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
