//! Remote clusters: one connection per file of the clustermesh config
//! directory, each feeding the control loop as one more source.
//!
//! - [`config`]: the directory and its files;
//! - [`connection`]: one remote's connection as a state machine, with typed
//!   end reasons and failure kinds ([`failure`]);
//! - [`stores`]: its watch stores, kept across connections;
//! - [`validators`]: what its values must satisfy;
//! - [`status`]: what `status` shows of it;
//! - [`mirror`]: the configs `clustermesh connect` stores in the local etcd,
//!   mirrored into the config directory (no file copied to nodes by hand);
//! - [`report`]: the agent's report of itself in the local etcd, for
//!   `clustermesh status --from` and `connect`'s headroom check.
//!
//! For every remote (DESIGN §5):
//! - connect through its `clustermesh-apiserver` with the TLS files named in
//!   its config file, read `cilium/cluster-config/<name>` and validate it
//!   (ID ≠ 0, in range, not ours, not used by another remote, same
//!   max-connected-clusters);
//! - pin the remote etcd's cluster ID; a different one means a different
//!   etcd answers and the connection starts over (with a full re-list); so
//!   does a revision lower than one already seen (the remote etcd was wiped
//!   and restarted with the same cluster ID);
//! - watch identities, ipcache, nodes and services, each after its canary,
//!   validating every value;
//! - on a failure, retry forever with capped, jittered backoff; the data
//!   already received is KEPT, and after a reconnect its stores re-list and
//!   deliver only the difference (stale keys deleted once the list is done);
//! - on removal of the config file, or when the remote's cluster config is
//!   refused, drain everything it delivered.
//!
//! # What a remote may claim
//!
//! A remote cluster is untrusted input: whatever it writes into its own etcd
//! reaches every agent of this cluster. Each rule below is enforced at one
//! place (named in brackets); a value that breaks one is skipped, counted by
//! reason (`remote_cluster_invalid_values`, or `remote_cluster_refused_routes`
//! for routes; both in `status`) and logged once per key, and never stops or
//! stalls a watch.
//!
//! - **Cluster config** (`cilium/cluster-config/<name>`): must decode, name an
//!   ID that is not 0, within the mesh mode, not ours and not another
//!   remote's, in the same max-connected-clusters mode. Otherwise the remote
//!   is refused: nothing of it stays in effect and `status` shows no entries
//!   for it. [`connection`]
//! - **Identities** (`…/identities/v1/id/<ID>`): only IDs inside the remote's
//!   own block (`IdentityRange::block`), never a reserved one (< 256), always
//!   with `io.cilium.k8s.policy.cluster=<remote>`. [`kvstore::remote_identity_validator`]
//!   A remote never replaces a reserved identity or one a local source holds,
//!   and deleting its key never removes one (the tables' own invariant,
//!   behind the validator). [`Tables::upsert_identity`](crate::tables::Tables)
//! - **ipcache** (`…/ip/v1/default/<IP>`): one address (never a prefix, which
//!   would claim local addresses or the world), whose identity is in the
//!   remote's block or one of [`REMOTE_IPCACHE_RESERVED`] (its nodes and health
//!   endpoints; host becomes remote-node). The value must match its key.
//!   [`ipcache_validator`] It may not lie in the local pods' space (the local
//!   pools, this and the other local nodes' CIDRs): such an entry is refused
//!   and counted as `ipcache-in-local-pod-space` (the control loop's
//!   `on_ip`); for any address a local source also claims, the local claim
//!   wins.
//! - **Nodes** (`…/nodes/v1/<remote>/<name>`): the remote's own name and ID (or
//!   ID 0, as older Cilium writes), a name without `/` that matches the key.
//!   [`node_validator`], `Node::decode`. Their pod CIDRs are routed only when
//!   narrower than a minimum, outside every local address space (this and
//!   other local nodes' CIDRs, the local pod pools, the host's own networks),
//!   inside the remote's pool where its config names one (`pod-cidr-pools`),
//!   not overlapping another remote's routed CIDRs, with a next hop outside
//!   the local pods. [`crate::route_plan::plan`]
//! - **Services** (`…/services/v1/<remote>/<ns>/<name>`): the remote's own name
//!   and ID, backends that are unicast addresses (not loopback, unspecified,
//!   link-local, multicast or broadcast). They only add backends to a local
//!   service definition of the same namespace and name that is global; a
//!   remote never defines frontends. [`service_validator`], the service merger.
//! - **Service exports** (`cilium/state/serviceexports/…`): not read from
//!   remotes; a remote's `serviceExportsEnabled` changes nothing here.
//! - **Canaries and heartbeat**: only waited for; their values are not used.

mod config;
mod connection;
mod failure;
mod report;
mod status;
mod stores;
mod validators;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use kvstore::{ClusterId, ClusterName, ListBudget, MaxConnectedClusters, remote::ClusterIds};
use notify::{RecursiveMode, Watcher};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use self::config::RemoteClusterConfig;
pub(crate) use self::report::AgentReporter;
#[cfg(test)]
pub(crate) use self::validators::{
    REMOTE_IPCACHE_RESERVED, ipcache_validator, node_validator, service_validator,
};
use self::{
    config::{ConfigFile, ConfigScanner, scan},
    connection::{CHECK_INTERVAL, RemoteCluster, Spec},
    status::RemoteStatus,
};
use crate::{
    control_loop::{Input, LoopHandle, StoreKind},
    metrics::{AgentMetrics, RemoteKindLabel, RemoteLabel, RemoteReasonLabel},
    tables::SourceId,
    views::RemoteView,
};

/// Rescan of the config directory without file events (no inotify).
const RESCAN_INTERVAL: Duration = Duration::from_secs(10);
/// Rescan with file events: in case one was missed, and for TLS files a
/// config names outside the directory (those inside, the mirror's among
/// them, are watched). Each scan reads every file, which
/// costs with hundreds of remotes.
const RESCAN_INTERVAL_WATCHED: Duration = Duration::from_secs(60);
/// File events buffered before the directory follower reads them (one is
/// enough to trigger a scan).
const FILE_EVENTS_CAPACITY: usize = 16;
/// A burst of file events (a symlink swap) settles this long before a scan.
const SETTLE_DELAY: Duration = Duration::from_millis(100);
/// The first source ID for remotes (0 and 1 are the local ones).
const FIRST_REMOTE_SOURCE: u16 = 2;

/// Every remote cluster of the config directory.
pub(crate) struct RemoteClusters {
    /// The clustermesh config directory.
    pub dir: PathBuf,
    /// This cluster (a file named after it is not a remote).
    pub local: ClusterName,
    pub local_id: ClusterId,
    pub mode: MaxConnectedClusters,
    pub control: LoopHandle,
    pub metrics: Arc<AgentMetrics>,
    /// The remotes configured when the agent started, each with the source
    /// ID it was announced to the control loop under (see
    /// [`RemoteClusters::announce`]).
    pub announced: BTreeMap<ClusterName, SourceId>,
}

/// The remotes' views as last published, with their
/// [`RemoteStatus::fingerprint`]s.
type Published = BTreeMap<ClusterName, (u64, RemoteView)>;

/// A remote being followed.
struct Running {
    fingerprint: u64,
    config: watch::Sender<Option<ConfigFile>>,
    status: RemoteStatus,
    /// The client certificate its config names, exported (expiry) while the
    /// remote is configured, connected or not (an expired certificate is a
    /// reason not to connect); loaded again whenever the files change.
    _certificate: Option<Arc<certs::TlsMaterial>>,
    /// Bumped when only its TLS files' contents change (the session stays
    /// up, and reconnects with them once the remote stops answering).
    tls_generation: Arc<AtomicU64>,
}

impl RemoteClusters {
    /// The remotes configured in `dir` now, announced to the control loop
    /// before it runs: until each has synced (or the sync timeout passed),
    /// nothing is deleted from the datapath. Without this, a restarted
    /// agent whose local sources synced before it had connected to its
    /// remotes removed their entries from the pinned maps (and traffic to
    /// them stopped until they were connected again).
    pub(crate) fn announce(
        dir: &std::path::Path,
        local: &ClusterName,
        control: &mut crate::control_loop::ControlLoop,
    ) -> BTreeMap<ClusterName, SourceId> {
        scan(dir, local)
            .into_iter()
            .filter(|(_, (file, _))| file.is_ok())
            .enumerate()
            .map(|(i, (name, (file, _)))| {
                let id = SourceId(FIRST_REMOTE_SOURCE + i as u16);
                let pools = file
                    .as_ref()
                    .map(|c| c.pod_cidr_pools.clone())
                    .unwrap_or_default();
                control.expect_remote(id, name.as_str(), pools);
                (name, id)
            })
            .collect()
    }

    /// Follows the config directory until `shutdown`: a connection per
    /// file, told when its file changes or goes.
    pub(crate) async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let (tx, mut changed) = mpsc::channel::<()>(FILE_EVENTS_CAPACITY);
        let _ = std::fs::create_dir_all(&self.dir);
        // Without inotify (no instance left: fs.inotify.max_user_instances)
        // the directory is still rescanned every RESCAN_INTERVAL; this
        // sender keeps the channel open (pending, not closed) meanwhile.
        let _open = tx.clone();
        let _watcher = match notify::recommended_watcher(
            move |event: notify::Result<notify::Event>| {
                // Not our own reads of the files (each scan would wake the next).
                if certs::may_change_content(&event) {
                    let _ = tx.try_send(());
                }
            },
        ) {
            // Recursive: the mirror keeps each remote's TLS files in a
            // subdirectory, and their changes must be seen at once (the
            // rescan is slow).
            Ok(mut watcher) => match watcher.watch(&self.dir, RecursiveMode::Recursive) {
                Ok(()) => Some(watcher),
                Err(e) => {
                    warn!(dir = %self.dir.display(), error = %e, "cannot watch the clustermesh config directory; rescanning periodically");
                    self.metrics.count_error("config_watch");
                    None
                }
            },
            Err(e) => {
                warn!(dir = %self.dir.display(), error = %e, "cannot watch files (inotify); rescanning the clustermesh config directory periodically");
                self.metrics.count_error("config_watch");
                None
            }
        };
        let ids = ClusterIds::default();
        let mut running: BTreeMap<ClusterName, Running> = BTreeMap::new();
        let mut tasks = JoinSet::new();
        let mut next_source = FIRST_REMOTE_SOURCE + self.announced.len() as u16;
        let mut rescan = tokio::time::interval(if _watcher.is_some() {
            RESCAN_INTERVAL_WATCHED
        } else {
            RESCAN_INTERVAL
        });
        let mut publish = tokio::time::interval(CHECK_INTERVAL);
        let mut scanner = ConfigScanner::default();
        let mut published = Published::default();
        let configured = Arc::new(AtomicUsize::new(0));
        let list_budget = ListBudget::new(ListBudget::DEFAULT_BYTES);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = changed.recv() => {
                    tokio::time::sleep(SETTLE_DELAY).await;
                    while changed.try_recv().is_ok() {}
                }
                _ = rescan.tick() => {}
                _ = publish.tick() => {
                    self.publish_status(&running, &mut published).await;
                    continue;
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            }
            let wanted = scanner.scan(&self.dir, &self.local);
            configured.store(wanted.len(), Ordering::Relaxed);
            running.retain(|name, r| match wanted.get(name) {
                Some((_, fingerprint)) if *fingerprint == r.fingerprint => true,
                // Only the contents of the TLS files it names changed (a
                // certificate re-issued, a CA added to or retired from the
                // bundle): the connected session's handshake is done and
                // stays up; the next connection reads the new files. A
                // remote not connected now retries with them at once.
                Some((file, fingerprint))
                    if r.config.borrow().as_ref() == Some(file) && r.status.view().connected =>
                {
                    info!(remote = %name, "remote cluster TLS files changed; the connection stays up, the next one uses them");
                    r.fingerprint = *fingerprint;
                    r._certificate = self.track_certificate(name, file);
                    r.tls_generation.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Some((file, fingerprint)) => {
                    info!(remote = %name, "remote cluster config changed; reconnecting");
                    r.fingerprint = *fingerprint;
                    r._certificate = self.track_certificate(name, file);
                    r.config.send_replace(Some(file.clone()));
                    true
                }
                None => {
                    r.config.send_replace(None);
                    self.clear_metrics(name);
                    false
                }
            });
            for (name, (file, fingerprint)) in wanted {
                if running.contains_key(&name) {
                    continue;
                }
                info!(remote = %name, "remote cluster configured");
                let source = match self.announced.get(&name) {
                    Some(id) => *id,
                    None => {
                        next_source += 1;
                        SourceId(next_source - 1)
                    }
                };
                let status = RemoteStatus::new(&name);
                let certificate = self.track_certificate(&name, &file);
                let (config, config_rx) = watch::channel(Some(file.clone()));
                let tls_generation = Arc::new(AtomicU64::new(0));
                let remote = RemoteCluster::new(Spec {
                    configured: configured.clone(),
                    list_budget: list_budget.clone(),
                    tls_generation: tls_generation.clone(),
                    name: name.clone(),
                    config: file,
                    local_id: self.local_id,
                    mode: self.mode,
                    source,
                    control: self.control.clone(),
                    ids: ids.clone(),
                    status: status.clone(),
                    metrics: self.metrics.clone(),
                });
                tasks.spawn(remote.run(config_rx, shutdown.clone()));
                running.insert(
                    name,
                    Running {
                        fingerprint,
                        config,
                        status,
                        _certificate: certificate,
                        tls_generation,
                    },
                );
            }
            self.metrics.remote_clusters.set(running.len() as i64);
            self.publish_status(&running, &mut published).await;
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    /// Sends the remotes' views to the control loop and the metrics, when
    /// one of them changed since `published`.
    async fn publish_status(
        &self,
        running: &BTreeMap<ClusterName, Running>,
        published: &mut Published,
    ) {
        let before = published.len();
        published.retain(|name, _| running.contains_key(name));
        let removed = published.len() != before;
        let mut updated = Vec::new();
        for (name, r) in running {
            let fingerprint = r.status.fingerprint();
            if published.get(name).is_some_and(|(f, _)| *f == fingerprint) {
                continue;
            }
            published.insert(name.clone(), (fingerprint, r.status.view()));
            updated.push(name);
        }
        if !removed && updated.is_empty() {
            return;
        }
        for v in updated
            .into_iter()
            .filter_map(|name| published.get(name).map(|(_, v)| v))
        {
            let label = RemoteLabel {
                cluster: v.name.clone(),
            };
            self.metrics
                .remote_ready
                .get_or_create(&label)
                .set(v.ready as i64);
            for kind in StoreKind::REMOTE {
                let label = RemoteKindLabel {
                    cluster: v.name.clone(),
                    kind: kind.as_str().to_string(),
                };
                match v.entries.get(kind.as_str()) {
                    Some(n) => {
                        self.metrics
                            .remote_entries
                            .get_or_create(&label)
                            .set(*n as i64);
                    }
                    None => {
                        self.metrics.remote_entries.remove(&label);
                    }
                }
            }
            for (reason, n) in &v.invalid {
                self.metrics
                    .remote_invalid
                    .get_or_create(&RemoteReasonLabel {
                        cluster: v.name.clone(),
                        reason: reason.clone(),
                    })
                    .set(*n as i64);
            }
        }
        let views = published.values().map(|(_, v)| v.clone()).collect();
        self.control.send(Input::RemoteStatus(views)).await;
    }

    /// Loads the client certificate `file` names for the expiry metric; the
    /// series lasts as long as the returned material.
    fn track_certificate(
        &self,
        name: &ClusterName,
        file: &ConfigFile,
    ) -> Option<Arc<certs::TlsMaterial>> {
        let config = file.as_ref().ok()?;
        let files =
            certs::TlsFiles::new(&config.cert_file, &config.key_file, &config.trusted_ca_file);
        let material = Arc::new(certs::TlsMaterial::load(&files).ok()?);
        self.metrics
            .tls
            .track_material(format!("remote-cluster-{name}"), &material);
        Some(material)
    }

    fn clear_metrics(&self, name: &ClusterName) {
        let label = RemoteLabel {
            cluster: name.to_string(),
        };
        self.metrics.remote_ready.remove(&label);
        self.metrics.remote_failures.remove(&label);
        self.metrics.remote_last_failure.remove(&label);
    }
}
