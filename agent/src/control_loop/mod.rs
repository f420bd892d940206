//! The agent's single writer: every source's events go through one loop
//! that updates the global tables and turns the changes into datapath
//! writes, incrementally and in batches.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use bpf::{EndpointInfo, L4Match, Protocol};
use ipnet::IpNet;
use kvstore::{
    ClusterName, Event, Labels, NumericIdentity,
    values::{ClusterService, IdentityEntry, IpIdentityPair, Node, PolicyDocument, ServiceDef},
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    datapath_sync::DatapathSync,
    endpoint::Endpoint,
    metrics::{AgentMetrics, RemoteReasonLabel},
    plumbing,
    policy_resolver::{self, EndpointRules},
    route_plan::{self, RefusedRoute, RouteInputs},
    service_merger::{self, MergedFrontend, RemoteService},
    tables::{IdentityUpsert, IpEntry, SourceId, Tables},
    views::{
        BackendView, IdentityView, IpCacheView, MapEntryView, PolicyEntryView, PolicyView,
        RefusedRouteView, RemoteView, ServiceView, SourceView, StatusView,
    },
};

/// The kinds of data a source delivers; a source is synced when each kind
/// it registered is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum StoreKind {
    Identities,
    IpCache,
    Nodes,
    Services,
    Policies,
    ServiceDefs,
}

impl StoreKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Identities => "identities",
            Self::IpCache => "ipcache",
            Self::Nodes => "nodes",
            Self::Services => "services",
            Self::Policies => "policies",
            Self::ServiceDefs => "servicedefs",
        }
    }
}

/// Why the loop is woken.
pub(crate) enum Input {
    Identity(SourceId, Event<IdentityEntry>),
    Ip(SourceId, IpEvent),
    Node(SourceId, Event<Node>),
    Service(SourceId, Event<ClusterService>),
    Policy(Event<PolicyDocument>),
    ServiceDef(Event<ServiceDef>),
    /// A source (a remote cluster) appears with the kinds it will deliver.
    RegisterSource {
        id: SourceId,
        name: String,
        cluster_id: u32,
        kinds: Vec<StoreKind>,
        /// Its pod pools, where its config names them: its nodes' routes
        /// must lie inside.
        pod_cidr_pools: Vec<IpNet>,
    },
    /// A source's data must go (its configuration was removed).
    DrainSource(SourceId),
    /// A source reconnected: what it does not deliver again before each
    /// kind's `Synced` is stale and removed then (mark and sweep).
    BeginResync(SourceId),
    /// A remote's services go (unreachable longer than its cache TTL).
    DropServices(SourceId),
    /// Remote cluster status, for `status`.
    RemoteStatus(Vec<RemoteView>),
    Attach(Endpoint, oneshot::Sender<Result<u32, String>>),
    Detach(Endpoint, oneshot::Sender<Result<(), String>>),
    Query(Query, oneshot::Sender<Answer>),
}

/// An ipcache change reduced to what the datapath needs, computed where the
/// event is received so that the loop's queue stays small under a burst
/// (an initial list of a large remote cluster).
pub(crate) enum IpEvent {
    Upsert(IpNet, IpEntry),
    Delete(IpNet),
    /// A delete whose key is not a prefix (nothing to do).
    Ignore,
    Synced,
}

impl IpEvent {
    /// Reduces a store event; `remote` rewrites the host identity to
    /// remote-node as Cilium does.
    pub(crate) fn from_event(event: Event<IpIdentityPair>, remote: bool) -> Self {
        match event {
            Event::Upsert { value, .. } => {
                Self::Upsert(value.prefix(), IpEntry::from_pair(&value, remote))
            }
            Event::Delete { key } => parse_prefix(&key).map_or(Self::Ignore, Self::Delete),
            Event::Synced => Self::Synced,
        }
    }
}

/// A read of the agent's state.
#[derive(Debug, Clone)]
pub(crate) enum Query {
    Status,
    Identities,
    IpCache,
    Policy(u32),
    Services,
    /// The raw content of a BPF map.
    Map(String),
}

#[derive(Debug, Clone)]
pub(crate) enum Answer {
    Status(Box<StatusView>),
    Identities(Vec<IdentityView>),
    IpCache(Vec<IpCacheView>),
    Policy(Option<PolicyView>),
    Services(Vec<ServiceView>),
    Map(Result<Vec<MapEntryView>, String>),
}

/// An input and when it arrived (for the propagation-delay histogram).
pub(crate) struct Timed {
    pub at: Instant,
    pub input: Input,
}

/// Where the loop sends its inputs.
#[derive(Debug, Clone)]
pub(crate) struct LoopHandle {
    tx: mpsc::Sender<Timed>,
}

impl LoopHandle {
    pub(crate) async fn send(&self, input: Input) -> bool {
        self.tx
            .send(Timed {
                at: Instant::now(),
                input,
            })
            .await
            .is_ok()
    }

    /// Asks the loop something; `None` if it stopped.
    pub(crate) async fn query(&self, query: Query) -> Option<Answer> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Input::Query(query, tx)).await {
            return None;
        }
        rx.await.ok()
    }
}

struct SourceState {
    name: String,
    cluster_id: u32,
    pod_cidr_pools: Vec<IpNet>,
    expected: BTreeSet<StoreKind>,
    synced: BTreeSet<StoreKind>,
}

/// What a reconnected source has not re-delivered yet.
#[derive(Default)]
struct Stale {
    identities: HashSet<NumericIdentity>,
    ips: HashSet<IpNet>,
    nodes: HashSet<String>,
    services: HashSet<String>,
}

struct LocalEndpoint {
    endpoint: Endpoint,
    labels: Labels,
    rules: EndpointRules,
}

/// Static facts the loop needs.
#[derive(Debug, Clone)]
pub(crate) struct LoopConfig {
    pub cluster: ClusterName,
    pub cluster_id: u32,
    pub node_name: String,
    pub node_ip: IpAddr,
    pub node_netns: Option<PathBuf>,
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
    sources: BTreeMap<SourceId, SourceState>,
    stale: HashMap<SourceId, Stale>,
    endpoints: BTreeMap<u32, LocalEndpoint>,
    merged: Vec<(String, MergedFrontend)>,
    routes: BTreeMap<IpNet, IpAddr>,
    /// Remote nodes' pod CIDRs not routed, from the last route plan.
    refused_routes: Vec<RefusedRoute>,
    /// Remote ipcache entries refused for lying in the local pods' space.
    refused_ips: HashMap<SourceId, BTreeSet<IpNet>>,
    pod_cidr: Option<IpNet>,
    remotes: Vec<RemoteView>,
    metrics: Arc<AgentMetrics>,
    synced: bool,
    sync_timed_out: bool,
    services_dirty: bool,
    routes_dirty: bool,
}

impl ControlLoop {
    /// A loop over `dp`, with the local sources registered.
    pub(crate) fn new(
        config: LoopConfig,
        dp: DatapathSync,
        metrics: Arc<AgentMetrics>,
    ) -> (Self, LoopHandle) {
        let (tx, rx) = mpsc::channel(16_384);
        let mut sources = BTreeMap::new();
        sources.insert(
            SourceId::LOCAL_CLUSTER,
            SourceState {
                name: config.cluster.to_string(),
                cluster_id: config.cluster_id,
                pod_cidr_pools: config.pod_cidr_pools.clone(),
                expected: [
                    StoreKind::Identities,
                    StoreKind::IpCache,
                    StoreKind::Nodes,
                    StoreKind::Policies,
                    StoreKind::ServiceDefs,
                ]
                .into_iter()
                .collect(),
                synced: BTreeSet::new(),
            },
        );
        (
            Self {
                config,
                rx,
                tables: Tables::new(),
                dp,
                sources,
                stale: HashMap::new(),
                endpoints: BTreeMap::new(),
                merged: Vec::new(),
                routes: BTreeMap::new(),
                refused_routes: Vec::new(),
                refused_ips: HashMap::new(),
                pod_cidr: None,
                remotes: Vec::new(),
                metrics,
                synced: false,
                sync_timed_out: false,
                services_dirty: false,
                routes_dirty: false,
            },
            LoopHandle { tx },
        )
    }

    /// The node's own pod CIDR (never routed elsewhere).
    pub(crate) fn set_pod_cidr(&mut self, cidr: Option<IpNet>) {
        self.pod_cidr = cidr;
    }

    /// Runs until `shutdown`. Datapath state stays in the pinned maps.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let sync_deadline = tokio::time::Instant::now() + self.config.sync_timeout;
        let mut batch: Vec<Timed> = Vec::with_capacity(1024);
        loop {
            let sync_wait = async {
                if self.synced || self.sync_timed_out {
                    std::future::pending::<()>().await
                } else {
                    tokio::time::sleep_until(sync_deadline).await
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = sync_wait => {
                    let waiting = self.unsynced_sources();
                    warn!(
                        timeout = ?self.config.sync_timeout,
                        waiting = ?waiting,
                        "sync timeout: proceeding without a complete view (routes and services are programmed; \
                         policy removals and stale entries wait until every source has synced)"
                    );
                    self.sync_timed_out = true;
                    self.routes_dirty = true;
                    self.services_dirty = true;
                    self.apply();
                }
                n = self.rx.recv_many(&mut batch, 4096) => {
                    if n == 0 {
                        return Ok(());
                    }
                }
            }
            if batch.is_empty() {
                continue;
            }
            let received: Vec<(Instant, Option<String>)> = batch
                .iter()
                .map(|t| (t.at, self.source_label(&t.input)))
                .collect();
            // Queries see the result of the whole batch.
            let mut queries = Vec::new();
            for timed in batch.drain(..) {
                match timed.input {
                    Input::Query(q, reply) => queries.push((q, reply)),
                    input => self.handle(input),
                }
            }
            self.apply();
            for (q, reply) in queries {
                let _ = reply.send(self.answer(q));
            }
            let now = Instant::now();
            for (at, source) in received {
                if let Some(source) = source {
                    self.metrics
                        .observe_propagation(&source, now.duration_since(at));
                }
            }
        }
    }

    fn source_label(&self, input: &Input) -> Option<String> {
        let id = match input {
            Input::Identity(s, _) | Input::Ip(s, _) | Input::Node(s, _) | Input::Service(s, _) => {
                *s
            }
            _ => return None,
        };
        self.sources.get(&id).map(|s| s.name.clone())
    }

    fn unsynced_sources(&self) -> Vec<String> {
        self.sources
            .values()
            .filter(|s| !s.expected.is_subset(&s.synced))
            .map(|s| {
                let missing: Vec<&str> = s
                    .expected
                    .difference(&s.synced)
                    .map(|k| k.as_str())
                    .collect();
                format!("{} ({})", s.name, missing.join(", "))
            })
            .collect()
    }

    fn mark_synced(&mut self, source: SourceId, kind: StoreKind) {
        if let Some(s) = self.sources.get_mut(&source) {
            s.synced.insert(kind);
        }
        // An initial list is a burst of short-lived allocations (decoded
        // values, channel buffers); give what is free back to the system.
        release_free_memory();
        if !self.synced && self.unsynced_sources().is_empty() {
            info!("every source is synced; reconciling the datapath");
            self.complete_sync();
        }
    }

    fn complete_sync(&mut self) {
        self.synced = true;
        // Regenerate from the complete view before deletions are written.
        self.recompute_all_policy();
        self.services_dirty = true;
        self.routes_dirty = true;
        self.apply_services_and_routes();
        let tables = &self.tables;
        if let Err(e) = self.dp.finish_sync(|p| tables.ip_winner(p).is_some()) {
            warn!(error = %e, "reconciling the datapath after sync failed");
            self.metrics.count_error("datapath");
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Identity(source, event) => self.on_identity(source, event),
            Input::Ip(source, event) => self.on_ip(source, event),
            Input::Node(source, event) => self.on_node(source, event),
            Input::Service(source, event) => self.on_service(source, event),
            Input::Policy(event) => {
                match event {
                    Event::Upsert { key, value } => {
                        self.tables.policies.insert(key, value);
                    }
                    Event::Delete { key } => {
                        self.tables.policies.remove(&key);
                    }
                    Event::Synced => self.mark_synced(SourceId::LOCAL_CLUSTER, StoreKind::Policies),
                }
                self.recompute_all_policy();
            }
            Input::ServiceDef(event) => {
                match event {
                    Event::Upsert { key, value } => {
                        self.tables.service_defs.insert(key, value);
                    }
                    Event::Delete { key } => {
                        self.tables.service_defs.remove(&key);
                    }
                    Event::Synced => {
                        self.mark_synced(SourceId::LOCAL_CLUSTER, StoreKind::ServiceDefs)
                    }
                }
                self.services_dirty = true;
            }
            Input::RegisterSource {
                id,
                name,
                cluster_id,
                kinds,
                pod_cidr_pools,
            } => {
                info!(source = name, "remote source registered");
                let synced = self
                    .sources
                    .get(&id)
                    .map(|s| s.synced.clone())
                    .unwrap_or_default();
                self.sources.insert(
                    id,
                    SourceState {
                        name,
                        cluster_id,
                        pod_cidr_pools,
                        expected: kinds.into_iter().collect(),
                        synced,
                    },
                );
            }
            Input::DrainSource(id) => self.drain(id),
            Input::BeginResync(id) => self.begin_resync(id),
            Input::DropServices(id) => {
                if let Some(name) = self.sources.get(&id).map(|s| s.name.clone()) {
                    for by_cluster in self.tables.services.values_mut() {
                        by_cluster.remove(&name);
                    }
                    self.tables.services.retain(|_, m| !m.is_empty());
                    self.services_dirty = true;
                }
            }
            Input::RemoteStatus(remotes) => self.remotes = remotes,
            Input::Attach(endpoint, reply) => {
                let result = self.attach(endpoint);
                let _ = reply.send(result);
            }
            Input::Detach(endpoint, reply) => {
                let result = self.detach(&endpoint);
                let _ = reply.send(result);
            }
            Input::Query(query, reply) => {
                let _ = reply.send(self.answer(query));
            }
        }
    }

    fn on_identity(&mut self, source: SourceId, event: Event<IdentityEntry>) {
        match event {
            Event::Upsert { value, .. } => {
                let local = source.is_local();
                if let Some(stale) = self.stale.get_mut(&source) {
                    stale.identities.remove(&value.id);
                }
                match self
                    .tables
                    .upsert_identity(source, value.id, value.labels.clone())
                {
                    IdentityUpsert::Changed => {
                        self.identity_changed(value.id, Some(&value.labels));
                        self.services_dirty |= local;
                    }
                    IdentityUpsert::Unchanged => {}
                    IdentityUpsert::Refused => warn!(
                        source = self.sources.get(&source).map(|s| s.name.as_str()),
                        id = value.id.get(),
                        "a remote tried to set a reserved or local identity; ignored"
                    ),
                }
            }
            Event::Delete { key } => {
                if let Ok(id) = key.parse::<NumericIdentity>()
                    && self.tables.delete_identity(source, id)
                {
                    self.identity_changed(id, None);
                    self.services_dirty |= source.is_local();
                }
            }
            Event::Synced => {
                let stale: Vec<NumericIdentity> = self
                    .stale
                    .get_mut(&source)
                    .map(|s| s.identities.drain().collect())
                    .unwrap_or_default();
                for id in stale {
                    if self.tables.delete_identity(source, id) {
                        self.identity_changed(id, None);
                    }
                }
                self.mark_synced(source, StoreKind::Identities)
            }
        }
    }

    /// Incremental policy: only entries naming `id` change.
    fn identity_changed(&mut self, id: NumericIdentity, labels: Option<&Labels>) {
        for ep in self.endpoints.values() {
            if !ep.rules.enforced {
                continue;
            }
            self.dp.remove_policy_identity(ep.endpoint.id, id.get());
            if let Some(labels) = labels {
                let keys =
                    policy_resolver::entries_for_identity(ep.endpoint.id, &ep.rules, id, labels);
                self.dp.add_policy_keys(keys);
            }
        }
        // Entities (world, host…) are fixed entries that removal must not drop.
        if labels.is_none() && id.is_reserved() {
            self.recompute_all_policy();
        }
    }

    fn on_ip(&mut self, source: SourceId, event: IpEvent) {
        let remote = !source.is_local();
        let (prefix, change) = match event {
            IpEvent::Upsert(prefix, entry) => {
                if let Some(stale) = self.stale.get_mut(&source) {
                    stale.ips.remove(&prefix);
                }
                if remote && self.in_local_pod_space(&prefix) {
                    // A remote address inside the local pods' space would
                    // give a local address the remote's identity: refused,
                    // counted, and any earlier claim of it withdrawn.
                    if self.refused_ips.entry(source).or_default().insert(prefix) {
                        warn!(
                            source = self.sources.get(&source).map(|s| s.name.as_str()),
                            %prefix,
                            "a remote ipcache entry lies in the local pods' address space; ignored"
                        );
                    }
                    (prefix, self.tables.delete_ip(source, prefix))
                } else {
                    (prefix, self.tables.upsert_ip(source, prefix, entry))
                }
            }
            IpEvent::Delete(prefix) => {
                if let Some(refused) = self.refused_ips.get_mut(&source) {
                    refused.remove(&prefix);
                }
                (prefix, self.tables.delete_ip(source, prefix))
            }
            IpEvent::Ignore => return,
            IpEvent::Synced => {
                let stale: Vec<IpNet> = self
                    .stale
                    .get_mut(&source)
                    .map(|s| s.ips.drain().collect())
                    .unwrap_or_default();
                for prefix in stale {
                    let (before, after) = self.tables.delete_ip(source, prefix);
                    if before != after {
                        self.dp.set_ip(prefix, after);
                    }
                }
                return self.mark_synced(source, StoreKind::IpCache);
            }
        };
        if change.0 != change.1 {
            self.dp.set_ip(prefix, change.1);
            if !remote {
                self.services_dirty = true;
            }
        }
    }

    /// Whether `prefix` overlaps the local cluster's pods: its configured
    /// pools, this node's CIDR, and the CIDRs of the local nodes known.
    fn in_local_pod_space(&self, prefix: &IpNet) -> bool {
        let local_nodes = self
            .tables
            .nodes
            .get(self.config.cluster.as_str())
            .into_iter()
            .flat_map(|nodes| nodes.values())
            .flat_map(Node::pod_cidrs);
        self.config
            .pod_cidr_pools
            .iter()
            .copied()
            .chain(self.pod_cidr)
            .chain(local_nodes)
            .any(|local| route_plan::overlaps(&local, prefix))
    }

    fn on_node(&mut self, source: SourceId, event: Event<Node>) {
        let Some(cluster) = self.sources.get(&source).map(|s| s.name.clone()) else {
            return;
        };
        match event {
            Event::Upsert { value, .. } => {
                if let Some(stale) = self.stale.get_mut(&source) {
                    stale.nodes.remove(&value.name);
                }
                self.tables
                    .nodes
                    .entry(cluster)
                    .or_default()
                    .insert(value.name.clone(), value);
            }
            Event::Delete { key } => {
                let name = key.rsplit('/').next().unwrap_or(&key).to_string();
                if let Some(nodes) = self.tables.nodes.get_mut(&cluster) {
                    nodes.remove(&name);
                }
            }
            Event::Synced => {
                let stale: Vec<String> = self
                    .stale
                    .get_mut(&source)
                    .map(|s| s.nodes.drain().collect())
                    .unwrap_or_default();
                if let Some(nodes) = self.tables.nodes.get_mut(&cluster) {
                    for name in stale {
                        nodes.remove(&name);
                    }
                }
                self.routes_dirty = true;
                return self.mark_synced(source, StoreKind::Nodes);
            }
        }
        self.routes_dirty = true;
    }

    fn on_service(&mut self, source: SourceId, event: Event<ClusterService>) {
        let Some(cluster) = self.sources.get(&source).map(|s| s.name.clone()) else {
            return;
        };
        match event {
            Event::Upsert { value, .. } => {
                if let Some(stale) = self.stale.get_mut(&source) {
                    stale.services.remove(&value.namespaced_name());
                }
                self.tables
                    .services
                    .entry(value.namespaced_name())
                    .or_default()
                    .insert(cluster, value);
            }
            Event::Delete { key } => {
                // `<cluster>/<ns>/<name>`
                let name = key
                    .split_once('/')
                    .map(|(_, rest)| rest.to_string())
                    .unwrap_or(key);
                if let Some(by_cluster) = self.tables.services.get_mut(&name) {
                    by_cluster.remove(&cluster);
                    if by_cluster.is_empty() {
                        self.tables.services.remove(&name);
                    }
                }
            }
            Event::Synced => {
                let stale: Vec<String> = self
                    .stale
                    .get_mut(&source)
                    .map(|s| s.services.drain().collect())
                    .unwrap_or_default();
                for name in stale {
                    if let Some(by_cluster) = self.tables.services.get_mut(&name) {
                        by_cluster.remove(&cluster);
                    }
                }
                self.tables.services.retain(|_, m| !m.is_empty());
                self.services_dirty = true;
                return self.mark_synced(source, StoreKind::Services);
            }
        }
        self.services_dirty = true;
    }

    fn begin_resync(&mut self, source: SourceId) {
        let Some(name) = self.sources.get(&source).map(|s| s.name.clone()) else {
            return;
        };
        let stale = Stale {
            identities: self.tables.identities_of(source).into_iter().collect(),
            ips: self.tables.ips_of(source).into_iter().collect(),
            nodes: self
                .tables
                .nodes
                .get(&name)
                .map(|n| n.keys().cloned().collect())
                .unwrap_or_default(),
            services: self
                .tables
                .services
                .iter()
                .filter(|(_, by_cluster)| by_cluster.contains_key(&name))
                .map(|(k, _)| k.clone())
                .collect(),
        };
        self.stale.insert(source, stale);
    }

    /// Removes everything a source delivered (its configuration is gone).
    fn drain(&mut self, source: SourceId) {
        self.stale.remove(&source);
        let Some(state) = self.sources.remove(&source) else {
            return;
        };
        info!(source = state.name, "draining a removed source");
        self.refused_ips.remove(&source);
        for reason in route_plan::RouteRefusal::ALL {
            self.metrics
                .remote_refused_routes
                .remove(&RemoteReasonLabel {
                    cluster: state.name.clone(),
                    reason: reason.as_str().to_string(),
                });
        }
        for prefix in self.tables.ips_of(source) {
            let (before, after) = self.tables.delete_ip(source, prefix);
            if before != after {
                self.dp.set_ip(prefix, after);
            }
        }
        for id in self.tables.identities_of(source) {
            if self.tables.delete_identity(source, id) {
                self.identity_changed(id, None);
            }
        }
        self.tables.nodes.remove(&state.name);
        for by_cluster in self.tables.services.values_mut() {
            by_cluster.remove(&state.name);
        }
        self.tables.services.retain(|_, m| !m.is_empty());
        self.services_dirty = true;
        self.routes_dirty = true;
        if !self.synced && self.unsynced_sources().is_empty() {
            self.complete_sync();
        }
    }

    fn attach(&mut self, endpoint: Endpoint) -> Result<u32, String> {
        let labels = endpoint.security_labels(&self.config.cluster);
        let rules = policy_resolver::rules_for_endpoint(
            &labels,
            self.tables.policies.values(),
            self.config.cluster.as_str(),
        );
        let keys = policy_resolver::resolve(
            endpoint.id,
            &rules,
            self.tables.identities.iter().map(|(id, l)| (*id, l)),
        );
        self.dp.set_endpoint_policy(endpoint.id, &keys);
        // The endpoint's own address and identity, known before etcd echoes them.
        let identity = NumericIdentity::new(endpoint.identity);
        self.tables
            .upsert_identity(SourceId::LOCAL_ENDPOINTS, identity, labels.clone());
        self.identity_changed(identity, Some(&labels));
        let prefix = IpNet::from(IpAddr::V4(endpoint.ip));
        let (before, after) = self.tables.upsert_ip(
            SourceId::LOCAL_ENDPOINTS,
            prefix,
            IpEntry {
                identity,
                host_ip: Some(self.config.node_ip),
            },
        );
        if before != after {
            self.dp.set_ip(prefix, after);
        }
        self.dp
            .flush()
            .map_err(|e| format!("writing the endpoint's policy: {e}"))?;
        let ifindex = self
            .dp
            .attach(
                &endpoint.host_ifname,
                endpoint.id,
                endpoint.identity,
                rules.enforced,
            )
            .map_err(|e| {
                format!(
                    "attaching the datapath to {}: {:#}",
                    endpoint.host_ifname,
                    anyhow::Error::new(e)
                )
            })?;
        let mut endpoint = endpoint;
        endpoint.ifindex = Some(ifindex);
        self.endpoints.insert(
            endpoint.id,
            LocalEndpoint {
                endpoint,
                labels,
                rules,
            },
        );
        self.services_dirty = true;
        self.metrics.endpoints.set(self.endpoints.len() as i64);
        Ok(ifindex)
    }

    fn detach(&mut self, endpoint: &Endpoint) -> Result<(), String> {
        let ifindex = self
            .endpoints
            .remove(&endpoint.id)
            .and_then(|e| e.endpoint.ifindex)
            .or(endpoint.ifindex);
        let result = self.dp.detach(&endpoint.host_ifname, ifindex, endpoint.id);
        let prefix = IpNet::from(IpAddr::V4(endpoint.ip));
        let (before, after) = self.tables.delete_ip(SourceId::LOCAL_ENDPOINTS, prefix);
        if before != after {
            self.dp.set_ip(prefix, after);
        }
        let identity = NumericIdentity::new(endpoint.identity);
        if !self
            .endpoints
            .values()
            .any(|e| e.endpoint.identity == endpoint.identity)
            && self
                .tables
                .delete_identity(SourceId::LOCAL_ENDPOINTS, identity)
        {
            // The local cluster's etcd may still know it.
            self.identity_changed(identity, None);
        }
        self.services_dirty = true;
        self.metrics.endpoints.set(self.endpoints.len() as i64);
        result.map_err(|e| {
            format!(
                "detaching from {}: {:#}",
                endpoint.host_ifname,
                anyhow::Error::new(e)
            )
        })
    }

    /// Full recomputation of every endpoint's rules and entries (policies
    /// changed, or the view became complete).
    fn recompute_all_policy(&mut self) {
        let cluster = self.config.cluster.clone();
        for ep in self.endpoints.values_mut() {
            let rules = policy_resolver::rules_for_endpoint(
                &ep.labels,
                self.tables.policies.values(),
                cluster.as_str(),
            );
            let keys = policy_resolver::resolve(
                ep.endpoint.id,
                &rules,
                self.tables.identities.iter().map(|(id, l)| (*id, l)),
            );
            self.dp.set_endpoint_policy(ep.endpoint.id, &keys);
            if rules.enforced != ep.rules.enforced
                && let Some(ifindex) = ep.endpoint.ifindex
            {
                self.dp.set_endpoint_info(
                    ifindex,
                    Some(EndpointInfo::new(
                        ep.endpoint.id,
                        ep.endpoint.identity,
                        rules.enforced,
                    )),
                );
            }
            ep.rules = rules;
        }
    }

    /// Writes what the inputs of one batch changed.
    fn apply(&mut self) {
        let started = Instant::now();
        self.apply_services_and_routes();
        match self.dp.flush() {
            Ok(stats) => {
                if stats.upserts + stats.deletes > 0 {
                    debug!(
                        upserts = stats.upserts,
                        deletes = stats.deletes,
                        "datapath updated"
                    );
                }
            }
            Err(e) => {
                warn!(error = %e, "writing the datapath failed; will retry with the next change");
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
        if self.services_dirty {
            self.services_dirty = false;
            self.merged = self.merge_services();
            let frontends: Vec<MergedFrontend> =
                self.merged.iter().map(|(_, f)| f.clone()).collect();
            if let Err(e) = self.dp.set_services(&frontends) {
                warn!(error = %e, "programming services failed");
                self.metrics.count_error("services");
                self.services_dirty = true;
            }
            self.metrics.services.set(self.merged.len() as i64);
        }
        if self.routes_dirty && (self.synced || self.sync_timed_out) {
            self.routes_dirty = false;
            self.sync_routes();
        }
    }

    fn merge_services(&self) -> Vec<(String, MergedFrontend)> {
        let local_ips = self.tables.local_cluster_ips();
        let mut out = Vec::new();
        for (key, def) in &self.tables.service_defs {
            let local: Vec<IpAddr> = local_ips
                .iter()
                .filter(|(_, id)| {
                    self.tables
                        .identities
                        .get(id)
                        .is_some_and(|l| def.selects(l))
                })
                .map(|(ip, _)| *ip)
                .collect();
            let remote_services: Vec<(String, u32, &ClusterService)> = self
                .tables
                .services
                .get(key)
                .into_iter()
                .flatten()
                .filter(|(cluster, _)| cluster.as_str() != self.config.cluster.as_str())
                .map(|(cluster, svc)| {
                    let id = self
                        .sources
                        .values()
                        .find(|s| &s.name == cluster)
                        .map_or(svc.cluster_id, |s| s.cluster_id);
                    (cluster.clone(), id, svc)
                })
                .collect();
            let remotes: Vec<RemoteService<'_>> = remote_services
                .iter()
                .map(|(cluster, id, svc)| RemoteService {
                    cluster,
                    cluster_id: *id,
                    service: svc,
                })
                .collect();
            for fe in service_merger::merge(
                def,
                self.config.cluster.as_str(),
                self.config.cluster_id,
                &local,
                &remotes,
            ) {
                out.push((key.clone(), fe));
            }
        }
        out
    }

    /// Installs the routes of [`route_plan::plan`], the one place that
    /// decides which node CIDRs are routed.
    fn sync_routes(&mut self) {
        let netns = self.config.node_netns.as_deref();
        let host_networks = match plumbing::host_networks(netns) {
            Ok(n) => n,
            Err(e) => {
                // Without them no remote claim can be checked: route nothing
                // new from remotes until they can be read.
                warn!(error = %e, "cannot read the node's own networks; retrying with the next change");
                self.metrics.count_error("routes");
                self.routes_dirty = true;
                return;
            }
        };
        let remote_pools: BTreeMap<String, Vec<IpNet>> = self
            .sources
            .iter()
            .filter(|(id, _)| !id.is_local())
            .map(|(_, s)| (s.name.clone(), s.pod_cidr_pools.clone()))
            .collect();
        let plan = route_plan::plan(&RouteInputs {
            local_cluster: self.config.cluster.as_str(),
            local_node: &self.config.node_name,
            own_pod_cidr: self.pod_cidr,
            local_pools: &self.config.pod_cidr_pools,
            host_networks: &host_networks,
            nodes: &self.tables.nodes,
            remote_pools: &remote_pools,
            installed: &self.routes,
        });
        for r in &plan.refused {
            if !self.refused_routes.contains(r) {
                warn!(
                    remote = r.cluster,
                    node = r.node,
                    cidr = %r.cidr,
                    reason = %r.reason,
                    "refusing to route a remote node's pod CIDR"
                );
            }
        }
        self.refused_routes = plan.refused;
        self.publish_refused_routes();
        let desired = plan.routes;
        for (cidr, via) in &desired {
            if self.routes.get(cidr) != Some(via) {
                match plumbing::replace_route(netns, *cidr, *via) {
                    Ok(()) => {
                        self.routes.insert(*cidr, *via);
                    }
                    Err(e) => {
                        warn!(%cidr, %via, error = %e, "cannot route a remote pod CIDR");
                        self.metrics.count_error("routes");
                        self.routes_dirty = true;
                    }
                }
            }
        }
        let stale: Vec<IpNet> = self
            .routes
            .keys()
            .filter(|c| !desired.contains_key(c))
            .copied()
            .collect();
        for cidr in stale {
            if plumbing::delete_route(netns, cidr).is_ok() {
                self.routes.remove(&cidr);
            }
        }
    }

    /// The refused-routes gauge: current refusals by remote and reason.
    fn publish_refused_routes(&self) {
        let mut counts: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
        for s in self.sources.iter().filter(|(id, _)| !id.is_local()) {
            for reason in route_plan::RouteRefusal::ALL {
                counts.insert((s.1.name.clone(), reason.as_str()), 0);
            }
        }
        for r in &self.refused_routes {
            *counts
                .entry((r.cluster.clone(), r.reason.as_str()))
                .or_default() += 1;
        }
        for ((cluster, reason), n) in counts {
            self.metrics
                .remote_refused_routes
                .get_or_create(&RemoteReasonLabel {
                    cluster,
                    reason: reason.to_string(),
                })
                .set(n);
        }
    }

    fn answer(&self, query: Query) -> Answer {
        match query {
            Query::Status => Answer::Status(Box::new(self.status())),
            Query::Identities => {
                let mut all: Vec<IdentityView> = self
                    .tables
                    .identities
                    .iter()
                    .map(|(id, l)| IdentityView {
                        id: id.get(),
                        labels: l.canonical(),
                    })
                    .collect();
                all.sort_by_key(|v| v.id);
                Answer::Identities(all)
            }
            Query::IpCache => Answer::IpCache(
                self.dp
                    .datapath()
                    .ipcache()
                    .dump()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| IpCacheView {
                        prefix: k.net().map(|n| n.to_string()).unwrap_or_default(),
                        identity: v.sec_identity,
                        host_ip: v.tunnel_endpoint().map(|ip| ip.to_string()),
                    })
                    .collect(),
            ),
            Query::Policy(id) => Answer::Policy(self.endpoints.get(&id).map(|ep| {
                PolicyView {
                    endpoint: id,
                    enforced: ep.rules.enforced,
                    policies: ep.rules.policies.clone(),
                    entries: self
                        .dp
                        .policy_keys_of(id)
                        .into_iter()
                        .map(|k| {
                            let (protocol, port) = match k.l4() {
                                L4Match::Any => ("any".to_string(), 0),
                                L4Match::Protocol(p) => (protocol_name(p), 0),
                                L4Match::Port(p, port) => (protocol_name(p), port),
                            };
                            PolicyEntryView {
                                identity: k.sec_identity,
                                identity_labels: self
                                    .tables
                                    .identities
                                    .get(&NumericIdentity::new(k.sec_identity))
                                    .map(Labels::canonical),
                                protocol,
                                port,
                            }
                        })
                        .collect(),
                }
            })),
            Query::Services => Answer::Services(
                self.merged
                    .iter()
                    .map(|(name, fe)| ServiceView {
                        name: name.clone(),
                        frontend: fe.frontend.to_string(),
                        protocol: protocol_name(fe.protocol),
                        backends: fe
                            .slots
                            .iter()
                            .map(|s| BackendView {
                                address: s.backend.to_string(),
                                cluster_id: s.cluster_id as u16,
                            })
                            .collect(),
                        active_clusters: fe.active_clusters.clone(),
                        reason: fe.reason.clone(),
                    })
                    .collect(),
            ),
            Query::Map(name) => Answer::Map(self.dump_map(&name)),
        }
    }

    /// The content of a pinned map as the kernel has it (not the agent's
    /// view), decoded: addresses, host-order ports, identities with labels.
    fn dump_map(&self, name: &str) -> Result<Vec<MapEntryView>, String> {
        let dp = self.dp.datapath();
        let labels = |id: u64| {
            u32::try_from(id)
                .ok()
                .and_then(|id| self.tables.identities.get(&NumericIdentity::new(id)))
                .map(|l| l.to_string())
        };
        let view =
            |key: bpf::Fields, value: bpf::Fields| crate::views::map_entry(key, value, &labels);
        fn rows<K: bpf::Describe, V: bpf::DescribeValue<K>>(
            m: std::collections::BTreeMap<K, V>,
            view: impl Fn(bpf::Fields, bpf::Fields) -> MapEntryView,
        ) -> Vec<MapEntryView> {
            m.into_iter()
                .map(|(k, v)| view(k.describe(), v.describe(&k)))
                .collect()
        }
        let result = match name {
            "ipcache" => dp.ipcache().dump().map(|m| rows(m, view)),
            "policy" => dp.policy().dump().map(|m| rows(m, view)),
            "endpoints" => dp.endpoints().dump().map(|m| rows(m, view)),
            "services" => dp.services().dump().map(|m| rows(m, view)),
            "backends" => dp.backends().dump().map(|m| rows(m, view)),
            "conntrack" => dp.conntrack().dump().map(|m| rows(m, view)),
            other => {
                return Err(format!(
                    "unknown map {other:?}; one of ipcache, policy, endpoints, services, backends, conntrack"
                ));
            }
        };
        result.map_err(|e| e.to_string())
    }

    fn status(&self) -> StatusView {
        let identities_by_source: HashMap<SourceId, usize> = self
            .sources
            .keys()
            .map(|s| (*s, self.tables.identities_of(*s).len()))
            .collect();
        StatusView {
            cluster: self.config.cluster.to_string(),
            cluster_id: self.config.cluster_id,
            node: self.config.node_name.clone(),
            node_ip: self.config.node_ip.to_string(),
            pod_cidr: self.pod_cidr.map(|c| c.to_string()),
            synced: self.synced,
            sync_timed_out: self.sync_timed_out,
            endpoints: self.endpoints.len(),
            maps: self
                .map_sizes()
                .into_iter()
                .map(|(n, s)| (n.to_string(), s))
                .collect(),
            map_capacity: self
                .dp
                .datapath()
                .capacities()
                .into_iter()
                .map(|(n, c)| (n.to_string(), c as usize))
                .collect(),
            sources: self
                .sources
                .iter()
                .map(|(id, s)| SourceView {
                    name: s.name.clone(),
                    synced: s
                        .expected
                        .iter()
                        .map(|k| (k.as_str().to_string(), s.synced.contains(k)))
                        .collect(),
                    ipcache_entries: self.tables.ip_count(*id),
                    identities: identities_by_source.get(id).copied().unwrap_or(0),
                })
                .collect(),
            remotes: self
                .remotes
                .iter()
                .cloned()
                .map(|mut r| {
                    let refused_ips = self
                        .sources
                        .iter()
                        .find(|(_, s)| s.name == r.name)
                        .and_then(|(id, _)| self.refused_ips.get(id))
                        .map_or(0, BTreeSet::len);
                    if refused_ips > 0 {
                        r.invalid
                            .insert(IPCACHE_IN_LOCAL_SPACE.to_string(), refused_ips as u64);
                    }
                    r.refused_routes = self
                        .refused_routes
                        .iter()
                        .filter(|x| x.cluster == r.name)
                        .map(|x| RefusedRouteView {
                            node: x.node.clone(),
                            cidr: x.cidr.to_string(),
                            reason: x.reason.as_str().to_string(),
                        })
                        .collect();
                    r
                })
                .collect(),
        }
    }
}

/// Status reason of remote ipcache entries inside the local pods' space.
const IPCACHE_IN_LOCAL_SPACE: &str = "ipcache-in-local-pod-space";

fn parse_prefix(key: &str) -> Option<IpNet> {
    key.parse::<IpNet>()
        .ok()
        .or_else(|| key.parse::<IpAddr>().ok().map(IpNet::from))
}

fn protocol_name(p: Protocol) -> String {
    match p {
        Protocol::Tcp => "tcp".into(),
        Protocol::Udp => "udp".into(),
        Protocol::Icmp => "icmp".into(),
        Protocol::Icmpv6 => "icmpv6".into(),
        Protocol::Other(n) => n.to_string(),
    }
}

/// Returns freed heap memory to the operating system (glibc keeps it).
fn release_free_memory() {
    // SAFETY: malloc_trim only touches the allocator's free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
