//! Watchers that deliver exactly the difference to what their consumer
//! has, and the connection's health for status and metrics.
//!
//! A [`watcher`](kube::runtime::watcher) re-lists after an expired
//! resource version or a long outage; [`watch`] turns that re-list into
//! upserts plus deletes of what vanished meanwhile, so the consumer never
//! has to compare. While the API server is unreachable nothing is
//! delivered: the consumer keeps the last state (the same rule as an etcd
//! outage), and the watcher retries with backoff.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use daemon::error_chain;
use futures::TryStreamExt as _;
use kube::{
    Api, Resource,
    runtime::{WatchStreamExt as _, watcher},
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A failed watch is retried after 250 ms, doubling up to this: a
/// returning API server is seen again within seconds (kube's default goes
/// up to 30 s).
const MAX_RETRY_DELAY: Duration = Duration::from_secs(4);
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);

/// How often the API server's reachability is checked.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// An object's namespace (if namespaced) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    pub fn of<K: Resource>(obj: &K) -> Self {
        Self {
            namespace: obj.meta().namespace.clone(),
            name: obj.meta().name.clone().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// What a watcher delivers.
#[derive(Debug, Clone)]
pub enum Change<K> {
    /// Created or changed (or seen again in a re-list).
    Apply(K),
    Delete(ObjectKey),
    /// The initial list was delivered whole (once).
    Synced,
}

/// One watched resource, for status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceHealth {
    pub synced: bool,
    pub objects: usize,
    /// Events received (applies and deletes).
    pub events: u64,
    /// The last error, until the next successful list or event.
    pub last_error: Option<String>,
}

/// The API server as the watchers see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthSnapshot {
    /// The last probe answered.
    pub connected: bool,
    /// The server's version (`v1.20.2`), once known.
    pub version: Option<String>,
    /// The last probe's error, while not connected.
    pub last_error: Option<String>,
    /// Seconds since the last successful probe.
    pub last_contact_s: Option<f64>,
    /// Times the connection was lost.
    pub disconnects: u64,
    pub resources: BTreeMap<String, ResourceHealth>,
}

/// Shared health of one client's watchers (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct KubeHealth(Arc<Mutex<HealthInner>>);

#[derive(Debug, Default)]
struct HealthInner {
    snapshot: HealthSnapshot,
    last_contact: Option<SystemTime>,
}

impl KubeHealth {
    pub fn snapshot(&self) -> HealthSnapshot {
        let inner = self.0.lock().expect("health lock");
        let mut s = inner.snapshot.clone();
        s.last_contact_s = inner
            .last_contact
            .and_then(|t| t.elapsed().ok())
            .map(|d| d.as_secs_f64());
        s
    }

    fn resource(&self, name: &str, f: impl FnOnce(&mut ResourceHealth)) {
        let mut inner = self.0.lock().expect("health lock");
        f(inner
            .snapshot
            .resources
            .entry(name.to_string())
            .or_default());
    }

    fn contact(&self, ok: Result<String, String>) {
        let mut inner = self.0.lock().expect("health lock");
        let s = &mut inner.snapshot;
        match ok {
            Ok(version) => {
                if !s.connected {
                    info!(%version, "Kubernetes API server reachable");
                }
                s.connected = true;
                s.version = Some(version);
                s.last_error = None;
                inner.last_contact = Some(SystemTime::now());
            }
            Err(e) => {
                if s.connected {
                    s.disconnects += 1;
                    warn!(error = %e, "Kubernetes API server unreachable; keeping the last state");
                }
                s.connected = false;
                s.last_error = Some(e);
            }
        }
    }

    /// Checks the server every few seconds (`GET /version`) until
    /// `shutdown`.
    pub async fn probe(self, client: kube::Client, shutdown: CancellationToken) {
        loop {
            let result = tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()).await;
            self.contact(match result {
                Ok(Ok(v)) => Ok(v.git_version),
                Ok(Err(e)) => Err(error_chain(&e)),
                Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
            });
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            }
        }
    }
}

/// The watchers' retry delays: 250 ms doubling to [`MAX_RETRY_DELAY`],
/// back to the start once a watch works again.
#[derive(Debug, Clone)]
struct RetryBackoff {
    next: Duration,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        Self {
            next: FIRST_RETRY_DELAY,
        }
    }
}

impl Iterator for RetryBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (d * 2).min(MAX_RETRY_DELAY);
        Some(d)
    }
}

impl kube::runtime::utils::Backoff for RetryBackoff {
    fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Watches `api` (as `name` in the health) and sends the changes to `tx`
/// until `shutdown` or until the receiver is gone.
pub async fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    name: &'static str,
    health: KubeHealth,
    tx: mpsc::Sender<Change<K>>,
    shutdown: CancellationToken,
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let stream = watcher(api, config).backoff(RetryBackoff::default());
    let mut stream = std::pin::pin!(stream.into_stream());
    // What the consumer has; during a re-list, what the list showed so far.
    let mut known: HashSet<ObjectKey> = HashSet::new();
    let mut relist: Option<HashSet<ObjectKey>> = None;
    let mut synced = false;
    let mut failing = false;
    loop {
        let item = tokio::select! {
            _ = shutdown.cancelled() => return,
            item = stream.try_next() => item,
        };
        let event = match item {
            Ok(Some(e)) => e,
            Ok(None) => return,
            Err(e) => {
                let msg = error_chain(&e);
                if !failing {
                    warn!(resource = name, error = %msg, "watch failed; retrying with backoff");
                    failing = true;
                }
                health.resource(name, |r| r.last_error = Some(msg));
                continue;
            }
        };
        if failing {
            info!(resource = name, "watch resumed");
            failing = false;
            health.resource(name, |r| r.last_error = None);
        }
        let mut out = Vec::new();
        match event {
            watcher::Event::Init => relist = Some(HashSet::new()),
            watcher::Event::InitApply(obj) => {
                let key = ObjectKey::of(&obj);
                relist.get_or_insert_with(HashSet::new).insert(key.clone());
                known.insert(key);
                out.push(Change::Apply(obj));
            }
            watcher::Event::InitDone => {
                let seen = relist.take().unwrap_or_default();
                for gone in known.difference(&seen) {
                    out.push(Change::Delete(gone.clone()));
                }
                known = seen;
                if !synced {
                    synced = true;
                    out.push(Change::Synced);
                }
            }
            watcher::Event::Apply(obj) => {
                known.insert(ObjectKey::of(&obj));
                out.push(Change::Apply(obj));
            }
            watcher::Event::Delete(obj) => {
                let key = ObjectKey::of(&obj);
                known.remove(&key);
                out.push(Change::Delete(key));
            }
        }
        let events = out.iter().filter(|c| !matches!(c, Change::Synced)).count() as u64;
        let objects = known.len();
        health.resource(name, |r| {
            r.synced = synced;
            r.objects = objects;
            r.events += events;
        });
        for change in out {
            if tx.send(change).await.is_err() {
                return;
            }
        }
    }
}

/// The namespace and name of an object, for logs.
pub fn describe<K: Resource>(obj: &K) -> String {
    ObjectKey::of(obj).to_string()
}
