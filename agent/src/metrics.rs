//! The agent's Prometheus metrics.

use std::{
    sync::{Mutex, atomic::AtomicU64},
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MapLabel {
    pub map: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SourceLabel {
    /// The cluster the change came from (this one's name for local changes).
    pub cluster: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RemoteLabel {
    pub cluster: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RemoteKindLabel {
    pub cluster: String,
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RemoteReasonLabel {
    pub cluster: String,
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ComponentLabel {
    pub component: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResourceLabel {
    pub resource: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct VerdictLabel {
    pub direction: String,
    pub verdict: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FamilyLabel {
    /// `ipv4` or `ipv6`.
    pub family: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ProtocolLabel {
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `sctp` or `proto-N`.
    pub protocol: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DropLabel {
    pub direction: String,
    pub reason: String,
}

/// Every metric of the agent, registered in one registry.
pub struct AgentMetrics {
    registry: Mutex<Registry>,
    pub endpoints: Gauge,
    pub services: Gauge,
    pub policies: Gauge,
    pub identities: Gauge,
    map_entries: Family<MapLabel, Gauge>,
    map_capacity: Family<MapLabel, Gauge>,
    pub reconcile_seconds: Histogram,
    propagation: Family<SourceLabel, Histogram>,
    pub remote_clusters: Gauge,
    pub remote_ready: Family<RemoteLabel, Gauge>,
    pub remote_failures: Family<RemoteLabel, Counter>,
    pub remote_last_failure: Family<RemoteLabel, Gauge>,
    pub remote_entries: Family<RemoteKindLabel, Gauge>,
    pub remote_invalid: Family<RemoteReasonLabel, Gauge>,
    pub remote_refused_routes: Family<RemoteReasonLabel, Gauge>,
    /// Backends of remote services left out now (a mixed-family service).
    pub remote_skipped_backends: Family<RemoteReasonLabel, Gauge>,
    policy_verdicts: Family<VerdictLabel, Counter>,
    drops: Family<DropLabel, Counter>,
    errors: Family<ComponentLabel, Counter>,
    /// What the DNS proxy did with each message, by outcome.
    dns_proxy: Family<OutcomeLabel, Counter>,
    /// Addresses learned from DNS answers and allowed now.
    pub(crate) fqdn_addresses: Gauge,
    /// From a DNS answer read by the proxy to its addresses in the maps.
    pub(crate) fqdn_answer_to_map: Histogram,
    /// Conntrack entries after the last GC pass, by family.
    conntrack_entries: Family<FamilyLabel, Gauge>,
    /// Conntrack entries the GC deleted, by protocol.
    conntrack_gc_deleted: Family<ProtocolLabel, Counter>,
    /// Duration of the last GC pass.
    conntrack_gc_seconds: Gauge<f64, AtomicU64>,
    /// 1 while the Kubernetes API server answers (Kubernetes mode only).
    pub(crate) k8s_connected: Gauge,
    /// Events received from Kubernetes, by resource.
    pub(crate) k8s_events: Family<ResourceLabel, Counter>,
    /// Kubernetes objects refused now (invalid policies and Services), by kind.
    pub(crate) k8s_refused: Family<ResourceLabel, Gauge>,
    /// Expiry of the client certificates the agent presents to remote
    /// clusters (`clustermesh_tls_certificate_expiry_seconds{role="remote-cluster-NAME"}`).
    pub tls: certs::TlsMetrics,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentMetrics").finish_non_exhaustive()
    }
}

impl AgentMetrics {
    pub fn new() -> Self {
        let mut root = Registry::default();
        daemon::register_process_metrics(&mut root, "clustermesh-agent", env!("CARGO_PKG_VERSION"));
        let tls = certs::TlsMetrics::new();
        tls.register(&mut root);
        let registry = root.sub_registry_with_prefix("clustermesh_agent");
        let endpoints = Gauge::default();
        let services = Gauge::default();
        let policies = Gauge::default();
        let identities = Gauge::default();
        let map_entries = Family::<MapLabel, Gauge>::default();
        let map_capacity = Family::<MapLabel, Gauge>::default();
        let reconcile_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let propagation = Family::<SourceLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let remote_clusters = Gauge::default();
        let remote_ready = Family::<RemoteLabel, Gauge>::default();
        let remote_failures = Family::<RemoteLabel, Counter>::default();
        let remote_last_failure = Family::<RemoteLabel, Gauge>::default();
        let remote_entries = Family::<RemoteKindLabel, Gauge>::default();
        let remote_invalid = Family::<RemoteReasonLabel, Gauge>::default();
        let remote_refused_routes = Family::<RemoteReasonLabel, Gauge>::default();
        let remote_skipped_backends = Family::<RemoteReasonLabel, Gauge>::default();
        let policy_verdicts = Family::<VerdictLabel, Counter>::default();
        let drops = Family::<DropLabel, Counter>::default();
        let errors = Family::<ComponentLabel, Counter>::default();
        let dns_proxy = Family::<OutcomeLabel, Counter>::default();
        let fqdn_addresses = Gauge::default();
        // 20 µs to ~2 s, 25 % apart (the bench reads percentiles from it).
        let fqdn_answer_to_map = Histogram::new(exponential_buckets(0.00002, 1.25, 52));
        let conntrack_entries = Family::<FamilyLabel, Gauge>::default();
        let conntrack_gc_deleted = Family::<ProtocolLabel, Counter>::default();
        let conntrack_gc_seconds = Gauge::<f64, AtomicU64>::default();
        let k8s_connected = Gauge::default();
        let k8s_events = Family::<ResourceLabel, Counter>::default();
        let k8s_refused = Family::<ResourceLabel, Gauge>::default();
        registry.register(
            "k8s_connected",
            "1 while the Kubernetes API server answers (Kubernetes mode)",
            k8s_connected.clone(),
        );
        registry.register(
            "k8s_events",
            "Changes received from the Kubernetes API, by resource",
            k8s_events.clone(),
        );
        registry.register(
            "k8s_refused_objects",
            "Kubernetes objects refused now (invalid policies, Services), by resource",
            k8s_refused.clone(),
        );
        registry.register(
            "errors",
            "Failures the agent retries, by component (datapath, services, routes)",
            errors.clone(),
        );
        registry.register(
            "policy_verdicts",
            "Flows the datapath decided on, by direction and verdict",
            policy_verdicts.clone(),
        );
        registry.register(
            "drops",
            "Packets the datapath dropped, by direction and reason",
            drops.clone(),
        );
        registry.register(
            "conntrack_entries",
            "Conntrack entries after the last garbage collection pass, by family",
            conntrack_entries.clone(),
        );
        registry.register(
            "conntrack_gc_deleted",
            "Conntrack entries deleted by garbage collection (expired), by protocol",
            conntrack_gc_deleted.clone(),
        );
        registry.register(
            "conntrack_gc_seconds",
            "Duration of the last conntrack garbage collection pass",
            conntrack_gc_seconds.clone(),
        );
        registry.register(
            "dns_proxy_messages",
            "DNS messages the proxy handled, by outcome (forwarded, refused, malformed, ...)",
            dns_proxy.clone(),
        );
        registry.register(
            "fqdn_answer_to_map_seconds",
            "Time from a DNS answer read by the proxy to its addresses being in the maps",
            fqdn_answer_to_map.clone(),
        );
        registry.register(
            "fqdn_addresses",
            "Addresses learned from DNS answers that toFQDNs rules select",
            fqdn_addresses.clone(),
        );
        registry.register("endpoints", "Endpoints on this node", endpoints.clone());
        registry.register("services", "Service frontends programmed", services.clone());
        registry.register("policies", "Policy documents known", policies.clone());
        registry.register(
            "identities",
            "Identities known, of every cluster",
            identities.clone(),
        );
        registry.register(
            "map_entries",
            "Entries in each eBPF map",
            map_entries.clone(),
        );
        registry.register(
            "map_capacity",
            "Capacity of each eBPF map",
            map_capacity.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time to write one batch of changes to the datapath",
            reconcile_seconds.clone(),
        );
        registry.register(
            "propagation_delay_seconds",
            "Time from an event's arrival to the datapath being programmed, by source cluster",
            propagation.clone(),
        );
        registry.register(
            "remote_clusters",
            "Remote clusters configured",
            remote_clusters.clone(),
        );
        registry.register(
            "remote_cluster_readiness_status",
            "1 when the remote cluster is connected and synced",
            remote_ready.clone(),
        );
        registry.register(
            "remote_cluster_failures",
            "Connection failures to the remote cluster",
            remote_failures.clone(),
        );
        registry.register(
            "remote_cluster_last_failure_ts",
            "Unix time of the last failure to the remote cluster",
            remote_last_failure.clone(),
        );
        registry.register(
            "remote_cluster_entries",
            "Entries received from the remote cluster, by kind",
            remote_entries.clone(),
        );
        registry.register(
            "remote_cluster_invalid_values",
            "Values from the remote cluster that were skipped, by reason",
            remote_invalid.clone(),
        );
        registry.register(
            "remote_cluster_refused_routes",
            "Pod CIDRs of the remote cluster's nodes that are not routed, by reason",
            remote_refused_routes.clone(),
        );
        registry.register(
            "remote_cluster_skipped_service_backends",
            "Backends of the remote cluster's services that no local frontend can use, by reason (mixed-family: no frontend of the backend's family)",
            remote_skipped_backends.clone(),
        );
        Self {
            registry: Mutex::new(root),
            endpoints,
            services,
            policies,
            identities,
            map_entries,
            map_capacity,
            reconcile_seconds,
            propagation,
            remote_clusters,
            remote_ready,
            remote_failures,
            remote_last_failure,
            remote_entries,
            remote_invalid,
            remote_refused_routes,
            remote_skipped_backends,
            policy_verdicts,
            drops,
            errors,
            dns_proxy,
            fqdn_addresses,
            fqdn_answer_to_map,
            conntrack_entries,
            conntrack_gc_deleted,
            conntrack_gc_seconds,
            k8s_connected,
            k8s_events,
            k8s_refused,
            tls,
        }
    }

    /// Counts a DNS message the proxy handled.
    pub(crate) fn count_dns(&self, outcome: &str) {
        self.dns_proxy
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts a failure of `component` that the agent will retry.
    pub(crate) fn count_error(&self, component: &str) {
        self.errors
            .get_or_create(&ComponentLabel {
                component: component.to_string(),
            })
            .inc();
    }

    /// Counts one flow event: its verdict, and its drop reason if dropped.
    /// Counts `n` flow events with the same (direction, verdict, drop reason).
    pub(crate) fn count_flows(
        &self,
        (direction, verdict, reason): &(&str, &str, Option<&str>),
        n: u64,
    ) {
        self.policy_verdicts
            .get_or_create(&VerdictLabel {
                direction: direction.to_string(),
                verdict: verdict.to_string(),
            })
            .inc_by(n);
        if let Some(reason) = reason {
            self.drops
                .get_or_create(&DropLabel {
                    direction: direction.to_string(),
                    reason: reason.to_string(),
                })
                .inc_by(n);
        }
    }

    /// Records one conntrack GC pass: entries left (also as the conntrack
    /// map's size), entries deleted, how long it took.
    pub(crate) fn record_conntrack_gc(&self, stats: &bpf::CtGcStats, took: Duration) {
        for family in [bpf::FAMILY_V4, bpf::FAMILY_V6]
            .into_iter()
            .chain(stats.remaining.keys().copied())
        {
            let name = match family {
                bpf::FAMILY_V4 => "ipv4".to_string(),
                bpf::FAMILY_V6 => "ipv6".to_string(),
                n => format!("family-{n}"),
            };
            let n = stats.remaining.get(&family).copied().unwrap_or(0);
            self.conntrack_entries
                .get_or_create(&FamilyLabel { family: name })
                .set(n as i64);
        }
        for (protocol, n) in &stats.deleted {
            self.conntrack_gc_deleted
                .get_or_create(&ProtocolLabel {
                    protocol: bpf::protocol_name(*protocol),
                })
                .inc_by(*n as u64);
        }
        self.conntrack_gc_seconds.set(took.as_secs_f64());
        self.set_map_size("conntrack", stats.remaining_total());
    }

    pub fn set_map_size(&self, map: &str, entries: usize) {
        self.map_entries
            .get_or_create(&MapLabel {
                map: map.to_string(),
            })
            .set(entries as i64);
    }

    pub fn set_map_capacity(&self, map: &str, capacity: u32) {
        self.map_capacity
            .get_or_create(&MapLabel {
                map: map.to_string(),
            })
            .set(capacity as i64);
    }

    pub fn observe_propagation(&self, source: &str, delay: Duration) {
        self.propagation
            .get_or_create(&SourceLabel {
                cluster: source.to_string(),
            })
            .observe(delay.as_secs_f64());
    }

    /// Registers more metrics (e.g. TLS certificate expiry).
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.registry.lock().expect("metrics lock"))
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry.lock().expect("metrics lock"));
        out
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}
