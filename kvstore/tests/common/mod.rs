//! Helpers shared by the kvstore integration tests.
#![allow(dead_code, unreachable_pub)]

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use etcd_harness::TestEtcd;
use kvstore::{
    Client, ClientConfig, Event, StoreValue, WatchStore, WatchStoreConfig, WatchStoreStats,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const DEADLINE: Duration = Duration::from_secs(30);

pub async fn client(etcd: &TestEtcd) -> Client {
    client_at(&etcd.endpoint()).await
}

pub async fn client_at(endpoint: &str) -> Client {
    let mut config = ClientConfig::new([endpoint]);
    config.request_timeout = Duration::from_secs(5);
    config.keepalive_interval = Duration::from_secs(1);
    config.keepalive_timeout = Duration::from_secs(2);
    Client::connect(&config)
        .await
        .expect("connect to the test etcd")
}

/// Polls `condition` until it holds; panics after `DEADLINE`.
pub async fn wait_until<Fut: Future<Output = bool>>(what: &str, condition: impl FnMut() -> Fut) {
    etcd_harness::wait_until(what, DEADLINE, condition).await
}

/// A consumer of a watch store: applies events to a map, as an agent would.
pub struct Mirror<V> {
    pub map: Arc<Mutex<BTreeMap<String, V>>>,
    /// Upserts that repeated the value the consumer already had.
    pub duplicates: Arc<std::sync::atomic::AtomicUsize>,
    pub events: Arc<Mutex<Vec<Event<V>>>>,
    pub stats: Arc<WatchStoreStats>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl<V: StoreValue + Clone + PartialEq + std::fmt::Debug> Mirror<V> {
    pub fn start(store: WatchStore<V>, mut rx: tokio::sync::mpsc::Receiver<Event<V>>) -> Self {
        let shutdown = CancellationToken::new();
        let stats = store.stats();
        let map = Arc::new(Mutex::new(BTreeMap::new()));
        let events = Arc::new(Mutex::new(Vec::new()));
        let duplicates = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let runner = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                store.run(shutdown).await.expect("watch store run");
            })
        };
        let consumer = {
            let (map, events, duplicates) = (map.clone(), events.clone(), duplicates.clone());
            tokio::spawn(async move {
                while let Some(event) = rx.recv().await {
                    match &event {
                        Event::Upsert { key, value } => {
                            let previous = map.lock().unwrap().insert(key.clone(), value.clone());
                            if previous.as_ref() == Some(value) {
                                duplicates.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                        }
                        Event::Delete { key } => {
                            assert!(
                                map.lock().unwrap().remove(key).is_some(),
                                "delete of unknown key {key}"
                            );
                        }
                        Event::Synced => {}
                    }
                    events.lock().unwrap().push(event);
                }
            })
        };
        Self {
            map,
            duplicates,
            events,
            stats,
            shutdown,
            tasks: vec![runner, consumer],
        }
    }

    pub fn watch(client: &Client, config: WatchStoreConfig) -> Self {
        let (store, rx) = WatchStore::<V>::new(client.clone(), config);
        Self::start(store, rx)
    }

    pub fn snapshot(&self) -> BTreeMap<String, V> {
        self.map.lock().unwrap().clone()
    }

    pub fn synced(&self) -> bool {
        self.events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Event::Synced))
    }

    pub fn duplicate_count(&self) -> usize {
        self.duplicates.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn event_count(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl<V> Drop for Mirror<V> {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The raw content of a prefix in etcd, keyed relative to the prefix.
pub async fn etcd_content(
    client: &Client,
    prefix: &kvstore::KeyPrefix,
) -> BTreeMap<String, Vec<u8>> {
    let (kvs, _) = client.list(prefix, 1000).await.expect("list");
    kvs.into_iter()
        .map(|kv| (prefix.strip(&kv.key).unwrap().to_string(), kv.value))
        .collect()
}

/// The mirror's content as raw bytes.
pub fn raw_content(mirror: &Mirror<kvstore::RawEntry>) -> BTreeMap<String, Vec<u8>> {
    mirror
        .snapshot()
        .into_iter()
        .map(|(k, v)| (k, v.value))
        .collect()
}
