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

/// The keys under `prefix` as etcd has them now.
async fn etcd_keys(direct: &mut etcd_client::Client, prefix: &kvstore::KeyPrefix) -> Vec<String> {
    let resp = direct
        .get(
            prefix.as_str(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let mut keys: Vec<String> = resp
        .kvs()
        .iter()
        .filter_map(|kv| prefix.strip(kv.key_str().ok()?).map(str::to_owned))
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_store_through_the_apiserver_converges_after_etcd_is_wiped() {
    let mut etcd = TestEtcd::start().await.unwrap();
    let api = TestApiserver::start(&etcd).await;
    let mut direct = direct_client(&etcd).await;
    let prefix = keys::ipcache();
    for i in 0..20 {
        direct
            .put(prefix.key(&format!("10.0.0.{i}")), "old", None)
            .await
            .unwrap();
    }
    let client = api.client("remote-c2").await.unwrap();
    let (store, mut rx) =
        WatchStore::<RawEntry>::new(client, WatchStoreConfig::new(prefix.clone()));
    let stats = store.stats();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(store.run(shutdown.clone()));
    let mirror = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let forward = tokio::spawn({
        let mirror = mirror.clone();
        async move {
            while let Some(event) = rx.recv().await {
                let mut m = mirror.lock().unwrap();
                match event {
                    Event::Upsert { key, .. } => {
                        m.insert(key);
                    }
                    Event::Delete { key } => {
                        m.remove(&key);
                    }
                    Event::Synced => {}
                }
            }
        }
    });
    let seen = |mirror: &std::sync::Mutex<std::collections::BTreeSet<String>>| {
        mirror.lock().unwrap().iter().cloned().collect::<Vec<_>>()
    };
    crate::support::eventually("the store lists everything", || async {
        (seen(&mirror) == etcd_keys(&mut direct.clone(), &prefix).await).then_some(())
    })
    .await;
    // The same history continues: a write is seen.
    direct
        .put(prefix.key("10.0.1.1"), "live", None)
        .await
        .unwrap();
    crate::support::eventually("a live write", || async {
        seen(&mirror).contains(&"10.0.1.1".to_owned()).then_some(())
    })
    .await;

    // The etcd loses its data and comes back at revision 1 on the same
    // address: fewer keys, at revisions the store has long passed.
    etcd.wipe_and_restart().await.unwrap();
    let mut direct = direct_client(&etcd).await;
    for ip in ["10.0.0.1", "10.0.2.1", "10.0.2.2"] {
        direct.put(prefix.key(ip), "new", None).await.unwrap();
    }
    crate::support::eventually("the store converges to the wiped etcd exactly", || async {
        let want = etcd_keys(&mut direct.clone(), &prefix).await;
        (want.len() == 3 && seen(&mirror) == want).then_some(())
    })
    .await;
    assert!(stats.lists() >= 2, "the loss forced a re-list");
    // And it keeps watching the new history.
    direct
        .put(prefix.key("10.0.3.1"), "later", None)
        .await
        .unwrap();
    crate::support::eventually("a write after the loss", || async {
        seen(&mirror).contains(&"10.0.3.1".to_owned()).then_some(())
    })
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    forward.abort();
}
