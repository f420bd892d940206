//! Hubble's metrics (prefix `hubble_`, names and labels as Cilium's), and
//! the agent's own per-direction verdict and drop counters, both counted
//! per batch of flows: one map update per distinct label set, not per flow.

use std::collections::HashMap;

use bpf::{DropReason, FlowDirection, FlowEvent, Protocol, Verdict};
use hubble_api::flow::LostEventSource;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use super::record::drop_reason;
use crate::metrics::AgentMetrics;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabels {
    protocol: &'static str,
    r#type: &'static str,
    subtype: &'static str,
    verdict: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: &'static str,
    protocol: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LostLabels {
    source: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    direction: &'static str,
    r#match: &'static str,
    action: &'static str,
}

/// See the module documentation.
#[derive(Debug, Clone, Default)]
pub(crate) struct HubbleMetrics {
    flows_processed: Family<FlowLabels, Counter>,
    drops: Family<DropLabels, Counter>,
    lost_events: Family<LostLabels, Counter>,
    policy_verdicts: Family<PolicyLabels, Counter>,
}

impl HubbleMetrics {
    /// Registers under `hubble_` in the agent's registry.
    pub(crate) fn register(agent: &AgentMetrics) -> Self {
        let m = Self::default();
        agent.with_registry(|root: &mut Registry| {
            let r = root.sub_registry_with_prefix("hubble");
            r.register(
                "flows_processed",
                "Flows the Hubble server processed",
                m.flows_processed.clone(),
            );
            r.register("drop", "Dropped packets", m.drops.clone());
            r.register(
                "lost_events",
                "Events lost before they reached Hubble's ring buffer, by where they were lost",
                m.lost_events.clone(),
            );
            r.register(
                "policy_verdicts",
                "Policy verdicts of new connections",
                m.policy_verdicts.clone(),
            );
        });
        m
    }

    pub(crate) fn lost(&self, source: LostEventSource, n: u64) {
        let source = match source {
            LostEventSource::PerfEventRingBuffer => "perf_event_ring_buffer",
            LostEventSource::ObserverEventsQueue => "observer_events_queue",
            LostEventSource::HubbleRingBuffer => "hubble_ring_buffer",
            LostEventSource::UnknownLostEventSource => "unknown",
        };
        self.lost_events
            .get_or_create(&LostLabels { source })
            .inc_by(n);
    }
}

/// Counts of one batch, added to the metrics in one go.
#[derive(Debug, Default)]
pub(crate) struct BatchCounts {
    flows: HashMap<FlowLabels, u64>,
    drops: HashMap<DropLabels, u64>,
    policy: HashMap<PolicyLabels, u64>,
    agent: HashMap<(&'static str, &'static str, Option<&'static str>), u64>,
}

impl BatchCounts {
    pub(crate) fn count(&mut self, e: &FlowEvent) {
        let protocol = match e.protocol {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Icmp => "ICMPv4",
            Protocol::Icmpv6 => "ICMPv6",
            Protocol::Other(_) => "Unknown",
        };
        let (direction, subtype) = match e.direction {
            FlowDirection::ToEndpoint => ("ingress", "to-endpoint"),
            FlowDirection::FromEndpoint => ("egress", "from-endpoint"),
        };
        let (r#type, subtype, verdict) = match e.verdict {
            Verdict::Forwarded => ("Trace", subtype, "FORWARDED"),
            Verdict::Translated => ("Trace", subtype, "TRANSLATED"),
            Verdict::Dropped => ("Drop", "", "DROPPED"),
        };
        *self
            .flows
            .entry(FlowLabels {
                protocol,
                r#type,
                subtype,
                verdict,
            })
            .or_default() += 1;
        if let Some(reason) = e.drop_reason {
            *self
                .drops
                .entry(DropLabels {
                    reason: drop_reason(reason).as_str_name(),
                    protocol,
                })
                .or_default() += 1;
        }
        // Policy decisions: a new inbound connection let in, or a drop by
        // policy. Which rule matched is not reported by the datapath yet.
        let policy = match (e.verdict, e.drop_reason, e.direction) {
            (Verdict::Forwarded, _, FlowDirection::ToEndpoint) => Some(("unknown", "forwarded")),
            (Verdict::Dropped, Some(DropReason::Policy), _) => Some(("none", "dropped")),
            (Verdict::Dropped, Some(DropReason::PolicyDeny), _) => Some(("unknown", "dropped")),
            _ => None,
        };
        if let Some((r#match, action)) = policy {
            *self
                .policy
                .entry(PolicyLabels {
                    direction,
                    r#match,
                    action,
                })
                .or_default() += 1;
        }
        *self.agent.entry(agent_labels(e)).or_default() += 1;
    }

    /// Adds the counts to the metrics and starts over.
    pub(crate) fn flush(&mut self, hubble: &HubbleMetrics, agent: &AgentMetrics) {
        for (labels, n) in self.flows.drain() {
            hubble.flows_processed.get_or_create(&labels).inc_by(n);
        }
        for (labels, n) in self.drops.drain() {
            hubble.drops.get_or_create(&labels).inc_by(n);
        }
        for (labels, n) in self.policy.drain() {
            hubble.policy_verdicts.get_or_create(&labels).inc_by(n);
        }
        for (labels, n) in self.agent.drain() {
            agent.count_flows(&labels, n);
        }
    }
}

/// The agent's own labels of one flow event: (direction, verdict, drop reason).
pub(crate) fn agent_labels(
    event: &FlowEvent,
) -> (&'static str, &'static str, Option<&'static str>) {
    let direction = match event.direction {
        FlowDirection::ToEndpoint => "ingress",
        FlowDirection::FromEndpoint => "egress",
    };
    let verdict = match event.verdict {
        Verdict::Forwarded => "forwarded",
        Verdict::Dropped => "dropped",
        Verdict::Translated => "translated",
    };
    let reason = event.drop_reason.map(|r| match r {
        DropReason::Policy => "policy-denied",
        DropReason::PolicyDeny => "policy-deny-rule",
        DropReason::NoBackend => "no-service-backend",
        DropReason::ConntrackFull => "conntrack-full",
        DropReason::Malformed => "malformed",
        DropReason::Nat => "nat-failed",
        DropReason::Other(_) => "unknown",
    });
    (direction, verdict, reason)
}
