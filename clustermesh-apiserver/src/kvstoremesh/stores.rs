//! A remote's five mirrors, one per [`StateKind`]: a watch store on the
//! remote (kept across connections, so that each connection delivers only
//! the difference) feeding an exclusive sync store on the local cache
//! prefix (which sweeps whatever it was not told to keep, then writes the
//! cache canary).

use std::sync::Arc;

use kvstore::{
    Client, ClusterName, Event, RawEntry, RestartableWatchStore, SessionHandle, SyncStatus,
    SyncStore, SyncStoreConfig, WatchStoreConfig, WatchStoreStats, WatchTask,
    keys::{Source, StateKind},
};
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::validation::validator;

/// What one connection's stores read.
pub(super) struct Connection<'a> {
    pub(super) client: &'a Client,
    /// The remote writes sync canaries: wait for each before listing.
    pub(super) canaries: bool,
    /// Where its state is: its own `cilium/state/…`, or, when the remote is
    /// itself a kvstoremesh mirror (`cached`), its `cilium/cache/…`.
    pub(super) source: Source,
    /// The remote says whether it exports services (MCS-API); otherwise
    /// its service exports are not read, and their cache is empty and
    /// marked synced.
    pub(super) service_exports: bool,
}

/// The counters of one kind, for status and metrics.
pub(super) struct KindStats {
    pub(super) kind: StateKind,
    pub(super) watch: Arc<WatchStoreStats>,
    pub(super) cache: SyncStatus,
}

/// One kind: its watch store, idle between connections or running in a
/// task of its own, and the handle of its cache.
struct KindMirror {
    kind: StateKind,
    stats: Arc<WatchStoreStats>,
    task: WatchTask<RawEntry>,
    cache: SyncStore<RawEntry>,
    /// Marks the cache synced after every event already sent (see
    /// [`forward`]).
    mark_synced: mpsc::UnboundedSender<()>,
}

impl KindMirror {
    fn start(
        &mut self,
        remote: &ClusterName,
        connection: &Connection<'_>,
        parent: &CancellationToken,
    ) {
        let (kind, source) = (self.kind, connection.source);
        self.task.start(connection.client, parent, |store| {
            store.set_prefix(
                kind.prefix(remote, source),
                Some(kind.relative_to(remote, source)),
            );
            store.set_canary(connection.canaries.then(|| kind.canary(remote, source)));
        });
    }

    async fn stop(&mut self) {
        self.task.stop().await;
    }

    /// Stops the store and deletes what it delivered from the cache.
    async fn drain(&mut self) {
        self.task.drain().await;
    }

    /// Empties the cache and marks it synced: the remote publishes nothing
    /// of this kind.
    async fn empty(&mut self) {
        self.drain().await;
        let _ = self.mark_synced.send(());
    }
}

/// The five mirrors of a remote and the tasks behind them: one forwarder
/// and one cache writer per kind.
pub(super) struct MirrorStores {
    remote: ClusterName,
    kinds: Vec<KindMirror>,
    background: JoinSet<()>,
    cache_shutdown: CancellationToken,
}

impl MirrorStores {
    /// The mirrors, with their cache writers running on `local` (on the
    /// session lease) until [`MirrorStores::close`] or `shutdown`. Nothing
    /// is read from the remote until [`MirrorStores::start`].
    pub(super) fn new(
        remote: &ClusterName,
        local: &Client,
        session: &SessionHandle,
        shutdown: &CancellationToken,
    ) -> Self {
        let cache_shutdown = shutdown.child_token();
        let mut background = JoinSet::new();
        let kinds = StateKind::ALL
            .into_iter()
            .map(|kind| {
                let mut cache_config = SyncStoreConfig::new(kind.prefix(remote, Source::Cache))
                    .with_canary(kind.canary(remote, Source::Cache))
                    .exclusive();
                cache_config.name = format!("{remote}/{} cache", kind.as_str());
                let (cache, runner) =
                    SyncStore::<RawEntry>::new(local.clone(), session.clone(), cache_config);
                background.spawn({
                    let token = cache_shutdown.clone();
                    let name = format!("{remote}/{}", kind.as_str());
                    async move {
                        if let Err(e) = runner.run(token).await {
                            error!(cache = name, error = %e, "writing the cache stopped");
                        }
                    }
                });
                let watch_config = WatchStoreConfig::new(kind.prefix(remote, Source::State))
                    .relative_to(kind.relative_to(remote, Source::State))
                    .with_name(format!("{remote}/{}", kind.as_str()));
                let (store, events) = RestartableWatchStore::new(watch_config);
                let store = store.with_validator(validator(kind, remote));
                let (mark_synced, marks) = mpsc::unbounded_channel();
                background.spawn(forward(kind, remote.clone(), events, marks, cache.clone()));
                KindMirror {
                    kind,
                    stats: store.stats(),
                    task: WatchTask::new(format!("{remote}/{}", kind.as_str()), store),
                    cache,
                    mark_synced,
                }
            })
            .collect();
        Self {
            remote: remote.clone(),
            kinds,
            background,
            cache_shutdown,
        }
    }

    /// Lists and watches every kind through `connection` (service exports
    /// only if the remote has them; otherwise their cache is emptied and
    /// marked synced).
    pub(super) async fn start(&mut self, connection: &Connection<'_>, parent: &CancellationToken) {
        for mirror in &mut self.kinds {
            if mirror.kind == StateKind::ServiceExports && !connection.service_exports {
                mirror.empty().await;
            } else {
                mirror.start(&self.remote, connection, parent);
            }
        }
    }

    /// Stops reading the remote; the cache keeps what it has.
    pub(super) async fn stop(&mut self) {
        for mirror in &mut self.kinds {
            mirror.stop().await;
        }
    }

    /// Stops reading the remote and deletes everything it delivered from
    /// the cache (its cluster config was refused).
    pub(super) async fn drain(&mut self) {
        for mirror in &mut self.kinds {
            mirror.drain().await;
        }
    }

    /// Stops the services and service exports mirrors and deletes what they
    /// delivered (the remote was unreachable longer than its service cache
    /// TTL); the next connection lists them again.
    pub(super) async fn drain_services(&mut self) {
        for mirror in &mut self.kinds {
            if matches!(mirror.kind, StateKind::Services | StateKind::ServiceExports) {
                mirror.drain().await;
            }
        }
    }

    /// Each kind's counters.
    pub(super) fn stats(&self) -> Vec<KindStats> {
        self.kinds
            .iter()
            .map(|m| KindStats {
                kind: m.kind,
                watch: m.stats.clone(),
                cache: m.cache.status(),
            })
            .collect()
    }

    /// Stops everything: the watch stores, their forwarders, the cache
    /// writers. What is in the cache stays (on the session lease) until the
    /// caller deletes it.
    pub(super) async fn close(mut self) {
        self.stop().await;
        // Dropping the stores ends the forwarders.
        drop(std::mem::take(&mut self.kinds));
        self.cache_shutdown.cancel();
        while let Some(joined) = self.background.join_next().await {
            if let Err(e) = joined {
                warn!(remote = %self.remote, error = %e, "a mirror task failed");
            }
        }
    }
}

/// The cache key (relative to `kind.prefix(remote, Cache)`) of a key read
/// from the remote (relative to `kind.relative_to(remote, source)`, the same
/// from either source): `c2/n1` → `n1` for nodes, `196708` → `196708` for
/// identities.
pub(super) fn cache_key(kind: StateKind, remote: &ClusterName, key: &str) -> Option<String> {
    let full = kind.relative_to(remote, Source::Cache).key(key);
    kind.prefix(remote, Source::Cache)
        .strip(&full)
        .filter(|rest| !rest.is_empty())
        .map(str::to_owned)
}

/// Hands a watch store's events to the cache: upserts and deletes byte for
/// byte under the cache prefix, the first `Synced` as the cache's own.
/// A mark on `synced` marks the cache synced too; it is taken only when no
/// event is waiting (`biased`), so every event sent before the mark is
/// applied first.
async fn forward(
    kind: StateKind,
    remote: ClusterName,
    mut events: mpsc::Receiver<Event<RawEntry>>,
    mut synced: mpsc::UnboundedReceiver<()>,
    cache: SyncStore<RawEntry>,
) {
    let to_cache = |key: &str| {
        let mapped = cache_key(kind, &remote, key);
        if mapped.is_none() {
            warn!(remote = %remote, kind = kind.as_str(), key, "a key outside the remote's prefix; not mirrored");
        }
        mapped
    };
    loop {
        tokio::select! {
            biased;
            event = events.recv() => match event {
                Some(Event::Upsert { key, value }) => {
                    if let Some(key) = to_cache(&key) {
                        cache.upsert(&RawEntry { key, value: value.value });
                    }
                }
                Some(Event::Delete { key }) => {
                    if let Some(key) = to_cache(&key) {
                        cache.delete(&key);
                    }
                }
                Some(Event::Synced) => cache.synced(),
                None => return,
            },
            Some(()) = synced.recv() => cache.synced(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_follow_ciliums_layout() {
        let c2 = ClusterName::new("c2").unwrap();
        let full = |kind: StateKind, state_key: &str| {
            let rel = kind
                .relative_to(&c2, Source::State)
                .strip(state_key)
                .unwrap();
            kind.prefix(&c2, Source::Cache)
                .key(&cache_key(kind, &c2, rel).unwrap())
        };
        assert_eq!(
            full(
                StateKind::Identities,
                "cilium/state/identities/v1/id/196708"
            ),
            "cilium/cache/identities/v1/c2/id/196708"
        );
        assert_eq!(
            full(StateKind::Ip, "cilium/state/ip/v1/default/10.2.0.5"),
            "cilium/cache/ip/v1/c2/10.2.0.5"
        );
        assert_eq!(
            full(StateKind::Nodes, "cilium/state/nodes/v1/c2/n1"),
            "cilium/cache/nodes/v1/c2/n1"
        );
        assert_eq!(
            full(StateKind::Services, "cilium/state/services/v1/c2/ns/echo"),
            "cilium/cache/services/v1/c2/ns/echo"
        );
        assert_eq!(
            full(
                StateKind::ServiceExports,
                "cilium/state/serviceexports/v1/c2/ns/echo"
            ),
            "cilium/cache/serviceexports/v1/c2/ns/echo"
        );
        // Never outside the remote's own cache.
        assert_eq!(cache_key(StateKind::Nodes, &c2, "c3/n1"), None);
        assert_eq!(cache_key(StateKind::Nodes, &c2, "c2/"), None);
    }
}
