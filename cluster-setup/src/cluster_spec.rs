//! What one cluster is made of before anything is written: its name, ID,
//! mesh size, etcd, the addresses its apiserver is reached at and the
//! addresses its components listen on. Validated on construction.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
};

use ipnet::IpNet;
use kvstore::{ClusterError, ClusterId, ClusterName, MaxConnectedClusters};

/// Where remote clusters reach the apiserver unless told otherwise
/// (Cilium's NodePort for the clustermesh-apiserver, and the apiserver's
/// own default).
pub const DEFAULT_APISERVER_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 32379));
/// The apiserver's `/healthz`, `/readyz` and `/metrics` (its default).
pub const DEFAULT_APISERVER_HEALTH_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9880));
/// The operator's `/healthz` and `/metrics` (its default).
pub const DEFAULT_OPERATOR_HEALTH_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9234));
/// Each agent's `/healthz` and `/metrics` (Cilium's agent health port).
pub const DEFAULT_AGENT_HEALTH_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9876));

/// Why a cluster's description cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("invalid cluster name {name:?}")]
    Name {
        name: String,
        #[source]
        source: ClusterError,
    },
    #[error("invalid cluster name \"default\": that name is for clusters outside a mesh")]
    DefaultName,
    #[error("invalid max-connected-clusters {0}: use 255 or 511")]
    Mode(u32),
    #[error("invalid cluster ID 0: a meshed cluster needs an ID from 1 to {max}")]
    IdZero { max: u32 },
    #[error(
        "invalid cluster ID {id}: with max-connected-clusters {max} the ID must be from 1 to {max}{hint}"
    )]
    IdOutOfRange {
        id: u32,
        max: u32,
        hint: &'static str,
    },
    #[error("no etcd endpoint given")]
    NoEtcdEndpoint,
    #[error("invalid etcd endpoint {endpoint:?}: {reason}")]
    EtcdEndpoint {
        endpoint: String,
        reason: &'static str,
    },
    #[error("the etcd endpoints mix http:// and https://")]
    MixedEtcdSchemes,
    #[error("invalid apiserver endpoint {endpoint:?}: {reason}")]
    ApiserverEndpoint {
        endpoint: String,
        reason: &'static str,
    },
}

/// A host and a port, as clients dial them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: Host,
    pub port: u16,
}

/// A DNS name or an IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Dns(String),
    Ip(IpAddr),
}

impl HostPort {
    /// Parses `host:port`, `[v6]:port` or `v4:port`.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Self {
                host: Host::Ip(addr.ip()),
                port: addr.port(),
            });
        }
        let (host, port) = text.rsplit_once(':').ok_or("use host:port")?;
        let port: u16 = port.parse().map_err(|_| "the port is not a number")?;
        if port == 0 {
            return Err("port 0 cannot be dialed");
        }
        let valid_dns = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !valid_dns {
            return Err("the host is neither a DNS name nor an IP address");
        }
        Ok(Self {
            host: Host::Dns(host.to_ascii_lowercase()),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Dns(name) => write!(f, "{name}:{}", self.port),
            Host::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.port)),
        }
    }
}

/// One etcd client URL: `http://host:port` or `https://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdEndpoint {
    pub https: bool,
    pub addr: HostPort,
}

impl EtcdEndpoint {
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let bad = |reason| SpecError::EtcdEndpoint {
            endpoint: text.to_owned(),
            reason,
        };
        let (https, rest) = match (text.strip_prefix("https://"), text.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (_, Some(rest)) => (false, rest),
            _ => return Err(bad("use http://host:port or https://host:port")),
        };
        let addr = HostPort::parse(rest.trim_end_matches('/')).map_err(bad)?;
        Ok(Self { https, addr })
    }
}

impl fmt::Display for EtcdEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.addr)
    }
}

/// A validated description of one cluster. Build it with [`ClusterSpec::new`],
/// then change the listen addresses and pod CIDR pools if the defaults do
/// not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    pub name: ClusterName,
    pub id: ClusterId,
    pub mode: MaxConnectedClusters,
    /// The cluster's etcd, all http:// or all https://. With https:// every
    /// component and the admin get a client certificate of the cluster's
    /// etcd CA, and etcd a server certificate for these hosts.
    pub etcd_endpoints: Vec<EtcdEndpoint>,
    /// Where other clusters reach the apiserver (names in its certificate,
    /// and in the cluster descriptor). Empty: not reachable yet; the
    /// descriptor cannot be exported.
    pub apiserver_endpoints: Vec<HostPort>,
    /// Where the apiserver serves mutual TLS.
    pub apiserver_listen: SocketAddr,
    pub apiserver_health_listen: SocketAddr,
    pub operator_health_listen: SocketAddr,
    pub agent_health_listen: SocketAddr,
    /// The operator's pod CIDR pools (at most one IPv4 and one IPv6), from
    /// which it assigns each node its pod CIDR. Empty: every node's
    /// node.env sets its own (`CLUSTERMESH_POD_CIDR`).
    pub pod_cidr_pools: Vec<IpNet>,
}

impl ClusterSpec {
    /// Validates the name (Cilium's rules, not `default`), the mesh size
    /// (255 or 511), the ID (1 to the mesh size) and the endpoints.
    pub fn new(
        name: &str,
        id: u32,
        max_connected_clusters: u32,
        etcd_endpoints: &[String],
        apiserver_endpoints: &[String],
    ) -> Result<Self, SpecError> {
        let (name, id, mode) = validate_cluster(name, id, max_connected_clusters)?;
        if etcd_endpoints.is_empty() {
            return Err(SpecError::NoEtcdEndpoint);
        }
        let etcd_endpoints = etcd_endpoints
            .iter()
            .map(|e| EtcdEndpoint::parse(e))
            .collect::<Result<Vec<_>, _>>()?;
        if etcd_endpoints.iter().any(|e| e.https) && etcd_endpoints.iter().any(|e| !e.https) {
            return Err(SpecError::MixedEtcdSchemes);
        }
        let apiserver_endpoints = apiserver_endpoints
            .iter()
            .map(|e| {
                let text = e.strip_prefix("https://").unwrap_or(e);
                HostPort::parse(text).map_err(|reason| SpecError::ApiserverEndpoint {
                    endpoint: e.clone(),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            name,
            id,
            mode,
            etcd_endpoints,
            apiserver_endpoints,
            apiserver_listen: DEFAULT_APISERVER_LISTEN,
            apiserver_health_listen: DEFAULT_APISERVER_HEALTH_LISTEN,
            operator_health_listen: DEFAULT_OPERATOR_HEALTH_LISTEN,
            agent_health_listen: DEFAULT_AGENT_HEALTH_LISTEN,
            pod_cidr_pools: Vec::new(),
        })
    }

    /// Whether etcd is served with TLS (then the cluster has an etcd CA).
    pub fn etcd_https(&self) -> bool {
        self.etcd_endpoints.iter().any(|e| e.https)
    }

    /// The apiserver endpoints as the URLs remote clusters dial.
    pub fn apiserver_urls(&self) -> Vec<String> {
        self.apiserver_endpoints
            .iter()
            .map(|e| format!("https://{e}"))
            .collect()
    }
}

/// Validates a cluster's name, ID and mesh size the way every component
/// does (shared with the descriptors).
pub(crate) fn validate_cluster(
    name: &str,
    id: u32,
    max_connected_clusters: u32,
) -> Result<(ClusterName, ClusterId, MaxConnectedClusters), SpecError> {
    let cluster_name = ClusterName::new(name).map_err(|source| SpecError::Name {
        name: name.to_owned(),
        source,
    })?;
    if cluster_name.as_str() == "default" {
        return Err(SpecError::DefaultName);
    }
    let mode = match max_connected_clusters {
        255 | 511 => MaxConnectedClusters::from_u32(max_connected_clusters)
            .map_err(|_| SpecError::Mode(max_connected_clusters))?,
        n => return Err(SpecError::Mode(n)),
    };
    let max = mode.max_cluster_id();
    if id == 0 {
        return Err(SpecError::IdZero { max });
    }
    let id = ClusterId::new(id, mode).map_err(|_| SpecError::IdOutOfRange {
        id,
        max,
        hint: if id <= 511 && max == 255 {
            " (IDs up to 511 need --max-connected-clusters 511)"
        } else {
            ""
        },
    })?;
    Ok((cluster_name, id, mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, id: u32, max: u32) -> Result<ClusterSpec, String> {
        ClusterSpec::new(
            name,
            id,
            max,
            &["https://etcd-1.c1.example:2379".into()],
            &["10.0.0.5:32379".into()],
        )
        .map_err(|e| {
            let mut text = e.to_string();
            if let Some(source) = std::error::Error::source(&e) {
                text.push_str(&format!(": {source}"));
            }
            text
        })
    }

    #[test]
    fn names_ids_and_modes_follow_the_mesh_rules() {
        let s = spec("c1", 1, 255).unwrap();
        assert_eq!((s.name.as_str(), s.id.get()), ("c1", 1));
        assert_eq!(spec("c1", 511, 511).unwrap().id.get(), 511);
        assert!(spec("C1", 1, 255).unwrap_err().contains("lowercase"));
        assert!(
            spec("-c1", 1, 255)
                .unwrap_err()
                .contains("invalid cluster name")
        );
        assert!(
            spec(&"a".repeat(33), 1, 255)
                .unwrap_err()
                .contains("longer than 32")
        );
        assert!(
            spec("default", 1, 255)
                .unwrap_err()
                .contains("outside a mesh")
        );
        assert_eq!(
            spec("c1", 0, 255).unwrap_err(),
            "invalid cluster ID 0: a meshed cluster needs an ID from 1 to 255"
        );
        assert_eq!(
            spec("c1", 300, 255).unwrap_err(),
            "invalid cluster ID 300: with max-connected-clusters 255 the ID must be from 1 to 255 (IDs up to 511 need --max-connected-clusters 511)"
        );
        assert!(!spec("c1", 600, 511).unwrap_err().contains("need"));
        assert_eq!(
            spec("c1", 1, 256).unwrap_err(),
            "invalid max-connected-clusters 256: use 255 or 511"
        );
    }

    #[test]
    fn endpoints_are_urls_or_host_ports() {
        let ok = |etcd: &[&str], api: &[&str]| {
            ClusterSpec::new(
                "c1",
                1,
                255,
                &etcd.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                &api.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
        };
        let s = ok(
            &["https://10.0.0.1:2379", "https://[fd00::1]:2379/"],
            &["mesh.example:32379", "https://[fd00::5]:32379"],
        )
        .unwrap();
        assert!(s.etcd_https());
        assert_eq!(s.etcd_endpoints[1].to_string(), "https://[fd00::1]:2379");
        assert_eq!(
            s.apiserver_urls(),
            ["https://mesh.example:32379", "https://[fd00::5]:32379"]
        );
        assert_eq!(ok(&[], &[]).unwrap_err(), SpecError::NoEtcdEndpoint);
        assert_eq!(
            ok(&["http://a:1", "https://b:2"], &[]).unwrap_err(),
            SpecError::MixedEtcdSchemes
        );
        for bad in [
            "a:1",
            "http://a",
            "http://a:x",
            "http://a_b:1",
            "http://a:0",
        ] {
            assert!(
                matches!(ok(&[bad], &[]), Err(SpecError::EtcdEndpoint { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            ok(&["http://a:1"], &["10.0.0.1"]),
            Err(SpecError::ApiserverEndpoint { .. })
        ));
    }
}
