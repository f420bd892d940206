use std::{fmt, sync::Arc};

use k8s::watch::KubeHealth;
use kvstore::{IdentityCache, IdentityRange};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{
        MetricType, counter::ConstCounter, counter::Counter, family::Family, gauge::ConstGauge,
        gauge::Gauge,
    },
    registry::Registry,
};

use crate::cidr_pool::IpFamily;

/// Prefix of every metric of the operator.
pub const METRICS_PREFIX: &str = "clustermesh_operator";

type FamilyLabel = [(&'static str, &'static str); 1];

/// The operator's Prometheus metrics (all prefixed `clustermesh_operator_`):
///
/// - `identities`: identity master keys in the local cluster's range (from
///   the identity cache, at scrape time; every instance reports it).
/// - `identity_gc_rounds_total`, `identity_gc_deletions_total`,
///   `identity_gc_failures_total`.
/// - `leader` (1 while this instance leads, else 0),
///   `leader_transitions_total{to="leader"|"follower"}`.
/// - `heartbeat_writes_total`, `heartbeat_failures_total`.
/// - `ipam_cidrs_assigned{family}`, `ipam_cidrs_free{family}`,
///   `ipam_nodes_waiting{family}` (nodes without a CIDR because the pool is
///   exhausted), `ipam_exhausted_total{family}` (nodes refused for that
///   reason, counted once per node and episode). Reported by the leader;
///   a follower keeps the values of its last term. `ipam_conflicts_total`:
///   conditional IPAM writes that lost a race (each is re-planned).
/// - `services_exported`: `ClusterService`s the leader exports (a follower
///   keeps the value of its last term).
/// - Kubernetes mode only: `k8s_connected` (1 while the API server answers
///   the health probe, else 0), `k8s_disconnects_total`, and
///   `policies_invalid` (policies whose `Valid` condition the leader set to
///   `False`).
///
/// Cheap to clone: clones update the same metrics.
#[derive(Clone)]
pub struct OperatorMetrics {
    registry: Arc<Registry>,
    pub(crate) leader: Gauge,
    pub(crate) leader_transitions: Family<FamilyLabel, Counter>,
    pub(crate) gc_rounds: Counter,
    pub(crate) gc_deletions: Counter,
    pub(crate) gc_failures: Counter,
    pub(crate) heartbeat_writes: Counter,
    pub(crate) heartbeat_failures: Counter,
    pub(crate) ipam_assigned: Family<FamilyLabel, Gauge>,
    pub(crate) ipam_free: Family<FamilyLabel, Gauge>,
    pub(crate) ipam_waiting: Family<FamilyLabel, Gauge>,
    pub(crate) ipam_exhausted: Family<FamilyLabel, Counter>,
    pub(crate) ipam_conflicts: Counter,
    pub(crate) services_exported: Gauge,
    pub(crate) policies_invalid: Gauge,
}

impl fmt::Debug for OperatorMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorMetrics")
            .field("leader", &self.leader.get())
            .finish_non_exhaustive()
    }
}

impl OperatorMetrics {
    /// Registers every metric; `identities` and `range` feed the identity count.
    pub fn new(identities: IdentityCache, range: IdentityRange) -> Self {
        Self::build(identities, range, None)
    }

    /// The metrics of an operator in Kubernetes mode: also the API server's
    /// connection, as `kubernetes` sees it.
    pub fn for_kubernetes(
        identities: IdentityCache,
        range: IdentityRange,
        kubernetes: KubeHealth,
    ) -> Self {
        Self::build(identities, range, Some(kubernetes))
    }

    fn build(
        identities: IdentityCache,
        range: IdentityRange,
        kubernetes: Option<KubeHealth>,
    ) -> Self {
        let mut root = Registry::default();
        daemon::register_process_metrics(
            &mut root,
            "clustermesh-operator",
            env!("CARGO_PKG_VERSION"),
        );
        let registry = root.sub_registry_with_prefix(METRICS_PREFIX);
        let m = Self {
            registry: Arc::new(Registry::default()),
            leader: Gauge::default(),
            leader_transitions: Family::default(),
            gc_rounds: Counter::default(),
            gc_deletions: Counter::default(),
            gc_failures: Counter::default(),
            heartbeat_writes: Counter::default(),
            heartbeat_failures: Counter::default(),
            ipam_assigned: Family::default(),
            ipam_free: Family::default(),
            ipam_waiting: Family::default(),
            ipam_exhausted: Family::default(),
            ipam_conflicts: Counter::default(),
            services_exported: Gauge::default(),
            policies_invalid: Gauge::default(),
        };
        registry.register(
            "leader",
            "Whether this operator instance is the leader (1) or a follower (0)",
            m.leader.clone(),
        );
        registry.register(
            "leader_transitions",
            "Times this instance became leader (to=leader) or stopped leading (to=follower)",
            m.leader_transitions.clone(),
        );
        registry.register(
            "identity_gc_rounds",
            "Identity garbage collection rounds completed",
            m.gc_rounds.clone(),
        );
        registry.register(
            "identity_gc_deletions",
            "Unused identities deleted by the garbage collector",
            m.gc_deletions.clone(),
        );
        registry.register(
            "identity_gc_failures",
            "Identity garbage collection rounds that failed",
            m.gc_failures.clone(),
        );
        registry.register(
            "heartbeat_writes",
            "Heartbeat key writes",
            m.heartbeat_writes.clone(),
        );
        registry.register(
            "heartbeat_failures",
            "Heartbeat key writes that failed",
            m.heartbeat_failures.clone(),
        );
        registry.register(
            "ipam_cidrs_assigned",
            "Node CIDRs of the pod CIDR pool that are assigned",
            m.ipam_assigned.clone(),
        );
        registry.register(
            "ipam_cidrs_free",
            "Node CIDRs of the pod CIDR pool that are free",
            m.ipam_free.clone(),
        );
        registry.register(
            "ipam_nodes_waiting",
            "Nodes without a pod CIDR because the pool is exhausted",
            m.ipam_waiting.clone(),
        );
        registry.register(
            "ipam_exhausted",
            "Nodes refused a pod CIDR because the pool was exhausted",
            m.ipam_exhausted.clone(),
        );
        registry.register(
            "ipam_conflicts",
            "IPAM writes refused because another writer got there first or the view was stale",
            m.ipam_conflicts.clone(),
        );
        registry.register(
            "services_exported",
            "Services this cluster exports to the mesh (cilium/state/services/v1/<cluster>/...)",
            m.services_exported.clone(),
        );
        if let Some(health) = kubernetes {
            registry.register(
                "policies_invalid",
                "Network policies whose Valid condition says False",
                m.policies_invalid.clone(),
            );
            registry.register_collector(Box::new(KubeConnection(health)));
        }
        registry.register_collector(Box::new(IdentityCount {
            cache: identities,
            range,
        }));
        let _ = m.leader_transitions.get_or_create(&[("to", "leader")]);
        let _ = m.leader_transitions.get_or_create(&[("to", "follower")]);
        Self {
            registry: Arc::new(root),
            ..m
        }
    }

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Whether this instance currently leads, as the `leader` gauge says.
    pub fn is_leader(&self) -> bool {
        self.leader.get() == 1
    }

    /// Services exported in the last update.
    pub fn services_exported(&self) -> i64 {
        self.services_exported.get()
    }

    /// IPAM writes that lost a race so far.
    pub fn ipam_conflicts(&self) -> u64 {
        self.ipam_conflicts.get()
    }

    pub(crate) fn family(family: IpFamily) -> FamilyLabel {
        [("family", family.as_str())]
    }
}

/// `identities`, computed at scrape time.
struct IdentityCount {
    cache: IdentityCache,
    range: IdentityRange,
}

impl fmt::Debug for IdentityCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityCount")
            .field("range", &self.range)
            .finish()
    }
}

impl Collector for IdentityCount {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let count = self.cache.count_in(self.range) as i64;
        let gauge = ConstGauge::new(count);
        let metric = encoder.encode_descriptor(
            "identities",
            "Identities allocated in the local cluster's range (master keys)",
            None,
            MetricType::Gauge,
        )?;
        gauge.encode(metric)
    }
}

/// `k8s_connected` and `k8s_disconnects_total`, from the health probe at
/// scrape time.
#[derive(Debug)]
struct KubeConnection(KubeHealth);

impl Collector for KubeConnection {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let s = self.0.snapshot();
        let metric = encoder.encode_descriptor(
            "k8s_connected",
            "Whether the Kubernetes API server answers the operator's health probe (1) or not (0)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(s.connected)).encode(metric)?;
        let metric = encoder.encode_descriptor(
            "k8s_disconnects",
            "Times the Kubernetes API server stopped answering",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(s.disconnects).encode(metric)
    }
}
