//! Remote clusters: one connection per file of the clustermesh config
//! directory, each feeding the control loop as one more source.
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
//!   already received is KEPT, and after a reconnect a re-list with
//!   mark-and-sweep (in the control loop) leaves exactly the remote's state;
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
//!   for it. [`RemoteCluster::validate`]
//! - **Identities** (`…/identities/v1/id/<ID>`): only IDs inside the remote's
//!   own block (`IdentityRange::block`), never a reserved one (< 256), always
//!   with `io.cilium.k8s.policy.cluster=<remote>`. [`remote_identity_validator`]
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

use std::{
    collections::{BTreeMap, HashMap},
    hash::{DefaultHasher, Hash, Hasher},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use kvstore::{
    Backoff, Client, ClientConfig, ClusterId, ClusterName, DecodeError, IdentityRange,
    InvalidReason, MaxConnectedClusters, NumericIdentity, StoreValue, TlsConfig, Validator,
    WatchStore, WatchStoreConfig, WatchStoreStats, keys, remote_identity_validator,
    values::{ClusterConfig, ClusterService, IdentityEntry, IpIdentityPair, Node},
};
use notify::{RecursiveMode, Watcher};
use serde::Deserialize;
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    agent::forward,
    control_loop::{Input, IpEvent, LoopHandle, StoreKind},
    metrics::{AgentMetrics, RemoteKindLabel, RemoteLabel, RemoteReasonLabel},
    tables::SourceId,
    views::RemoteView,
};

/// The kind of a "failure" that only asks for a fresh connection.
const RESYNC: &str = "resync";

/// How often the connection is checked and status published.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Rescan of the config directory in case a file event was missed.
const RESCAN_INTERVAL: Duration = Duration::from_secs(10);

/// One remote cluster's config file (YAML).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RemoteClusterConfig {
    pub endpoints: Vec<String>,
    pub trusted_ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Drop the remote's services after it has been unreachable this long
    /// (our extension; default: keep them, as Cilium does).
    #[serde(default, with = "opt_duration")]
    pub service_cache_ttl: Option<Duration>,
    /// The remote's pod CIDR pools (its operator's `--pod-cidr-pool`), as
    /// the one who connected the clusters knows them: its nodes' pod CIDRs
    /// are routed only inside (our extension; default: not known, and any
    /// CIDR outside the local space is accepted).
    #[serde(default)]
    pub pod_cidr_pools: Vec<ipnet::IpNet>,
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, de::Error};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => humantime::parse_duration(&s)
                .map(Some)
                .map_err(D::Error::custom),
        }
    }
}

/// Every remote cluster of the config directory.
pub(crate) struct RemoteClusters {
    dir: PathBuf,
    local: ClusterName,
    local_id: ClusterId,
    mode: MaxConnectedClusters,
    control: LoopHandle,
    metrics: Arc<AgentMetrics>,
}

/// Shared between connections: which remote holds which cluster ID.
type IdRegistry = Arc<Mutex<HashMap<u32, String>>>;

struct Running {
    fingerprint: u64,
    source: SourceId,
    token: CancellationToken,
    status: Arc<Mutex<RemoteView>>,
}

impl RemoteClusters {
    pub(crate) fn new(
        dir: PathBuf,
        local: ClusterName,
        local_id: ClusterId,
        mode: MaxConnectedClusters,
        control: LoopHandle,
        metrics: Arc<AgentMetrics>,
    ) -> Self {
        Self {
            dir,
            local,
            local_id,
            mode,
            control,
            metrics,
        }
    }

    /// Follows the config directory until `shutdown`.
    pub(crate) async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let (tx, mut changed) = mpsc::channel::<()>(16);
        let _ = std::fs::create_dir_all(&self.dir);
        let mut watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
            let _ = tx.try_send(());
        })?;
        if let Err(e) = watcher.watch(&self.dir, RecursiveMode::NonRecursive) {
            warn!(dir = %self.dir.display(), error = %e, "cannot watch the clustermesh config directory; rescanning periodically");
        }
        let registry: IdRegistry = Arc::default();
        let mut running: BTreeMap<String, Running> = BTreeMap::new();
        let mut tasks = JoinSet::new();
        let mut next_source = 2u16;
        let mut rescan = tokio::time::interval(RESCAN_INTERVAL);
        let mut publish = tokio::time::interval(CHECK_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = changed.recv() => {
                    // Let a burst of events (a symlink swap) settle.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    while changed.try_recv().is_ok() {}
                }
                _ = rescan.tick() => {}
                _ = publish.tick() => {
                    self.publish_status(&running).await;
                    continue;
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            }
            let wanted = scan(&self.dir, &self.local);
            // Removed or changed: stop; removed ones are drained.
            let names: Vec<String> = running.keys().cloned().collect();
            for name in names {
                let fingerprint = wanted.get(&name).map(|(_, f)| *f);
                if fingerprint == Some(running[&name].fingerprint) {
                    continue;
                }
                let r = running.remove(&name).expect("present");
                r.token.cancel();
                registry.lock().expect("registry").retain(|_, n| *n != name);
                let Some(fingerprint) = fingerprint else {
                    info!(
                        remote = name,
                        "remote cluster config removed; draining its entries"
                    );
                    self.control.send(Input::DrainSource(r.source)).await;
                    self.clear_metrics(&name);
                    continue;
                };
                {
                    info!(remote = name, "remote cluster config changed; reconnecting");
                    // Same source: the data stays until the new connection re-lists.
                    running.insert(
                        name.clone(),
                        self.start(
                            &mut tasks,
                            &name,
                            &wanted[&name].0,
                            fingerprint,
                            r.source,
                            &registry,
                            &shutdown,
                        ),
                    );
                }
            }
            for (name, (config, fingerprint)) in &wanted {
                if running.contains_key(name) {
                    continue;
                }
                let source = SourceId(next_source);
                next_source += 1;
                info!(remote = name, "remote cluster configured");
                running.insert(
                    name.clone(),
                    self.start(
                        &mut tasks,
                        name,
                        config,
                        *fingerprint,
                        source,
                        &registry,
                        &shutdown,
                    ),
                );
            }
            self.metrics.remote_clusters.set(running.len() as i64);
            self.publish_status(&running).await;
        }
        for r in running.values() {
            r.token.cancel();
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        &self,
        tasks: &mut JoinSet<()>,
        name: &str,
        config: &Result<RemoteClusterConfig, String>,
        fingerprint: u64,
        source: SourceId,
        registry: &IdRegistry,
        shutdown: &CancellationToken,
    ) -> Running {
        let token = shutdown.child_token();
        let status = Arc::new(Mutex::new(RemoteView {
            name: name.to_string(),
            ..RemoteView::default()
        }));
        let remote = RemoteCluster {
            name: name.to_string(),
            config: config.clone(),
            local_id: self.local_id,
            mode: self.mode,
            source,
            control: self.control.clone(),
            registry: registry.clone(),
            status: status.clone(),
            metrics: self.metrics.clone(),
        };
        tasks.spawn(remote.run(token.clone()));
        Running {
            fingerprint,
            source,
            token,
            status,
        }
    }

    async fn publish_status(&self, running: &BTreeMap<String, Running>) {
        let views: Vec<RemoteView> = running
            .values()
            .map(|r| r.status.lock().expect("status").clone())
            .collect();
        for v in &views {
            let label = RemoteLabel {
                cluster: v.name.clone(),
            };
            self.metrics
                .remote_ready
                .get_or_create(&label)
                .set(v.ready as i64);
            for kind in [
                StoreKind::Identities,
                StoreKind::IpCache,
                StoreKind::Nodes,
                StoreKind::Services,
            ] {
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
        self.control.send(Input::RemoteStatus(views)).await;
    }

    fn clear_metrics(&self, name: &str) {
        let label = RemoteLabel {
            cluster: name.to_string(),
        };
        self.metrics.remote_ready.remove(&label);
        self.metrics.remote_failures.remove(&label);
        self.metrics.remote_last_failure.remove(&label);
    }
}

/// The config files of the directory: name → (parsed config or why not,
/// fingerprint of the file and the files it names).
fn scan(
    dir: &Path,
    local: &ClusterName,
) -> BTreeMap<String, (Result<RemoteClusterConfig, String>, u64)> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        // Kubernetes secret mounts keep `..data` and timestamped directories.
        if name.starts_with('.')
            || name == local.as_str()
            || ClusterName::new(name.as_str()).is_err()
        {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            continue;
        }
        let Ok(text) = std::fs::read(&path) else {
            continue;
        };
        let mut h = DefaultHasher::new();
        text.hash(&mut h);
        let parsed = serde_norway::from_slice::<RemoteClusterConfig>(&text)
            .map_err(|e| format!("config file {}: {e}", path.display()));
        if let Ok(c) = &parsed {
            for f in [&c.trusted_ca_file, &c.cert_file, &c.key_file] {
                std::fs::read(f).unwrap_or_default().hash(&mut h);
            }
        }
        out.insert(name, (parsed, h.finish()));
    }
    out
}

/// One remote cluster's connection.
struct RemoteCluster {
    name: String,
    config: Result<RemoteClusterConfig, String>,
    local_id: ClusterId,
    mode: MaxConnectedClusters,
    source: SourceId,
    control: LoopHandle,
    registry: IdRegistry,
    status: Arc<Mutex<RemoteView>>,
    metrics: Arc<AgentMetrics>,
}

/// How long a remote has been unreachable, across its sessions, for the
/// service cache TTL.
#[derive(Debug, Default)]
struct Reachability {
    /// Since when nothing answered (`None` while it answers).
    since: Option<Instant>,
    /// The remote's services were dropped after the TTL.
    services_dropped: bool,
}

impl Reachability {
    fn unreachable(&mut self) {
        self.since.get_or_insert_with(Instant::now);
    }

    /// When the services go, if a TTL is set and they are still there.
    fn services_deadline(&self, ttl: Option<Duration>) -> Option<Instant> {
        match (ttl, self.since) {
            (Some(ttl), Some(since)) if !self.services_dropped => Some(since + ttl),
            _ => None,
        }
    }
}

/// Why a connection attempt failed, with the kind shown in status.
struct Failure {
    kind: &'static str,
    message: String,
    /// The remote's own config was refused (invalid, or its ID conflicts):
    /// nothing it delivered may stay in effect.
    refused: bool,
}

impl Failure {
    fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            refused: false,
        }
    }

    fn refused(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            refused: true,
            ..Self::new(kind, message)
        }
    }

    fn from_etcd(e: &kvstore::Error) -> Self {
        let message = e.full_message();
        if message.contains("etcd unreachable") {
            return Self::new(
                "remote-etcd-unreachable",
                format!("the remote apiserver answers but its etcd does not: {message}"),
            );
        }
        // Under TLS 1.3 a server that refuses our client certificate closes
        // the connection after the handshake; the client sees only that.
        if e.kind() == kvstore::ErrorKind::Unreachable && message.contains("connection closed") {
            return Self::new(
                "tls",
                format!(
                    "the remote apiserver closed the connection during TLS setup (does it trust our client certificate's CA?): {message}"
                ),
            );
        }
        let kind = match e.kind() {
            kvstore::ErrorKind::Unreachable => "unreachable",
            kvstore::ErrorKind::UnknownCa => "unknown-ca",
            kvstore::ErrorKind::Tls => "tls",
            kvstore::ErrorKind::PermissionDenied => "permission-denied",
            kvstore::ErrorKind::Timeout => "timeout",
            _ => "error",
        };
        Self::new(kind, message)
    }
}

impl RemoteCluster {
    async fn run(self, shutdown: CancellationToken) {
        // Exported while the remote is configured, connected or not: an
        // expired certificate is a reason not to connect.
        let _certificate = self.track_certificate();
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut pinned_cluster_id: Option<u64> = None;
        let mut reach = Reachability::default();
        loop {
            let failure = tokio::select! {
                _ = shutdown.cancelled() => break,
                f = self.session(&shutdown, &mut pinned_cluster_id, &mut backoff, &mut reach) => f,
            };
            let Some(failure) = failure else { break };
            if failure.kind == RESYNC {
                info!(remote = self.name, "{}", failure.message);
                continue;
            }
            self.fail(&failure);
            if failure.refused {
                self.withdraw().await;
            }
            // Unreachable between sessions counts towards the service cache
            // TTL too (the connection broke, and reconnecting fails).
            reach.unreachable();
            if !self
                .wait_or_drop_services(&shutdown, &mut backoff, &mut reach)
                .await
            {
                break;
            }
        }
        self.registry
            .lock()
            .expect("registry")
            .retain(|_, n| *n != self.name);
    }

    /// Waits for the next attempt; drops the remote's services when its
    /// service cache TTL runs out meanwhile. False on shutdown.
    async fn wait_or_drop_services(
        &self,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
        reach: &mut Reachability,
    ) -> bool {
        let ttl = self.config.as_ref().ok().and_then(|c| c.service_cache_ttl);
        if let Some(deadline) = reach.services_deadline(ttl) {
            tokio::select! {
                waited = backoff.wait(shutdown) => return waited,
                _ = tokio::time::sleep_until(deadline.into()) => self.drop_services(reach, ttl).await,
            }
        }
        backoff.wait(shutdown).await
    }

    /// The service cache TTL ran out: the remote's services go (they come
    /// back with the next full list).
    async fn drop_services(&self, reach: &mut Reachability, ttl: Option<Duration>) {
        warn!(
            remote = self.name,
            ?ttl,
            "remote unreachable longer than its service cache TTL; dropping its services"
        );
        self.control.send(Input::DropServices(self.source)).await;
        reach.services_dropped = true;
    }

    fn fail(&self, f: &Failure) {
        warn!(
            remote = self.name,
            kind = f.kind,
            error = f.message,
            "remote cluster not ready"
        );
        let label = RemoteLabel {
            cluster: self.name.clone(),
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
        let mut s = self.status.lock().expect("status");
        s.connected = false;
        s.ready = false;
        s.failures += 1;
        s.last_error = Some(f.message.clone());
        s.last_error_kind = Some(f.kind.to_string());
    }

    /// The remote's config was refused: what it delivered goes, and status
    /// shows no entries for it (its connection is not in use).
    async fn withdraw(&self) {
        {
            let mut s = self.status.lock().expect("status");
            s.synced.clear();
            s.entries.clear();
            s.invalid.clear();
        }
        warn!(
            remote = self.name,
            "the remote's cluster config is refused; withdrawing its entries"
        );
        self.control.send(Input::DrainSource(self.source)).await;
    }

    /// Loads the client certificate of this remote's config for the expiry
    /// metric; kept alive by the caller as long as it should be exported.
    fn track_certificate(&self) -> Option<Arc<certs::TlsMaterial>> {
        let config = self.config.as_ref().ok()?;
        let files =
            certs::TlsFiles::new(&config.cert_file, &config.key_file, &config.trusted_ca_file);
        let material = Arc::new(certs::TlsMaterial::load(&files).ok()?);
        self.metrics
            .tls
            .track_material(format!("remote-cluster-{}", self.name), &material);
        Some(material)
    }

    /// One connection: returns the failure that ended it, or `None` on shutdown.
    async fn session(
        &self,
        shutdown: &CancellationToken,
        pinned: &mut Option<u64>,
        backoff: &mut Backoff,
        reach: &mut Reachability,
    ) -> Option<Failure> {
        let config = match &self.config {
            Ok(c) => c,
            Err(e) => return Some(Failure::new("config-invalid", e.clone())),
        };
        let tls = match TlsConfig::from_files(
            &config.trusted_ca_file,
            Some((&config.cert_file, &config.key_file)),
        ) {
            Ok(t) => t,
            Err(e) => return Some(Failure::new("config-invalid", e.full_message())),
        };
        let mut client_config = ClientConfig::new(config.endpoints.clone()).with_tls(tls);
        client_config.connect_timeout = Duration::from_secs(3);
        client_config.keepalive_interval = Duration::from_secs(2);
        client_config.keepalive_timeout = Duration::from_secs(3);
        client_config.request_timeout = Duration::from_secs(5);
        let client = match Client::connect(&client_config).await {
            Ok(c) => c,
            Err(e) => return Some(Failure::from_etcd(&e)),
        };
        let status = match client.status().await {
            Ok(s) => s,
            Err(e) => return Some(Failure::from_etcd(&e)),
        };
        if let Some(old) = *pinned
            && old != status.cluster_id
        {
            info!(
                remote = self.name,
                old,
                new = status.cluster_id,
                "a different etcd cluster answers; re-listing everything"
            );
        }
        *pinned = Some(status.cluster_id);
        let remote_name =
            ClusterName::new(self.name.as_str()).expect("scan only keeps valid names");
        let cluster_config = match client.get(&keys::cluster_config(&remote_name)).await {
            Ok(Some(kv)) => match ClusterConfig::decode(&self.name, &kv.value) {
                Ok(c) => c,
                Err(e) => return Some(Failure::refused("config-invalid", e.to_string())),
            },
            Ok(None) => {
                return Some(Failure::new(
                    "config-missing",
                    format!(
                        "{} has no cilium/cluster-config/{} (is its clustermesh-apiserver for this cluster?)",
                        config.endpoints.join(","),
                        self.name
                    ),
                ));
            }
            Err(e) => return Some(Failure::from_etcd(&e)),
        };
        let remote_id = match self.validate(&cluster_config) {
            Ok(id) => id,
            Err(f) => return Some(f),
        };
        {
            let mut s = self.status.lock().expect("status");
            s.connected = true;
            s.config = Some(format!(
                "id={} maxConnectedClusters={}",
                cluster_config.id, self.mode
            ));
        }
        info!(
            remote = self.name,
            id = remote_id.get(),
            "connected to remote cluster"
        );
        let result = self
            .watch(
                &client,
                &remote_name,
                remote_id,
                &cluster_config,
                shutdown,
                pinned,
                backoff,
                reach,
            )
            .await;
        self.registry
            .lock()
            .expect("registry")
            .retain(|_, n| *n != self.name);
        result
    }

    fn validate(&self, config: &ClusterConfig) -> Result<ClusterId, Failure> {
        let remote_mode = config
            .mode()
            .map_err(|e| Failure::refused("config-invalid", e.to_string()))?;
        if remote_mode != self.mode {
            return Err(Failure::refused(
                "config-invalid",
                format!(
                    "max-connected-clusters differs: remote {remote_mode}, local {}",
                    self.mode
                ),
            ));
        }
        let id = ClusterId::new(config.id, self.mode)
            .map_err(|e| Failure::refused("config-invalid", e.to_string()))?;
        if !id.is_meshable() {
            return Err(Failure::refused("config-invalid", "remote cluster ID is 0"));
        }
        if id == self.local_id {
            return Err(Failure::refused(
                "id-conflict",
                format!("remote cluster ID {id} is this cluster's own ID"),
            ));
        }
        let mut registry = self.registry.lock().expect("registry");
        match registry.get(&id.get()) {
            Some(other) if *other != self.name => {
                return Err(Failure::refused(
                    "id-conflict",
                    format!("cluster ID {id} is already used by remote cluster {other}"),
                ));
            }
            _ => {
                registry.insert(id.get(), self.name.clone());
            }
        }
        Ok(id)
    }

    #[allow(clippy::too_many_arguments)]
    async fn watch(
        &self,
        client: &Client,
        name: &ClusterName,
        id: ClusterId,
        config: &ClusterConfig,
        shutdown: &CancellationToken,
        pinned: &Option<u64>,
        backoff: &mut Backoff,
        reach: &mut Reachability,
    ) -> Option<Failure> {
        let kinds = vec![
            StoreKind::Identities,
            StoreKind::IpCache,
            StoreKind::Nodes,
            StoreKind::Services,
        ];
        self.control
            .send(Input::RegisterSource {
                id: self.source,
                name: self.name.clone(),
                cluster_id: id.get(),
                kinds,
                pod_cidr_pools: self
                    .config
                    .as_ref()
                    .map(|c| c.pod_cidr_pools.clone())
                    .unwrap_or_default(),
            })
            .await;
        self.control.send(Input::BeginResync(self.source)).await;
        let token = shutdown.child_token();
        let canaries = config.capabilities.synced_canaries;
        let store_config = |prefix: kvstore::KeyPrefix, store: &str| {
            let mut c = WatchStoreConfig::new(prefix).with_name(format!(
                "{name}/{}",
                store.rsplit('/').nth(1).unwrap_or(store)
            ));
            if canaries {
                c = c.with_canary(keys::canary(name, store));
            }
            c
        };
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut stats: Vec<(StoreKind, Arc<WatchStoreStats>)> = Vec::new();
        let source = self.source;
        let mode = self.mode;
        let mut watch = Watches {
            tasks: &mut tasks,
            stats: &mut stats,
            client,
            control: &self.control,
            token: &token,
        };
        watch.spawn::<IdentityEntry>(
            StoreKind::Identities,
            store_config(keys::identity_masters(), keys::IDENTITIES_STORE),
            remote_identity_validator(name, id, mode),
            move |e| Input::Identity(source, e),
        );
        watch.spawn::<IpIdentityPair>(
            StoreKind::IpCache,
            store_config(keys::ipcache(), keys::IPCACHE_STORE),
            ipcache_validator(name, id, mode),
            move |e| Input::Ip(source, IpEvent::from_event(e, true)),
        );
        watch.spawn::<Node>(
            StoreKind::Nodes,
            store_config(keys::nodes(), keys::NODES_STORE),
            node_validator(name, id),
            move |e| Input::Node(source, e),
        );
        watch.spawn::<ClusterService>(
            StoreKind::Services,
            store_config(keys::services(), keys::SERVICES_STORE),
            service_validator(name, id),
            move |e| Input::Service(source, e),
        );

        let ttl = self.config.as_ref().ok().and_then(|c| c.service_cache_ttl);
        // The stores just started list everything: services dropped before
        // this session come back with that list.
        reach.services_dropped = false;
        reach.since = None;
        let mut highest_revision = 0;
        let mut check = tokio::time::interval(CHECK_INTERVAL);
        let failure = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break None,
                _ = check.tick() => {}
            }
            let reachable = match client.status().await {
                Ok(s) if Some(s.cluster_id) != *pinned => {
                    break Some(Failure::new(
                        "etcd-changed",
                        format!(
                            "etcd cluster ID changed from {:?} to {}",
                            pinned, s.cluster_id
                        ),
                    ));
                }
                Ok(s) if s.revision > 0 && s.revision < highest_revision => {
                    // The remote etcd lost its data (wiped, same cluster
                    // ID): start over with a full list and an exact sweep,
                    // whatever its watches noticed.
                    break Some(Failure::new(
                        RESYNC,
                        format!(
                            "the remote etcd's revision went backwards ({highest_revision} → {}); re-listing",
                            s.revision
                        ),
                    ));
                }
                Ok(s) => {
                    highest_revision = highest_revision.max(s.revision);
                    true
                }
                Err(e) => {
                    let f = Failure::from_etcd(&e);
                    let mut s = self.status.lock().expect("status");
                    s.connected = false;
                    s.ready = false;
                    s.last_error = Some(f.message.clone());
                    s.last_error_kind = Some(f.kind.to_string());
                    false
                }
            };
            if reachable {
                reach.since = None;
                if reach.services_dropped {
                    // The watch resumes where it stopped and would not
                    // deliver the unchanged services again: reconnect, so
                    // that a re-list (with mark and sweep) restores them.
                    break Some(Failure::new(
                        RESYNC,
                        "reachable again after its services were dropped; re-listing",
                    ));
                }
                backoff.reset();
            } else {
                reach.unreachable();
                if reach
                    .services_deadline(ttl)
                    .is_some_and(|d| Instant::now() >= d)
                {
                    self.drop_services(reach, ttl).await;
                }
            }
            self.update_status(reachable, &stats);
        };
        token.cancel();
        while tasks.join_next().await.is_some() {}
        failure
    }

    fn update_status(&self, reachable: bool, stats: &[(StoreKind, Arc<WatchStoreStats>)]) {
        let mut s = self.status.lock().expect("status");
        s.connected = reachable;
        s.synced = stats
            .iter()
            .map(|(k, st)| (k.as_str().to_string(), st.is_synced()))
            .collect();
        s.entries = stats
            .iter()
            .map(|(k, st)| (k.as_str().to_string(), st.entries()))
            .collect();
        let mut invalid = BTreeMap::new();
        for (_, st) in stats {
            for (reason, n) in st.invalid_by_reason() {
                *invalid.entry(reason.as_str().to_string()).or_insert(0) += n;
            }
        }
        s.invalid = invalid;
        s.ready = reachable
            && stats
                .iter()
                .all(|(_, st)| st.is_synced() && st.is_watching());
        if let Some((kind, message)) = stats
            .iter()
            .find_map(|(_, st)| st.last_error().filter(|_| !st.is_watching()))
        {
            s.last_error_kind = Some(kind.as_str().to_string());
            s.last_error = Some(message);
        } else if s.ready {
            s.last_error = None;
            s.last_error_kind = None;
        }
        if let Some(waiting) = stats.iter().find(|(_, st)| st.is_waiting_for_canary()) {
            s.last_error_kind = Some("not-synced".into());
            s.last_error = Some(format!(
                "waiting for the {} canary of {}",
                waiting.0.as_str(),
                self.name
            ));
        }
    }
}

/// The watch stores of one connection, each forwarding into the loop.
struct Watches<'a> {
    tasks: &'a mut JoinSet<()>,
    stats: &'a mut Vec<(StoreKind, Arc<WatchStoreStats>)>,
    client: &'a Client,
    control: &'a LoopHandle,
    token: &'a CancellationToken,
}

impl Watches<'_> {
    fn spawn<V: StoreValue>(
        &mut self,
        kind: StoreKind,
        config: WatchStoreConfig,
        validator: Validator<V>,
        wrap: impl Fn(kvstore::Event<V>) -> Input + Send + 'static,
    ) {
        let (store, rx) = WatchStore::<V>::new(self.client.clone(), config);
        let store = store.with_validator(validator);
        self.stats.push((kind, store.stats()));
        let t = self.token.clone();
        self.tasks.spawn(async move {
            let _ = store.run(t).await;
        });
        let handle = self.control.clone();
        self.tasks.spawn(async move {
            let _ = forward(rx, handle, wrap).await;
        });
    }
}

/// Reserved identities a remote's ipcache entry may name: its nodes (host,
/// rewritten to remote-node as Cilium does, or remote-node itself) and its
/// health endpoints. Any other reserved identity (world, kube-apiserver,
/// ingress, init, unmanaged, user-reserved…) would let a remote address
/// pass a local policy written for that entity.
pub(crate) const REMOTE_IPCACHE_RESERVED: [NumericIdentity; 3] = [
    NumericIdentity::HOST,
    NumericIdentity::REMOTE_NODE,
    NumericIdentity::HEALTH,
];

/// ipcache entries of a remote: one address (not a prefix), whose identity
/// is in the remote's block or one of [`REMOTE_IPCACHE_RESERVED`].
pub(crate) fn ipcache_validator(
    name: &ClusterName,
    id: ClusterId,
    mode: MaxConnectedClusters,
) -> Validator<IpIdentityPair> {
    let block = IdentityRange::block(id, mode);
    let name = name.clone();
    Arc::new(move |key: &str, pair: &IpIdentityPair| {
        let invalid =
            |reason, detail: String| Err(DecodeError::new("ipcache entry", key, reason, detail));
        let prefix = pair.prefix();
        if prefix.prefix_len() != prefix.max_prefix_len() {
            // An endpoint or node has one address; a prefix would claim
            // every address in it, local ones and the world included.
            return invalid(
                InvalidReason::PrefixNotAllowed,
                format!("{prefix} is a prefix; a remote cluster may only publish single addresses"),
            );
        }
        if pair.id.is_reserved() {
            if REMOTE_IPCACHE_RESERVED.contains(&pair.id) {
                return Ok(());
            }
            return invalid(
                InvalidReason::ReservedIdentity,
                format!(
                    "reserved identity {} ({}) is not one a remote address may have",
                    pair.id,
                    pair.id.reserved_name().unwrap_or("reserved")
                ),
            );
        }
        if block.contains(pair.id) {
            Ok(())
        } else {
            invalid(
                InvalidReason::IdentityOutOfRange,
                format!(
                    "identity {} is outside cluster {name}'s range {block}",
                    pair.id
                ),
            )
        }
    })
}

pub(crate) fn node_validator(name: &ClusterName, id: ClusterId) -> Validator<Node> {
    let name = name.clone();
    Arc::new(move |key: &str, node: &Node| {
        check_cluster("node", key, &node.cluster, node.cluster_id, &name, id, true)
    })
}

pub(crate) fn service_validator(name: &ClusterName, id: ClusterId) -> Validator<ClusterService> {
    let name = name.clone();
    Arc::new(move |key: &str, svc: &ClusterService| {
        check_cluster(
            "service",
            key,
            &svc.cluster,
            svc.cluster_id,
            &name,
            id,
            false,
        )?;
        if let Some((ip, _)) = svc.backend_ips().find(|(ip, _)| !is_routable_unicast(ip)) {
            return Err(DecodeError::new(
                "service",
                key,
                InvalidReason::InvalidAddress,
                format!("backend {ip} is not a unicast address another cluster can serve"),
            ));
        }
        Ok(())
    })
}

/// An address a remote backend may have: not loopback, unspecified,
/// link-local, multicast or broadcast (those would send a client to itself,
/// its node or nowhere).
fn is_routable_unicast(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast())
        }
        std::net::IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unicast_link_local())
        }
    }
}

/// A remote's value must name the remote and its ID (nodes may leave the
/// ID at 0, as older Cilium versions do).
fn check_cluster(
    kind: &'static str,
    key: &str,
    cluster: &str,
    cluster_id: u32,
    name: &ClusterName,
    id: ClusterId,
    zero_id_ok: bool,
) -> Result<(), DecodeError> {
    if cluster != name.as_str() {
        return Err(DecodeError::new(
            kind,
            key,
            InvalidReason::InvalidCluster,
            format!("{kind} of cluster {cluster:?}, not {name}"),
        ));
    }
    if cluster_id != id.get() && !(zero_id_ok && cluster_id == 0) {
        return Err(DecodeError::new(
            kind,
            key,
            InvalidReason::InvalidCluster,
            format!("cluster ID {cluster_id} is not {id}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file() {
        let c: RemoteClusterConfig = serde_norway::from_str(
            "endpoints:\n- https://127.0.0.1:2379\ntrusted-ca-file: /a/ca.crt\ncert-file: /a/c.crt\nkey-file: /a/c.key\nservice-cache-ttl: 30s\n",
        )
        .unwrap();
        assert_eq!(c.service_cache_ttl, Some(Duration::from_secs(30)));
        assert!(serde_norway::from_str::<RemoteClusterConfig>("endpoint: []").is_err());
    }

    #[test]
    fn validators() {
        let c2 = ClusterName::new("c2").unwrap();
        let mode = MaxConnectedClusters::C255;
        let id = ClusterId::new(2, mode).unwrap();
        let v = ipcache_validator(&c2, id, mode);
        let pair = |n: u32| {
            IpIdentityPair::host("10.0.0.1".parse().unwrap(), NumericIdentity::new(n), None)
        };
        assert!(v("k", &pair(2 << 16 | 300)).is_ok());
        assert!(v("k", &pair(6)).is_ok());
        assert!(v("k", &pair(1)).is_ok());
        for reserved in [0, 2, 3, 7, 8, 200, 255] {
            assert_eq!(
                v("k", &pair(reserved)).unwrap_err().reason,
                InvalidReason::ReservedIdentity,
                "{reserved}"
            );
        }
        let wide = IpIdentityPair::host(
            "0.0.0.0".parse().unwrap(),
            NumericIdentity::new(2 << 16 | 300),
            None,
        )
        .with_prefix_len(1);
        assert_eq!(
            v("k", &wide).unwrap_err().reason,
            InvalidReason::PrefixNotAllowed
        );
        assert_eq!(
            v("k", &pair(3 << 16 | 300)).unwrap_err().reason,
            InvalidReason::IdentityOutOfRange
        );
        let sv = service_validator(&c2, id);
        let svc = ClusterService::new(&c2, 2, "ns", "s");
        assert!(sv("k", &svc).is_ok());
        assert!(sv("k", &ClusterService::new(&c2, 3, "ns", "s")).is_err());
        let c3 = ClusterName::new("c3").unwrap();
        assert!(sv("k", &ClusterService::new(&c3, 2, "ns", "s")).is_err());
    }

    #[test]
    fn scan_skips_own_hidden_and_invalid_names() {
        let dir = tempfile::tempdir().unwrap();
        let body =
            "endpoints: [https://x:1]\ntrusted-ca-file: /nope\ncert-file: /nope\nkey-file: /nope\n";
        for name in ["c1", "c2", "..data", "Bad_Name"] {
            std::fs::write(dir.path().join(name), body).unwrap();
        }
        std::fs::write(dir.path().join("c3"), "not: [valid").unwrap();
        let found = scan(dir.path(), &ClusterName::new("c1").unwrap());
        let names: Vec<&String> = found.keys().collect();
        assert_eq!(names, ["c2", "c3"]);
        assert!(found["c2"].0.is_ok());
        assert!(found["c3"].0.is_err());
    }
}
