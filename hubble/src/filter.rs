//! `FlowFilter` allow and deny lists (`GetFlowsRequest.whitelist` and
//! `blacklist`), compiled once per request and matched against flows, with
//! the semantics of Cilium's `pkg/hubble/filters`.
//!
//! A flow passes when it matches one of the allow filters (or there are
//! none) and none of the deny filters. A flow matches a `FlowFilter` when it
//! matches every field that is set in it (AND); a repeated field matches
//! when any of its values does (OR). An empty `FlowFilter` matches every
//! flow.
//!
//! Compiling parses every CIDR, label selector, port and name pattern up
//! front, so that matching (run over every buffered flow of a request)
//! allocates nothing. A value that does not parse fails the whole request
//! with a [`FilterError`] naming the field and the value, which the server
//! answers with `InvalidArgument`.
//!
//! Every `FlowFilter` field is either evaluated or refused; none is
//! ignored. `dns_query` and the `dns` protocol match the DNS records of
//! L7 flows (the agent's DNS proxy makes them); the other L7 filters
//! (`http_*`, the `http` and `kafka` protocols) are validated like Cilium
//! validates them and then match nothing, as our flows carry no HTTP or
//! Kafka record. The one refused
//! field is `experimental.cel_expression` (see [`FilterError::Unsupported`]).

mod label_selector;
mod pattern;

use std::net::IpAddr;

use hubble_api::flow::{
    Endpoint, EventTypeFilter, Flow, FlowFilter, NetworkInterface, TcpFlags, Verdict, Workload,
    layer4::Protocol,
};
use ipnet::IpNet;

use self::{
    label_selector::LabelSelector,
    pattern::{FqdnPatterns, NodeNamePatterns, PatternError},
};

/// Monitor message type of L7 (proxy access log) events, the only event type
/// HTTP filters may be combined with (Cilium's `MessageTypeAccessLog`).
const MESSAGE_TYPE_ACCESS_LOG: i32 = 129;

/// The namespace Cilium assumes for a pod or service filter without one.
const DEFAULT_NAMESPACE: &str = "default";

/// A request's filters: a flow passes when it matches one of the allow
/// filters (or there are none) and none of the deny filters.
#[derive(Debug, Default)]
pub struct FlowFilters {
    allow: Vec<CompiledFilter>,
    deny: Vec<CompiledFilter>,
}

/// A filter that cannot be compiled (answered with `InvalidArgument`).
/// `field` is the `FlowFilter` field name as in the proto.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// An IP filter value is neither an address nor a CIDR.
    #[error("invalid {field} filter: {value:?} is neither an IP address nor a CIDR")]
    InvalidIp { field: &'static str, value: String },
    /// A pod or service filter is not `[namespace/][name-prefix]`.
    #[error("invalid {field} filter: {value:?} {reason}")]
    InvalidName {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A label filter is not a valid label selector.
    #[error("invalid {field} filter: label selector {value:?}: {reason}")]
    InvalidLabelSelector {
        field: &'static str,
        value: String,
        reason: String,
    },
    /// A port filter is not a decimal number from 0 to 65535.
    #[error("invalid {field} filter: {value:?} is not a port number (0-65535)")]
    InvalidPort { field: &'static str, value: String },
    /// A protocol filter names no protocol Hubble knows.
    #[error(
        "invalid {field} filter: unknown protocol {value:?} (want one of icmp, icmpv4, \
         icmpv6, tcp, udp, sctp, vrrp, igmp, dns, http, kafka)"
    )]
    UnknownProtocol { field: &'static str, value: String },
    /// A cluster name filter holds an empty name.
    #[error("invalid {field} filter: cluster name must not be empty")]
    EmptyClusterName { field: &'static str },
    /// An FQDN or node name pattern does not parse.
    #[error("invalid {field} filter: pattern {value:?}: {reason}")]
    InvalidPattern {
        field: &'static str,
        value: String,
        reason: String,
    },
    /// A regular expression filter (`http_path`, `http_url`, `dns_query`)
    /// does not compile.
    #[error("invalid {field} filter: regular expression {value:?}")]
    InvalidRegex {
        field: &'static str,
        value: String,
        #[source]
        source: regex::Error,
    },
    /// An HTTP status filter is neither a code (`404`) nor a prefix (`5+`).
    #[error(
        "invalid {field} filter: {value:?} is not a status code (like 404) or prefix (like 4+)"
    )]
    InvalidHttpStatusCode { field: &'static str, value: String },
    /// An HTTP filter next to an event type filter that excludes L7 events.
    #[error(
        "invalid {field} filter: filtering on HTTP fields requires the event type filter \
         to match l7 events (type {MESSAGE_TYPE_ACCESS_LOG})"
    )]
    HttpNeedsL7EventType { field: &'static str },
    /// A filter this server does not evaluate; refused rather than ignored.
    #[error("{field} filter is not supported by this server: {reason}")]
    Unsupported {
        field: &'static str,
        reason: &'static str,
    },
}

/// One `FlowFilter`: every check must hold.
#[derive(Debug)]
struct CompiledFilter {
    checks: Vec<Check>,
}

/// Which endpoint (or service) of a flow a check reads.
#[derive(Debug, Clone, Copy)]
enum Side {
    Source,
    Destination,
}

impl Side {
    fn endpoint(self, flow: &Flow) -> Option<&Endpoint> {
        match self {
            Side::Source => flow.source.as_ref(),
            Side::Destination => flow.destination.as_ref(),
        }
    }

    /// `(cluster, namespace, pod)` of the endpoint, empty when unknown.
    fn pod(self, flow: &Flow) -> (&str, &str, &str) {
        self.endpoint(flow).map_or(("", "", ""), |e| {
            (&e.cluster_name, &e.namespace, &e.pod_name)
        })
    }

    /// `(namespace, name)` of the service, empty when unknown.
    fn service(self, flow: &Flow) -> (&str, &str) {
        let service = match self {
            Side::Source => flow.source_service.as_ref(),
            Side::Destination => flow.destination_service.as_ref(),
        };
        service.map_or(("", ""), |s| (&s.namespace, &s.name))
    }
}

/// Which IP address of a flow an IP check reads.
#[derive(Debug, Clone, Copy)]
enum IpField {
    Source,
    SourceXlated,
    Destination,
}

/// Which label set a label check reads.
#[derive(Debug, Clone, Copy)]
enum LabelSet {
    Source,
    Destination,
    Node,
}

/// One compiled `FlowFilter` field.
#[derive(Debug)]
enum Check {
    Uuid(Vec<String>),
    EventType(Vec<EventTypeFilter>),
    Verdict(Vec<i32>),
    DropReasonDesc(Vec<i32>),
    Reply(Vec<bool>),
    Encrypted(Vec<bool>),
    Identity(Side, Vec<u32>),
    Protocol(ProtocolSet),
    Ip(IpField, IpMatcher),
    Pod(Side, Vec<NameFilter>),
    Workload(Side, Vec<Workload>),
    Service(Side, Vec<NameFilter>),
    Fqdn(Side, FqdnPatterns),
    Labels(LabelSet, Vec<LabelSelector>),
    Port(Side, Vec<u16>),
    /// A filter on an HTTP or Kafka record, which our flows never carry.
    L7,
    /// `dns_query`: the DNS record's query matches one of these.
    DnsQuery(Vec<regex::Regex>),
    TcpFlags(Vec<TcpFlags>),
    NodeName(NodeNamePatterns),
    ClusterName(Side, Vec<String>),
    IpVersion(Vec<i32>),
    TraceId(Vec<String>),
    TrafficDirection(Vec<i32>),
    Interface(Vec<NetworkInterface>),
    IpTraceId(Vec<u64>),
}

impl FlowFilters {
    /// Compiles the allow and deny lists.
    pub fn compile(allow: &[FlowFilter], deny: &[FlowFilter]) -> Result<Self, FilterError> {
        Ok(Self {
            allow: allow
                .iter()
                .map(CompiledFilter::compile)
                .collect::<Result<_, _>>()?,
            deny: deny
                .iter()
                .map(CompiledFilter::compile)
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether `flow` passes.
    pub fn matches(&self, flow: &Flow) -> bool {
        (self.allow.is_empty() || self.allow.iter().any(|f| f.matches(flow)))
            && !self.deny.iter().any(|f| f.matches(flow))
    }

    /// Whether there are no filters at all (every flow passes).
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

impl CompiledFilter {
    fn matches(&self, flow: &Flow) -> bool {
        self.checks.iter().all(|c| c.matches(flow))
    }

    /// Compiles the set fields of `ff`, in the order of Cilium's default
    /// filters.
    fn compile(ff: &FlowFilter) -> Result<Self, FilterError> {
        let mut checks = Vec::new();
        let mut push = |check: Check| checks.push(check);

        if let Some(experimental) = &ff.experimental
            && !experimental.cel_expression.is_empty()
        {
            return Err(FilterError::Unsupported {
                field: "experimental.cel_expression",
                reason: "CEL expressions are not implemented; use the other FlowFilter fields",
            });
        }

        if !ff.uuid.is_empty() {
            push(Check::Uuid(ff.uuid.clone()));
        }
        if !ff.event_type.is_empty() {
            push(Check::EventType(ff.event_type.clone()));
        }
        if !ff.verdict.is_empty() {
            push(Check::Verdict(ff.verdict.clone()));
        }
        if !ff.drop_reason_desc.is_empty() {
            push(Check::DropReasonDesc(ff.drop_reason_desc.clone()));
        }
        if !ff.reply.is_empty() {
            push(Check::Reply(ff.reply.clone()));
        }
        if !ff.encrypted.is_empty() {
            push(Check::Encrypted(ff.encrypted.clone()));
        }
        if !ff.source_identity.is_empty() {
            push(Check::Identity(Side::Source, ff.source_identity.clone()));
        }
        if !ff.destination_identity.is_empty() {
            push(Check::Identity(
                Side::Destination,
                ff.destination_identity.clone(),
            ));
        }
        if !ff.protocol.is_empty() {
            push(Check::Protocol(ProtocolSet::parse(&ff.protocol)?));
        }
        for (field, values, ip) in [
            ("source_ip", &ff.source_ip, IpField::Source),
            ("destination_ip", &ff.destination_ip, IpField::Destination),
            (
                "source_ip_xlated",
                &ff.source_ip_xlated,
                IpField::SourceXlated,
            ),
        ] {
            if !values.is_empty() {
                push(Check::Ip(ip, IpMatcher::parse(field, values)?));
            }
        }
        for (field, values, side) in [
            ("source_pod", &ff.source_pod, Side::Source),
            ("destination_pod", &ff.destination_pod, Side::Destination),
        ] {
            if !values.is_empty() {
                let names = values
                    .iter()
                    .map(|v| NameFilter::parse(field, v, true))
                    .collect::<Result<_, _>>()?;
                push(Check::Pod(side, names));
            }
        }
        if !ff.source_workload.is_empty() {
            push(Check::Workload(Side::Source, ff.source_workload.clone()));
        }
        if !ff.destination_workload.is_empty() {
            push(Check::Workload(
                Side::Destination,
                ff.destination_workload.clone(),
            ));
        }
        for (field, values, side) in [
            ("source_service", &ff.source_service, Side::Source),
            (
                "destination_service",
                &ff.destination_service,
                Side::Destination,
            ),
        ] {
            if !values.is_empty() {
                let names = values
                    .iter()
                    .map(|v| NameFilter::parse(field, v, false))
                    .collect::<Result<_, _>>()?;
                push(Check::Service(side, names));
            }
        }
        for (field, values, side) in [
            ("source_fqdn", &ff.source_fqdn, Side::Source),
            ("destination_fqdn", &ff.destination_fqdn, Side::Destination),
        ] {
            if !values.is_empty() {
                let patterns =
                    FqdnPatterns::compile(values).map_err(|e| pattern_error(field, e))?;
                push(Check::Fqdn(side, patterns));
            }
        }
        if !ff.dns_query.is_empty() {
            check_regexes("dns_query", &ff.dns_query)?;
            let regexes = ff
                .dns_query
                .iter()
                .map(|r| regex::Regex::new(r).expect("checked above"))
                .collect();
            push(Check::DnsQuery(regexes));
        }
        for (field, values, set) in [
            ("source_label", &ff.source_label, LabelSet::Source),
            (
                "destination_label",
                &ff.destination_label,
                LabelSet::Destination,
            ),
            ("node_labels", &ff.node_labels, LabelSet::Node),
        ] {
            if !values.is_empty() {
                let selectors = values
                    .iter()
                    .map(|v| {
                        LabelSelector::parse(v).map_err(|e| FilterError::InvalidLabelSelector {
                            field,
                            value: v.clone(),
                            reason: e.to_string(),
                        })
                    })
                    .collect::<Result<_, _>>()?;
                push(Check::Labels(set, selectors));
            }
        }
        for (field, values, side) in [
            ("source_port", &ff.source_port, Side::Source),
            ("destination_port", &ff.destination_port, Side::Destination),
        ] {
            if !values.is_empty() {
                let ports = values
                    .iter()
                    .map(|v| parse_port(field, v))
                    .collect::<Result<_, _>>()?;
                push(Check::Port(side, ports));
            }
        }
        if compile_http(ff)? {
            push(Check::L7);
        }
        if !ff.tcp_flags.is_empty() {
            push(Check::TcpFlags(ff.tcp_flags.clone()));
        }
        if !ff.node_name.is_empty() {
            let patterns = NodeNamePatterns::compile(&ff.node_name)
                .map_err(|e| pattern_error("node_name", e))?;
            push(Check::NodeName(patterns));
        }
        for (field, values, side) in [
            ("source_cluster_name", &ff.source_cluster_name, Side::Source),
            (
                "destination_cluster_name",
                &ff.destination_cluster_name,
                Side::Destination,
            ),
        ] {
            if !values.is_empty() {
                if values.iter().any(String::is_empty) {
                    return Err(FilterError::EmptyClusterName { field });
                }
                push(Check::ClusterName(side, values.clone()));
            }
        }
        if !ff.ip_version.is_empty() {
            push(Check::IpVersion(ff.ip_version.clone()));
        }
        if !ff.trace_id.is_empty() {
            push(Check::TraceId(ff.trace_id.clone()));
        }
        if !ff.traffic_direction.is_empty() {
            push(Check::TrafficDirection(ff.traffic_direction.clone()));
        }
        if !ff.interface.is_empty() {
            push(Check::Interface(ff.interface.clone()));
        }
        if !ff.ip_trace_id.is_empty() {
            push(Check::IpTraceId(ff.ip_trace_id.clone()));
        }
        Ok(Self { checks })
    }
}

impl Check {
    fn matches(&self, flow: &Flow) -> bool {
        match self {
            Check::Uuid(ids) => ids.contains(&flow.uuid),
            Check::EventType(filters) => flow.event_type.as_ref().is_some_and(|event| {
                filters.iter().any(|f| {
                    (f.r#type == 0 || f.r#type == event.r#type)
                        && (!f.match_sub_type || f.sub_type == event.sub_type)
                })
            }),
            Check::Verdict(verdicts) => verdicts.contains(&flow.verdict),
            Check::DropReasonDesc(reasons) => {
                flow.verdict == Verdict::Dropped as i32 && reasons.contains(&flow.drop_reason_desc)
            }
            // Cilium reads an unknown is_reply of a dropped flow as "not a
            // reply", for clients that filtered on the deprecated `reply`,
            // which dropped flows always had false; any other flow without
            // is_reply matches no reply filter.
            Check::Reply(replies) => match flow.is_reply {
                Some(reply) => replies.contains(&reply),
                None => flow.verdict == Verdict::Dropped as i32 && replies.contains(&false),
            },
            Check::Encrypted(values) => {
                values.contains(&flow.ip.as_ref().is_some_and(|ip| ip.encrypted))
            }
            Check::Identity(side, ids) => side
                .endpoint(flow)
                .is_some_and(|e| ids.contains(&e.identity)),
            Check::Protocol(set) => set.matches(flow),
            Check::Ip(field, matcher) => {
                let ip = flow.ip.as_ref().map_or("", |ip| match field {
                    IpField::Source => &ip.source,
                    IpField::SourceXlated => &ip.source_xlated,
                    IpField::Destination => &ip.destination,
                });
                matcher.matches(ip)
            }
            Check::Pod(side, names) => {
                let (cluster, namespace, pod) = side.pod(flow);
                (!namespace.is_empty() || !pod.is_empty())
                    && names.iter().any(|n| n.matches(cluster, namespace, pod))
            }
            Check::Workload(side, filters) => side.endpoint(flow).is_some_and(|e| {
                e.workloads.iter().any(|w| {
                    filters.iter().any(|f| {
                        (f.name.is_empty() || f.name == w.name)
                            && (f.kind.is_empty() || f.kind == w.kind)
                    })
                })
            }),
            Check::Service(side, names) => {
                let (namespace, name) = side.service(flow);
                (!namespace.is_empty() || !name.is_empty())
                    && names.iter().any(|n| n.matches("", namespace, name))
            }
            Check::Fqdn(side, patterns) => patterns.matches_any(match side {
                Side::Source => &flow.source_names,
                Side::Destination => &flow.destination_names,
            }),
            Check::Labels(set, selectors) => {
                let labels: &[String] = match set {
                    LabelSet::Source => flow.source.as_ref().map_or(&[], |e| &e.labels),
                    LabelSet::Destination => flow.destination.as_ref().map_or(&[], |e| &e.labels),
                    LabelSet::Node => &flow.node_labels,
                };
                selectors.iter().any(|s| s.matches(labels))
            }
            Check::Port(side, ports) => {
                l4_port(flow, *side).is_some_and(|port| ports.contains(&port))
            }
            Check::L7 => false,
            Check::DnsQuery(regexes) => {
                dns_record(flow).is_some_and(|d| regexes.iter().any(|r| r.is_match(&d.query)))
            }
            Check::TcpFlags(filters) => tcp_flags(flow).is_some_and(|have| {
                filters.iter().any(|want| {
                    (!want.fin || have.fin)
                        && (!want.syn || have.syn)
                        && (!want.rst || have.rst)
                        && (!want.psh || have.psh)
                        && (!want.ack || have.ack)
                        && (!want.urg || have.urg)
                        && (!want.ece || have.ece)
                        && (!want.cwr || have.cwr)
                        && (!want.ns || have.ns)
                })
            }),
            Check::NodeName(patterns) => patterns.matches(&flow.node_name),
            Check::ClusterName(side, names) => {
                let cluster = side.endpoint(flow).map_or("", |e| &e.cluster_name);
                names.iter().any(|n| n == cluster)
            }
            Check::IpVersion(versions) => {
                versions.contains(&flow.ip.as_ref().map_or(0, |ip| ip.ip_version))
            }
            Check::TraceId(ids) => {
                let id = flow
                    .trace_context
                    .as_ref()
                    .and_then(|c| c.parent.as_ref())
                    .map_or("", |p| &p.trace_id);
                ids.iter().any(|t| t == id)
            }
            Check::TrafficDirection(directions) => directions.contains(&flow.traffic_direction),
            Check::Interface(filters) => flow.interface.as_ref().is_some_and(|iface| {
                filters.iter().any(|f| {
                    (f.index == 0 || f.index == iface.index)
                        && (f.name.is_empty() || f.name == iface.name)
                })
            }),
            Check::IpTraceId(ids) => flow
                .ip_trace_id
                .as_ref()
                .is_some_and(|t| ids.contains(&t.trace_id)),
        }
    }
}

/// L4 protocols as a bit set over `Layer4`'s oneof.
#[derive(Debug, Clone, Copy, Default)]
struct ProtocolSet(u8);

impl ProtocolSet {
    const TCP: u8 = 1 << 0;
    const UDP: u8 = 1 << 1;
    const ICMPV4: u8 = 1 << 2;
    const ICMPV6: u8 = 1 << 3;
    const SCTP: u8 = 1 << 4;
    const VRRP: u8 = 1 << 5;
    const IGMP: u8 = 1 << 6;
    /// Flows with a DNS record.
    const DNS: u8 = 1 << 7;

    /// Parses protocol names, case-insensitively. `icmp` is either ICMP
    /// version; `dns` is the flows with a DNS record; `http` and `kafka`
    /// are known but match no flow of ours.
    fn parse(names: &[String]) -> Result<Self, FilterError> {
        let mut set = 0;
        for name in names {
            set |= match name.to_ascii_lowercase().as_str() {
                "tcp" => Self::TCP,
                "udp" => Self::UDP,
                "icmp" => Self::ICMPV4 | Self::ICMPV6,
                "icmpv4" => Self::ICMPV4,
                "icmpv6" => Self::ICMPV6,
                "sctp" => Self::SCTP,
                "vrrp" => Self::VRRP,
                "igmp" => Self::IGMP,
                "dns" => Self::DNS,
                "http" | "kafka" => 0,
                _ => {
                    return Err(FilterError::UnknownProtocol {
                        field: "protocol",
                        value: name.clone(),
                    });
                }
            };
        }
        Ok(Self(set))
    }

    fn matches(self, flow: &Flow) -> bool {
        if self.0 & Self::DNS != 0 && dns_record(flow).is_some() {
            return true;
        }
        let bit = match flow.l4.as_ref().and_then(|l4| l4.protocol.as_ref()) {
            Some(Protocol::Tcp(_)) => Self::TCP,
            Some(Protocol::Udp(_)) => Self::UDP,
            Some(Protocol::IcmPv4(_)) => Self::ICMPV4,
            Some(Protocol::IcmPv6(_)) => Self::ICMPV6,
            Some(Protocol::Sctp(_)) => Self::SCTP,
            Some(Protocol::Vrrp(_)) => Self::VRRP,
            Some(Protocol::Igmp(_)) => Self::IGMP,
            None => return false,
        };
        self.0 & bit != 0
    }
}

/// Exact addresses and CIDRs, any of which may match.
#[derive(Debug, Default)]
struct IpMatcher {
    addresses: Vec<IpAddr>,
    networks: Vec<IpNet>,
}

impl IpMatcher {
    fn parse(field: &'static str, values: &[String]) -> Result<Self, FilterError> {
        let mut matcher = Self::default();
        for value in values {
            let bad = || FilterError::InvalidIp {
                field,
                value: value.clone(),
            };
            if value.contains('/') {
                matcher.networks.push(value.parse().map_err(|_| bad())?);
            } else {
                matcher.addresses.push(value.parse().map_err(|_| bad())?);
            }
        }
        Ok(matcher)
    }

    /// Whether the flow's address `ip` (text, empty when unknown) matches.
    fn matches(&self, ip: &str) -> bool {
        let Ok(ip) = ip.parse::<IpAddr>() else {
            return false;
        };
        self.addresses.contains(&ip) || self.networks.iter().any(|n| n.contains(&ip))
    }
}

/// A pod or service filter: `[[cluster/]namespace/][name-prefix]`.
#[derive(Debug)]
struct NameFilter {
    /// `None`: any cluster.
    cluster: Option<String>,
    /// `None`: any namespace.
    namespace: Option<String>,
    /// Empty: any name.
    prefix: String,
}

impl NameFilter {
    /// Parses `value` as Cilium's `ParseNamespaceName` does: `name` is in
    /// the `default` namespace, `ns/` is the whole namespace, `/name` is
    /// any namespace. Pod filters also take `cluster/ns/name`, with an
    /// empty part meaning any.
    fn parse(field: &'static str, value: &str, with_cluster: bool) -> Result<Self, FilterError> {
        let bad = |reason| FilterError::InvalidName {
            field,
            value: value.to_owned(),
            reason,
        };
        let any = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let parts: Vec<&str> = value.split('/').collect();
        let filter = match parts[..] {
            [""] => return Err(bad("is empty; want [namespace/][name-prefix]")),
            [name] => Self {
                cluster: None,
                namespace: Some(DEFAULT_NAMESPACE.to_owned()),
                prefix: name.to_owned(),
            },
            ["", ""] => return Err(bad("names no namespace and no name")),
            [namespace, name] => Self {
                cluster: None,
                namespace: any(namespace),
                prefix: name.to_owned(),
            },
            [cluster, namespace, name] if with_cluster => {
                if namespace.is_empty() && name.is_empty() {
                    return Err(bad("names no namespace and no name"));
                }
                Self {
                    cluster: any(cluster),
                    namespace: any(namespace),
                    prefix: name.to_owned(),
                }
            }
            _ if with_cluster => {
                return Err(bad(
                    "has too many '/'; want [[cluster/]namespace/][name-prefix]",
                ));
            }
            _ => return Err(bad("has too many '/'; want [namespace/][name-prefix]")),
        };
        Ok(filter)
    }

    fn matches(&self, cluster: &str, namespace: &str, name: &str) -> bool {
        self.cluster.as_deref().is_none_or(|c| c == cluster)
            && self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && name.starts_with(&self.prefix)
    }
}

/// A decimal port, as Go's `strconv.ParseUint(s, 10, 16)` reads it.
fn parse_port(field: &'static str, value: &str) -> Result<u16, FilterError> {
    let bad = || FilterError::InvalidPort {
        field,
        value: value.to_owned(),
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value.parse().map_err(|_| bad())
}

/// The flow's TCP, UDP or SCTP port on `side`.
fn l4_port(flow: &Flow, side: Side) -> Option<u16> {
    let (source, destination) = match flow.l4.as_ref()?.protocol.as_ref()? {
        Protocol::Tcp(p) => (p.source_port, p.destination_port),
        Protocol::Udp(p) => (p.source_port, p.destination_port),
        Protocol::Sctp(p) => (p.source_port, p.destination_port),
        _ => return None,
    };
    let port = match side {
        Side::Source => source,
        Side::Destination => destination,
    };
    // Cilium truncates to 16 bits.
    Some(port as u16)
}

fn tcp_flags(flow: &Flow) -> Option<&TcpFlags> {
    match flow.l4.as_ref()?.protocol.as_ref()? {
        Protocol::Tcp(tcp) => tcp.flags.as_ref(),
        _ => None,
    }
}

/// Validates the HTTP filters of `ff` as Cilium does; whether any is set.
fn compile_http(ff: &FlowFilter) -> Result<bool, FilterError> {
    let set = [
        ("http_status_code", !ff.http_status_code.is_empty()),
        ("http_method", !ff.http_method.is_empty()),
        ("http_path", !ff.http_path.is_empty()),
        ("http_url", !ff.http_url.is_empty()),
        ("http_header", !ff.http_header.is_empty()),
    ];
    let l7_event_type = ff.event_type.is_empty()
        || ff
            .event_type
            .iter()
            .any(|t| t.r#type == MESSAGE_TYPE_ACCESS_LOG);
    if let Some((field, _)) = set.iter().find(|(_, set)| *set)
        && !l7_event_type
    {
        return Err(FilterError::HttpNeedsL7EventType { field });
    }
    for code in &ff.http_status_code {
        if !is_http_status_filter(code) {
            return Err(FilterError::InvalidHttpStatusCode {
                field: "http_status_code",
                value: code.clone(),
            });
        }
    }
    check_regexes("http_path", &ff.http_path)?;
    check_regexes("http_url", &ff.http_url)?;
    Ok(set.iter().any(|(_, set)| *set))
}

/// `[1-5][0-9][0-9]` or `[1-5][0-9]?+`.
fn is_http_status_filter(s: &str) -> bool {
    let b = s.as_bytes();
    let first = |b: &[u8]| matches!(b.first(), Some(b'1'..=b'5'));
    match b.len() {
        3 if b[2] == b'+' => first(b) && b[1].is_ascii_digit(),
        3 => first(b) && b[1].is_ascii_digit() && b[2].is_ascii_digit(),
        2 => first(b) && b[1] == b'+',
        _ => false,
    }
}

/// The DNS record of an L7 flow.
fn dns_record(flow: &Flow) -> Option<&hubble_api::flow::Dns> {
    match flow.l7.as_ref()?.record.as_ref()? {
        hubble_api::flow::layer7::Record::Dns(d) => Some(d),
    }
}

fn check_regexes(field: &'static str, values: &[String]) -> Result<(), FilterError> {
    for value in values {
        regex::Regex::new(value).map_err(|source| FilterError::InvalidRegex {
            field,
            value: value.clone(),
            source,
        })?;
    }
    Ok(())
}

fn pattern_error(field: &'static str, e: PatternError) -> FilterError {
    FilterError::InvalidPattern {
        field,
        value: e.pattern,
        reason: e.reason,
    }
}
