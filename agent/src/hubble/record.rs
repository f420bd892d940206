//! A datapath flow event as the Hubble ring holds it (the event, when it
//! happened, and shared references to what was known about both ends),
//! and its translation into Hubble's `Flow`.

use std::{net::IpAddr, sync::Arc, time::SystemTime};

use bpf::{DropReason, FlowDirection, FlowEvent, Protocol, Verdict as DpVerdict};
use hubble::{FlowRecord, time::timestamp};
use hubble_api::flow::{
    CiliumEventType, Dns, DropReason as HubbleDropReason, Emitter, Endpoint, Flow, FlowType,
    IcmPv4, IcmPv6, Ip, IpVersion, L7FlowType, Layer4, Layer7, NetworkInterface, Tcp, TcpFlags,
    TraceObservationPoint, TrafficDirection, Udp, Verdict, layer4, layer7,
};

use super::directory::{Entries, FlowDirectory, IdentityInfo, PodInfo};

/// Cilium's monitor event types (`pkg/monitor/api/types.go`).
const MONITOR_DROP: i32 = 1;
const MONITOR_TRACE: i32 = 4;
/// L7 (proxy access log) events.
const MONITOR_ACCESS_LOG: i32 = 129;
/// Trace sub-types.
const TRACE_TO_ENDPOINT: i32 = 0;
const TRACE_FROM_ENDPOINT: i32 = 5;

/// What every flow of this node shares.
#[derive(Debug)]
pub(crate) struct NodeContext {
    /// `cluster/node`.
    pub fullname: String,
    pub version: String,
    /// Where the names of pods on other nodes are looked up when a flow is
    /// served (they are too many to copy into every flow read in).
    pub directory: Arc<FlowDirectory>,
}

/// What was known about one end of a flow when it was read.
#[derive(Debug, Clone, Default)]
pub(crate) struct Side {
    identity: Option<Arc<IdentityInfo>>,
    pod: Option<Arc<PodInfo>>,
}

impl Side {
    fn lookup(entries: &Entries, identity: u32, ip: &IpAddr) -> Self {
        Self {
            identity: (identity != 0)
                .then(|| entries.identity(identity))
                .flatten(),
            pod: entries.local_endpoint(ip),
        }
    }

    /// The endpoint as Hubble shows it; a pod that is not this node's is
    /// named from `entries` (its ipcache entry), if it names one.
    fn endpoint(&self, identity: u32, ip: &IpAddr, entries: &Entries) -> Endpoint {
        let (labels, namespace, cluster) = match &self.identity {
            Some(i) => (
                i.labels().map(str::to_owned).collect(),
                i.namespace().to_owned(),
                i.cluster().to_owned(),
            ),
            None => Default::default(),
        };
        let (pod_namespace, pod_name) = match &self.pod {
            Some(p) => (p.namespace.as_str(), p.name.as_str()),
            None => entries.pod(ip).unwrap_or_default(),
        };
        Endpoint {
            id: self.pod.as_ref().and_then(|p| p.endpoint_id).unwrap_or(0),
            identity,
            cluster_name: cluster,
            namespace: if namespace.is_empty() {
                pod_namespace.to_owned()
            } else {
                namespace
            },
            labels,
            pod_name: pod_name.to_owned(),
            workloads: Vec::new(),
        }
    }
}

/// A DNS lookup as the DNS proxy saw it: the L7 record of a flow.
#[derive(Debug, Clone, Default)]
pub(crate) struct DnsRecord {
    /// The answer (else the query).
    pub response: bool,
    /// The name, with its final dot.
    pub query: String,
    /// The type asked for (`A`, `AAAA`, ...).
    pub qtype: String,
    /// The answer's rcode (REFUSED = 5 for a lookup the proxy refused).
    pub rcode: u32,
    pub ips: Vec<String>,
    /// The lowest TTL of the addresses.
    pub ttl: u32,
    pub cnames: Vec<String>,
    /// From the query to its answer.
    pub latency_ns: u64,
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct AgentFlow {
    event: FlowEvent,
    time: SystemTime,
    src: Side,
    dst: Side,
    node: Arc<NodeContext>,
    /// The DNS record of an L7 flow.
    dns: Option<Arc<DnsRecord>>,
}

impl AgentFlow {
    /// `event`, observed at `time`, with both ends looked up in `entries`.
    pub(crate) fn new(
        event: FlowEvent,
        time: SystemTime,
        entries: &Entries,
        node: &Arc<NodeContext>,
    ) -> Self {
        Self {
            src: Side::lookup(entries, event.src_identity, &event.src),
            dst: Side::lookup(entries, event.dst_identity, &event.dst),
            event,
            time,
            node: node.clone(),
            dns: None,
        }
    }

    /// An L7 flow of the DNS proxy: `event` gives both ends and the verdict.
    pub(crate) fn dns(
        event: FlowEvent,
        time: SystemTime,
        entries: &Entries,
        node: &Arc<NodeContext>,
        record: DnsRecord,
    ) -> Self {
        let mut flow = Self::new(event, time, entries, node);
        flow.dns = Some(Arc::new(record));
        flow
    }
}

impl FlowRecord for AgentFlow {
    fn time(&self) -> SystemTime {
        self.time
    }

    #[allow(deprecated)] // `drop_reason`, `reply` and `Summary` are still read by the CLI
    fn to_flow(&self) -> Flow {
        let e = &self.event;
        let verdict = match e.verdict {
            DpVerdict::Forwarded => Verdict::Forwarded,
            DpVerdict::Dropped => Verdict::Dropped,
            DpVerdict::Translated => Verdict::Translated,
        };
        let drop_reason = e.drop_reason.map(drop_reason);
        let (direction, point, sub_type) = match e.direction {
            FlowDirection::ToEndpoint => (
                TrafficDirection::Ingress,
                TraceObservationPoint::ToEndpoint,
                TRACE_TO_ENDPOINT,
            ),
            FlowDirection::FromEndpoint => (
                TrafficDirection::Egress,
                TraceObservationPoint::FromEndpoint,
                TRACE_FROM_ENDPOINT,
            ),
        };
        let event_type = match drop_reason {
            Some(reason) => CiliumEventType {
                r#type: MONITOR_DROP,
                sub_type: reason as i32,
            },
            None => CiliumEventType {
                r#type: MONITOR_TRACE,
                sub_type,
            },
        };
        let (l4, summary) = layer4(e);
        let entries = self.node.directory.read();
        let mut flow = Flow {
            time: Some(timestamp(self.time)),
            emitter: Some(Emitter {
                name: "clustermesh".into(),
                version: self.node.version.clone(),
            }),
            verdict: verdict.into(),
            drop_reason: drop_reason.map_or(0, |r| r as u32),
            drop_reason_desc: drop_reason.map_or(0, Into::into),
            ip: Some(Ip {
                source: e.src.to_string(),
                destination: e.dst.to_string(),
                ip_version: match e.src {
                    IpAddr::V4(_) => IpVersion::IPv4,
                    IpAddr::V6(_) => IpVersion::IPv6,
                }
                .into(),
                ..Default::default()
            }),
            l4,
            source: Some(self.src.endpoint(e.src_identity, &e.src, &entries)),
            destination: Some(self.dst.endpoint(e.dst_identity, &e.dst, &entries)),
            r#type: FlowType::L3L4.into(),
            node_name: self.node.fullname.clone(),
            reply: e.is_reply == Some(true),
            event_type: Some(event_type),
            traffic_direction: direction.into(),
            trace_observation_point: point.into(),
            is_reply: e.is_reply,
            interface: Some(NetworkInterface {
                index: e.ifindex,
                name: String::new(),
            }),
            summary,
            ..Default::default()
        };
        if let Some(m) = e.policy {
            flow.policy_match_type = m.match_type as u32;
            if let Some(rule) = entries.rule(m.cookie) {
                let by = match (m.direction, verdict) {
                    (bpf::Direction::Ingress, Verdict::Dropped) => &mut flow.ingress_denied_by,
                    (bpf::Direction::Ingress, _) => &mut flow.ingress_allowed_by,
                    (bpf::Direction::Egress, Verdict::Dropped) => &mut flow.egress_denied_by,
                    (bpf::Direction::Egress, _) => &mut flow.egress_allowed_by,
                };
                by.push((*rule).clone());
            }
        }
        if let Some(d) = &self.dns {
            flow.r#type = FlowType::L7.into();
            flow.event_type = Some(CiliumEventType {
                r#type: MONITOR_ACCESS_LOG,
                sub_type: 0,
            });
            flow.drop_reason = 0;
            flow.drop_reason_desc = 0;
            flow.trace_observation_point = TraceObservationPoint::UnknownPoint.into();
            flow.interface = None;
            flow.summary = String::new();
            flow.l7 = Some(Layer7 {
                r#type: if d.response {
                    L7FlowType::Response
                } else {
                    L7FlowType::Request
                }
                .into(),
                latency_ns: d.latency_ns,
                record: Some(layer7::Record::Dns(Dns {
                    query: d.query.clone(),
                    ips: d.ips.clone(),
                    ttl: d.ttl,
                    cnames: d.cnames.clone(),
                    observation_source: "proxy".into(),
                    rcode: d.rcode,
                    qtypes: vec![d.qtype.clone()],
                    rrtypes: if d.ips.is_empty() {
                        Vec::new()
                    } else {
                        vec![d.qtype.clone()]
                    },
                })),
            });
        }
        flow
    }
}

/// Hubble's reason for a datapath drop reason.
pub(crate) fn drop_reason(reason: DropReason) -> HubbleDropReason {
    match reason {
        DropReason::Policy => HubbleDropReason::PolicyDenied,
        DropReason::PolicyDeny => HubbleDropReason::PolicyDeny,
        DropReason::NoBackend => HubbleDropReason::ServiceBackendNotFound,
        DropReason::ConntrackFull => HubbleDropReason::CtMapInsertionFailed,
        DropReason::Malformed => HubbleDropReason::InvalidPacketDropped,
        DropReason::Nat => HubbleDropReason::ErrorWritingToPacket,
        DropReason::Proxy => HubbleDropReason::ProxyRedirectionNotSupportedForProtocol,
        DropReason::Other(_) => HubbleDropReason::Unknown,
    }
}

const TCP_FLAG_NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];

/// The L4 message and the `Summary` text Cilium prints for it.
fn layer4(e: &FlowEvent) -> (Option<Layer4>, String) {
    let (protocol, summary) = match e.protocol {
        Protocol::Tcp => {
            let f = |bit: u8| e.tcp_flags & (1 << bit) != 0;
            let flags = TcpFlags {
                fin: f(0),
                syn: f(1),
                rst: f(2),
                psh: f(3),
                ack: f(4),
                urg: f(5),
                ece: f(6),
                cwr: f(7),
                ns: false,
            };
            let names: Vec<&str> = TCP_FLAG_NAMES
                .iter()
                .enumerate()
                .filter(|(bit, _)| f(*bit as u8))
                .map(|(_, name)| *name)
                .collect();
            (
                layer4::Protocol::Tcp(Tcp {
                    source_port: e.sport.into(),
                    destination_port: e.dport.into(),
                    flags: Some(flags),
                }),
                format!("TCP Flags: {}", names.join(", ")),
            )
        }
        Protocol::Udp => (
            layer4::Protocol::Udp(Udp {
                source_port: e.sport.into(),
                destination_port: e.dport.into(),
            }),
            "UDP".to_owned(),
        ),
        Protocol::Icmp => {
            let (kind, code) = e.icmp.unwrap_or_default();
            (
                layer4::Protocol::IcmPv4(IcmPv4 {
                    r#type: kind.into(),
                    code: code.into(),
                }),
                format!("ICMPv4 {}", icmpv4_name(kind)),
            )
        }
        Protocol::Icmpv6 => {
            let (kind, code) = e.icmp.unwrap_or_default();
            (
                layer4::Protocol::IcmPv6(IcmPv6 {
                    r#type: kind.into(),
                    code: code.into(),
                }),
                format!("ICMPv6 {}", icmpv6_name(kind)),
            )
        }
        Protocol::Sctp => (
            layer4::Protocol::Sctp(hubble_api::flow::Sctp {
                source_port: e.sport.into(),
                destination_port: e.dport.into(),
            }),
            "SCTP".to_owned(),
        ),
        Protocol::Other(n) => return (None, format!("IP protocol {n}")),
    };
    (
        Some(Layer4 {
            protocol: Some(protocol),
        }),
        summary,
    )
}

fn icmpv4_name(kind: u8) -> String {
    match kind {
        0 => "EchoReply".into(),
        3 => "DestinationUnreachable".into(),
        8 => "EchoRequest".into(),
        11 => "TimeExceeded".into(),
        n => format!("type {n}"),
    }
}

fn icmpv6_name(kind: u8) -> String {
    match kind {
        1 => "DestinationUnreachable".into(),
        2 => "PacketTooBig".into(),
        128 => "EchoRequest".into(),
        129 => "EchoReply".into(),
        n => format!("type {n}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kvstore::{CLUSTER_LABEL, Label, Labels, NAMESPACE_LABEL, NumericIdentity};

    use super::*;
    use crate::hubble::directory::FlowDirectory;

    fn event() -> FlowEvent {
        FlowEvent {
            timestamp: Duration::from_secs(1),
            src: "10.1.0.5".parse().unwrap(),
            dst: "10.2.0.7".parse().unwrap(),
            sport: 40000,
            dport: 80,
            protocol: Protocol::Tcp,
            src_identity: 70000,
            dst_identity: 70001,
            verdict: DpVerdict::Dropped,
            drop_reason: Some(DropReason::Policy),
            ifindex: 12,
            direction: FlowDirection::ToEndpoint,
            is_reply: Some(false),
            tcp_flags: 0x02,
            icmp: None,
            policy: None,
        }
    }

    #[test]
    fn a_policy_drop_shows_both_ends_with_their_clusters() {
        let dir = FlowDirectory::new();
        let labels = |app: &str, cluster: &str| -> Labels {
            [
                Label::new("k8s", "app", app),
                Label::new("k8s", CLUSTER_LABEL, cluster),
                Label::new("k8s", NAMESPACE_LABEL, "default"),
            ]
            .into_iter()
            .collect()
        };
        dir.set_identity(NumericIdentity::new(70000), &labels("client", "c1"));
        dir.set_identity(NumericIdentity::new(70001), &labels("server", "c2"));
        dir.set_pod("10.1.0.5".parse().unwrap(), "default", "client-1");
        dir.set_local_endpoint("10.2.0.7".parse().unwrap(), 9, "default", "server-1");
        let node = Arc::new(NodeContext {
            fullname: "c2/n1".into(),
            version: "0.1.0".into(),
            directory: dir.clone(),
        });
        let record = AgentFlow::new(event(), SystemTime::now(), &dir.read(), &node);
        let flow = record.to_flow();
        assert_eq!(flow.verdict, Verdict::Dropped as i32);
        assert_eq!(flow.drop_reason_desc, HubbleDropReason::PolicyDenied as i32);
        let src = flow.source.unwrap();
        let dst = flow.destination.unwrap();
        assert_eq!(
            (src.cluster_name.as_str(), src.pod_name.as_str()),
            ("c1", "client-1")
        );
        assert_eq!((dst.cluster_name.as_str(), dst.id), ("c2", 9));
        assert!(src.labels.contains(&"k8s:app=client".to_string()));
        assert_eq!(flow.node_name, "c2/n1");
        assert_eq!(flow.is_reply, Some(false));
        assert_eq!(flow.traffic_direction, TrafficDirection::Ingress as i32);
        assert_eq!(flow.event_type.unwrap().r#type, MONITOR_DROP);
        #[allow(deprecated)]
        let summary = flow.summary;
        assert_eq!(summary, "TCP Flags: SYN");
        let Some(layer4::Protocol::Tcp(tcp)) = flow.l4.unwrap().protocol else {
            panic!("tcp")
        };
        assert_eq!((tcp.source_port, tcp.destination_port), (40000, 80));
        assert!(tcp.flags.unwrap().syn);
    }

    #[test]
    fn flows_name_the_rule_that_decided() {
        use crate::policy_resolver::RuleRef;
        let dir = FlowDirectory::new();
        dir.set_rule(
            4,
            &RuleRef {
                policy: "demo/egress".into(),
                path: "spec.egressDeny[1]".into(),
                direction: bpf::Direction::Egress,
                action: bpf::PolicyAction::Deny,
            },
        );
        let node = Arc::new(NodeContext {
            fullname: "c1/n1".into(),
            version: "0.1.0".into(),
            directory: dir.clone(),
        });
        let denied = FlowEvent {
            direction: FlowDirection::FromEndpoint,
            drop_reason: Some(DropReason::PolicyDeny),
            policy: Some(bpf::PolicyMatch {
                direction: bpf::Direction::Egress,
                match_type: bpf::MatchType::L3L4,
                cookie: 4,
            }),
            ..event()
        };
        let flow = AgentFlow::new(denied, SystemTime::now(), &dir.read(), &node).to_flow();
        assert_eq!(flow.policy_match_type, bpf::MatchType::L3L4 as u32);
        assert!(flow.ingress_denied_by.is_empty() && flow.egress_allowed_by.is_empty());
        let by = &flow.egress_denied_by[0];
        assert_eq!(
            (by.name.as_str(), by.namespace.as_str(), by.kind.as_str()),
            ("egress", "demo", "CiliumNetworkPolicy")
        );
        assert!(
            by.labels
                .contains(&"clustermesh:rule=spec.egressDeny[1]".to_string())
        );
        // No entry decided (not enforced): no match type, no policy.
        let open = AgentFlow::new(event(), SystemTime::now(), &dir.read(), &node).to_flow();
        assert_eq!(open.policy_match_type, 0);
        assert!(open.ingress_denied_by.is_empty());
    }
}
