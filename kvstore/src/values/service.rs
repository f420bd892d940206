use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use super::serde_util::null_as_default;
use crate::{
    cluster::ClusterName,
    value::{DecodeError, InvalidReason, StoreValue, decode_json},
};

/// A service of one cluster as shared with the mesh, stored at
/// `cilium/state/services/v1/<cluster>/<namespace>/<name>` (Cilium's
/// `ClusterService`). Remote clusters contribute its backends to the local
/// service of the same namespace and name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterService {
    pub cluster: String,
    pub namespace: String,
    pub name: String,
    /// Frontend IP → port name → port.
    #[serde(default, deserialize_with = "null_as_default")]
    pub frontends: BTreeMap<String, PortConfiguration>,
    /// Backend IP → port name → port.
    #[serde(default, deserialize_with = "null_as_default")]
    pub backends: BTreeMap<String, PortConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostnames: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zones: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub selector: BTreeMap<String, String>,
    #[serde(rename = "includeExternal", default)]
    pub include_external: bool,
    #[serde(default)]
    pub shared: bool,
    #[serde(rename = "clusterID", default)]
    pub cluster_id: u32,
    /// Fields written by newer Cilium versions, passed through.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Port name → L4 port.
pub type PortConfiguration = BTreeMap<String, L4Addr>;

/// A protocol and port (`{"Protocol": "TCP", "Port": 80}`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct L4Addr {
    #[serde(rename = "Protocol")]
    pub protocol: String,
    #[serde(rename = "Port")]
    pub port: u16,
}

impl ClusterService {
    /// An empty service of `cluster`.
    pub fn new(cluster: &ClusterName, cluster_id: u32, namespace: &str, name: &str) -> Self {
        Self {
            cluster: cluster.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            frontends: BTreeMap::new(),
            backends: BTreeMap::new(),
            hostnames: None,
            zones: None,
            labels: BTreeMap::new(),
            selector: BTreeMap::new(),
            include_external: false,
            shared: false,
            cluster_id,
            extra: serde_json::Map::new(),
        }
    }

    /// `<namespace>/<name>`: the identity of a global service across clusters.
    pub fn namespaced_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Backend addresses, parsed (decode guarantees they parse).
    pub fn backend_ips(&self) -> impl Iterator<Item = (IpAddr, &PortConfiguration)> {
        self.backends
            .iter()
            .filter_map(|(ip, ports)| Some((ip.parse().ok()?, ports)))
    }

    /// Frontend addresses, parsed.
    pub fn frontend_ips(&self) -> impl Iterator<Item = (IpAddr, &PortConfiguration)> {
        self.frontends
            .iter()
            .filter_map(|(ip, ports)| Some((ip.parse().ok()?, ports)))
    }
}

impl StoreValue for ClusterService {
    const KIND: &'static str = "service";

    /// `key` is `<cluster>/<namespace>/<name>` (relative to
    /// `cilium/state/services/v1/`).
    fn decode(key: &str, bytes: &[u8]) -> Result<Self, DecodeError> {
        let svc: Self = decode_json(Self::KIND, key, bytes)?;
        let invalid = |reason, detail: String| DecodeError::new(Self::KIND, key, reason, detail);
        for (field, value) in [
            ("cluster", &svc.cluster),
            ("namespace", &svc.namespace),
            ("name", &svc.name),
        ] {
            if value.is_empty() {
                return Err(invalid(
                    InvalidReason::MissingField,
                    format!("{field} is empty"),
                ));
            }
        }
        if let Err(e) = ClusterName::new(svc.cluster.as_str()) {
            return Err(invalid(InvalidReason::InvalidCluster, e.to_string()));
        }
        if svc.cluster_id > 511 {
            return Err(invalid(
                InvalidReason::InvalidCluster,
                format!("clusterID {} is out of range", svc.cluster_id),
            ));
        }
        if key != svc.key() {
            return Err(invalid(
                InvalidReason::KeyMismatch,
                format!("value is for {}", svc.key()),
            ));
        }
        for (what, map) in [("frontend", &svc.frontends), ("backend", &svc.backends)] {
            if let Some(bad) = map.keys().find(|ip| ip.parse::<IpAddr>().is_err()) {
                return Err(invalid(
                    InvalidReason::InvalidAddress,
                    format!("{what} {bad:?} is not an IP address"),
                ));
            }
        }
        Ok(svc)
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("services always serialize")
    }

    fn key(&self) -> String {
        format!("{}/{}/{}", self.cluster, self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> ClusterService {
        let mut s = ClusterService::new(&ClusterName::new("c1").unwrap(), 1, "default", "echo");
        let port = PortConfiguration::from([(
            "http".to_string(),
            L4Addr {
                protocol: "TCP".into(),
                port: 80,
            },
        )]);
        s.frontends.insert("10.96.0.10".into(), port.clone());
        s.backends.insert("10.1.0.5".into(), port);
        s.shared = true;
        s
    }

    #[test]
    fn round_trip() {
        let s = svc();
        assert_eq!(s.key(), "c1/default/echo");
        assert_eq!(
            ClusterService::decode("c1/default/echo", &s.encode()).unwrap(),
            s
        );
        assert_eq!(s.backend_ips().count(), 1);
    }

    #[test]
    fn validation() {
        let mut s = svc();
        s.backends
            .insert("fe80::1%eth0".into(), PortConfiguration::new());
        assert_eq!(
            ClusterService::decode(&s.key(), &s.encode())
                .unwrap_err()
                .reason,
            InvalidReason::InvalidAddress
        );
        let mut s = svc();
        s.frontends
            .insert("not-an-ip".into(), PortConfiguration::new());
        assert_eq!(
            ClusterService::decode(&s.key(), &s.encode())
                .unwrap_err()
                .reason,
            InvalidReason::InvalidAddress
        );
        let mut s = svc();
        s.namespace.clear();
        assert_eq!(
            ClusterService::decode("c1//echo", &s.encode())
                .unwrap_err()
                .reason,
            InvalidReason::MissingField
        );
        let mut s = svc();
        s.cluster_id = 600;
        assert_eq!(
            ClusterService::decode(&s.key(), &s.encode())
                .unwrap_err()
                .reason,
            InvalidReason::InvalidCluster
        );
        let s = svc();
        assert_eq!(
            ClusterService::decode("c2/default/echo", &s.encode())
                .unwrap_err()
                .reason,
            InvalidReason::KeyMismatch
        );
    }
}
