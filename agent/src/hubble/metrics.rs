//! Hubble's metrics (prefix `hubble_`, names and labels as Cilium's), and
//! the agent's own per-direction verdict and drop counters, both counted
//! per batch of flows: one map update per distinct label set, not per flow.

use bpf::{DropReason, FlowDirection, FlowEvent, MatchType, Protocol, Verdict};
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

/// Counts of one batch, added to the metrics in one go. Counting a flow is
/// a comparison of a few bytes in a short list (a batch holds few kinds of
/// events); label sets are formed and metrics updated once per kind at
/// [`Self::flush`], not per flow.
#[derive(Debug, Default)]
pub(crate) struct BatchCounts {
    kinds: Vec<(EventKind, u64)>,
}

/// Everything the metrics of one flow event depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EventKind {
    protocol: Protocol,
    direction: FlowDirection,
    verdict: Verdict,
    drop_reason: Option<DropReason>,
    /// The kind of policy entry that decided, if one did.
    policy: Option<MatchType>,
}

impl BatchCounts {
    pub(crate) fn count(&mut self, e: &FlowEvent) {
        let kind = EventKind {
            protocol: e.protocol,
            direction: e.direction,
            verdict: e.verdict,
            drop_reason: e.drop_reason,
            policy: e.policy.map(|m| m.match_type),
        };
        match self.kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => self.kinds.push((kind, 1)),
        }
    }

    /// Adds the counts to the metrics and starts over.
    pub(crate) fn flush(&mut self, hubble: &HubbleMetrics, agent: &AgentMetrics) {
        for (kind, n) in self.kinds.drain(..) {
            kind.add(n, hubble, agent);
        }
    }
}

impl EventKind {
    /// Counts `n` events of this kind.
    fn add(self, n: u64, hubble: &HubbleMetrics, agent: &AgentMetrics) {
        let protocol = match self.protocol {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Icmp => "ICMPv4",
            Protocol::Icmpv6 => "ICMPv6",
            Protocol::Sctp => "SCTP",
            Protocol::Other(_) => "Unknown",
        };
        let (direction, subtype) = match self.direction {
            FlowDirection::ToEndpoint => ("ingress", "to-endpoint"),
            FlowDirection::FromEndpoint => ("egress", "from-endpoint"),
        };
        let (r#type, subtype, verdict) = match self.verdict {
            Verdict::Forwarded => ("Trace", subtype, "FORWARDED"),
            Verdict::Translated => ("Trace", subtype, "TRANSLATED"),
            Verdict::Dropped => ("Drop", "", "DROPPED"),
        };
        hubble
            .flows_processed
            .get_or_create(&FlowLabels {
                protocol,
                r#type,
                subtype,
                verdict,
            })
            .inc_by(n);
        if let Some(reason) = self.drop_reason {
            hubble
                .drops
                .get_or_create(&DropLabels {
                    reason: drop_reason(reason).as_str_name(),
                    protocol,
                })
                .inc_by(n);
        }
        // Policy decisions: a new connection let in (inbound always; outbound
        // where egress is enforced), or a drop by policy, with the kind of
        // entry that decided ("none": no entry, i.e. not enforced or the
        // default deny).
        let r#match = self.policy.map_or("none", MatchType::as_str);
        let policy = match (self.verdict, self.drop_reason, self.direction) {
            (Verdict::Forwarded, _, FlowDirection::ToEndpoint) => Some((r#match, "forwarded")),
            (Verdict::Forwarded, _, FlowDirection::FromEndpoint) if self.policy.is_some() => {
                Some((r#match, "forwarded"))
            }
            (Verdict::Dropped, Some(DropReason::Policy | DropReason::PolicyDeny), _) => {
                Some((r#match, "dropped"))
            }
            _ => None,
        };
        if let Some((r#match, action)) = policy {
            hubble
                .policy_verdicts
                .get_or_create(&PolicyLabels {
                    direction,
                    r#match,
                    action,
                })
                .inc_by(n);
        }
        agent.count_flows(
            &agent_labels(self.direction, self.verdict, self.drop_reason),
            n,
        );
    }
}

/// The agent's own labels of one flow event: (direction, verdict, drop reason).
fn agent_labels(
    direction: FlowDirection,
    verdict: Verdict,
    drop_reason: Option<DropReason>,
) -> (&'static str, &'static str, Option<&'static str>) {
    let direction = match direction {
        FlowDirection::ToEndpoint => "ingress",
        FlowDirection::FromEndpoint => "egress",
    };
    let verdict = match verdict {
        Verdict::Forwarded => "forwarded",
        Verdict::Dropped => "dropped",
        Verdict::Translated => "translated",
    };
    let reason = drop_reason.map(|r| match r {
        DropReason::Policy => "policy-denied",
        DropReason::PolicyDeny => "policy-deny-rule",
        DropReason::NoBackend => "no-service-backend",
        DropReason::ConntrackFull => "conntrack-full",
        DropReason::Malformed => "malformed",
        DropReason::Nat => "nat-failed",
        DropReason::Proxy => "proxy-unsupported-protocol",
        DropReason::Other(_) => "unknown",
    });
    (direction, verdict, reason)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn event(protocol: Protocol, verdict: Verdict, drop_reason: Option<DropReason>) -> FlowEvent {
        FlowEvent {
            timestamp: Duration::ZERO,
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            sport: 1,
            dport: 2,
            protocol,
            src_identity: 0,
            dst_identity: 0,
            verdict,
            drop_reason,
            ifindex: 1,
            direction: FlowDirection::ToEndpoint,
            is_reply: Some(false),
            tcp_flags: 0,
            icmp: None,
            policy: None,
        }
    }

    #[test]
    fn a_batch_is_counted_per_kind_of_event() {
        let agent = AgentMetrics::new();
        let hubble = HubbleMetrics::register(&agent);
        let mut counts = BatchCounts::default();
        let drop = event(Protocol::Tcp, Verdict::Dropped, Some(DropReason::Policy));
        let udp = event(Protocol::Udp, Verdict::Forwarded, None);
        let egress = FlowEvent {
            direction: FlowDirection::FromEndpoint,
            policy: Some(bpf::PolicyMatch {
                direction: bpf::Direction::Egress,
                match_type: MatchType::L3L4,
                cookie: 4,
            }),
            ..udp.clone()
        };
        for e in [&drop, &udp, &drop, &drop, &egress] {
            counts.count(e);
        }
        counts.flush(&hubble, &agent);
        counts.count(&udp);
        counts.flush(&hubble, &agent);
        let text = agent.encode();
        for line in [
            r#"hubble_flows_processed_total{protocol="TCP",type="Drop",subtype="",verdict="DROPPED"} 3"#,
            r#"hubble_flows_processed_total{protocol="UDP",type="Trace",subtype="to-endpoint",verdict="FORWARDED"} 2"#,
            r#"hubble_drop_total{reason="POLICY_DENIED",protocol="TCP"} 3"#,
            r#"hubble_policy_verdicts_total{direction="ingress",match="none",action="dropped"} 3"#,
            r#"hubble_policy_verdicts_total{direction="ingress",match="none",action="forwarded"} 2"#,
            r#"hubble_policy_verdicts_total{direction="egress",match="l3-l4",action="forwarded"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
