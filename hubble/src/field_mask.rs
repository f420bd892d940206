//! A `GetFlowsRequest.field_mask` over `flow.Flow`: the server copies only
//! the named fields, as Cilium's `pkg/hubble/parser/fieldmask` does.
//!
//! Paths are proto field names joined by dots (`time`, `IP`, `l4.TCP`,
//! `source.pod_name`). A path that names a message keeps all of it; a
//! longer path keeps only that part (`source.identity` keeps the source
//! endpoint with nothing but its identity). Like `fieldmaskpb.IsValid`,
//! every component but the last must name a singular message field, and
//! every path must exist in Cilium's `flow.Flow`; anything else fails the
//! request with a [`FieldMaskError`] naming the path. Under `l7`, only the
//! DNS record is ever produced (by the agent's DNS proxy): a path into it
//! keeps the whole record, and paths into the HTTP and Kafka records are
//! valid (Cilium's CLI asks for them) and keep nothing.
//!
//! Unlike Cilium, a partial path into a message the flow does not have
//! leaves it absent instead of adding an empty one; for `l4`, whose
//! protocols are a oneof, this also keeps a UDP flow from turning into an
//! empty TCP one under `l4.TCP.source_port`.

use std::mem;

use hubble_api::flow::{
    Aggregate, CiliumEventType, Emitter, Endpoint, Ethernet, FileInfo, Flow, IcmPv4, IcmPv6, Igmp,
    Ip, IpTraceId, Layer4, Layer7, NetworkInterface, Sctp, Service, Tcp, TcpFlags, TraceContext,
    TraceParent, Tunnel, Udp, Vrrp, layer4::Protocol, layer7,
};
use prost_types::{Any, Timestamp};

/// A compiled field mask; the empty mask keeps everything.
#[derive(Debug, Default)]
pub struct FlowMask {
    /// `None`: keep everything.
    root: Option<Node>,
}

/// A path that names no field of `flow.Flow`.
#[derive(Debug, thiserror::Error)]
pub enum FieldMaskError {
    /// A path component names no field of the message it is in.
    #[error("invalid field mask path {path:?}: {message} has no field {field:?}")]
    UnknownField {
        path: String,
        message: &'static str,
        field: String,
    },
    /// A path goes on past a field that is not a singular message (a
    /// scalar, an enum or a repeated field).
    #[error("invalid field mask path {path:?}: {message}.{field} is not a singular message")]
    NotAMessage {
        path: String,
        message: &'static str,
        field: String,
    },
}

impl FlowMask {
    /// Compiles `mask` (`None` or no paths: keep everything).
    pub fn compile(mask: Option<&prost_types::FieldMask>) -> Result<Self, FieldMaskError> {
        let Some(mask) = mask.filter(|m| !m.paths.is_empty()) else {
            return Ok(Self::default());
        };
        let mut root = Node::default();
        for path in &mask.paths {
            root.insert(&resolve(path)?);
        }
        Ok(Self { root: Some(root) })
    }

    /// Whether the mask keeps everything.
    pub fn is_empty(&self) -> bool {
        self.root.is_none()
    }

    /// `flow` with only the masked fields.
    pub fn apply(&self, flow: Flow) -> Flow {
        match &self.root {
            None => flow,
            Some(node) => apply_flow(node, flow),
        }
    }
}

/// The field numbers along `path`, checked against the descriptors.
fn resolve(path: &str) -> Result<Vec<u32>, FieldMaskError> {
    let mut numbers = Vec::new();
    let mut message = FLOW;
    let mut fields = path.split('.').peekable();
    while let Some(field) = fields.next() {
        let Some((number, child)) = (message.field)(field) else {
            return Err(FieldMaskError::UnknownField {
                path: path.to_owned(),
                message: message.name,
                field: field.to_owned(),
            });
        };
        numbers.push(number);
        if fields.peek().is_some() {
            match child {
                Child::Message(next) => message = next,
                Child::Leaf => {
                    return Err(FieldMaskError::NotAMessage {
                        path: path.to_owned(),
                        message: message.name,
                        field: field.to_owned(),
                    });
                }
            }
        }
    }
    Ok(numbers)
}

/// The selected fields of one message, by proto field number.
#[derive(Debug, Default)]
struct Node {
    fields: Vec<(u32, Selection)>,
}

#[derive(Debug)]
enum Selection {
    Whole,
    Part(Node),
}

impl Node {
    /// Adds the path `numbers`; a whole field absorbs its parts, as
    /// `FieldMask.Normalize` does.
    fn insert(&mut self, numbers: &[u32]) {
        let Some((&first, rest)) = numbers.split_first() else {
            return;
        };
        match self.fields.iter_mut().find(|(n, _)| *n == first) {
            Some((_, Selection::Whole)) => {}
            Some((_, selection)) if rest.is_empty() => *selection = Selection::Whole,
            Some((_, Selection::Part(node))) => node.insert(rest),
            None if rest.is_empty() => self.fields.push((first, Selection::Whole)),
            None => {
                let mut node = Node::default();
                node.insert(rest);
                self.fields.push((first, Selection::Part(node)));
            }
        }
    }
}

/// A message type as the mask sees it: its name and a lookup from field
/// name to field number and kind.
#[derive(Clone, Copy)]
struct Descriptor {
    name: &'static str,
    field: fn(&str) -> Option<(u32, Child)>,
}

#[derive(Clone, Copy)]
enum Child {
    /// A scalar, enum or repeated field: paths end here.
    Leaf,
    /// A singular message field: paths may go on into it.
    Message(Descriptor),
}

/// `value` kept whole, or with only the `Part` of it.
fn part<T>(selection: &Selection, value: Option<T>, apply: fn(&Node, T) -> T) -> Option<T> {
    match selection {
        Selection::Whole => value,
        Selection::Part(node) => value.map(|v| apply(node, v)),
    }
}

macro_rules! child {
    () => {
        Child::Leaf
    };
    ($descriptor:ident) => {
        Child::Message($descriptor)
    };
}

/// A descriptor constant: `"proto_name" = number [(DESCRIPTOR of a
/// singular message field)]`.
macro_rules! descriptor {
    ($(#[$doc:meta])* $const:ident = $name:literal {
        $($field:literal = $number:literal $(($sub:ident))?),* $(,)?
    }) => {
        $(#[$doc])*
        const $const: Descriptor = Descriptor {
            name: $name,
            field: |name| {
                Some(match name {
                    $($field => ($number, child!($($sub)?)),)*
                    _ => return None,
                })
            },
        };
    };
}

macro_rules! keep {
    ($selection:ident, $src:expr, $dst:expr) => {
        $dst = mem::take(&mut $src)
    };
    ($selection:ident, $src:expr, $dst:expr, $apply:ident) => {
        $dst = part($selection, $src.take(), $apply)
    };
}

/// A descriptor and the function that applies a `Node` to the message:
/// `"proto_name" = number => rust_field [(DESCRIPTOR, apply_fn)]`, then
/// optionally the fields of Cilium's message that ours leaves out, which
/// resolve but keep nothing.
macro_rules! message {
    (
        $(#[$doc:meta])* $const:ident: $ty:ty = $name:literal, $apply:ident {
            $($field:literal = $number:literal => $rust:ident $(($sub:ident, $sub_apply:ident))?),*
            $(,)?
        }
        $(absent { $($absent:literal = $absent_number:literal $(($absent_sub:ident))?),* $(,)? })?
    ) => {
        descriptor! {
            $(#[$doc])*
            $const = $name {
                $($field = $number $(($sub))?,)*
                $($($absent = $absent_number $(($absent_sub))?,)*)?
            }
        }

        // `selection` is unused in messages of scalars only; the deprecated
        // fields (`Summary`, `reply`, `drop_reason`) are still on the wire.
        #[allow(unused_variables, deprecated)]
        fn $apply(node: &Node, mut src: $ty) -> $ty {
            let mut dst = <$ty>::default();
            for (number, selection) in &node.fields {
                match *number {
                    $($number => keep!(selection, src.$rust, dst.$rust $(, $sub_apply)?),)*
                    // Left out of our proto: nothing to keep.
                    _ => {}
                }
            }
            dst
        }
    };
}

message! {
    /// Cilium's `flow.Flow` (v1.19), with our Rust field names.
    FLOW: Flow = "flow.Flow", apply_flow {
        "time" = 1 => time (TIMESTAMP, apply_timestamp),
        "uuid" = 34 => uuid,
        "emitter" = 41 => emitter (EMITTER, apply_emitter),
        "verdict" = 2 => verdict,
        "drop_reason" = 3 => drop_reason,
        "auth_type" = 35 => auth_type,
        "ethernet" = 4 => ethernet (ETHERNET, apply_ethernet),
        "IP" = 5 => ip (IP, apply_ip),
        "l4" = 6 => l4 (LAYER4, apply_layer4),
        "tunnel" = 39 => tunnel (TUNNEL, apply_tunnel),
        "source" = 8 => source (ENDPOINT, apply_endpoint),
        "destination" = 9 => destination (ENDPOINT, apply_endpoint),
        "Type" = 10 => r#type,
        "node_name" = 11 => node_name,
        "node_labels" = 37 => node_labels,
        "source_names" = 13 => source_names,
        "destination_names" = 14 => destination_names,
        "reply" = 16 => reply,
        "event_type" = 19 => event_type (CILIUM_EVENT_TYPE, apply_cilium_event_type),
        "source_service" = 20 => source_service (SERVICE, apply_service),
        "destination_service" = 21 => destination_service (SERVICE, apply_service),
        "traffic_direction" = 22 => traffic_direction,
        "policy_match_type" = 23 => policy_match_type,
        "trace_observation_point" = 24 => trace_observation_point,
        "trace_reason" = 36 => trace_reason,
        "file" = 38 => file (FILE_INFO, apply_file_info),
        "ip_trace_id" = 40 => ip_trace_id (IP_TRACE_ID, apply_ip_trace_id),
        "drop_reason_desc" = 25 => drop_reason_desc,
        "is_reply" = 26 => is_reply (BOOL_VALUE, apply_bool_value),
        "debug_capture_point" = 27 => debug_capture_point,
        "interface" = 28 => interface (NETWORK_INTERFACE, apply_network_interface),
        "proxy_port" = 29 => proxy_port,
        "trace_context" = 30 => trace_context (TRACE_CONTEXT, apply_trace_context),
        "sock_xlate_point" = 31 => sock_xlate_point,
        "socket_cookie" = 32 => socket_cookie,
        "cgroup_id" = 33 => cgroup_id,
        "Summary" = 100000 => summary,
        "extensions" = 150000 => extensions (ANY, apply_any),
        "egress_allowed_by" = 21001 => egress_allowed_by,
        "ingress_allowed_by" = 21002 => ingress_allowed_by,
        "egress_denied_by" = 21004 => egress_denied_by,
        "ingress_denied_by" = 21005 => ingress_denied_by,
        "policy_log" = 21006 => policy_log,
        "aggregate" = 21007 => aggregate (AGGREGATE, apply_aggregate),
        "l7" = 15 => l7 (LAYER7, apply_layer7),
    }
}

/// `flow.Layer7`: its type, latency and DNS record (kept whole under any
/// path into it); HTTP and Kafka records are never produced.
fn apply_layer7(node: &Node, mut src: Layer7) -> Layer7 {
    let mut dst = Layer7::default();
    for (number, _) in &node.fields {
        match *number {
            1 => dst.r#type = src.r#type,
            2 => dst.latency_ns = src.latency_ns,
            100 => {
                if let Some(record @ layer7::Record::Dns(_)) = src.record.take() {
                    dst.record = Some(record);
                }
            }
            _ => {}
        }
    }
    dst
}

message! {
    /// `google.protobuf.Timestamp`.
    TIMESTAMP: Timestamp = "google.protobuf.Timestamp", apply_timestamp {
        "seconds" = 1 => seconds,
        "nanos" = 2 => nanos,
    }
}

message! {
    /// `google.protobuf.Any`.
    ANY: Any = "google.protobuf.Any", apply_any {
        "type_url" = 1 => type_url,
        "value" = 2 => value,
    }
}

descriptor! {
    /// `google.protobuf.BoolValue`: `Option<bool>` in Rust, so its one
    /// field is the whole of it.
    BOOL_VALUE = "google.protobuf.BoolValue" { "value" = 1 }
}

fn apply_bool_value(_: &Node, value: bool) -> bool {
    value
}

message! {
    EMITTER: Emitter = "flow.Emitter", apply_emitter {
        "name" = 1 => name,
        "version" = 2 => version,
    }
}

message! {
    ETHERNET: Ethernet = "flow.Ethernet", apply_ethernet {
        "source" = 1 => source,
        "destination" = 2 => destination,
    }
}

message! {
    IP: Ip = "flow.IP", apply_ip {
        "source" = 1 => source,
        "source_xlated" = 5 => source_xlated,
        "destination" = 2 => destination,
        "ipVersion" = 3 => ip_version,
        "encrypted" = 4 => encrypted,
    }
}

descriptor! {
    /// `flow.Layer4`: a oneof, applied by `apply_layer4`.
    LAYER4 = "flow.Layer4" {
        "TCP" = 1 (TCP),
        "UDP" = 2 (UDP),
        "ICMPv4" = 3 (ICMPV4),
        "ICMPv6" = 4 (ICMPV6),
        "SCTP" = 5 (SCTP),
        "VRRP" = 6 (VRRP),
        "IGMP" = 7 (IGMP),
    }
}

/// Keeps the flow's protocol when the mask names it, whole or in part.
fn apply_layer4(node: &Node, src: Layer4) -> Layer4 {
    let Some(protocol) = src.protocol else {
        return Layer4::default();
    };
    let number = match &protocol {
        Protocol::Tcp(_) => 1,
        Protocol::Udp(_) => 2,
        Protocol::IcmPv4(_) => 3,
        Protocol::IcmPv6(_) => 4,
        Protocol::Sctp(_) => 5,
        Protocol::Vrrp(_) => 6,
        Protocol::Igmp(_) => 7,
    };
    let Some((_, selection)) = node.fields.iter().find(|(n, _)| *n == number) else {
        return Layer4::default();
    };
    let protocol = match (selection, protocol) {
        (Selection::Whole, protocol) => protocol,
        (Selection::Part(node), Protocol::Tcp(p)) => Protocol::Tcp(apply_tcp(node, p)),
        (Selection::Part(node), Protocol::Udp(p)) => Protocol::Udp(apply_udp(node, p)),
        (Selection::Part(node), Protocol::IcmPv4(p)) => Protocol::IcmPv4(apply_icmpv4(node, p)),
        (Selection::Part(node), Protocol::IcmPv6(p)) => Protocol::IcmPv6(apply_icmpv6(node, p)),
        (Selection::Part(node), Protocol::Sctp(p)) => Protocol::Sctp(apply_sctp(node, p)),
        (Selection::Part(node), Protocol::Vrrp(p)) => Protocol::Vrrp(apply_vrrp(node, p)),
        (Selection::Part(node), Protocol::Igmp(p)) => Protocol::Igmp(apply_igmp(node, p)),
    };
    Layer4 {
        protocol: Some(protocol),
    }
}

message! {
    TCP: Tcp = "flow.TCP", apply_tcp {
        "source_port" = 1 => source_port,
        "destination_port" = 2 => destination_port,
        "flags" = 3 => flags (TCP_FLAGS, apply_tcp_flags),
    }
}

message! {
    TCP_FLAGS: TcpFlags = "flow.TCPFlags", apply_tcp_flags {
        "FIN" = 1 => fin,
        "SYN" = 2 => syn,
        "RST" = 3 => rst,
        "PSH" = 4 => psh,
        "ACK" = 5 => ack,
        "URG" = 6 => urg,
        "ECE" = 7 => ece,
        "CWR" = 8 => cwr,
        "NS" = 9 => ns,
    }
}

message! {
    UDP: Udp = "flow.UDP", apply_udp {
        "source_port" = 1 => source_port,
        "destination_port" = 2 => destination_port,
    }
}

message! {
    SCTP: Sctp = "flow.SCTP", apply_sctp {
        "source_port" = 1 => source_port,
        "destination_port" = 2 => destination_port,
    }
}

message! {
    ICMPV4: IcmPv4 = "flow.ICMPv4", apply_icmpv4 {
        "type" = 1 => r#type,
        "code" = 2 => code,
    }
}

message! {
    ICMPV6: IcmPv6 = "flow.ICMPv6", apply_icmpv6 {
        "type" = 1 => r#type,
        "code" = 2 => code,
    }
}

message! {
    VRRP: Vrrp = "flow.VRRP", apply_vrrp {
        "type" = 1 => r#type,
        "vrid" = 2 => vrid,
        "priority" = 3 => priority,
    }
}

message! {
    IGMP: Igmp = "flow.IGMP", apply_igmp {
        "type" = 1 => r#type,
        "group_address" = 2 => group_address,
    }
}

message! {
    TUNNEL: Tunnel = "flow.Tunnel", apply_tunnel {
        "protocol" = 1 => protocol,
        "IP" = 2 => ip (IP, apply_ip),
        "l4" = 3 => l4 (LAYER4, apply_layer4),
        "vni" = 4 => vni,
    }
}

message! {
    ENDPOINT: Endpoint = "flow.Endpoint", apply_endpoint {
        "ID" = 1 => id,
        "identity" = 2 => identity,
        "cluster_name" = 7 => cluster_name,
        "namespace" = 3 => namespace,
        "labels" = 4 => labels,
        "pod_name" = 5 => pod_name,
        "workloads" = 6 => workloads,
    }
}

message! {
    CILIUM_EVENT_TYPE: CiliumEventType = "flow.CiliumEventType", apply_cilium_event_type {
        "type" = 1 => r#type,
        "sub_type" = 2 => sub_type,
    }
}

message! {
    SERVICE: Service = "flow.Service", apply_service {
        "name" = 1 => name,
        "namespace" = 2 => namespace,
    }
}

message! {
    FILE_INFO: FileInfo = "flow.FileInfo", apply_file_info {
        "name" = 1 => name,
        "line" = 2 => line,
    }
}

message! {
    IP_TRACE_ID: IpTraceId = "flow.IPTraceID", apply_ip_trace_id {
        "trace_id" = 1 => trace_id,
        "ip_option_type" = 2 => ip_option_type,
    }
}

message! {
    NETWORK_INTERFACE: NetworkInterface = "flow.NetworkInterface", apply_network_interface {
        "index" = 1 => index,
        "name" = 2 => name,
    }
}

message! {
    TRACE_CONTEXT: TraceContext = "flow.TraceContext", apply_trace_context {
        "parent" = 1 => parent (TRACE_PARENT, apply_trace_parent),
    }
}

message! {
    TRACE_PARENT: TraceParent = "flow.TraceParent", apply_trace_parent {
        "trace_id" = 1 => trace_id,
    }
}

message! {
    AGGREGATE: Aggregate = "flow.Aggregate", apply_aggregate {
        "ingress_flow_count" = 1 => ingress_flow_count,
        "egress_flow_count" = 2 => egress_flow_count,
        "unknown_direction_flow_count" = 3 => unknown_direction_flow_count,
    }
}

// Cilium's L7 record: paths into it resolve (Cilium's CLI asks for `l7`).

descriptor! {
    LAYER7 = "flow.Layer7" {
        "type" = 1,
        "latency_ns" = 2,
        "dns" = 100 (DNS),
        "http" = 101 (HTTP),
        "kafka" = 102 (KAFKA),
    }
}

descriptor! {
    DNS = "flow.DNS" {
        "query" = 1,
        "ips" = 2,
        "ttl" = 3,
        "cnames" = 4,
        "observation_source" = 5,
        "rcode" = 6,
        "qtypes" = 7,
        "rrtypes" = 8,
    }
}

descriptor! {
    HTTP = "flow.HTTP" {
        "code" = 1,
        "method" = 2,
        "url" = 3,
        "protocol" = 4,
        "headers" = 5,
    }
}

descriptor! {
    KAFKA = "flow.Kafka" {
        "error_code" = 1,
        "api_version" = 2,
        "api_key" = 3,
        "correlation_id" = 4,
        "topic" = 5,
    }
}
