//! One remote cluster's connection, from its config file's appearance to
//! its removal, as a state machine:
//!
//! ```text
//!   ┌──────────── Resync (at once) ──────────────┐
//!   v                                            │
//! Connecting ──(connected, config accepted)──> Watching
//!   │   ^                                        │
//!   │   └────────── backoff ─── Waiting <────────┘ Failed
//!   └───────────── Failed ────────> Waiting
//!
//! from any state: Shutdown (stop; the datapath keeps what it has)
//!                 Removed  (drain what the remote delivered; stop)
//! ```
//!
//! Each session ends with a [`SessionEnd`]; failures carry a
//! [`FailureKind`](kvstore::remote::FailureKind). The stores outlive the
//! sessions, so a new connection delivers only the difference.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use kvstore::{
    Backoff, Client, ClusterId, ClusterName, Event, KeyPrefix, ListBudget, MaxConnectedClusters,
    WatchStore, WatchStoreConfig, keys, on_grid,
    remote::{ClusterIds, Probe, Reachability, probe},
    values::{ClusterConfig, MirrorStatus},
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    config::ConfigFile,
    failure::{Failure, Resync, SessionEnd},
    status::RemoteStatus,
    stores::{Connection, RemoteStores},
};
use crate::{
    control_loop::{Input, LoopHandle, StoreKind},
    metrics::{AgentMetrics, RemoteLabel},
    tables::SourceId,
};

/// How often the remotes' status is published, and a connected remote is
/// probed while it does not answer.
pub(super) const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Probes (etcd `Status` calls) a second to remotes that answer, for all of
/// them together: with hundreds of remotes, a probe a second each was most
/// of the agent's idle CPU. So up to this many remotes are probed every
/// check, and beyond it each less often (as Cilium's status checks slow
/// down with the cluster's size), down to [`SLOWEST_HEALTHY_PROBE`]
/// checks. The probe notices a remote that stops answering, an etcd that
/// fails behind a live apiserver and a restored etcd (its cluster ID or
/// revision); its answers also keep the connection's HTTP/2 keepalive
/// quiet, which pings only after a silence a second longer than the
/// probes' period (and closes a connection that died without a word 3 s
/// later). A remote that does not answer is probed every check, for a
/// fast return.
const HEALTHY_PROBES_PER_CHECK: usize = 32;
/// The most checks between two probes of a remote that answers.
const SLOWEST_HEALTHY_PROBE: usize = 10;

/// Checks between two probes of a remote that answers, with `configured`
/// remotes.
fn healthy_probe_every(configured: usize) -> u32 {
    configured
        .div_ceil(HEALTHY_PROBES_PER_CHECK)
        .clamp(1, SLOWEST_HEALTHY_PROBE) as u32
}
/// Delays between failed attempts: from half a second, doubling, up to
/// half a minute (jittered).
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What a session's attempt to connect or wait was interrupted by.
enum Interrupt {
    Shutdown,
    ConfigChanged,
}

/// Why the wait between attempts ended.
enum Wake {
    /// The backoff delay passed: try again.
    Retry,
    Interrupted(Interrupt),
    /// The service cache TTL ran out first.
    ServicesExpired,
}

/// What stays the same over a remote's connections.
pub(super) struct RemoteCluster {
    name: ClusterName,
    config: ConfigFile,
    local_id: ClusterId,
    mode: MaxConnectedClusters,
    source: SourceId,
    control: LoopHandle,
    ids: ClusterIds,
    status: RemoteStatus,
    metrics: Arc<AgentMetrics>,
    stores: RemoteStores,
    /// The etcd cluster ID that answered last: another one is another etcd.
    pinned_etcd: Option<u64>,
    backoff: Backoff,
    reach: Reachability,
    /// See [`Spec::tls_generation`].
    tls_generation: Arc<AtomicU64>,
    /// See [`Spec::configured`].
    configured: Arc<AtomicUsize>,
}

/// The facts a [`RemoteCluster`] starts from.
pub(super) struct Spec {
    pub name: ClusterName,
    pub config: ConfigFile,
    pub local_id: ClusterId,
    pub mode: MaxConnectedClusters,
    pub source: SourceId,
    pub control: LoopHandle,
    pub ids: ClusterIds,
    pub status: RemoteStatus,
    pub metrics: Arc<AgentMetrics>,
    /// Bumped when only the contents of the TLS files the config names
    /// change.
    pub tls_generation: Arc<AtomicU64>,
    /// Remotes configured, connected or not: how often each is probed.
    pub configured: Arc<AtomicUsize>,
    /// Room for list pages, shared by every remote's stores.
    pub list_budget: ListBudget,
}

impl RemoteCluster {
    pub(super) fn new(spec: Spec) -> Self {
        let stores = RemoteStores::new(&spec.name, spec.source, &spec.control, &spec.list_budget);
        Self {
            stores,
            name: spec.name,
            config: spec.config,
            local_id: spec.local_id,
            mode: spec.mode,
            source: spec.source,
            control: spec.control,
            ids: spec.ids,
            status: spec.status,
            metrics: spec.metrics,
            tls_generation: spec.tls_generation,
            configured: spec.configured,
            pinned_etcd: None,
            backoff: Backoff::new(RETRY_MIN, RETRY_MAX),
            reach: Reachability::default(),
        }
    }

    /// Connects, watches and reconnects until `shutdown`, or until `config`
    /// says the remote was removed (`None`).
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
                SessionEnd::Removed => return self.remove().await,
                SessionEnd::Resync(why) => info!(remote = %self.name, "{why}"),
                SessionEnd::Failed(_) => unreachable!("handled above"),
            }
        }
        self.ids.release(&self.name);
    }

    /// A failure: counted and shown; a refused remote's data withdrawn;
    /// then the wait before the next attempt (`None`: try again now).
    async fn after_failure(
        &mut self,
        failure: &Failure,
        config: &mut watch::Receiver<Option<ConfigFile>>,
        shutdown: &CancellationToken,
    ) -> Option<SessionEnd> {
        self.fail(failure);
        if failure.kind.refuses() {
            self.withdraw().await;
        }
        // Unreachable between sessions counts towards the service cache
        // TTL too (the connection broke, and reconnecting fails).
        self.reach.unreachable();
        let ttl = self.service_cache_ttl();
        loop {
            // The service cache TTL may run out while waiting.
            let deadline = self.reach.services_deadline(ttl);
            let expiry = async move {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                    None => std::future::pending().await,
                }
            };
            let woke = tokio::select! {
                waited = self.backoff.wait(shutdown) => {
                    if waited { Wake::Retry } else { Wake::Interrupted(Interrupt::Shutdown) }
                }
                _ = config_change(config) => Wake::Interrupted(Interrupt::ConfigChanged),
                _ = expiry => Wake::ServicesExpired,
            };
            match woke {
                Wake::Retry => return None,
                Wake::Interrupted(Interrupt::Shutdown) => return Some(SessionEnd::Shutdown),
                Wake::Interrupted(Interrupt::ConfigChanged) => {
                    return Some(self.config_changed(config));
                }
                Wake::ServicesExpired => self.drop_services(ttl).await,
            }
        }
    }

    /// The config file changed: the new one is used from the next
    /// connection on, or the remote was removed.
    fn config_changed(&mut self, config: &mut watch::Receiver<Option<ConfigFile>>) -> SessionEnd {
        match config.borrow_and_update().clone() {
            Some(file) => {
                self.config = file;
                SessionEnd::Resync(Resync::ConfigChanged)
            }
            None => SessionEnd::Removed,
        }
    }

    fn service_cache_ttl(&self) -> Option<Duration> {
        self.config.as_ref().ok().and_then(|c| c.service_cache_ttl)
    }

    /// The service cache TTL ran out: the remote's services go (they come
    /// back with the next full list).
    async fn drop_services(&mut self, ttl: Option<Duration>) {
        warn!(
            remote = %self.name,
            ?ttl,
            "remote unreachable longer than its service cache TTL; dropping its services"
        );
        self.stores.drain_services().await;
        self.reach.services_dropped = true;
    }

    fn fail(&self, f: &Failure) {
        warn!(
            remote = %self.name,
            kind = %f.kind,
            error = f.message,
            "remote cluster not ready"
        );
        let label = RemoteLabel {
            cluster: self.name.to_string(),
        };
        self.metrics.remote_failures.get_or_create(&label).inc();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.metrics
            .remote_last_failure
            .get_or_create(&label)
            .set(now as i64);
        self.status.failed(f);
    }

    /// The remote's config was refused: what it delivered goes, and status
    /// shows no entries for it (its connection is not in use).
    async fn withdraw(&mut self) {
        self.status.withdrawn();
        warn!(
            remote = %self.name,
            "the remote's cluster config is refused; withdrawing its entries"
        );
        self.stores.drain().await;
        self.control.send(Input::RemoveSource(self.source)).await;
    }

    /// The remote's config file is gone: what it delivered goes with it.
    async fn remove(mut self) {
        info!(
            remote = %self.name,
            "remote cluster config removed; draining its entries"
        );
        self.stores.drain().await;
        self.ids.release(&self.name);
        // Every delete reaches the loop before the source is forgotten.
        self.stores.close().await;
        self.control.send(Input::RemoveSource(self.source)).await;
    }

    /// One connection, from connecting to its end.
    async fn session(
        &mut self,
        config: &mut watch::Receiver<Option<ConfigFile>>,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let connected = tokio::select! {
            _ = shutdown.cancelled() => Err(Interrupt::Shutdown),
            _ = config_change(config) => Err(Interrupt::ConfigChanged),
            connected = self.connect() => Ok(connected),
        };
        let (client, cluster_config, id) = match connected {
            Ok(Ok(connected)) => connected,
            Ok(Err(failure)) => return SessionEnd::Failed(failure),
            Err(Interrupt::Shutdown) => return SessionEnd::Shutdown,
            Err(Interrupt::ConfigChanged) => return self.config_changed(config),
        };
        let end = self
            .watch(&client, &cluster_config, id, config, shutdown)
            .await;
        self.status.ended();
        self.stores.stop().await;
        self.ids.release(&self.name);
        end
    }

    /// How often a remote that answers is probed, with the remotes
    /// configured now.
    fn healthy_probe_period(&self) -> Duration {
        CHECK_INTERVAL * healthy_probe_every(self.configured.load(Ordering::Relaxed))
    }

    /// Connecting: TLS, the remote etcd's identity, its cluster config.
    async fn connect(&mut self) -> Result<(Client, ClusterConfig, ClusterId), Failure> {
        let probe_every = self.healthy_probe_period();
        let (client, cluster_config) =
            kvstore::remote::reach(&self.name, &self.config, &mut self.pinned_etcd, probe_every)
                .await?;
        let id = self
            .ids
            .admit(&self.name, &cluster_config, self.local_id, self.mode)?;
        let cached = cluster_config.capabilities.cached;
        self.status.connected(
            format!(
                "id={} maxConnectedClusters={}",
                cluster_config.id, self.mode
            ),
            cached.then_some("kvstoremesh"),
        );
        info!(
            remote = %self.name,
            id = id.get(),
            via = if cached { "kvstoremesh" } else { "direct" },
            "connected to remote cluster"
        );
        Ok((client, cluster_config, id))
    }

    /// Watching: the stores list and watch; the remote is probed (every
    /// [`CHECK_INTERVAL`] while it does not answer, less often while it
    /// does) until the session ends.
    async fn watch(
        &mut self,
        client: &Client,
        cluster_config: &ClusterConfig,
        id: ClusterId,
        config: &mut watch::Receiver<Option<ConfigFile>>,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        self.control
            .send(Input::RegisterSource {
                id: self.source,
                name: self.name.to_string(),
                cluster_id: id.get(),
                kinds: StoreKind::REMOTE.to_vec(),
                pod_cidr_pools: self
                    .config
                    .as_ref()
                    .map(|c| c.pod_cidr_pools.clone())
                    .unwrap_or_default(),
            })
            .await;
        let cached = cluster_config.capabilities.cached;
        let source = if cached {
            keys::Source::Cache
        } else {
            keys::Source::State
        };
        self.stores.start(
            &Connection {
                client,
                name: &self.name,
                id,
                mode: self.mode,
                canaries: cluster_config.capabilities.synced_canaries,
                source,
            },
            shutdown,
        );
        self.status.watching(&self.stores.stats(), cached);
        let ttl = self.service_cache_ttl();
        // The stores just started list everything: services dropped before
        // this session come back with that list.
        self.reach = Reachability::default();
        let mut highest_revision = 0;
        // Through kvstoremesh: how it sees this remote, followed with a
        // watch (shared upstream by the apiserver's fan-out) for as long as
        // the session lasts.
        let mirror_watch = shutdown.child_token();
        let _stop_mirror_watch = mirror_watch.clone().drop_guard();
        let mut mirror_events = cached.then(|| {
            let (store, rx) = WatchStore::<MirrorStatus>::new(
                client.clone(),
                WatchStoreConfig::new(KeyPrefix::new(keys::KVSTOREMESH))
                    .with_name(format!("{}/kvstoremesh status", self.name)),
            );
            tokio::spawn(store.run(mirror_watch));
            rx
        });
        // The first probe at once.
        let mut next_probe = tokio::time::Instant::now();
        // What the last probe said.
        let mut answered = true;
        // The TLS files this session's channel was built from: the channel
        // reconnects by itself with them, so once they changed and the
        // remote stops answering (its server presents a certificate of a
        // new CA, say), the session ends and the next one reads the files.
        let tls_generation = self.tls_generation.load(Ordering::Relaxed);
        loop {
            let interrupted = tokio::select! {
                _ = shutdown.cancelled() => Some(Interrupt::Shutdown),
                _ = config_change(config) => Some(Interrupt::ConfigChanged),
                _ = tokio::time::sleep_until(next_probe) => None,
                event = next_event(&mut mirror_events) => {
                    match event {
                        Some(Event::Upsert { key, value }) if key == self.name.as_str() => {
                            self.status.mirror(Some(value));
                        }
                        Some(Event::Delete { key }) if key == self.name.as_str() => {
                            self.status.mirror(None);
                        }
                        Some(_) => {}
                        None => mirror_events = None,
                    }
                    continue;
                }
            };
            match interrupted {
                None => {}
                Some(Interrupt::Shutdown) => return SessionEnd::Shutdown,
                Some(Interrupt::ConfigChanged) => return self.config_changed(config),
            }
            let reachable = match probe(client, self.pinned_etcd, &mut highest_revision).await {
                Probe::Answers => {
                    self.status.probed(true);
                    true
                }
                Probe::Unreachable(_)
                    if self.tls_generation.load(Ordering::Relaxed) != tls_generation =>
                {
                    return SessionEnd::Resync(Resync::TlsFilesChanged);
                }
                Probe::Unreachable(failure) => {
                    self.status.unreachable(&failure);
                    false
                }
                Probe::End(end) => return end,
            };
            if reachable && !answered {
                // Back from a partition or an outage: the stores need not
                // wait out their backoff (up to 5 s) to list again.
                self.stores.retry_now();
            }
            answered = reachable;
            // The next probe: soon while it does not answer (for a fast
            // return, and the service cache TTL), less often with many
            // remotes while it does.
            // On a grid: the probes of many remotes due in the same second
            // share one wakeup.
            next_probe = on_grid(
                tokio::time::Instant::now()
                    + if reachable {
                        self.healthy_probe_period()
                    } else {
                        CHECK_INTERVAL
                    },
                CHECK_INTERVAL,
            );
            if reachable {
                self.reach.answers();
                if self.reach.services_dropped {
                    // The services store was drained: reconnect, so that a
                    // new list restores them.
                    return SessionEnd::Resync(Resync::ReachableAgain);
                }
                self.backoff.reset();
            } else {
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
    }
}

/// The next event of a watch that may not exist (never, then).
async fn next_event<V>(rx: &mut Option<mpsc::Receiver<Event<V>>>) -> Option<Event<V>> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves when the config file changes (a new version, or `None` for its
/// removal); never once the sender is gone (the agent is stopping).
async fn config_change(config: &mut watch::Receiver<Option<ConfigFile>>) {
    if config.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::healthy_probe_every;

    #[test]
    fn probes_slow_down_with_the_number_of_remotes() {
        assert_eq!(healthy_probe_every(0), 1);
        assert_eq!(healthy_probe_every(8), 1);
        assert_eq!(healthy_probe_every(32), 1);
        assert_eq!(healthy_probe_every(33), 2);
        assert_eq!(healthy_probe_every(128), 4);
        assert_eq!(healthy_probe_every(255), 8);
        assert_eq!(healthy_probe_every(511), 10);
    }
}
