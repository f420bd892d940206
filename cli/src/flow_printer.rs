//! `GetFlowsResponse`s printed as Hubble's CLI prints them: `compact` lines,
//! `dict` blocks, `table` columns, or protojson lines (`json`, `jsonpb`).
//! Flows and lost events go to the output; relay node status events (only
//! the errors and unavailable nodes, as Hubble does outside debug mode) go to
//! the error stream.

mod drop_reasons;

use std::io::{self, Write};

use hubble_api::{
    flow::{
        AuthType, DebugCapturePoint, Flow, SocketTranslationPoint, TrafficDirection, Verdict,
        layer4::Protocol,
    },
    observer::{GetFlowsResponse, get_flows_response::ResponseTypes},
    relay::{NodeState, NodeStatusEvent},
};

use crate::{
    flow_filter::{RESERVED_IDENTITIES, TRACE_POINTS},
    flow_time::{TimeFormat, format_time},
    tab_writer::TabWriter,
};

/// `-o`: how flows are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum Output {
    /// One line per flow.
    #[default]
    Compact,
    /// Each flow as KEY: VALUE lines.
    Dict,
    /// One GetFlowsResponse per line as protobuf JSON (proto field names).
    Json,
    /// Same as json.
    Jsonpb,
    /// Tab-aligned columns (printed when the stream ends).
    Table,
}

/// What the printer prints besides the flows themselves.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PrinterOptions {
    pub(crate) output: Output,
    pub(crate) time_format: TimeFormat,
    /// A NODE column / `[node]` after the time.
    pub(crate) node_name: bool,
    /// Print every node status event, not only errors and unavailable nodes.
    pub(crate) debug: bool,
}

const DICT_SEPARATOR: &str = "------------";
/// Node lists in status events are cut after about this many characters.
const NODE_NAMES_CUT_OFF: usize = 50;

/// Prints responses one by one to `out` and `err`.
pub(crate) struct FlowPrinter<'a> {
    opts: PrinterOptions,
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
    line: usize,
    table: TabWriter,
}

impl<'a> FlowPrinter<'a> {
    pub(crate) fn new(
        opts: PrinterOptions,
        out: &'a mut dyn Write,
        err: &'a mut dyn Write,
    ) -> Self {
        Self {
            opts,
            out,
            err,
            line: 0,
            table: TabWriter::default(),
        }
    }

    /// Prints one response (responses of no known kind are skipped).
    pub(crate) fn write(&mut self, res: &GetFlowsResponse) -> io::Result<()> {
        match &res.response_types {
            Some(ResponseTypes::Flow(flow)) => self.write_flow(res, flow),
            Some(ResponseTypes::NodeStatus(status)) => self.write_node_status(res, status),
            Some(ResponseTypes::LostEvents(_)) => self.write_lost_events(res),
            None => Ok(()),
        }
    }

    /// Writes what is still kept (the table) and flushes.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        self.table.flush(self.out)?;
        self.out.flush()?;
        self.err.flush()
    }

    fn time(&self, ts: Option<&prost_types::Timestamp>) -> String {
        format_time(ts, self.opts.time_format)
    }

    fn table_header(&mut self) {
        if self.line != 0 {
            return;
        }
        let mut cells = vec!["TIMESTAMP".to_owned()];
        if self.opts.node_name {
            cells.push("NODE".to_owned());
        }
        cells.extend(["SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY"].map(str::to_owned));
        self.table.row(cells);
    }

    fn write_flow(&mut self, res: &GetFlowsResponse, f: &Flow) -> io::Result<()> {
        let (src, dst) = host_names(f);
        let time = self.time(f.time.as_ref());
        match self.opts.output {
            Output::Json | Output::Jsonpb => return self.write_json(res),
            Output::Table => {
                self.table_header();
                let mut cells = vec![time];
                if self.opts.node_name {
                    cells.push(f.node_name.clone());
                }
                cells.extend([src, dst, flow_type(f), verdict(f), summary(f, true)]);
                self.table.row(cells);
            }
            Output::Dict => {
                if self.line != 0 {
                    writeln!(self.out, "{DICT_SEPARATOR}")?;
                }
                let mut block = format!("  TIMESTAMP: {time}\n");
                if self.opts.node_name {
                    block.push_str(&format!("       NODE: {}\n", f.node_name));
                }
                block.push_str(&format!(
                    "     SOURCE: {src}\nDESTINATION: {dst}\n       TYPE: {}\n    VERDICT: {}\n    SUMMARY: {}\n",
                    flow_type(f),
                    verdict(f),
                    summary(f, false)
                ));
                self.out.write_all(block.as_bytes())?;
            }
            Output::Compact => {
                let node = if self.opts.node_name {
                    format!(" [{}]", f.node_name)
                } else {
                    String::new()
                };
                let (mut src, mut dst) = (src, dst);
                let mut src_id = identity(f.source.as_ref().map_or(0, |e| e.identity));
                let mut dst_id = identity(f.destination.as_ref().map_or(0, |e| e.identity));
                let arrow = match f.is_reply {
                    None => "<>",
                    Some(false) => "->",
                    Some(true) => {
                        std::mem::swap(&mut src, &mut dst);
                        std::mem::swap(&mut src_id, &mut dst_id);
                        "<-"
                    }
                };
                writeln!(
                    self.out,
                    "{time}{node}: {src} {src_id} {arrow} {dst} {dst_id} {} {} ({})",
                    flow_type(f),
                    verdict(f),
                    summary(f, true)
                )?;
            }
        }
        self.line += 1;
        Ok(())
    }

    fn write_lost_events(&mut self, res: &GetFlowsResponse) -> io::Result<()> {
        let Some(ResponseTypes::LostEvents(lost)) = &res.response_types else {
            return Ok(());
        };
        let source = enum_name(lost.source, |v| {
            hubble_api::flow::LostEventSource::try_from(v)
                .ok()
                .map(|s| s.as_str_name())
        });
        let cpu = lost.cpu.unwrap_or(0);
        let count = lost.num_events_lost;
        match self.opts.output {
            Output::Json | Output::Jsonpb => return self.write_json(res),
            Output::Table => {
                self.table_header();
                let mut cells = vec![String::new()];
                if self.opts.node_name {
                    cells.push(String::new());
                }
                cells.extend([
                    source,
                    String::new(),
                    "EVENTS LOST".to_owned(),
                    String::new(),
                    format!("CPU({cpu}) - {count}"),
                ]);
                self.table.row(cells);
            }
            Output::Dict => {
                if self.line != 0 {
                    writeln!(self.out, "{DICT_SEPARATOR}")?;
                }
                let mut block = "  TIMESTAMP: \n".to_owned();
                if self.opts.node_name {
                    block.push_str("       NODE: \n");
                }
                block.push_str(&format!(
                    "     SOURCE: {source}\n       TYPE: EVENTS LOST\n    VERDICT: \n    SUMMARY: CPU({cpu}) - {count}\n"
                ));
                self.out.write_all(block.as_bytes())?;
            }
            Output::Compact => writeln!(self.out, "EVENTS LOST: {source} CPU({cpu}) {count}")?,
        }
        self.line += 1;
        Ok(())
    }

    fn write_node_status(&mut self, res: &GetFlowsResponse, s: &NodeStatusEvent) -> io::Result<()> {
        let state = NodeState::try_from(s.state_change).unwrap_or(NodeState::UnknownNodeState);
        if !self.opts.debug && !matches!(state, NodeState::NodeError | NodeState::NodeUnavailable) {
            return Ok(());
        }
        let names = join_with_cut_off(&s.node_names, ", ", NODE_NAMES_CUT_OFF);
        let time = self.time(res.time.as_ref());
        match self.opts.output {
            Output::Json | Output::Jsonpb => {
                let line = json_line(res)?;
                self.err.write_all(line.as_bytes())
            }
            Output::Dict => {
                // Hubble v1.16 puts the separator on the output stream, so
                // that it still separates when both streams are interleaved.
                if self.line != 0 {
                    writeln!(self.out, "{DICT_SEPARATOR}")?;
                } else {
                    self.line += 1;
                }
                let message = if s.message.is_empty() {
                    "N/A".to_owned()
                } else {
                    go_quote(&s.message)
                };
                write!(
                    self.err,
                    "  TIMESTAMP: {time}\n      STATE: {}\n      NODES: {names}\n    MESSAGE: {message}\n",
                    enum_name(s.state_change, |v| NodeState::try_from(v)
                        .ok()
                        .map(|s| s.as_str_name()))
                )
            }
            Output::Compact | Output::Table => {
                let prefix = format!("{time} [{}]", res.node_name);
                let n = s.node_names.len();
                let msg = match state {
                    NodeState::NodeConnected => {
                        format!("{prefix}: Receiving flows from {n} nodes: {names}")
                    }
                    NodeState::NodeUnavailable => {
                        format!("{prefix}: {n} nodes are unavailable: {names}")
                    }
                    NodeState::NodeGone => {
                        format!("{prefix}: {n} nodes removed from cluster: {names}")
                    }
                    NodeState::NodeError => {
                        format!(
                            "{prefix}: Error {} on {n} nodes: {names}",
                            go_quote(&s.message)
                        )
                    }
                    NodeState::UnknownNodeState => {
                        format!("{prefix}: unknown node status event: {s:?}")
                    }
                };
                writeln!(self.err, "{msg}")
            }
        }
    }

    fn write_json(&mut self, res: &GetFlowsResponse) -> io::Result<()> {
        let line = json_line(res)?;
        self.out.write_all(line.as_bytes())?;
        self.line += 1;
        Ok(())
    }
}

fn json_line(res: &GetFlowsResponse) -> io::Result<String> {
    hubble_api::json::to_json(res)
        .map(|mut s| {
            s.push('\n');
            s
        })
        .map_err(io::Error::other)
}

/// An enum value's proto name, or its number when unknown (as Go prints it).
fn enum_name(value: i32, name: impl Fn(i32) -> Option<&'static str>) -> String {
    name(value).map_or_else(|| value.to_string(), str::to_owned)
}

/// A string quoted like Go's `%q` / `strconv.Quote` for printable text.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Joins names until about `target` characters, then says how many are left.
fn join_with_cut_off(elems: &[String], sep: &str, target: usize) -> String {
    let mut len = 0;
    let mut end = elems.len();
    for (i, e) in elems.iter().enumerate() {
        len += e.len() + sep.len();
        if len > target && i > 0 {
            end = i;
            break;
        }
    }
    let joined = elems[..end].join(sep);
    match elems.len() - end {
        0 => joined,
        omitted => format!("{joined} (and {omitted} more)"),
    }
}

/// `(world)` for a reserved identity, `(ID:1234)` otherwise.
fn identity(id: u32) -> String {
    if id == 0 {
        return "(unknown)".to_owned();
    }
    match RESERVED_IDENTITIES.iter().find(|(_, n)| *n == id) {
        Some((name, _)) => format!("({name})"),
        None => format!("(ID:{id})"),
    }
}

fn ports(f: &Flow) -> (String, String) {
    match f.l4.as_ref().and_then(|l4| l4.protocol.as_ref()) {
        Some(Protocol::Tcp(p)) => (p.source_port.to_string(), p.destination_port.to_string()),
        Some(Protocol::Udp(p)) => (p.source_port.to_string(), p.destination_port.to_string()),
        Some(Protocol::Sctp(p)) => (p.source_port.to_string(), p.destination_port.to_string()),
        _ => (String::new(), String::new()),
    }
}

/// `ns/pod`, `ns/service`, DNS names or the IP, with `:port` when known.
fn host_name(ip: &str, port: &str, ns: &str, pod: &str, svc: &str, names: &[String]) -> String {
    let join = |name: &str| {
        if ns.is_empty() {
            name.to_owned()
        } else {
            format!("{ns}/{name}")
        }
    };
    let host = if !pod.is_empty() {
        join(pod)
    } else if !svc.is_empty() {
        join(svc)
    } else if !names.is_empty() {
        names.join(",")
    } else {
        ip.to_owned()
    };
    if port.is_empty() || port == "0" {
        host
    } else if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The SOURCE and DESTINATION columns.
fn host_names(f: &Flow) -> (String, String) {
    let Some(ip) = &f.ip else {
        return match &f.ethernet {
            Some(eth) => (eth.source.clone(), eth.destination.clone()),
            None => (String::new(), String::new()),
        };
    };
    let (mut src_ns, src_pod) = f
        .source
        .as_ref()
        .map_or((String::new(), String::new()), |e| {
            (e.namespace.clone(), e.pod_name.clone())
        });
    let (mut dst_ns, dst_pod) = f
        .destination
        .as_ref()
        .map_or((String::new(), String::new()), |e| {
            (e.namespace.clone(), e.pod_name.clone())
        });
    let (mut src_svc, mut dst_svc) = (String::new(), String::new());
    if let Some(svc) = &f.source_service {
        src_ns.clone_from(&svc.namespace);
        src_svc.clone_from(&svc.name);
    }
    if let Some(svc) = &f.destination_service {
        dst_ns.clone_from(&svc.namespace);
        dst_svc.clone_from(&svc.name);
    }
    let (src_port, dst_port) = ports(f);
    (
        host_name(
            &ip.source,
            &src_port,
            &src_ns,
            &src_pod,
            &src_svc,
            &f.source_names,
        ),
        host_name(
            &ip.destination,
            &dst_port,
            &dst_ns,
            &dst_pod,
            &dst_svc,
            &f.destination_names,
        ),
    )
}

/// The TYPE column: trace point, drop reason, policy verdict, …
fn flow_type(f: &Flow) -> String {
    let (t, sub) = f
        .event_type
        .as_ref()
        .map_or((0, 0), |e| (e.r#type, e.sub_type));
    match t {
        4 => {
            let sub = sub as u8;
            TRACE_POINTS
                .get(usize::from(sub))
                .map_or_else(|| sub.to_string(), |s| (*s).to_owned())
        }
        1 => {
            let sub = sub as u8;
            drop_reasons::DROP_REASONS
                .iter()
                .find(|(code, _)| *code == sub)
                .map_or_else(|| format!("{sub}, 0"), |(_, text)| (*text).to_owned())
        }
        5 => format!(
            "policy-verdict:{} {}",
            policy_match_type(f.policy_match_type),
            enum_name(f.traffic_direction, |v| TrafficDirection::try_from(v)
                .ok()
                .map(|d| d.as_str_name()))
        ),
        3 => enum_name(f.debug_capture_point, |v| {
            DebugCapturePoint::try_from(v).ok().map(|p| p.as_str_name())
        }),
        7 => match SocketTranslationPoint::try_from(f.sock_xlate_point) {
            Ok(SocketTranslationPoint::SockXlatePointPostDirectionFwd) => "post-xlate-fwd".into(),
            Ok(SocketTranslationPoint::SockXlatePointPostDirectionRev) => "post-xlate-rev".into(),
            Ok(SocketTranslationPoint::SockXlatePointPreDirectionFwd) => "pre-xlate-fwd".into(),
            Ok(SocketTranslationPoint::SockXlatePointPreDirectionRev) => "pre-xlate-rev".into(),
            Ok(p) => p.as_str_name().to_owned(),
            Err(_) => f.sock_xlate_point.to_string(),
        },
        _ => "UNKNOWN".to_owned(),
    }
}

fn policy_match_type(m: u32) -> &'static str {
    match m {
        0 => "none",
        1 => "L3-Only",
        2 => "L3-L4",
        3 => "L4-Only",
        4 => "all",
        5 => "L3-Proto",
        6 => "Proto-Only",
        _ => "unknown",
    }
}

/// The VERDICT column (ALLOWED/DENIED/AUDITED for policy verdict events).
fn verdict(f: &Flow) -> String {
    let policy_verdict = f.event_type.as_ref().is_some_and(|e| e.r#type == 5);
    let name = enum_name(f.verdict, |v| {
        Verdict::try_from(v).ok().map(|v| v.as_str_name())
    });
    match Verdict::try_from(f.verdict) {
        Ok(Verdict::Forwarded | Verdict::Redirected) if policy_verdict => "ALLOWED".into(),
        Ok(Verdict::Dropped | Verdict::Error) if policy_verdict => "DENIED".into(),
        Ok(Verdict::Audit) if policy_verdict => "AUDITED".into(),
        _ => name,
    }
}

/// The SUMMARY column: the flow's summary and IP trace ID, and in compact
/// and table output its auth type (Hubble v1.16's dict leaves it out).
fn summary(f: &Flow, with_auth: bool) -> String {
    let mut s = String::new();
    if let Some(trace) = f.ip_trace_id.as_ref().filter(|t| t.trace_id > 0) {
        s.push_str(&format!("IP Trace ID: {}; ", trace.trace_id));
    }
    // Deprecated in the API, yet the text every Hubble printer shows.
    #[allow(deprecated)]
    s.push_str(&f.summary);
    match AuthType::try_from(f.auth_type) {
        _ if !with_auth => {}
        Ok(AuthType::Disabled) => {}
        Ok(auth) => s.push_str(&format!("; Auth: {}", auth.as_str_name())),
        Err(_) => s.push_str(&format!("; Auth: {}", f.auth_type)),
    }
    s
}

#[cfg(test)]
mod tests {
    use hubble_api::{
        flow::{
            CiliumEventType, DropReason, Endpoint, Ip, IpVersion, Layer4, LostEvent,
            LostEventSource, Tcp, TcpFlags, Udp,
        },
        observer::get_flows_response::ResponseTypes,
    };
    use prost_types::Timestamp;

    use super::*;

    /// 2024-05-01T10:11:12.123456789Z.
    fn time() -> Option<Timestamp> {
        Some(Timestamp {
            seconds: 1_714_558_272,
            nanos: 123_456_789,
        })
    }

    fn endpoint(identity: u32, ns: &str, pod: &str, cluster: &str) -> Option<Endpoint> {
        Some(Endpoint {
            identity,
            namespace: ns.into(),
            pod_name: pod.into(),
            cluster_name: cluster.into(),
            ..Default::default()
        })
    }

    /// A SYN from c1's client to a world IP, dropped by policy.
    pub(crate) fn policy_drop() -> GetFlowsResponse {
        let flow = Flow {
            time: time(),
            verdict: Verdict::Dropped.into(),
            #[allow(deprecated)]
            drop_reason: 133,
            ip: Some(Ip {
                source: "10.0.1.5".into(),
                destination: "10.0.2.7".into(),
                ip_version: IpVersion::IPv4.into(),
                ..Default::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(Protocol::Tcp(Tcp {
                    source_port: 40000,
                    destination_port: 80,
                    flags: Some(TcpFlags {
                        syn: true,
                        ..Default::default()
                    }),
                })),
            }),
            source: Some(Endpoint {
                id: 12,
                labels: vec![
                    "k8s:app=client".into(),
                    "k8s:io.cilium.k8s.policy.cluster=c1".into(),
                ],
                ..endpoint(1234, "default", "client", "c1").unwrap()
            }),
            destination: Some(Endpoint {
                identity: 2,
                labels: vec!["reserved:world".into()],
                ..Default::default()
            }),
            r#type: hubble_api::flow::FlowType::L3L4.into(),
            node_name: "c1/n1".into(),
            event_type: Some(CiliumEventType {
                r#type: 1,
                sub_type: 133,
            }),
            traffic_direction: TrafficDirection::Egress.into(),
            drop_reason_desc: DropReason::PolicyDenied.into(),
            is_reply: Some(false),
            #[allow(deprecated)]
            summary: "TCP Flags: SYN".into(),
            ..Default::default()
        };
        GetFlowsResponse {
            node_name: "c1/n1".into(),
            time: time(),
            response_types: Some(ResponseTypes::Flow(flow)),
        }
    }

    /// A DNS reply from c2's echo pod back to c1's client, forwarded.
    fn cross_cluster_reply() -> GetFlowsResponse {
        let flow = Flow {
            time: time(),
            verdict: Verdict::Forwarded.into(),
            ip: Some(Ip {
                source: "10.2.0.9".into(),
                destination: "10.1.0.5".into(),
                ip_version: IpVersion::IPv4.into(),
                ..Default::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(Protocol::Udp(Udp {
                    source_port: 53,
                    destination_port: 41000,
                })),
            }),
            source: endpoint(70000, "demo", "echo-1", "c2"),
            destination: endpoint(65537, "demo", "client", "c1"),
            node_name: "c2/n1".into(),
            event_type: Some(CiliumEventType {
                r#type: 4,
                sub_type: 0,
            }),
            is_reply: Some(true),
            #[allow(deprecated)]
            summary: "UDP".into(),
            ..Default::default()
        };
        GetFlowsResponse {
            node_name: "c2/n1".into(),
            time: time(),
            response_types: Some(ResponseTypes::Flow(flow)),
        }
    }

    fn lost() -> GetFlowsResponse {
        GetFlowsResponse {
            node_name: "c1/n1".into(),
            time: time(),
            response_types: Some(ResponseTypes::LostEvents(LostEvent {
                source: LostEventSource::HubbleRingBuffer.into(),
                num_events_lost: 42,
                cpu: Some(0),
                ..Default::default()
            })),
        }
    }

    fn node_status(state: NodeState, names: &[&str], message: &str) -> GetFlowsResponse {
        GetFlowsResponse {
            node_name: "relay".into(),
            time: time(),
            response_types: Some(ResponseTypes::NodeStatus(NodeStatusEvent {
                state_change: state.into(),
                node_names: names.iter().map(|s| (*s).to_owned()).collect(),
                message: message.into(),
            })),
        }
    }

    fn print(opts: PrinterOptions, responses: &[GetFlowsResponse]) -> (String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut p = FlowPrinter::new(opts, &mut out, &mut err);
        for r in responses {
            p.write(r).unwrap();
        }
        p.finish().unwrap();
        drop(p);
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    fn all() -> Vec<GetFlowsResponse> {
        vec![
            policy_drop(),
            cross_cluster_reply(),
            lost(),
            node_status(NodeState::NodeConnected, &["c1/n1"], ""),
            node_status(NodeState::NodeUnavailable, &["c1/n2", "c2/n1"], ""),
            node_status(NodeState::NodeError, &["c1/n2"], "boom \"x\""),
        ]
    }

    fn opts(output: Output) -> PrinterOptions {
        PrinterOptions {
            output,
            ..Default::default()
        }
    }

    #[test]
    fn compact() {
        let (out, err) = print(opts(Output::Compact), &all());
        assert_eq!(
            out,
            "May  1 10:11:12.123: default/client:40000 (ID:1234) -> 10.0.2.7:80 (world) Policy denied DROPPED (TCP Flags: SYN)\n\
             May  1 10:11:12.123: demo/client:41000 (ID:65537) <- demo/echo-1:53 (ID:70000) to-endpoint FORWARDED (UDP)\n\
             EVENTS LOST: HUBBLE_RING_BUFFER CPU(0) 42\n"
        );
        assert_eq!(
            err,
            "May  1 10:11:12.123 [relay]: 2 nodes are unavailable: c1/n2, c2/n1\n\
             May  1 10:11:12.123 [relay]: Error \"boom \\\"x\\\"\" on 1 nodes: c1/n2\n"
        );
    }

    #[test]
    fn compact_with_node_names_and_unknown_direction() {
        let mut r = policy_drop();
        if let Some(ResponseTypes::Flow(f)) = &mut r.response_types {
            f.is_reply = None;
        }
        let (out, _) = print(
            PrinterOptions {
                node_name: true,
                ..opts(Output::Compact)
            },
            &[r],
        );
        assert_eq!(
            out,
            "May  1 10:11:12.123 [c1/n1]: default/client:40000 (ID:1234) <> 10.0.2.7:80 (world) Policy denied DROPPED (TCP Flags: SYN)\n"
        );
    }

    #[test]
    fn dict() {
        let (out, err) = print(opts(Output::Dict), &all());
        assert_eq!(
            out,
            "  TIMESTAMP: May  1 10:11:12.123\n     SOURCE: default/client:40000\nDESTINATION: 10.0.2.7:80\n       TYPE: Policy denied\n    VERDICT: DROPPED\n    SUMMARY: TCP Flags: SYN\n\
             ------------\n  TIMESTAMP: May  1 10:11:12.123\n     SOURCE: demo/echo-1:53\nDESTINATION: demo/client:41000\n       TYPE: to-endpoint\n    VERDICT: FORWARDED\n    SUMMARY: UDP\n\
             ------------\n  TIMESTAMP: \n     SOURCE: HUBBLE_RING_BUFFER\n       TYPE: EVENTS LOST\n    VERDICT: \n    SUMMARY: CPU(0) - 42\n\
             ------------\n------------\n"
        );
        assert_eq!(
            err,
            "  TIMESTAMP: May  1 10:11:12.123\n      STATE: NODE_UNAVAILABLE\n      NODES: c1/n2, c2/n1\n    MESSAGE: N/A\n\
             \x20 TIMESTAMP: May  1 10:11:12.123\n      STATE: NODE_ERROR\n      NODES: c1/n2\n    MESSAGE: \"boom \\\"x\\\"\"\n"
        );
    }

    #[test]
    fn table() {
        let (out, _) = print(opts(Output::Table), &all());
        assert_eq!(
            out,
            "TIMESTAMP             SOURCE                 DESTINATION         TYPE            VERDICT     SUMMARY\n\
             May  1 10:11:12.123   default/client:40000   10.0.2.7:80         Policy denied   DROPPED     TCP Flags: SYN\n\
             May  1 10:11:12.123   demo/echo-1:53         demo/client:41000   to-endpoint     FORWARDED   UDP\n\
             \x20                     HUBBLE_RING_BUFFER                         EVENTS LOST                 CPU(0) - 42\n"
        );
    }

    #[test]
    fn json_is_protojson_with_proto_names() {
        let (out, err) = print(opts(Output::Json), &all());
        // What `hubble observe -o json` (v1.16.6) prints for the same responses.
        assert_eq!(
            out,
            concat!(
                r#"{"flow":{"time":"2024-05-01T10:11:12.123456789Z","verdict":"DROPPED","drop_reason":133,"IP":{"source":"10.0.1.5","destination":"10.0.2.7","ipVersion":"IPv4"},"l4":{"TCP":{"source_port":40000,"destination_port":80,"flags":{"SYN":true}}},"source":{"ID":12,"identity":1234,"cluster_name":"c1","namespace":"default","labels":["k8s:app=client","k8s:io.cilium.k8s.policy.cluster=c1"],"pod_name":"client"},"destination":{"identity":2,"labels":["reserved:world"]},"Type":"L3_L4","node_name":"c1/n1","event_type":{"type":1,"sub_type":133},"traffic_direction":"EGRESS","drop_reason_desc":"POLICY_DENIED","is_reply":false,"Summary":"TCP Flags: SYN"},"node_name":"c1/n1","time":"2024-05-01T10:11:12.123456789Z"}"#,
                "\n",
                r#"{"flow":{"time":"2024-05-01T10:11:12.123456789Z","verdict":"FORWARDED","IP":{"source":"10.2.0.9","destination":"10.1.0.5","ipVersion":"IPv4"},"l4":{"UDP":{"source_port":53,"destination_port":41000}},"source":{"identity":70000,"cluster_name":"c2","namespace":"demo","pod_name":"echo-1"},"destination":{"identity":65537,"cluster_name":"c1","namespace":"demo","pod_name":"client"},"node_name":"c2/n1","event_type":{"type":4},"is_reply":true,"Summary":"UDP"},"node_name":"c2/n1","time":"2024-05-01T10:11:12.123456789Z"}"#,
                "\n",
                r#"{"lost_events":{"source":"HUBBLE_RING_BUFFER","num_events_lost":"42","cpu":0},"node_name":"c1/n1","time":"2024-05-01T10:11:12.123456789Z"}"#,
                "\n",
            )
        );
        assert_eq!(
            err,
            concat!(
                r#"{"node_status":{"state_change":"NODE_UNAVAILABLE","node_names":["c1/n2","c2/n1"]},"node_name":"relay","time":"2024-05-01T10:11:12.123456789Z"}"#,
                "\n",
                r#"{"node_status":{"state_change":"NODE_ERROR","node_names":["c1/n2"],"message":"boom \"x\""},"node_name":"relay","time":"2024-05-01T10:11:12.123456789Z"}"#,
                "\n",
            )
        );
    }

    #[test]
    fn debug_prints_connected_nodes() {
        let (_, err) = print(
            PrinterOptions {
                debug: true,
                ..opts(Output::Compact)
            },
            &[node_status(
                NodeState::NodeConnected,
                &["c1/n1", "c1/n2"],
                "",
            )],
        );
        assert_eq!(
            err,
            "May  1 10:11:12.123 [relay]: Receiving flows from 2 nodes: c1/n1, c1/n2\n"
        );
    }

    #[test]
    fn long_node_lists_are_cut() {
        let names: Vec<String> = (1..=10).map(|i| format!("cluster-{i}/node-{i}")).collect();
        assert_eq!(
            join_with_cut_off(&names, ", ", NODE_NAMES_CUT_OFF),
            "cluster-1/node-1, cluster-2/node-2 (and 8 more)"
        );
    }

    #[test]
    fn hosts_fall_back_to_services_names_and_ips() {
        assert_eq!(host_name("fd00::1", "53", "", "", "", &[]), "[fd00::1]:53");
        assert_eq!(host_name("1.1.1.1", "0", "", "", "", &[]), "1.1.1.1");
        assert_eq!(host_name("1.1.1.1", "", "ns", "", "svc", &[]), "ns/svc");
        assert_eq!(
            host_name(
                "1.1.1.1",
                "443",
                "",
                "",
                "",
                &["a.com".into(), "b.com".into()]
            ),
            "a.com,b.com:443"
        );
        assert_eq!(host_name("1.1.1.1", "80", "", "p", "", &[]), "p:80");
    }
}
