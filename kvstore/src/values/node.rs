use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::serde_util::{mask_prefix_len, null_as_default, opt_ip, prefix_len_mask};
use crate::{
    cluster::ClusterName,
    value::{DecodeError, InvalidReason, StoreValue, decode_json},
};

/// A node of a cluster, as Cilium stores it at
/// `cilium/state/nodes/v1/<cluster>/<node>` (Go field names). Fields this
/// version does not know are kept in `extra` and written back unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Cluster")]
    pub cluster: String,
    #[serde(rename = "IPAddresses", default, deserialize_with = "null_as_default")]
    pub ip_addresses: Vec<NodeAddress>,
    #[serde(rename = "IPv4AllocCIDR", default)]
    pub ipv4_alloc_cidr: Option<NodeCidr>,
    #[serde(rename = "IPv4SecondaryAllocCIDRs", default)]
    pub ipv4_secondary_alloc_cidrs: Option<Vec<NodeCidr>>,
    #[serde(rename = "IPv6AllocCIDR", default)]
    pub ipv6_alloc_cidr: Option<NodeCidr>,
    #[serde(rename = "IPv6SecondaryAllocCIDRs", default)]
    pub ipv6_secondary_alloc_cidrs: Option<Vec<NodeCidr>>,
    #[serde(rename = "IPv4HealthIP", default, with = "opt_ip")]
    pub ipv4_health_ip: Option<IpAddr>,
    #[serde(rename = "IPv6HealthIP", default, with = "opt_ip")]
    pub ipv6_health_ip: Option<IpAddr>,
    #[serde(rename = "IPv4IngressIP", default, with = "opt_ip")]
    pub ipv4_ingress_ip: Option<IpAddr>,
    #[serde(rename = "IPv6IngressIP", default, with = "opt_ip")]
    pub ipv6_ingress_ip: Option<IpAddr>,
    #[serde(rename = "ClusterID", default)]
    pub cluster_id: u32,
    #[serde(rename = "Source", default)]
    pub source: String,
    #[serde(rename = "EncryptionKey", default)]
    pub encryption_key: u8,
    #[serde(rename = "Labels", default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "Annotations", default)]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(rename = "WireguardPubKey", default)]
    pub wireguard_pub_key: String,
    #[serde(rename = "BootID", default)]
    pub boot_id: String,
    /// Fields written by newer Cilium versions, passed through.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One address of a node (`InternalIP`, `ExternalIP`, `CiliumInternalIP`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddress {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "IP")]
    pub ip: IpAddr,
}

/// Go's `cidr.CIDR`: `{"IP": "10.0.0.0", "Mask": "<base64>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCidr {
    #[serde(rename = "IP")]
    pub ip: IpAddr,
    #[serde(rename = "Mask", with = "mask_b64")]
    pub mask: Vec<u8>,
}

mod mask_b64 {
    use base64::{Engine, engine::general_purpose::STANDARD};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(b))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        STANDARD
            .decode(String::deserialize(d)?)
            .map_err(D::Error::custom)
    }
}

impl NodeCidr {
    pub fn from_net(net: IpNet) -> Self {
        let bytes = if net.addr().is_ipv4() { 4 } else { 16 };
        Self {
            ip: net.network(),
            mask: prefix_len_mask(net.prefix_len(), bytes),
        }
    }

    /// The prefix, if the mask is a contiguous netmask of the right length.
    pub fn to_net(&self) -> Option<IpNet> {
        let len = mask_prefix_len(&self.mask)?;
        IpNet::new(self.ip, len).ok()
    }
}

/// Address types Cilium uses.
impl NodeAddress {
    pub const INTERNAL_IP: &'static str = "InternalIP";
    pub const CILIUM_INTERNAL_IP: &'static str = "CiliumInternalIP";
}

impl Node {
    /// A node with a name, cluster and addresses; everything else empty.
    pub fn new(cluster: &ClusterName, name: impl Into<String>, cluster_id: u32) -> Self {
        Self {
            name: name.into(),
            cluster: cluster.to_string(),
            ip_addresses: Vec::new(),
            ipv4_alloc_cidr: None,
            ipv4_secondary_alloc_cidrs: None,
            ipv6_alloc_cidr: None,
            ipv6_secondary_alloc_cidrs: None,
            ipv4_health_ip: None,
            ipv6_health_ip: None,
            ipv4_ingress_ip: None,
            ipv6_ingress_ip: None,
            cluster_id,
            source: "clustermesh".to_string(),
            encryption_key: 0,
            labels: None,
            annotations: None,
            wireguard_pub_key: String::new(),
            boot_id: String::new(),
            extra: serde_json::Map::new(),
        }
    }

    /// The first `InternalIP` of the node (its IPv4 one on a dual-stack
    /// node, which lists it first).
    pub fn internal_ip(&self) -> Option<IpAddr> {
        self.ip_addresses
            .iter()
            .find(|a| a.kind == NodeAddress::INTERNAL_IP)
            .map(|a| a.ip)
    }

    /// The first `InternalIP` of `cidr`'s family: where that pod CIDR is
    /// routed (an IPv6 route needs an IPv6 next hop).
    pub fn internal_ip_for(&self, cidr: &IpNet) -> Option<IpAddr> {
        let v4 = cidr.addr().is_ipv4();
        self.ip_addresses
            .iter()
            .find(|a| a.kind == NodeAddress::INTERNAL_IP && a.ip.is_ipv4() == v4)
            .map(|a| a.ip)
    }

    /// Every pod CIDR of the node (primary and secondary, both families).
    pub fn pod_cidrs(&self) -> Vec<IpNet> {
        let primary = [&self.ipv4_alloc_cidr, &self.ipv6_alloc_cidr]
            .into_iter()
            .flatten();
        let secondary = [
            &self.ipv4_secondary_alloc_cidrs,
            &self.ipv6_secondary_alloc_cidrs,
        ]
        .into_iter()
        .flatten()
        .flatten();
        primary
            .chain(secondary)
            .filter_map(NodeCidr::to_net)
            .collect()
    }
}

impl StoreValue for Node {
    const KIND: &'static str = "node";

    /// `key` is `<cluster>/<name>` (relative to `cilium/state/nodes/v1/`) or
    /// `<name>` (relative to `cilium/state/nodes/v1/<cluster>/`).
    fn decode(key: &str, bytes: &[u8]) -> Result<Self, DecodeError> {
        let node: Self = decode_json(Self::KIND, key, bytes)?;
        let invalid = |reason, detail: String| DecodeError::new(Self::KIND, key, reason, detail);
        if node.name.is_empty() {
            return Err(invalid(InvalidReason::MissingField, "Name is empty".into()));
        }
        if let Err(why) = check_node_name(&node.name) {
            return Err(invalid(InvalidReason::InvalidName, why.to_string()));
        }
        if let Err(e) = ClusterName::new(node.cluster.as_str()) {
            return Err(invalid(InvalidReason::InvalidCluster, e.to_string()));
        }
        if node.cluster_id > 511 {
            return Err(invalid(
                InvalidReason::InvalidCluster,
                format!("ClusterID {} is out of range", node.cluster_id),
            ));
        }
        if key != node.key() {
            return Err(invalid(
                InvalidReason::KeyMismatch,
                format!("value is for {}", node.key()),
            ));
        }
        for cidr in [&node.ipv4_alloc_cidr, &node.ipv6_alloc_cidr]
            .into_iter()
            .flatten()
        {
            if cidr.to_net().is_none() {
                return Err(invalid(
                    InvalidReason::InvalidAddress,
                    format!("alloc CIDR {}/{:?} is invalid", cidr.ip, cidr.mask),
                ));
            }
        }
        Ok(node)
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("nodes always serialize")
    }

    fn key(&self) -> String {
        format!("{}/{}", self.cluster, self.name)
    }
}

/// Longest node name (a Kubernetes object name).
pub const MAX_NODE_NAME_LEN: usize = 253;

/// A node name is the last segment of its key: it may not contain `/`
/// (`c2/a/b` would read as node `b` of a cluster `c2/a` to some consumers,
/// and a key ending in `/` or a `..` segment to others), nor control
/// characters, and is at most [`MAX_NODE_NAME_LEN`] bytes.
fn check_node_name(name: &str) -> Result<(), NodeNameError> {
    if name.is_empty() {
        return Err(NodeNameError::Empty);
    }
    if name.len() > MAX_NODE_NAME_LEN {
        return Err(NodeNameError::TooLong { len: name.len() });
    }
    let named = name.to_string();
    if name.contains('/') {
        return Err(NodeNameError::ContainsSlash { name: named });
    }
    if name == "." || name == ".." {
        return Err(NodeNameError::PathSegment { name: named });
    }
    if name.chars().any(char::is_control) {
        return Err(NodeNameError::ControlCharacter { name: named });
    }
    Ok(())
}

/// A node's name, valid as the last segment of its key (see
/// [`Node`]'s rules): what an agent is told it is called.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeName(String);

impl NodeName {
    pub fn new(name: impl Into<String>) -> Result<Self, NodeNameError> {
        let name = name.into();
        check_node_name(&name)?;
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeName {
    type Error = NodeNameError;
    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::new(name)
    }
}

impl From<NodeName> for String {
    fn from(name: NodeName) -> Self {
        name.0
    }
}

impl std::str::FromStr for NodeName {
    type Err = NodeNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl std::fmt::Display for NodeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for NodeName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Why a node name cannot be the last segment of its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeNameError {
    #[error("Name is empty")]
    Empty,
    #[error("Name is {len} bytes long, more than {MAX_NODE_NAME_LEN}")]
    TooLong { len: usize },
    #[error("Name {name:?} contains '/'")]
    ContainsSlash { name: String },
    #[error("Name {name:?} is a path segment")]
    PathSegment { name: String },
    #[error("Name {name:?} contains a control character")]
    ControlCharacter { name: String },
}

#[cfg(test)]
mod tests {
    #[test]
    fn node_names_are_checked_once_made() {
        assert_eq!(NodeName::new("n1").unwrap().as_str(), "n1");
        assert_eq!(NodeName::new(""), Err(NodeNameError::Empty));
        assert!("c2/n1".parse::<NodeName>().is_err());
        assert!(serde_json::from_str::<NodeName>("\"..\"").is_err());
        let name: NodeName = serde_json::from_str("\"node-1\"").unwrap();
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"node-1\"");
    }

    use super::*;

    #[test]
    fn new_node_round_trips() {
        let c1 = ClusterName::new("c1").unwrap();
        let mut n = Node::new(&c1, "n1", 1);
        n.ip_addresses.push(NodeAddress {
            kind: NodeAddress::INTERNAL_IP.into(),
            ip: "192.168.1.2".parse().unwrap(),
        });
        n.ipv4_alloc_cidr = Some(NodeCidr::from_net("10.1.2.0/24".parse().unwrap()));
        let back = Node::decode("c1/n1", &n.encode()).unwrap();
        assert_eq!(back, n);
        assert_eq!(back.internal_ip(), Some("192.168.1.2".parse().unwrap()));
        assert_eq!(
            back.pod_cidrs(),
            vec!["10.1.2.0/24".parse::<IpNet>().unwrap()]
        );
        assert_eq!(
            Node::decode("c1/n2", &n.encode()).unwrap_err().reason,
            InvalidReason::KeyMismatch
        );
        assert_eq!(
            Node::decode("c10/n1", &n.encode()).unwrap_err().reason,
            InvalidReason::KeyMismatch
        );
    }

    #[test]
    fn each_family_is_routed_through_an_address_of_its_own() {
        let c1 = ClusterName::new("c1").unwrap();
        let mut n = Node::new(&c1, "n1", 1);
        let v4: IpNet = "10.1.2.0/24".parse().unwrap();
        let v6: IpNet = "fd10:1:0:2::/64".parse().unwrap();
        n.ip_addresses.push(NodeAddress {
            kind: NodeAddress::INTERNAL_IP.into(),
            ip: "192.168.1.2".parse().unwrap(),
        });
        assert_eq!(n.internal_ip_for(&v6), None);
        n.ip_addresses.push(NodeAddress {
            kind: NodeAddress::INTERNAL_IP.into(),
            ip: "fd00::2".parse().unwrap(),
        });
        assert_eq!(n.internal_ip(), Some("192.168.1.2".parse().unwrap()));
        assert_eq!(n.internal_ip_for(&v4), Some("192.168.1.2".parse().unwrap()));
        assert_eq!(n.internal_ip_for(&v6), Some("fd00::2".parse().unwrap()));
    }

    #[test]
    fn unknown_fields_pass_through() {
        let json = r#"{"Name":"n","Cluster":"c1","IPAddresses":null,"NodeIdentity":42}"#;
        let n = Node::decode("c1/n", json.as_bytes()).unwrap();
        assert_eq!(n.extra["NodeIdentity"], 42);
        let v: serde_json::Value = serde_json::from_slice(&n.encode()).unwrap();
        assert_eq!(v["NodeIdentity"], 42);
    }

    #[test]
    fn rejects_bad_nodes() {
        let bad_cluster = r#"{"Name":"n","Cluster":"C_1"}"#;
        assert_eq!(
            Node::decode("C_1/n", bad_cluster.as_bytes())
                .unwrap_err()
                .reason,
            InvalidReason::InvalidCluster
        );
        let no_name = r#"{"Name":"","Cluster":"c1"}"#;
        assert_eq!(
            Node::decode("c1/", no_name.as_bytes()).unwrap_err().reason,
            InvalidReason::MissingField
        );
        // `c1/a/b` matches the key of node "a/b": the name itself is refused.
        for (key, name) in [("c1/a/b", "a/b"), ("c1/..", ".."), ("c1/a\nb", "a\nb")] {
            let json = serde_json::json!({"Name": name, "Cluster": "c1"}).to_string();
            assert_eq!(
                Node::decode(key, json.as_bytes()).unwrap_err().reason,
                InvalidReason::InvalidName,
                "{name:?}"
            );
        }
        assert_eq!(
            check_node_name("a/b"),
            Err(NodeNameError::ContainsSlash { name: "a/b".into() })
        );
        assert_eq!(
            check_node_name("..").unwrap_err().to_string(),
            r#"Name ".." is a path segment"#
        );
        let long = "n".repeat(MAX_NODE_NAME_LEN + 1);
        let json = serde_json::json!({"Name": long, "Cluster": "c1"}).to_string();
        assert_eq!(
            Node::decode(&format!("c1/{long}"), json.as_bytes())
                .unwrap_err()
                .reason,
            InvalidReason::InvalidName
        );
        let bad_ip =
            r#"{"Name":"n","Cluster":"c1","IPAddresses":[{"Type":"InternalIP","IP":"x"}]}"#;
        assert_eq!(
            Node::decode("c1/n", bad_ip.as_bytes()).unwrap_err().reason,
            InvalidReason::Malformed
        );
    }
}
