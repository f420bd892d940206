//! The service map and the recent flows, built from the relay's flows.
//!
//! A workload is a box on the map: the pods of one app (by their `app`,
//! `name`, `functionName`, `k8s-app` or `app.kubernetes.io/name` label, as
//! Hubble UI names its cards) in one namespace of one cluster; the world,
//! and each cluster's host and remote nodes, are boxes of their own. A link
//! is an arrow: source workload, destination workload, destination port and
//! protocol, with counts per verdict. Only requests count (flows that are
//! not replies), so an arrow points from the client to the server.
//!
//! Workloads and links are only added or updated, in arrival order, so the
//! page can place a new box without moving the others.

use std::collections::{HashMap, VecDeque};

use hubble_api::flow::{DropReason, Endpoint, Flow, Verdict, layer4};
use serde::Serialize;

/// The pods listed per workload, at most.
const MAX_PODS: usize = 20;

/// What kind of box a workload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Workload,
    World,
    Host,
    RemoteNode,
    Health,
    Unknown,
}

/// A box on the map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    pub id: String,
    /// Empty for the world (outside every cluster).
    pub cluster: String,
    /// Empty for the world, hosts and remote nodes.
    pub namespace: String,
    pub name: String,
    pub kind: Kind,
    pub labels: Vec<String>,
    pub identities: Vec<u32>,
    pub pods: Vec<String>,
    /// Requests from or to it.
    pub flows: u64,
}

/// How a link's last [`RECENT`] requests (forwarded or dropped) fared, so
/// that a link that starts being dropped turns red soon, whatever it
/// carried before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkVerdict {
    Forwarded,
    Dropped,
    /// Some forwarded and some dropped among them.
    Mixed,
}

/// The requests a link's verdict is taken over.
pub const RECENT: u32 = 8;

/// An arrow on the map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Link {
    pub id: String,
    pub source: String,
    pub destination: String,
    /// Destination port; 0 for ICMP.
    pub port: u32,
    pub protocol: &'static str,
    pub forwarded: u64,
    pub dropped: u64,
    /// Requests with another verdict (audit, error, ...).
    pub other: u64,
    pub verdict: LinkVerdict,
    /// The last drop reason seen.
    pub drop_reason: Option<String>,
    pub last_seen_ms: f64,
    /// The last [`RECENT`] outcomes (bit set: dropped), newest in bit 0.
    #[serde(skip)]
    recent: u8,
    /// How many of `recent`'s bits are outcomes.
    #[serde(skip)]
    recent_len: u32,
}

/// One end of a flow, as a table row shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndRow {
    pub cluster: String,
    pub namespace: String,
    pub pod: String,
    pub ip: String,
    pub port: u32,
    pub identity: u32,
    pub labels: Vec<String>,
    /// The workload (map box) it belongs to.
    pub workload: String,
}

/// One row of the flows table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowRow {
    pub seq: u64,
    /// The flow's own time (unix milliseconds, fractional).
    pub time_ms: f64,
    pub verdict: &'static str,
    pub drop_reason: Option<&'static str>,
    pub node: String,
    pub source: EndRow,
    pub destination: EndRow,
    pub protocol: &'static str,
    pub port: u32,
    pub tcp_flags: Option<String>,
    pub is_reply: bool,
    pub direction: &'static str,
    pub summary: String,
    /// The link the flow counted towards (`None` for replies).
    pub link: Option<String>,
}

/// What changed since the last [`Model::take_changes`].
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Changes {
    pub workloads: Vec<Workload>,
    pub links: Vec<Link>,
    pub flows: Vec<FlowRow>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty() && self.links.is_empty() && self.flows.is_empty()
    }
}

/// Limits that keep the model bounded whatever the mesh sends.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Flows kept for a page that connects.
    pub backlog: usize,
    /// Boxes and arrows at most; requests beyond are counted in
    /// [`Model::overflow`] only.
    pub workloads: usize,
    pub links: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            backlog: 2000,
            workloads: 10_000,
            links: 50_000,
        }
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct Model {
    limits: Limits,
    workloads: Vec<Workload>,
    workload_index: HashMap<String, usize>,
    links: Vec<Link>,
    link_index: HashMap<String, usize>,
    backlog: VecDeque<FlowRow>,
    seq: u64,
    dirty_workloads: Vec<usize>,
    dirty_links: Vec<usize>,
    workload_dirty: Vec<bool>,
    link_dirty: Vec<bool>,
    pending: Vec<FlowRow>,
    /// Requests not drawn because a limit was reached.
    pub overflow: u64,
}

impl Model {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            workloads: Vec::new(),
            workload_index: HashMap::new(),
            links: Vec::new(),
            link_index: HashMap::new(),
            backlog: VecDeque::new(),
            seq: 0,
            dirty_workloads: Vec::new(),
            dirty_links: Vec::new(),
            workload_dirty: Vec::new(),
            link_dirty: Vec::new(),
            pending: Vec::new(),
            overflow: 0,
        }
    }

    /// Every workload and link (in arrival order) and the recent flows.
    pub fn snapshot(&self) -> (Vec<Workload>, Vec<Link>, Vec<FlowRow>) {
        (
            self.workloads.clone(),
            self.links.clone(),
            self.backlog.iter().cloned().collect(),
        )
    }

    pub fn workloads(&self) -> &[Workload] {
        &self.workloads
    }

    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// The clusters seen in flows.
    pub fn clusters(&self) -> impl Iterator<Item = &str> {
        self.workloads
            .iter()
            .map(|w| w.cluster.as_str())
            .filter(|c| !c.is_empty())
    }

    /// What changed since the last call (new and updated boxes and arrows,
    /// new rows), and forgets it.
    pub fn take_changes(&mut self) -> Changes {
        let workloads = self
            .dirty_workloads
            .drain(..)
            .map(|i| {
                self.workload_dirty[i] = false;
                self.workloads[i].clone()
            })
            .collect();
        let links = self
            .dirty_links
            .drain(..)
            .map(|i| {
                self.link_dirty[i] = false;
                self.links[i].clone()
            })
            .collect();
        Changes {
            workloads,
            links,
            flows: std::mem::take(&mut self.pending),
        }
    }

    /// Adds a flow: its row, and for a request its boxes and arrow.
    pub fn ingest(&mut self, flow: &Flow) {
        let node_cluster = flow
            .node_name
            .split_once('/')
            .map_or("", |(cluster, _)| cluster)
            .to_owned();
        let (protocol, sport, dport, tcp_flags) = layer4(flow);
        let is_reply = flow.is_reply == Some(true);
        let source = end_of(flow.source.as_ref(), &node_cluster);
        let destination = end_of(flow.destination.as_ref(), &node_cluster);
        let verdict = Verdict::try_from(flow.verdict).unwrap_or(Verdict::Unknown);
        let drop_reason = (verdict == Verdict::Dropped)
            .then(|| DropReason::try_from(flow.drop_reason_desc).ok())
            .flatten()
            .map(|r| r.as_str_name());
        let time_ms = flow.time.as_ref().map_or(0.0, |t| {
            t.seconds as f64 * 1000.0 + f64::from(t.nanos) / 1_000_000.0
        });
        let ip = flow.ip.as_ref();
        let mut link = None;
        if !is_reply {
            let src = self.touch_workload(&source, flow.source.as_ref());
            let dst = self.touch_workload(&destination, flow.destination.as_ref());
            if let (Some(src), Some(dst)) = (src, dst) {
                link = self.count_link(src, dst, protocol, dport, verdict, drop_reason, time_ms);
            } else {
                self.overflow += 1;
            }
        }
        self.seq += 1;
        let row = FlowRow {
            seq: self.seq,
            time_ms,
            verdict: verdict_name(verdict),
            drop_reason,
            node: flow.node_name.clone(),
            source: row_end(
                &source,
                flow.source.as_ref(),
                ip.map(|i| i.source.clone()),
                sport,
            ),
            destination: row_end(
                &destination,
                flow.destination.as_ref(),
                ip.map(|i| i.destination.clone()),
                dport,
            ),
            protocol,
            port: dport,
            summary: match &tcp_flags {
                Some(flags) => format!("TCP Flags: {flags}"),
                None => protocol.to_owned(),
            },
            tcp_flags,
            is_reply,
            direction: match flow.traffic_direction {
                1 => "ingress",
                2 => "egress",
                _ => "unknown",
            },
            link,
        };
        if self.backlog.len() == self.limits.backlog {
            self.backlog.pop_front();
        }
        if self.limits.backlog > 0 {
            self.backlog.push_back(row.clone());
        }
        self.pending.push(row);
    }

    /// The index of `end`'s workload, created if new (`None`: the limit).
    fn touch_workload(&mut self, end: &End, endpoint: Option<&Endpoint>) -> Option<usize> {
        let i = match self.workload_index.get(&end.id) {
            Some(&i) => i,
            None => {
                if self.workloads.len() >= self.limits.workloads {
                    return None;
                }
                let i = self.workloads.len();
                self.workloads.push(Workload {
                    id: end.id.clone(),
                    cluster: end.cluster.clone(),
                    namespace: end.namespace.clone(),
                    name: end.name.clone(),
                    kind: end.kind,
                    labels: endpoint.map(|e| e.labels.clone()).unwrap_or_default(),
                    identities: Vec::new(),
                    pods: Vec::new(),
                    flows: 0,
                });
                self.workload_index.insert(end.id.clone(), i);
                self.workload_dirty.push(false);
                i
            }
        };
        let w = &mut self.workloads[i];
        w.flows += 1;
        if let Some(e) = endpoint {
            if e.identity != 0
                && !w.identities.contains(&e.identity)
                && w.identities.len() < MAX_PODS
            {
                w.identities.push(e.identity);
            }
            if !e.pod_name.is_empty() && !w.pods.contains(&e.pod_name) && w.pods.len() < MAX_PODS {
                w.pods.push(e.pod_name.clone());
                w.pods.sort();
            }
        }
        if !self.workload_dirty[i] {
            self.workload_dirty[i] = true;
            self.dirty_workloads.push(i);
        }
        Some(i)
    }

    #[allow(clippy::too_many_arguments)]
    fn count_link(
        &mut self,
        src: usize,
        dst: usize,
        protocol: &'static str,
        port: u32,
        verdict: Verdict,
        drop_reason: Option<&'static str>,
        time_ms: f64,
    ) -> Option<String> {
        let (source, destination) = (&self.workloads[src].id, &self.workloads[dst].id);
        let id = format!("{source}>{destination}:{port}/{protocol}");
        let i = match self.link_index.get(&id) {
            Some(&i) => i,
            None => {
                if self.links.len() >= self.limits.links {
                    self.overflow += 1;
                    return None;
                }
                let i = self.links.len();
                self.links.push(Link {
                    id: id.clone(),
                    source: source.clone(),
                    destination: destination.clone(),
                    port,
                    protocol,
                    forwarded: 0,
                    dropped: 0,
                    other: 0,
                    verdict: LinkVerdict::Forwarded,
                    drop_reason: None,
                    last_seen_ms: time_ms,
                    recent: 0,
                    recent_len: 0,
                });
                self.link_index.insert(id.clone(), i);
                self.link_dirty.push(false);
                i
            }
        };
        let l = &mut self.links[i];
        let dropped = match verdict {
            Verdict::Forwarded => {
                l.forwarded += 1;
                Some(false)
            }
            Verdict::Dropped => {
                l.dropped += 1;
                l.drop_reason = drop_reason.map(str::to_owned);
                Some(true)
            }
            _ => {
                l.other += 1;
                None
            }
        };
        if let Some(dropped) = dropped {
            l.recent = (l.recent << 1) | u8::from(dropped);
            l.recent_len = (l.recent_len + 1).min(RECENT);
            let mask = u8::MAX >> (RECENT - l.recent_len);
            l.verdict = match l.recent & mask {
                0 => LinkVerdict::Forwarded,
                d if d == mask => LinkVerdict::Dropped,
                _ => LinkVerdict::Mixed,
            };
        }
        l.last_seen_ms = l.last_seen_ms.max(time_ms);
        if !self.link_dirty[i] {
            self.link_dirty[i] = true;
            self.dirty_links.push(i);
        }
        Some(id)
    }
}

/// Which box one end of a flow belongs to.
#[derive(Debug, Clone, PartialEq)]
struct End {
    id: String,
    cluster: String,
    namespace: String,
    name: String,
    kind: Kind,
}

/// Label keys that name an app, in Hubble UI's order.
const APP_KEYS: [&str; 5] = [
    "app",
    "name",
    "functionName",
    "k8s-app",
    "app.kubernetes.io/name",
];

/// Cilium's reserved identities, for ends that carry no labels.
fn reserved_kind(identity: u32) -> Option<Kind> {
    match identity {
        1 => Some(Kind::Host),
        2 | 9 | 10 => Some(Kind::World),
        4 => Some(Kind::Health),
        6 => Some(Kind::RemoteNode),
        _ => None,
    }
}

fn end_of(endpoint: Option<&Endpoint>, node_cluster: &str) -> End {
    let empty = Endpoint::default();
    let e = endpoint.unwrap_or(&empty);
    let label = |wanted: &str| {
        e.labels
            .iter()
            .any(|l| l == wanted || l.strip_prefix(wanted).is_some_and(|r| r.starts_with('=')))
    };
    let kind = if label("reserved:world")
        || label("reserved:world-ipv4")
        || label("reserved:world-ipv6")
    {
        Kind::World
    } else if label("reserved:host") {
        Kind::Host
    } else if label("reserved:remote-node") {
        Kind::RemoteNode
    } else if label("reserved:health") {
        Kind::Health
    } else if let Some(kind) = reserved_kind(e.identity) {
        kind
    } else if e.labels.is_empty() && e.pod_name.is_empty() {
        Kind::Unknown
    } else {
        Kind::Workload
    };
    let cluster = if e.cluster_name.is_empty() {
        cluster_label(&e.labels).unwrap_or(node_cluster).to_owned()
    } else {
        e.cluster_name.clone()
    };
    let special = |name: &str| End {
        id: format!("{cluster}/{name}"),
        cluster: cluster.clone(),
        namespace: String::new(),
        name: name.to_owned(),
        kind,
    };
    match kind {
        Kind::World => End {
            id: "world".into(),
            cluster: String::new(),
            namespace: String::new(),
            name: "world".into(),
            kind,
        },
        Kind::Host => special("host"),
        Kind::RemoteNode => special("remote-node"),
        Kind::Health => special("health"),
        Kind::Unknown => special("unknown"),
        Kind::Workload => {
            let name = app_name(&e.labels)
                .map(str::to_owned)
                .or_else(|| e.workloads.first().map(|w| w.name.clone()))
                .or_else(|| (!e.pod_name.is_empty()).then(|| e.pod_name.clone()))
                .unwrap_or_else(|| format!("identity-{}", e.identity));
            End {
                id: format!("{cluster}/{}/{name}", e.namespace),
                cluster: cluster.clone(),
                namespace: e.namespace.clone(),
                name,
                kind,
            }
        }
    }
}

/// `io.cilium.k8s.policy.cluster`'s value, when an end has no cluster name.
fn cluster_label(labels: &[String]) -> Option<&str> {
    labels.iter().find_map(|l| {
        let (_, kv) = l.split_once(':')?;
        kv.strip_prefix("io.cilium.k8s.policy.cluster=")
    })
}

/// The app name among `labels` (`source:key=value`), by [`APP_KEYS`].
fn app_name(labels: &[String]) -> Option<&str> {
    APP_KEYS.iter().find_map(|key| {
        labels.iter().find_map(|l| {
            let kv = l.split_once(':').map_or(l.as_str(), |(_, kv)| kv);
            let (k, v) = kv.split_once('=')?;
            (k == *key && !v.is_empty()).then_some(v)
        })
    })
}

fn row_end(end: &End, endpoint: Option<&Endpoint>, ip: Option<String>, port: u32) -> EndRow {
    EndRow {
        cluster: end.cluster.clone(),
        namespace: endpoint.map(|e| e.namespace.clone()).unwrap_or_default(),
        pod: endpoint.map(|e| e.pod_name.clone()).unwrap_or_default(),
        ip: ip.unwrap_or_default(),
        port,
        identity: endpoint.map_or(0, |e| e.identity),
        labels: endpoint.map(|e| e.labels.clone()).unwrap_or_default(),
        workload: end.id.clone(),
    }
}

/// Protocol name, source port, destination port, TCP flags.
fn layer4(flow: &Flow) -> (&'static str, u32, u32, Option<String>) {
    let Some(p) = flow.l4.as_ref().and_then(|l4| l4.protocol.as_ref()) else {
        return ("other", 0, 0, None);
    };
    match p {
        layer4::Protocol::Tcp(t) => {
            let flags = t.flags.as_ref().map(|f| {
                [
                    (f.syn, "SYN"),
                    (f.ack, "ACK"),
                    (f.fin, "FIN"),
                    (f.rst, "RST"),
                    (f.psh, "PSH"),
                    (f.urg, "URG"),
                    (f.ece, "ECE"),
                    (f.cwr, "CWR"),
                    (f.ns, "NS"),
                ]
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, name)| *name)
                .collect::<Vec<_>>()
                .join(", ")
            });
            (
                "TCP",
                t.source_port,
                t.destination_port,
                flags.filter(|f| !f.is_empty()),
            )
        }
        layer4::Protocol::Udp(u) => ("UDP", u.source_port, u.destination_port, None),
        layer4::Protocol::Sctp(s) => ("SCTP", s.source_port, s.destination_port, None),
        layer4::Protocol::IcmPv4(_) => ("ICMPv4", 0, 0, None),
        layer4::Protocol::IcmPv6(_) => ("ICMPv6", 0, 0, None),
        _ => ("other", 0, 0, None),
    }
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Unknown => "VERDICT_UNKNOWN",
        other => other.as_str_name(),
    }
}

#[cfg(test)]
mod tests {
    use hubble_api::flow::{Layer4, Tcp, TcpFlags};

    use super::*;

    fn pod(cluster: &str, ns: &str, app: &str, pod: &str, identity: u32) -> Endpoint {
        Endpoint {
            identity,
            cluster_name: cluster.into(),
            namespace: ns.into(),
            labels: vec![
                format!("k8s:app={app}"),
                format!("k8s:io.kubernetes.pod.namespace={ns}"),
            ],
            pod_name: pod.into(),
            ..Default::default()
        }
    }

    fn world() -> Endpoint {
        Endpoint {
            identity: 2,
            labels: vec!["reserved:world".into()],
            ..Default::default()
        }
    }

    fn tcp(src: Endpoint, dst: Endpoint, port: u32, verdict: Verdict, reply: bool) -> Flow {
        Flow {
            time: Some(prost_types_timestamp(1_764_000_000, 500_000)),
            verdict: verdict as i32,
            drop_reason_desc: if verdict == Verdict::Dropped {
                DropReason::PolicyDenied as i32
            } else {
                0
            },
            node_name: "c1/n1".into(),
            source: Some(src),
            destination: Some(dst),
            is_reply: Some(reply),
            l4: Some(Layer4 {
                protocol: Some(layer4::Protocol::Tcp(Tcp {
                    source_port: 40000,
                    destination_port: port,
                    flags: Some(TcpFlags {
                        syn: true,
                        ..Default::default()
                    }),
                })),
            }),
            ..Default::default()
        }
    }

    fn prost_types_timestamp(seconds: i64, nanos: i32) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds, nanos }
    }

    #[test]
    fn pods_of_one_app_are_one_box_per_cluster_and_namespace() {
        let mut m = Model::new(Limits::default());
        let client = pod("c1", "default", "client", "client-1", 100);
        m.ingest(&tcp(
            client.clone(),
            pod("c2", "default", "echo", "echo-a", 200),
            80,
            Verdict::Forwarded,
            false,
        ));
        m.ingest(&tcp(
            client,
            pod("c2", "default", "echo", "echo-b", 200),
            80,
            Verdict::Forwarded,
            false,
        ));
        let ids: Vec<&str> = m.workloads().iter().map(|w| w.id.as_str()).collect();
        assert_eq!(ids, ["c1/default/client", "c2/default/echo"]);
        assert_eq!(m.workloads()[1].pods, ["echo-a", "echo-b"]);
        assert_eq!(m.links().len(), 1);
        let l = &m.links()[0];
        assert_eq!(l.id, "c1/default/client>c2/default/echo:80/TCP");
        assert_eq!((l.forwarded, l.verdict), (2, LinkVerdict::Forwarded));
    }

    #[test]
    fn a_drop_then_a_forward_makes_a_mixed_link_with_the_reason() {
        let mut m = Model::new(Limits::default());
        let (a, b) = (
            pod("c1", "ns", "a", "a-1", 1000),
            pod("c1", "ns", "b", "b-1", 1001),
        );
        m.ingest(&tcp(a.clone(), b.clone(), 8080, Verdict::Dropped, false));
        assert_eq!(m.links()[0].verdict, LinkVerdict::Dropped);
        assert_eq!(m.links()[0].drop_reason.as_deref(), Some("POLICY_DENIED"));
        m.ingest(&tcp(a.clone(), b.clone(), 8080, Verdict::Forwarded, false));
        assert_eq!(m.links()[0].verdict, LinkVerdict::Mixed);
        let rows = m.take_changes().flows;
        // Once the last RECENT requests are all dropped, the link is red
        // again, whatever it carried before.
        for _ in 0..RECENT - 1 {
            m.ingest(&tcp(a.clone(), b.clone(), 8080, Verdict::Dropped, false));
            assert_eq!(m.links()[0].verdict, LinkVerdict::Mixed);
        }
        m.ingest(&tcp(a, b, 8080, Verdict::Dropped, false));
        assert_eq!(m.links()[0].verdict, LinkVerdict::Dropped);
        assert_eq!((m.links()[0].forwarded, m.links()[0].dropped), (1, 9));
        assert_eq!(rows[0].drop_reason, Some("POLICY_DENIED"));
        assert_eq!(rows[0].verdict, "DROPPED");
        assert_eq!(rows[1].drop_reason, None);
        assert_eq!(rows[0].tcp_flags.as_deref(), Some("SYN"));
    }

    #[test]
    fn replies_are_rows_but_no_arrows() {
        let mut m = Model::new(Limits::default());
        m.ingest(&tcp(
            pod("c1", "ns", "b", "b-1", 1001),
            pod("c1", "ns", "a", "a-1", 1000),
            40000,
            Verdict::Forwarded,
            true,
        ));
        assert!(m.links().is_empty());
        assert!(m.workloads().is_empty());
        let rows = m.take_changes().flows;
        assert_eq!(rows.len(), 1);
        assert!(rows[0].is_reply && rows[0].link.is_none());
    }

    #[test]
    fn the_world_is_outside_every_cluster_and_hosts_are_per_cluster() {
        let mut m = Model::new(Limits::default());
        let host = Endpoint {
            identity: 1,
            labels: vec!["reserved:host".into()],
            ..Default::default()
        };
        m.ingest(&tcp(
            world(),
            pod("c2", "ns", "a", "a-1", 5),
            443,
            Verdict::Forwarded,
            false,
        ));
        m.ingest(&tcp(
            host,
            pod("c2", "ns", "a", "a-1", 5),
            443,
            Verdict::Forwarded,
            false,
        ));
        let w = &m.workloads()[0];
        assert_eq!(
            (w.id.as_str(), w.cluster.as_str(), w.kind),
            ("world", "", Kind::World)
        );
        // The host carries no cluster name: the node's cluster is used.
        let h = &m.workloads()[2];
        assert_eq!((h.id.as_str(), h.kind), ("c1/host", Kind::Host));
        assert_eq!(m.clusters().collect::<Vec<_>>(), ["c2", "c1"]);
    }

    #[test]
    fn changes_name_each_updated_box_and_arrow_once() {
        let mut m = Model::new(Limits::default());
        let (a, b) = (
            pod("c1", "ns", "a", "a-1", 1000),
            pod("c1", "ns", "b", "b-1", 1001),
        );
        for _ in 0..5 {
            m.ingest(&tcp(a.clone(), b.clone(), 80, Verdict::Forwarded, false));
        }
        let c = m.take_changes();
        assert_eq!((c.workloads.len(), c.links.len(), c.flows.len()), (2, 1, 5));
        assert_eq!(c.links[0].forwarded, 5);
        assert!(m.take_changes().is_empty());
        m.ingest(&tcp(a, b, 80, Verdict::Forwarded, false));
        let c = m.take_changes();
        assert_eq!((c.workloads.len(), c.links.len()), (2, 1));
        assert_eq!(c.flows[0].seq, 6);
    }

    #[test]
    fn limits_bound_the_backlog_and_the_map() {
        let mut m = Model::new(Limits {
            backlog: 3,
            workloads: 3,
            links: 1,
        });
        for i in 0..10 {
            m.ingest(&tcp(
                pod("c1", "ns", &format!("a{i}"), "p", 1000 + i),
                pod("c1", "ns", "server", "s", 9),
                80,
                Verdict::Forwarded,
                false,
            ));
        }
        let (workloads, links, backlog) = m.snapshot();
        assert_eq!(workloads.len(), 3);
        assert_eq!(links.len(), 1);
        assert_eq!(
            backlog.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [8, 9, 10]
        );
        assert_eq!(m.overflow, 9);
    }

    #[test]
    fn names_come_from_app_labels_then_workloads_then_the_pod() {
        assert_eq!(app_name(&["k8s:k8s-app=kube-dns".into()]), Some("kube-dns"));
        assert_eq!(
            app_name(&["k8s:app.kubernetes.io/name=api".into(), "k8s:name=x".into()]),
            Some("x")
        );
        let mut e = pod("c1", "ns", "", "web-7d9f", 7);
        e.labels = vec!["k8s:tier=web".into()];
        assert_eq!(end_of(Some(&e), "c1").id, "c1/ns/web-7d9f");
        e.workloads = vec![hubble_api::flow::Workload {
            name: "web".into(),
            kind: "Deployment".into(),
        }];
        assert_eq!(end_of(Some(&e), "c1").id, "c1/ns/web");
        e.cluster_name.clear();
        e.labels.push("k8s:io.cilium.k8s.policy.cluster=c9".into());
        assert_eq!(end_of(Some(&e), "c1").cluster, "c9");
    }
}
