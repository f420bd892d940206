//! One remote's mirror, from its config file's appearance to its removal,
//! as a state machine (the agent's `remote_clusters/connection.rs` in
//! shape):
//!
//! ```text
//!   ┌──────────── Resync (at once) ──────────────┐
//!   v                                            │
//! Connecting ──(connected, config accepted)──> Mirroring
//!   │   ^                                        │
//!   │   └────────── backoff ─── Waiting <────────┘ Failed
//!   └───────────── Failed ────────> Waiting
//!
//! from any state: Shutdown (stop; the cache stays on the session lease)
//!                 Removed  (withdraw the cluster config at once; after the
//!                           drain delay delete the cache, unless the file
//!                           came back)
//! ```
//!
//! The stores outlive the connections, so a new connection writes only the
//! difference into the cache.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime},
};

use kvstore::{
    Backoff, Client, ClusterId, ClusterName, KeyPrefix, MaxConnectedClusters, RawEntry,
    SessionHandle, StoreValue, SyncStore, keys,
    remote::{ClusterIds, ConfigFile, Failure, Probe, Reachability, Resync, SessionEnd, probe},
    values::{ClusterConfig, ClusterConfigCapabilities, MirrorStatus},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    status::MirrorCell,
    stores::{Connection, KindStats, MirrorStores},
};

/// The timings of a mirror (from [`super::KvstoremeshConfig`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    pub(super) retry_min: Duration,
    pub(super) retry_max: Duration,
    pub(super) check_interval: Duration,
    pub(super) drain_delay: Duration,
}

/// What a mirror is made of.
pub(super) struct Spec {
    pub(super) name: ClusterName,
    pub(super) file: ConfigFile,
    pub(super) local_id: ClusterId,
    pub(super) mode: MaxConnectedClusters,
    /// `--service-cache-ttl`; the config file's own wins.
    pub(super) default_service_cache_ttl: Option<Duration>,
    pub(super) ids: ClusterIds,
    /// The local etcd and the session lease everything is written on.
    pub(super) local: Client,
    pub(super) session: SessionHandle,
    /// `cilium/cluster-config/` of the local etcd (shared, not exclusive:
    /// the local apiserver publishes its own there).
    pub(super) cluster_configs: SyncStore<RawEntry>,
    /// `cilium/kvstoremesh/v1/` of the local etcd.
    pub(super) statuses: SyncStore<RawEntry>,
    pub(super) cell: MirrorCell,
    pub(super) timing: Timing,
}

/// How the wait after a removal ended.
enum Removal {
    /// The drain delay passed: delete the cache.
    Drain,
    /// The file is back: connect again.
    Returned,
    Shutdown,
}

pub(super) struct Mirror {
    name: ClusterName,
    file: ConfigFile,
    local_id: ClusterId,
    mode: MaxConnectedClusters,
    default_service_cache_ttl: Option<Duration>,
    ids: ClusterIds,
    local: Client,
    cluster_configs: SyncStore<RawEntry>,
    statuses: SyncStore<RawEntry>,
    cell: MirrorCell,
    timing: Timing,
    stores: MirrorStores,
    backoff: Backoff,
    /// The remote etcd's cluster ID, as first seen.
    pinned_etcd: Option<u64>,
    reach: Reachability,
    /// The last status published at `cilium/kvstoremesh/v1/<remote>`.
    published_status: Option<MirrorStatus>,
}

impl Mirror {
    /// A mirror; its cache writers run from now on (until shutdown), but
    /// nothing is read before [`Mirror::run`].
    pub(super) fn new(spec: Spec, shutdown: &CancellationToken) -> Self {
        let stores = MirrorStores::new(&spec.name, &spec.local, &spec.session, shutdown);
        Self {
            backoff: Backoff::new(spec.timing.retry_min, spec.timing.retry_max),
            name: spec.name,
            file: spec.file,
            local_id: spec.local_id,
            mode: spec.mode,
            default_service_cache_ttl: spec.default_service_cache_ttl,
            ids: spec.ids,
            local: spec.local,
            cluster_configs: spec.cluster_configs,
            statuses: spec.statuses,
            cell: spec.cell,
            timing: spec.timing,
            stores,
            pinned_etcd: None,
            reach: Reachability::default(),
            published_status: None,
        }
    }

    /// Mirrors the remote until `shutdown` (the cache stays) or until its
    /// file is removed for longer than the drain delay (the cache goes).
    /// `config` carries the file's new versions, `None` for its removal.
    pub(super) async fn run(
        mut self,
        mut config: watch::Receiver<Option<ConfigFile>>,
        shutdown: CancellationToken,
    ) {
        loop {
            let end = match self.session(&mut config, &shutdown).await {
                SessionEnd::Failed(failure) => {
                    match self.after_failure(&failure, &mut config, &shutdown).await {
                        None => continue,
                        Some(end) => end,
                    }
                }
                end => end,
            };
            match end {
                SessionEnd::Shutdown => break,
                SessionEnd::Removed => match self.removed(&mut config, &shutdown).await {
                    Removal::Returned => {}
                    Removal::Shutdown => break,
                    Removal::Drain => return self.drain(&shutdown).await,
                },
                SessionEnd::Resync(why) => info!(remote = %self.name, ?why, "reconnecting"),
                SessionEnd::Failed(_) => unreachable!("handled above"),
            }
        }
        self.stores.close().await;
    }

    /// One connection, from connecting to its end.
    async fn session(
        &mut self,
        config: &mut watch::Receiver<Option<ConfigFile>>,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return SessionEnd::Shutdown,
            _ = config_change(config) => return self.config_changed(config),
            connected = self.connect() => connected,
        };
        let (client, cluster_config, id) = match connected {
            Ok(connected) => connected,
            Err(failure) => return SessionEnd::Failed(failure),
        };
        self.publish_cluster_config(&cluster_config, id);
        let capabilities = &cluster_config.capabilities;
        let source = if capabilities.cached {
            keys::Source::Cache
        } else {
            keys::Source::State
        };
        // The stores list everything: services dropped before this
        // connection come back with that list.
        self.reach = Reachability::default();
        self.stores
            .start(
                &Connection {
                    client: &client,
                    canaries: capabilities.synced_canaries,
                    source,
                    service_exports: capabilities.service_exports_enabled.is_some(),
                },
                shutdown,
            )
            .await;
        let end = self.mirror(&client, config, shutdown).await;
        self.stores.stop().await;
        end
    }

    /// Connecting: TLS, the remote etcd's identity, its cluster config.
    async fn connect(&mut self) -> Result<(Client, ClusterConfig, ClusterId), Failure> {
        let (client, cluster_config) = kvstore::remote::reach(
            &self.name,
            &self.file,
            &mut self.pinned_etcd,
            self.timing.check_interval,
        )
        .await?;
        let id = self
            .ids
            .admit(&self.name, &cluster_config, self.local_id, self.mode)?;
        {
            let mut cell = self.cell.lock();
            cell.view.cluster_id = Some(id.get());
            cell.view.connected = true;
            cell.progress.connected = true;
        }
        info!(
            remote = %self.name,
            id = id.get(),
            chained = cluster_config.capabilities.cached,
            "connected to remote cluster; mirroring"
        );
        Ok((client, cluster_config, id))
    }

    /// `cilium/cluster-config/<remote>` in the local etcd: the remote's ID
    /// and capabilities, as a cache with canaries.
    fn publish_cluster_config(&self, remote: &ClusterConfig, id: ClusterId) {
        let config = ClusterConfig {
            id: id.get(),
            capabilities: ClusterConfigCapabilities {
                synced_canaries: true,
                cached: true,
                max_connected_clusters: self.mode.as_u32(),
                service_exports_enabled: remote.capabilities.service_exports_enabled,
            },
        };
        self.cluster_configs.upsert(&RawEntry {
            key: self.name.to_string(),
            value: config.encode(),
        });
    }

    /// Mirroring: the stores list and watch; the remote is asked every
    /// check interval whether it answers, and the status refreshed.
    async fn mirror(
        &mut self,
        client: &Client,
        config: &mut watch::Receiver<Option<ConfigFile>>,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let ttl = self.service_cache_ttl();
        let mut highest_revision = 0;
        let mut check = tokio::time::interval(self.timing.check_interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return SessionEnd::Shutdown,
                _ = config_change(config) => return self.config_changed(config),
                _ = check.tick() => {}
            }
            let outage = match probe(client, self.pinned_etcd, &mut highest_revision).await {
                Probe::Answers => None,
                Probe::Unreachable(failure) => Some(failure),
                Probe::End(end) => return end,
            };
            match &outage {
                None => {
                    self.reach.answers();
                    if self.reach.services_dropped {
                        return SessionEnd::Resync(Resync::ReachableAgain);
                    }
                    self.backoff.reset();
                }
                Some(failure) => {
                    if !self.reach.is_unreachable() {
                        // One outage, one failure.
                        self.count_failure(failure);
                    }
                    self.reach.unreachable();
                    if self
                        .reach
                        .services_deadline(ttl)
                        .is_some_and(|d| Instant::now() >= d)
                    {
                        self.drop_services(ttl).await;
                    }
                }
            }
            self.refresh(outage.as_ref());
        }
    }

    /// A failed attempt: counted and shown; a refused remote's data
    /// withdrawn; then the wait before the next attempt (`None`: try again).
    async fn after_failure(
        &mut self,
        failure: &Failure,
        config: &mut watch::Receiver<Option<ConfigFile>>,
        shutdown: &CancellationToken,
    ) -> Option<SessionEnd> {
        self.count_failure(failure);
        if failure.kind.refuses() {
            self.withdraw().await;
        }
        self.reach.unreachable();
        self.show_failure(failure);
        let ttl = self.service_cache_ttl();
        loop {
            let deadline = self.reach.services_deadline(ttl);
            let expiry = async move {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                waited = self.backoff.wait(shutdown) => {
                    return if waited { None } else { Some(SessionEnd::Shutdown) };
                }
                _ = config_change(config) => return Some(self.config_changed(config)),
                _ = expiry => {
                    self.drop_services(ttl).await;
                    self.show_failure(failure);
                }
            }
        }
    }

    fn config_changed(&mut self, config: &mut watch::Receiver<Option<ConfigFile>>) -> SessionEnd {
        match config.borrow_and_update().clone() {
            Some(file) => {
                self.file = file;
                SessionEnd::Resync(Resync::ConfigChanged)
            }
            None => SessionEnd::Removed,
        }
    }

    fn service_cache_ttl(&self) -> Option<Duration> {
        self.file
            .as_ref()
            .ok()
            .and_then(|c| c.service_cache_ttl)
            .or(self.default_service_cache_ttl)
    }

    async fn drop_services(&mut self, ttl: Option<Duration>) {
        warn!(
            remote = %self.name,
            ?ttl,
            "remote unreachable longer than its service cache TTL; dropping its services from the cache"
        );
        self.stores.drain_services().await;
        self.reach.services_dropped = true;
    }

    /// The remote's cluster config is refused: nothing it delivered may
    /// stay, and local agents must not find its cluster config.
    async fn withdraw(&mut self) {
        warn!(remote = %self.name, "the remote's cluster config is refused; withdrawing its cache");
        self.cluster_configs.delete(self.name.as_str());
        self.stores.drain().await;
        self.ids.release(&self.name);
        self.cell.lock().view.cluster_id = None;
    }

    fn count_failure(&self, f: &Failure) {
        warn!(remote = %self.name, kind = %f.kind, error = f.message, "remote cluster not mirrored");
        let mut cell = self.cell.lock();
        cell.view.failures += 1;
        cell.last_failure = Some(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        );
    }

    /// Not connected, and why.
    fn show_failure(&mut self, f: &Failure) {
        let stats = self.stores.stats();
        {
            let mut cell = self.cell.lock();
            let v = &mut cell.view;
            v.connected = false;
            v.ready = false;
            v.last_error = Some(f.message.clone());
            v.last_error_kind = Some(f.kind.as_str().to_owned());
            v.unreachable_since = self.reach.since_rfc3339();
            fill_counts(&mut v.entries, &mut v.invalid, &stats);
        }
        self.publish_status();
    }

    /// The status of a connected remote (`outage`: it does not answer right
    /// now).
    fn refresh(&mut self, outage: Option<&Failure>) {
        let stats = self.stores.stats();
        let connected = outage.is_none();
        let mirrored = stats.iter().all(|s| s.cache.canary_written);
        {
            let mut cell = self.cell.lock();
            let v = &mut cell.view;
            v.connected = connected;
            v.ready = connected && mirrored;
            v.unreachable_since = self.reach.since_rfc3339();
            fill_counts(&mut v.entries, &mut v.invalid, &stats);
            let (error, kind) = if let Some(f) = outage {
                (Some(f.message.clone()), Some(f.kind.as_str().to_owned()))
            } else if let Some(s) = stats.iter().find(|s| s.watch.is_waiting_for_canary()) {
                (
                    Some(format!(
                        "waiting for the {} canary of {}",
                        s.kind.as_str(),
                        self.name
                    )),
                    Some("not-synced".to_owned()),
                )
            } else if !mirrored {
                let pending: Vec<&str> = stats
                    .iter()
                    .filter(|s| !s.cache.canary_written)
                    .map(|s| s.kind.as_str())
                    .collect();
                let mut message = format!("mirroring the {} of {}", pending.join(", "), self.name);
                if let Some((_, e)) = stats.iter().find_map(|s| s.watch.last_error()) {
                    message.push_str(&format!(" (last error: {e})"));
                }
                (Some(message), Some("not-synced".to_owned()))
            } else {
                (None, None)
            };
            v.last_error = error;
            v.last_error_kind = kind;
            if v.ready {
                cell.progress.synced = true;
            }
        }
        self.publish_status();
    }

    /// `cilium/kvstoremesh/v1/<remote>`, rewritten only when it changes.
    fn publish_status(&mut self) {
        let status = self.cell.lock().view.mirror_status();
        if self.published_status.as_ref() != Some(&status) {
            self.statuses.upsert(&RawEntry {
                key: self.name.to_string(),
                value: status.encode(),
            });
            self.published_status = Some(status);
        }
    }

    /// The file is gone: the cluster config goes at once (new agents do
    /// not start on half-deleted data), the cache after the drain delay.
    async fn removed(
        &mut self,
        config: &mut watch::Receiver<Option<ConfigFile>>,
        shutdown: &CancellationToken,
    ) -> Removal {
        info!(
            remote = %self.name,
            delay = ?self.timing.drain_delay,
            "remote cluster config removed; its cluster config is withdrawn, its cache deleted after the drain delay"
        );
        self.cluster_configs.delete(self.name.as_str());
        {
            let mut cell = self.cell.lock();
            cell.view.connected = false;
            cell.view.ready = false;
            cell.view.last_error = Some("config file removed; draining".into());
            cell.view.last_error_kind = Some("removed".into());
        }
        self.publish_status();
        let drain_at = tokio::time::Instant::now() + self.timing.drain_delay;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Removal::Shutdown,
                _ = tokio::time::sleep_until(drain_at) => return Removal::Drain,
                _ = config_change(config) => {
                    if let Some(file) = config.borrow_and_update().clone() {
                        info!(remote = %self.name, "remote cluster config is back; drain canceled");
                        self.file = file;
                        return Removal::Returned;
                    }
                }
            }
        }
    }

    /// Deletes everything of the remote from the local etcd: its cache,
    /// canaries and status (retried until done or shutdown).
    async fn drain(self, shutdown: &CancellationToken) {
        let Self {
            name,
            local,
            stores,
            statuses,
            ids,
            timing,
            ..
        } = self;
        statuses.delete(name.as_str());
        // The cache writers must be gone first, or they would rewrite what
        // is deleted.
        stores.close().await;
        ids.release(&name);
        let mut prefixes: Vec<KeyPrefix> = keys::StateKind::ALL
            .iter()
            .map(|kind| keys::cache_of(kind.as_str(), &name))
            .collect();
        prefixes.push(keys::canaries_of(&name));
        let mut backoff = Backoff::new(timing.retry_min, timing.retry_max);
        for prefix in &prefixes {
            loop {
                match local.delete_prefix(prefix).await {
                    Ok(n) => {
                        info!(remote = %name, prefix = %prefix, deleted = n, "cache drained");
                        break;
                    }
                    Err(e) => {
                        warn!(remote = %name, prefix = %prefix, error = %e.full_message(), "deleting the cache failed; retrying");
                        if !backoff.wait(shutdown).await {
                            return;
                        }
                    }
                }
            }
        }
        while let Err(e) = local.delete(&keys::mirror_status(&name)).await {
            warn!(remote = %name, error = %e.full_message(), "deleting the mirror status failed; retrying");
            if !backoff.wait(shutdown).await {
                return;
            }
        }
    }
}

/// Entries and refusals of each kind, as the status shows them.
fn fill_counts(
    entries: &mut BTreeMap<String, u64>,
    invalid: &mut BTreeMap<String, u64>,
    stats: &[KindStats],
) {
    entries.clear();
    invalid.clear();
    for s in stats {
        entries.insert(s.kind.as_str().to_owned(), s.watch.entries());
        for (reason, n) in s.watch.invalid_by_reason() {
            invalid.insert(format!("{}/{}", s.kind.as_str(), reason.as_str()), n);
        }
    }
}

/// Resolves when the config file changes (a new version, or `None` for its
/// removal); never once the sender is gone (kvstoremesh is stopping).
async fn config_change(config: &mut watch::Receiver<Option<ConfigFile>>) {
    if config.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}
