use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, RwLock},
};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    client::Client,
    cluster::{ClusterId, ClusterName, MaxConnectedClusters},
    error::Error,
    identity::{IdentityRange, NumericIdentity},
    keys,
    labels::{CLUSTER_LABEL, Labels},
    value::{DecodeError, InvalidReason},
    values::IdentityEntry,
    watch_store::{Event, Validator, WatchStore, WatchStoreConfig, WatchStoreStats},
};

/// The identities of one cluster (its master keys), fed by a watch.
///
/// One writer (the [`IdentityCacheRunner`]), many readers; cheap to clone.
/// For a remote cluster, [`IdentityCache::remote`] accepts only identities in
/// that cluster's ID block whose labels name that cluster.
#[derive(Debug, Clone)]
pub struct IdentityCache {
    inner: Arc<RwLock<Tables>>,
    synced: watch::Receiver<bool>,
    stats: Arc<WatchStoreStats>,
}

#[derive(Debug, Default)]
struct Tables {
    by_id: HashMap<NumericIdentity, Labels>,
    /// Canonical labels → every master ID that holds them (usually one; an
    /// unused master waiting for GC may add another).
    by_labels: HashMap<String, BTreeSet<NumericIdentity>>,
}

/// Feeds an [`IdentityCache`] from etcd.
pub struct IdentityCacheRunner {
    store: WatchStore<IdentityEntry>,
    events: mpsc::Receiver<Event<IdentityEntry>>,
    inner: Arc<RwLock<Tables>>,
    synced: watch::Sender<bool>,
    forward: Option<mpsc::Sender<Event<IdentityEntry>>>,
}

impl std::fmt::Debug for IdentityCacheRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityCacheRunner")
            .field("store", &self.store)
            .finish()
    }
}

impl IdentityCache {
    /// The local cluster's identities.
    pub fn local(client: Client) -> (Self, IdentityCacheRunner) {
        Self::with_store(WatchStore::new(
            client,
            WatchStoreConfig::new(keys::identity_masters()).with_name("identities"),
        ))
    }

    /// A remote cluster's identities, read-only and validated: an identity is
    /// accepted only inside `cluster`'s ID block (never reserved) and only with
    /// the label `io.cilium.k8s.policy.cluster=<name>`. Waits for the remote's
    /// identities canary before listing.
    pub fn remote(
        client: Client,
        name: &ClusterName,
        cluster: ClusterId,
        mode: MaxConnectedClusters,
    ) -> (Self, IdentityCacheRunner) {
        let config = WatchStoreConfig::new(keys::identity_masters())
            .with_canary(keys::canary(name, keys::IDENTITIES_STORE))
            .with_name(format!("{name}/identities"));
        let (store, rx) = WatchStore::new(client, config);
        let store = store.with_validator(remote_identity_validator(name, cluster, mode));
        Self::with_store((store, rx))
    }

    fn with_store(
        (store, events): (
            WatchStore<IdentityEntry>,
            mpsc::Receiver<Event<IdentityEntry>>,
        ),
    ) -> (Self, IdentityCacheRunner) {
        let inner = Arc::new(RwLock::new(Tables::default()));
        let (synced_tx, synced_rx) = watch::channel(false);
        let stats = store.stats();
        (
            Self {
                inner: inner.clone(),
                synced: synced_rx,
                stats,
            },
            IdentityCacheRunner {
                store,
                events,
                inner,
                synced: synced_tx,
                forward: None,
            },
        )
    }

    /// The labels of an identity.
    pub fn get(&self, id: NumericIdentity) -> Option<Labels> {
        self.read().by_id.get(&id).cloned()
    }

    /// The identity of a label set, if one exists (the lowest when several do).
    pub fn lookup(&self, labels: &Labels) -> Option<NumericIdentity> {
        self.lookup_canonical(&labels.canonical())
    }

    pub(crate) fn lookup_canonical(&self, canonical: &str) -> Option<NumericIdentity> {
        self.read()
            .by_labels
            .get(canonical)
            .and_then(|ids| ids.first().copied())
    }

    pub fn contains(&self, id: NumericIdentity) -> bool {
        self.read().by_id.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every identity and its labels.
    pub fn snapshot(&self) -> Vec<(NumericIdentity, Labels)> {
        let mut all: Vec<_> = self
            .read()
            .by_id
            .iter()
            .map(|(id, l)| (*id, l.clone()))
            .collect();
        all.sort_by_key(|(id, _)| *id);
        all
    }

    /// How many identities fall in `range`.
    pub fn count_in(&self, range: IdentityRange) -> usize {
        self.read()
            .by_id
            .keys()
            .filter(|id| range.contains(**id))
            .count()
    }

    /// Whether the initial list is complete.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the initial list is complete (returns at once if it is).
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Counters of the underlying watch (invalid values, errors).
    pub fn stats(&self) -> &Arc<WatchStoreStats> {
        &self.stats
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        self.inner.read().expect("identity cache lock")
    }
}

impl IdentityCacheRunner {
    /// Also deliver every event, after the cache applied it, to `tx` (e.g. to
    /// update policy incrementally).
    pub fn forward_to(mut self, tx: mpsc::Sender<Event<IdentityEntry>>) -> Self {
        self.forward = Some(tx);
        self
    }

    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), Error> {
        let store_shutdown = shutdown.child_token();
        let store = self.store.run(store_shutdown.clone());
        tokio::pin!(store);
        let mut store_done = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = &mut store, if !store_done => {
                    store_done = true;
                    r?;
                }
                event = self.events.recv() => {
                    let Some(event) = event else { break };
                    apply(&self.inner, &self.synced, &event);
                    if let Some(tx) = &self.forward {
                        let _ = tx.send(event).await;
                    }
                }
            }
        }
        store_shutdown.cancel();
        Ok(())
    }
}

fn apply(inner: &RwLock<Tables>, synced: &watch::Sender<bool>, event: &Event<IdentityEntry>) {
    let mut t = inner.write().expect("identity cache lock");
    match event {
        Event::Upsert { value, .. } => {
            if let Some(old) = t.by_id.insert(value.id, value.labels.clone()) {
                remove_label_index(&mut t, &old.canonical(), value.id);
            }
            t.by_labels
                .entry(value.labels.canonical())
                .or_default()
                .insert(value.id);
        }
        Event::Delete { key } => {
            if let Some(id) = keys::parse_identity_master(key)
                && let Some(old) = t.by_id.remove(&id)
            {
                remove_label_index(&mut t, &old.canonical(), id);
            }
        }
        Event::Synced => {
            synced.send_replace(true);
        }
    }
}

fn remove_label_index(t: &mut Tables, canonical: &str, id: NumericIdentity) {
    if let Some(ids) = t.by_labels.get_mut(canonical) {
        ids.remove(&id);
        if ids.is_empty() {
            t.by_labels.remove(canonical);
        }
    }
}

/// The checks for identities read from remote cluster `name` (DESIGN §4):
/// the ID is inside the cluster's block and the identity carries
/// `io.cilium.k8s.policy.cluster=<name>`.
///
/// Reserved identities (below 256) are refused: they mean the same in every
/// cluster, only the local agent defines them, and their master keys never
/// reach etcd. Accepting one would let a remote give a reserved ID (say
/// `world`) the labels of a local workload, and so pass a policy written for
/// that workload. A remote block never holds a reserved ID (a remote's
/// cluster ID is never 0), so this check comes first only to count it under
/// its own reason.
pub fn remote_identity_validator(
    name: &ClusterName,
    cluster: ClusterId,
    mode: MaxConnectedClusters,
) -> Validator<IdentityEntry> {
    let name = name.clone();
    let block = IdentityRange::block(cluster, mode);
    Arc::new(move |key: &str, entry: &IdentityEntry| {
        if entry.id.is_reserved() {
            return Err(DecodeError::new(
                "identity",
                key,
                InvalidReason::ReservedIdentity,
                format!(
                    "{} is a reserved identity; only the local agent defines it",
                    entry.id
                ),
            ));
        }
        if !block.contains(entry.id) {
            return Err(DecodeError::new(
                "identity",
                key,
                InvalidReason::IdentityOutOfRange,
                format!("{} is outside cluster {name}'s range {block}", entry.id),
            ));
        }
        match entry.labels.cluster() {
            Some(c) if c == name.as_str() => Ok(()),
            other => Err(DecodeError::new(
                "identity",
                key,
                InvalidReason::InvalidLabels,
                format!(
                    "label {CLUSTER_LABEL} is {other:?}, expected {:?}",
                    name.as_str()
                ),
            )),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Label;

    #[test]
    fn remote_validation() {
        let name = ClusterName::new("c3").unwrap();
        let mode = MaxConnectedClusters::C255;
        let validate = remote_identity_validator(&name, ClusterId::new(3, mode).unwrap(), mode);
        let labels = |cluster: &str| -> Labels {
            [Label::k8s("app", "x"), Label::k8s(CLUSTER_LABEL, cluster)]
                .into_iter()
                .collect()
        };
        let entry = |id: u32, cluster: &str| IdentityEntry {
            id: NumericIdentity::new(id),
            labels: labels(cluster),
        };
        assert!(validate("k", &entry(3 << 16 | 300, "c3")).is_ok());
        assert_eq!(
            validate("k", &entry(4 << 16 | 300, "c3"))
                .unwrap_err()
                .reason,
            InvalidReason::IdentityOutOfRange
        );
        assert_eq!(
            validate("k", &entry(3 << 16 | 300, "c4"))
                .unwrap_err()
                .reason,
            InvalidReason::InvalidLabels
        );
        for id in [0, 1, 2, 6, 200, 255] {
            assert_eq!(
                validate("k", &entry(id, "c3")).unwrap_err().reason,
                InvalidReason::ReservedIdentity,
                "reserved identities are the local agent's alone ({id})"
            );
        }
    }

    #[test]
    fn tables_follow_events() {
        let inner = RwLock::new(Tables::default());
        let (synced, _rx) = watch::channel(false);
        let labels: Labels = [Label::k8s("app", "x")].into_iter().collect();
        let up = |id: u32| Event::Upsert {
            key: id.to_string(),
            value: IdentityEntry {
                id: NumericIdentity::new(id),
                labels: labels.clone(),
            },
        };
        apply(&inner, &synced, &up(300));
        apply(&inner, &synced, &up(299));
        assert_eq!(
            inner.read().unwrap().by_labels[&labels.canonical()].first(),
            Some(&NumericIdentity::new(299))
        );
        apply(&inner, &synced, &Event::Delete { key: "299".into() });
        apply(&inner, &synced, &Event::Delete { key: "300".into() });
        let t = inner.read().unwrap();
        assert!(t.by_id.is_empty() && t.by_labels.is_empty());
    }
}
