use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    time::Duration,
};

use k8s::KubeAccess;
use kvstore::{ClientConfig, ClusterId, ClusterName, MaxConnectedClusters};

use crate::ipam_reconciler::IpamConfig;

/// Default session lease TTL of the operator: 15 s. The leader key lives on
/// this lease, so it bounds fail-over: a crashed leader's key disappears at
/// most one TTL after its last renewal. (Agents use 15 min, so that their
/// keys survive restarts; the operator's keys are rewritten by whichever
/// instance leads.)
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(15);
/// Default interval between identity GC rounds: 15 min, as Cilium's operator.
pub const DEFAULT_IDENTITY_GC_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// Default identity deletions per minute: 2,500, as Cilium's operator.
pub const DEFAULT_IDENTITY_GC_RATE_LIMIT: u32 = 2_500;
/// Default heartbeat interval: 1 min, as Cilium.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);
/// Default node CIDR size in the IPv4 pool: /24 (254 pods per node).
pub const DEFAULT_NODE_CIDR_MASK_SIZE: u8 = 24;
/// Default node CIDR size in the IPv6 pool: /64.
pub const DEFAULT_NODE_CIDR_MASK_SIZE_V6: u8 = 64;
/// Default address of `/healthz` and `/metrics`: `127.0.0.1:9234`, the port
/// of Cilium operator's health API, on loopback because neither endpoint
/// has authentication (use `0.0.0.0:9234` to scrape from elsewhere).
pub const DEFAULT_HEALTH_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9234));

/// Default namespace of the leader Lease in Kubernetes mode: `kube-system`,
/// where Cilium's operator keeps its own.
pub const DEFAULT_LEASE_NAMESPACE: &str = "kube-system";

/// The Kubernetes mode: the operator elects its leader on a
/// `coordination.k8s.io/v1` Lease instead of the etcd key, installs the
/// policy CRDs, exports the cluster's global Services and reports whether
/// each policy is valid. Identities, IPAM, the heartbeat and the exported
/// services stay in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    /// How to reach the API server.
    pub access: KubeAccess,
    /// The Lease's namespace. Default [`DEFAULT_LEASE_NAMESPACE`].
    pub lease_namespace: String,
    /// The Lease's name. Default [`KubernetesConfig::default_lease_name`].
    pub lease_name: String,
}

impl KubernetesConfig {
    /// A configuration with the Lease at its default place.
    pub fn new(access: KubeAccess, cluster: &ClusterName) -> Self {
        Self {
            access,
            lease_namespace: DEFAULT_LEASE_NAMESPACE.to_string(),
            lease_name: Self::default_lease_name(cluster),
        }
    }

    /// `clustermesh-operator-<cluster>`: the operators of two clusters that
    /// share an API server (a test setup) do not compete.
    pub fn default_lease_name(cluster: &ClusterName) -> String {
        format!("clustermesh-operator-{cluster}")
    }
}

/// Everything an [`crate::Operator`] needs; the binary builds it from flags.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    pub cluster_name: ClusterName,
    pub cluster_id: ClusterId,
    pub max_connected_clusters: MaxConnectedClusters,
    /// The cluster's etcd.
    pub etcd: ClientConfig,
    /// This instance's ID, the value of the leader key. Default:
    /// [`default_id`] (`<hostname>-<pid>`).
    pub id: String,
    /// Default [`DEFAULT_SESSION_TTL`].
    pub session_ttl: Duration,
    /// Default [`DEFAULT_IDENTITY_GC_INTERVAL`].
    pub identity_gc_interval: Duration,
    /// Default [`DEFAULT_IDENTITY_GC_RATE_LIMIT`].
    pub identity_gc_rate_limit: u32,
    /// Default [`DEFAULT_HEARTBEAT_INTERVAL`].
    pub heartbeat_interval: Duration,
    /// Pod CIDR IPAM; `None` (the default) turns it off.
    pub ipam: Option<IpamConfig>,
    /// Default [`DEFAULT_HEALTH_LISTEN`]; port 0 picks a free port.
    pub health_listen: SocketAddr,
    /// The Kubernetes mode; `None` (the default) runs on etcd alone.
    pub kubernetes: Option<KubernetesConfig>,
}

impl OperatorConfig {
    /// A configuration with every optional setting at its default.
    pub fn new(
        cluster_name: ClusterName,
        cluster_id: ClusterId,
        max_connected_clusters: MaxConnectedClusters,
        etcd: ClientConfig,
    ) -> Self {
        Self {
            cluster_name,
            cluster_id,
            max_connected_clusters,
            etcd,
            id: default_id(),
            session_ttl: DEFAULT_SESSION_TTL,
            identity_gc_interval: DEFAULT_IDENTITY_GC_INTERVAL,
            identity_gc_rate_limit: DEFAULT_IDENTITY_GC_RATE_LIMIT,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            ipam: None,
            health_listen: DEFAULT_HEALTH_LISTEN,
            kubernetes: None,
        }
    }
}

/// `<hostname>-<pid>`: unique among operators of a cluster, also for two on
/// one machine.
pub fn default_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "operator".to_string());
    format!("{host}-{}", std::process::id())
}
