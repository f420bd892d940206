//! Endpoints: one workload (pod) on this node, with one IP per family.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use kvstore::{CLUSTER_LABEL, ClusterName, Label, Labels, NAMESPACE_LABEL, SOURCE_K8S};
use serde::{Deserialize, Serialize};

/// An endpoint's ID on its node: it keys the endpoint's policy entries in
/// the datapath and names its host-side interface.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct EndpointId(u32);

impl EndpointId {
    pub const fn new(id: u32) -> Self {
        Self(id)
    }

    /// As the datapath's maps hold it.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for EndpointId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for EndpointId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

/// An endpoint as the agent keeps it (and snapshots it to disk).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Node-local ID; keys the endpoint's policy entries.
    pub id: EndpointId,
    /// Unique on the node (the CNI container ID, or a name given by the API).
    pub name: String,
    pub namespace: String,
    /// The pod's network namespace (a path).
    pub netns: PathBuf,
    /// The interface name inside the pod.
    pub ifname: String,
    /// The host side of the veth, in the node's namespace.
    pub host_ifname: String,
    /// The IPv4 address (every endpoint has one).
    pub ip: Ipv4Addr,
    /// The IPv6 address, when the node has an IPv6 pod CIDR. Absent from
    /// snapshots and API answers of IPv4-only endpoints (older agents
    /// wrote none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    /// The labels given (without the automatic namespace and cluster labels).
    pub labels: BTreeMap<String, String>,
    /// The security identity of its labels.
    pub identity: u32,
    /// Interface index of `host_ifname` once attached.
    #[serde(default)]
    pub ifindex: Option<u32>,
    /// The Kubernetes Pod (in `namespace`) whose labels the endpoint has;
    /// a label change on the Pod moves the endpoint to a new identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The ports it declares by name (what policy rules name as
    /// `port: http`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<NamedPort>,
}

/// A port an endpoint declares by name, as a container port does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedPort {
    /// An IANA service name (`http`, `metrics`): 1 to 15 characters of
    /// `a-z`, `0-9` and `-`, with a letter.
    pub name: String,
    pub port: u16,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default = "default_protocol")]
    pub protocol: String,
}

/// The protocol of a named port (`TCP`, `UDP` or `SCTP`, in any case).
pub(crate) fn port_protocol(name: &str) -> Option<bpf::Protocol> {
    match name.to_ascii_uppercase().as_str() {
        "TCP" => Some(bpf::Protocol::Tcp),
        "UDP" => Some(bpf::Protocol::Udp),
        "SCTP" => Some(bpf::Protocol::Sctp),
        _ => None,
    }
}

fn default_protocol() -> String {
    "TCP".into()
}

impl From<&NamedPort> for kvstore::values::NamedPort {
    /// As the ipcache entry publishes it (protocol in capitals, as Cilium
    /// writes it).
    fn from(p: &NamedPort) -> Self {
        Self {
            name: p.name.clone(),
            port: p.port,
            protocol: p.protocol.to_ascii_uppercase(),
        }
    }
}

impl NamedPort {
    /// Why the declaration cannot be used, if it cannot.
    pub fn problem(&self) -> Option<String> {
        kvstore::values::NamedPort::from(self).problem()
    }

    /// The protocol (`None` for one policy cannot name).
    pub fn protocol(&self) -> Option<bpf::Protocol> {
        port_protocol(&self.protocol)
    }
}

/// A request to add an endpoint (REST API and CNI plugin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointRequest {
    /// Unique on the node; adding an existing name with the same namespace
    /// path returns the existing endpoint (a retried CNI ADD).
    pub name: String,
    /// Default `default`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The pod's network namespace: a path, or a name under `/run/netns`.
    pub netns: String,
    /// Interface name inside the pod (default `eth0`).
    #[serde(default)]
    pub ifname: Option<String>,
    /// Labels (source `k8s` unless a key says `source:key`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A specific address from the node's pod CIDR (default: the next free).
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// A specific address from the node's IPv6 pod CIDR (default: the next
    /// free one, when the node has an IPv6 pod CIDR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    /// The Kubernetes Pod's name (CNI's `K8S_POD_NAME`), in `namespace`: in
    /// Kubernetes mode its labels (and its namespace's) are the endpoint's,
    /// and the request waits briefly for the Pod to appear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Ports the endpoint declares by name (for policy rules naming them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<NamedPort>,
}

impl Endpoint {
    /// Every address of the endpoint: IPv4 first, then IPv6 if it has one.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + use<> {
        std::iter::once(IpAddr::V4(self.ip)).chain(self.ipv6.map(IpAddr::V6))
    }

    /// The labels that define the endpoint's identity: its own labels plus
    /// `io.kubernetes.pod.namespace` and `io.cilium.k8s.policy.cluster`.
    pub fn security_labels(&self, cluster: &ClusterName) -> Labels {
        security_labels(&self.labels, &self.namespace, cluster)
    }
}

/// See [`Endpoint::security_labels`].
pub(crate) fn security_labels(
    labels: &BTreeMap<String, String>,
    namespace: &str,
    cluster: &ClusterName,
) -> Labels {
    let mut set: Labels = labels
        .iter()
        .map(|(k, v)| match k.split_once(':') {
            Some((source, key)) if !source.contains('.') && !source.contains('/') => {
                Label::new(source, key, v.clone())
            }
            _ => Label::new(SOURCE_K8S, k.clone(), v.clone()),
        })
        .collect();
    set.insert(Label::k8s(NAMESPACE_LABEL, namespace));
    set.insert(Label::k8s(CLUSTER_LABEL, cluster.as_str()));
    set
}

/// Checks a request before anything is created.
pub(crate) fn validate_request(req: &EndpointRequest) -> Result<(), String> {
    if req.name.is_empty() || req.name.len() > 128 || req.name.contains('/') {
        return Err(format!(
            "endpoint name {:?} must be 1-128 characters without '/'",
            req.name
        ));
    }
    if let Some(ns) = &req.namespace
        && (ns.is_empty() || ns.contains('/') || ns.contains('_'))
    {
        return Err(format!("namespace {ns:?} is not valid"));
    }
    if req.netns.is_empty() {
        return Err("netns is required".into());
    }
    if let Some(ifname) = &req.ifname
        && (ifname.is_empty() || ifname.len() > 15 || ifname.contains('/') || ifname.contains(' '))
    {
        return Err(format!("interface name {ifname:?} must be 1-15 characters"));
    }
    for (k, v) in &req.labels {
        if k.is_empty() || k.contains(';') || k.contains('=') || v.contains(';') {
            return Err(format!("label {k:?}={v:?} is not valid"));
        }
        let key = k.rsplit(':').next().unwrap_or(k);
        if key == NAMESPACE_LABEL || key == CLUSTER_LABEL {
            return Err(format!("label {key:?} is set by the agent"));
        }
    }
    for p in &req.ports {
        if let Some(problem) = p.problem() {
            return Err(problem);
        }
    }
    Ok(())
}

/// A host-side interface name for an endpoint (≤ 15 characters).
pub(crate) fn host_ifname(id: EndpointId) -> String {
    format!("cm{:08x}", id.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_labels_add_namespace_and_cluster() {
        let c1 = ClusterName::new("c1").unwrap();
        let labels = BTreeMap::from([
            ("app".to_string(), "web".to_string()),
            ("custom:team".to_string(), "a".to_string()),
        ]);
        let l = security_labels(&labels, "demo", &c1);
        assert_eq!(
            l.canonical(),
            "k8s:app=web;k8s:io.cilium.k8s.policy.cluster=c1;k8s:io.kubernetes.pod.namespace=demo;custom:team=a;"
        );
    }

    #[test]
    fn requests_are_validated() {
        let ok = EndpointRequest {
            name: "pod-1".into(),
            namespace: None,
            netns: "/run/netns/x".into(),
            ifname: None,
            labels: BTreeMap::from([("app".into(), "web".into())]),
            ip: None,
            ipv6: None,
            pod: None,
            ports: vec![NamedPort {
                name: "http".into(),
                port: 8080,
                protocol: "TCP".into(),
            }],
        };
        assert!(validate_request(&ok).is_ok());
        let bad = |f: fn(&mut EndpointRequest)| {
            let mut r = ok.clone();
            f(&mut r);
            validate_request(&r).unwrap_err()
        };
        assert!(bad(|r| r.name.clear()).contains("name"));
        assert!(bad(|r| r.netns.clear()).contains("netns"));
        assert!(bad(|r| r.ifname = Some("a-very-long-interface".into())).contains("15"));
        assert!(
            bad(|r| {
                r.labels.insert(CLUSTER_LABEL.into(), "c9".into());
            })
            .contains("set by the agent")
        );
        assert_eq!(host_ifname(EndpointId::new(0x1f)), "cm0000001f");
        assert!(bad(|r| r.ports[0].name = "HTTP".into()).contains("IANA"));
        assert!(bad(|r| r.ports[0].port = 0).contains("port number 0"));
        assert!(bad(|r| r.ports[0].protocol = "ICMP".into()).contains("TCP, UDP or SCTP"));
    }

    /// A snapshot written before endpoints had IPv6 addresses (an agent of
    /// an older version, or an IPv4-only node).
    const OLD_SNAPSHOT: &str = r#"[{"id":3,"name":"pod-a","namespace":"demo","netns":"/run/netns/a","ifname":"eth0","host_ifname":"cm00000003","ip":"10.1.1.5","labels":{"app":"web"},"identity":65800,"ifindex":42}]"#;

    #[test]
    fn old_snapshots_load_unchanged_and_v4_only_endpoints_write_the_same() {
        let eps: Vec<Endpoint> = serde_json::from_str(OLD_SNAPSHOT).unwrap();
        assert_eq!(eps[0].ip, "10.1.1.5".parse::<Ipv4Addr>().unwrap());
        assert_eq!(eps[0].ipv6, None);
        assert_eq!(eps[0].addresses().count(), 1);
        assert_eq!(serde_json::to_string(&eps).unwrap(), OLD_SNAPSHOT);
        // A dual-stack endpoint carries both, IPv4 first.
        let mut ep = eps[0].clone();
        ep.ipv6 = Some("fd10:1:0:1::5".parse().unwrap());
        let json = serde_json::to_string(&ep).unwrap();
        assert!(json.contains(r#""ipv6":"fd10:1:0:1::5""#), "{json}");
        let back: Endpoint = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ep);
        assert_eq!(
            back.addresses().map(|a| a.to_string()).collect::<Vec<_>>(),
            ["10.1.1.5", "fd10:1:0:1::5"]
        );
    }
}
