//! The agent's single writer: every source's events go through one loop
//! that updates the global tables and turns the changes into datapath
//! writes, incrementally and in batches.
//!
//! By concern:
//! - input and batching: [`input`] (what reaches the loop, the handle to
//!   send it) and [`ControlLoop::run`] here (one datapath write per batch);
//! - source sync tracking: [`sources`] (until every source delivered its
//!   initial view, deletions wait);
//! - the tables: [`events`] (source events applied to them; a source that
//!   reconnects delivers only the difference, see
//!   [`kvstore::RestartableWatchStore`]);
//! - policy: [`policy`] (local endpoints and their entries);
//! - services: [`services`];
//! - debug queries: [`queries`].
//!
//! Routes to remote nodes are installed by [`crate::routes`] on a thread of
//! their own; the maps are written through [`crate::datapath_maps`], which
//! the unit tests ([`tests`]) replace with memory.

mod events;
mod fqdn;
mod input;
mod policy;
mod queries;
mod services;
mod sources;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use kvstore::ClusterName;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub(crate) use self::fqdn::FqdnLearned;
pub(crate) use self::input::Timed;
use self::{
    fqdn::FqdnState,
    input::{BATCH_SIZE, QUEUE_CAPACITY},
    policy::Endpoints,
    services::Services,
    sources::{Source, Sources},
};
pub(crate) use self::{
    input::{Answer, Input, IpEvent, LoopHandle, Query},
    sources::StoreKind,
};
use crate::{
    datapath_sync::DatapathSync,
    dns_proxy::DnsView,
    hubble::{FlowDirectory, PeerPort},
    metrics::AgentMetrics,
    route_plan::RefusedRoute,
    routes::{RouteHandle, RouteRequest},
    tables::{SourceId, Tables},
    views::RemoteView,
};

/// Static facts the loop needs.
#[derive(Debug, Clone)]
pub(crate) struct LoopConfig {
    pub cluster: ClusterName,
    pub cluster_id: u32,
    pub node_name: kvstore::values::NodeName,
    pub node_ip: IpAddr,
    /// How long to wait for every source's initial sync before deletions are
    /// written anyway.
    pub sync_timeout: Duration,
    /// The local cluster's pod pools (no remote route may overlap them).
    pub pod_cidr_pools: Vec<IpNet>,
}

/// The loop itself; see the module documentation.
pub(crate) struct ControlLoop {
    config: LoopConfig,
    rx: mpsc::Receiver<Timed>,
    tables: Tables,
    dp: DatapathSync,
    sources: Sources,
    endpoints: Endpoints,
    services: Services,
    routes: RouteHandle,
    routes_dirty: bool,
    /// Remote nodes' pod CIDRs not routed, as the route installer last said.
    refused_routes: Vec<RefusedRoute>,
    /// Remote ipcache entries refused for lying in the local pods' space.
    refused_ips: HashMap<SourceId, BTreeSet<IpNet>>,
    /// This node's pod CIDRs (IPv4 first, then IPv6 on a dual-stack node).
    pod_cidrs: Vec<IpNet>,
    remotes: Vec<RemoteView>,
    metrics: Arc<AgentMetrics>,
    /// The Hubble Peer service's view of the nodes, when Hubble is on.
    peers: Option<PeerPublisher>,
    /// Kubernetes mode: the API server's state, for `status`.
    kube: Option<crate::kubernetes::KubeState>,
    /// The conntrack collector's last pass, for `status`.
    conntrack: Option<watch::Receiver<Option<crate::views::ConntrackView>>>,
    /// Names and addresses learned from DNS answers.
    fqdn: FqdnState,
    /// What the DNS proxy reads: endpoints with DNS rules, selectors.
    dns_view: Option<Arc<DnsView>>,
    /// A write of the datapath failed: when to try again, and the wait
    /// after that one (doubling up to [`RETRY_MAX`]).
    retry: Option<(tokio::time::Instant, Duration)>,
    /// When free heap memory was last given back, and when it is to be
    /// next (see [`ControlLoop::mark_synced`]).
    trimmed: Option<Instant>,
    trim_due: Option<tokio::time::Instant>,
}

/// The least time between two returns of free heap memory while sources
/// sync: each walks the whole heap, and 255 remotes sync 1,020 stores.
const TRIM_INTERVAL: Duration = Duration::from_secs(1);

/// The first wait before a failed datapath write is tried again.
const RETRY_MIN: Duration = Duration::from_millis(100);
/// The longest wait between tries of a failed datapath write.
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Publishes the nodes as Hubble peers when they change.
struct PeerPublisher {
    tx: watch::Sender<hubble::peer::Peers>,
    port: PeerPort,
    dirty: bool,
}

impl ControlLoop {
    /// A loop over `dp`, with the local sources registered; routes are
    /// requested from `routes`.
    pub(crate) fn new(
        config: LoopConfig,
        dp: DatapathSync,
        routes: RouteHandle,
        metrics: Arc<AgentMetrics>,
    ) -> (Self, LoopHandle) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let local = Source::new(
            config.cluster.as_str(),
            config.cluster_id,
            StoreKind::LOCAL,
            config.pod_cidr_pools.clone(),
        );
        (
            Self {
                config,
                rx,
                tables: Tables::new(),
                dp,
                sources: Sources::new(local),
                endpoints: Endpoints::default(),
                services: Services::default(),
                routes,
                routes_dirty: false,
                refused_routes: Vec::new(),
                refused_ips: HashMap::new(),
                pod_cidrs: Vec::new(),
                remotes: Vec::new(),
                metrics,
                peers: None,
                kube: None,
                conntrack: None,
                fqdn: FqdnState::new(::fqdn::CacheConfig::default(), None),
                dns_view: None,
                retry: None,
                trimmed: None,
                trim_due: None,
            },
            LoopHandle { tx },
        )
    }

    /// Keeps the Hubble server's directory in step with the tables, and
    /// publishes the nodes as its peers.
    pub(crate) fn with_hubble(
        &mut self,
        directory: Arc<FlowDirectory>,
        peers: watch::Sender<hubble::peer::Peers>,
        port: PeerPort,
    ) {
        self.tables.set_flow_directory(directory);
        self.peers = Some(PeerPublisher {
            tx: peers,
            port,
            dirty: true,
        });
    }

    /// The DNS proxy on `port` reads `view`; learned names follow
    /// `cache` and are kept in `state_file`, from which they are restored
    /// now.
    pub(crate) fn with_dns_proxy(
        &mut self,
        view: Arc<DnsView>,
        port: u16,
        cache: ::fqdn::CacheConfig,
        state_file: std::path::PathBuf,
    ) {
        self.dns_view = Some(view);
        self.endpoints.set_dns_proxy_port(port);
        self.fqdn = FqdnState::new(cache, Some(state_file));
        self.restore_fqdn();
        self.publish_dns_view();
    }

    /// Tells the DNS proxy which endpoints have DNS rules, and the
    /// selectors whose names must be in the maps before an answer goes.
    fn publish_dns_view(&self) {
        if let Some(view) = &self.dns_view {
            view.publish(self.endpoints.dns_endpoints(), self.fqdn.selectors());
        }
    }

    /// Kubernetes mode: `status` shows the API server's state.
    pub(crate) fn with_kube(&mut self, state: crate::kubernetes::KubeState) {
        self.kube = Some(state);
    }

    /// Reports the conntrack collector's last pass in `status`.
    pub(crate) fn with_conntrack(
        &mut self,
        last_pass: watch::Receiver<Option<crate::views::ConntrackView>>,
    ) {
        self.conntrack = Some(last_pass);
    }

    /// The nodes changed (the Hubble peers follow with the batch).
    fn nodes_changed(&mut self) {
        self.routes_dirty = true;
        if let Some(p) = &mut self.peers {
            p.dirty = true;
        }
    }

    /// A remote configured when the agent starts, before it connects: the
    /// sync waits for it (its cluster ID comes when it connects).
    pub(crate) fn expect_remote(&mut self, id: SourceId, name: &str, pod_cidr_pools: Vec<IpNet>) {
        self.sources
            .register(id, Source::new(name, 0, StoreKind::REMOTE, pod_cidr_pools));
    }

    /// The node's own pod CIDRs, one per family (never routed elsewhere).
    pub(crate) fn set_pod_cidrs(&mut self, cidrs: Vec<IpNet>) {
        self.pod_cidrs = cidrs;
    }

    /// Runs until `shutdown`. Datapath state stays in the pinned maps.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let sync_deadline = tokio::time::Instant::now() + self.config.sync_timeout;
        let mut batch: Vec<Timed> = Vec::with_capacity(BATCH_SIZE);
        loop {
            let settled = self.sources.is_settled();
            let sync_wait = async {
                if settled {
                    std::future::pending::<()>().await
                } else {
                    tokio::time::sleep_until(sync_deadline).await
                }
            };
            let retry_at = self.retry.map(|(at, _)| at);
            let retry_wait = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending::<()>().await,
                }
            };
            let trim_at = self.trim_due;
            let trim_wait = async {
                match trim_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = sync_wait => self.sync_timed_out(),
                _ = trim_wait => self.release_free_memory(),
                // Nothing else may change for a while: what failed is
                // written without waiting for it.
                _ = retry_wait => self.apply(),
                n = self.rx.recv_many(&mut batch, BATCH_SIZE) => {
                    if n == 0 {
                        return Ok(());
                    }
                }
            }
            if !batch.is_empty() {
                self.step(&mut batch);
            }
        }
    }

    /// Handles one batch: its inputs in order, one write of the datapath,
    /// then its queries (which see the result of the whole batch).
    /// One batch of `inputs` received now (tests and benchmarks).
    pub(crate) fn step_now(&mut self, inputs: impl IntoIterator<Item = Input>) {
        let mut batch: Vec<Timed> = inputs
            .into_iter()
            .map(|input| Timed {
                at: Instant::now(),
                input,
            })
            .collect();
        self.step(&mut batch);
    }

    fn step(&mut self, batch: &mut Vec<Timed>) {
        let received: Vec<(Instant, Option<SourceId>)> = batch
            .iter()
            .map(|t| (t.at, t.input.data_source()))
            .collect();
        let mut queries = Vec::new();
        for timed in batch.drain(..) {
            match timed.input {
                Input::Query(q, reply) => queries.push((q, reply)),
                input => self.handle(input),
            }
        }
        self.apply();
        // Answers whose addresses this batch wrote may go now.
        for done in std::mem::take(&mut self.fqdn.waiting) {
            let _ = done.send(());
        }
        for (q, reply) in queries {
            let _ = reply.send(self.answer(q));
        }
        let now = Instant::now();
        // By the source's name as it is now (a source removed in this batch
        // is no longer observed).
        for (at, source) in received {
            if let Some(name) = source.and_then(|s| self.sources.name(s)) {
                self.metrics
                    .observe_propagation(name, now.duration_since(at));
            }
        }
    }

    fn sync_timed_out(&mut self) {
        if !self.sources.time_out() {
            return;
        }
        warn!(
            timeout = ?self.config.sync_timeout,
            waiting = ?self.sources.unsynced(),
            "sync timeout: proceeding without a complete view (routes and services are programmed; \
             policy removals and stale entries wait until every source has synced)"
        );
        self.routes_dirty = true;
        self.services.touch();
        self.apply();
    }

    /// A kind of a source delivered its initial view.
    fn mark_synced(&mut self, source: SourceId, kind: StoreKind) {
        let all = self.sources.mark_synced(source, kind);
        // An initial list is a burst of short-lived allocations (decoded
        // values, channel buffers, pages): give what is free back to the
        // system, at most once a second, and once more a second after
        // everything synced (when the stores have let go of their lists).
        match self.trimmed {
            Some(t) if t.elapsed() < TRIM_INTERVAL => {
                self.trim_due.get_or_insert((t + TRIM_INTERVAL).into());
            }
            _ => self.release_free_memory(),
        }
        if all {
            info!("every source is synced; reconciling the datapath");
            self.complete_sync();
            self.trim_due = Some(tokio::time::Instant::now() + TRIM_INTERVAL);
        }
    }

    fn release_free_memory(&mut self) {
        crate::memory::release_free_memory();
        self.trimmed = Some(Instant::now());
        self.trim_due = None;
    }

    /// The view is complete: regenerate from it, then write deletions.
    fn complete_sync(&mut self) {
        self.recompute_all_policy();
        self.services.touch();
        self.routes_dirty = true;
        self.apply_services_and_routes();
        let tables = &self.tables;
        if let Err(e) = self.dp.finish_sync(|p| tables.ip_winner(p).is_some()) {
            warn!(error = %e, "reconciling the datapath after sync failed");
            self.metrics.count_error("datapath");
        }
        // Endpoints kept their own policies until now; those with equal
        // rules share one from here on.
        self.recompute_all_policy();
        if let Err(e) = self.dp.flush() {
            warn!(error = %e, "writing the shared policies failed");
            self.metrics.count_error("datapath");
        }
    }

    /// Distinct policies of this node's endpoints.
    pub(crate) fn policy_count(&self) -> usize {
        self.endpoints.policy_count()
    }

    /// Entries of the policy map as written.
    pub(crate) fn policy_entries(&self) -> usize {
        self.dp
            .sizes()
            .iter()
            .find(|(name, _)| *name == "policy")
            .map_or(0, |(_, n)| *n)
    }

    /// Map entries written so far: (upserts, deletes).
    pub(crate) fn written_total(&self) -> (usize, usize) {
        let t = self.dp.written_total();
        (t.upserts, t.deletes)
    }

    fn recompute_all_policy(&mut self) {
        self.fqdn_selectors_changed();
        self.endpoints
            .recompute_all(&mut self.dp, &mut self.tables, &self.config.cluster);
        self.publish_dns_view();
    }

    /// Policy entries naming `id` follow its new labels (`None`: it went).
    fn identity_changed(&mut self, id: kvstore::NumericIdentity, labels: Option<&kvstore::Labels>) {
        self.endpoints.identity_changed(&mut self.dp, id, labels);
    }

    /// Writes what the inputs of one batch changed.
    fn apply(&mut self) {
        let started = Instant::now();
        // Egress rules naming a port follow the ports the mesh declares.
        if self.tables.take_named_ports_changed()
            && crate::policy_resolver::names_egress_ports(self.tables.policies.values())
        {
            self.recompute_all_policy();
        }
        self.apply_services_and_routes();
        if let Some(p) = &mut self.peers
            && std::mem::take(&mut p.dirty)
        {
            let peers = crate::hubble::peers(&self.tables.nodes, p.port);
            p.tx.send_if_modified(|current| {
                let changed = *current != peers;
                *current = peers;
                changed
            });
        }
        match self.dp.flush() {
            Ok(stats) => {
                if self.retry.take().is_some() {
                    info!(
                        upserts = stats.upserts,
                        deletes = stats.deletes,
                        "datapath written after a failed write"
                    );
                } else if stats.upserts + stats.deletes > 0 {
                    debug!(
                        upserts = stats.upserts,
                        deletes = stats.deletes,
                        "datapath updated"
                    );
                }
            }
            Err(e) => {
                let wait = self.retry.map_or(RETRY_MIN, |(_, w)| w);
                warn!(
                    error = %format!("{:#}", anyhow::Error::from(e)),
                    retry_in = ?wait,
                    "writing the datapath failed; what is not written stays queued"
                );
                self.retry = Some((
                    tokio::time::Instant::now() + wait,
                    (wait * 2).min(RETRY_MAX),
                ));
                self.metrics.count_error("datapath");
            }
        }
        for (name, size) in self.map_sizes() {
            self.metrics.set_map_size(name, size);
        }
        self.metrics.policies.set(self.tables.policies.len() as i64);
        self.metrics
            .identities
            .set(self.tables.identities.len() as i64);
        self.metrics
            .reconcile_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    /// Entries per map: the ipcache's from the tables (it is not copied).
    fn map_sizes(&self) -> Vec<(&'static str, usize)> {
        let mut sizes = vec![("ipcache", self.tables.ip_prefixes())];
        sizes.extend(self.dp.sizes());
        sizes
    }

    fn apply_services_and_routes(&mut self) {
        self.services.apply(
            &mut self.dp,
            &self.tables,
            &self.sources,
            (&self.config.cluster, self.config.cluster_id),
            &self.metrics,
        );
        if self.routes_dirty && self.sources.is_settled() {
            self.routes_dirty = false;
            self.routes.request(self.route_request());
        }
    }

    /// What the route installer plans from.
    fn route_request(&self) -> RouteRequest {
        RouteRequest {
            local_cluster: self.config.cluster.to_string(),
            local_node: self.config.node_name.to_string(),
            own_pod_cidrs: self.pod_cidrs.clone(),
            local_pools: self.config.pod_cidr_pools.clone(),
            nodes: self.tables.nodes.clone(),
            remote_pools: self
                .sources
                .remotes()
                .map(|(_, s)| (s.name.clone(), s.pod_cidr_pools.clone()))
                .collect::<BTreeMap<_, _>>(),
        }
    }
}
