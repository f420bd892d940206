use std::{fmt, sync::Arc};

use kvstore::{IdentityCache, IdentityRange};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::Counter, family::Family, gauge::ConstGauge, gauge::Gauge},
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
