use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    time::Duration,
};

use kvstore::{ClientConfig, ClusterId, ClusterName, MaxConnectedClusters};

/// Where remote clusters connect by default: Cilium's NodePort for the
/// clustermesh-apiserver.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 32379));
/// `/healthz`, `/readyz` and `/metrics`: Cilium's clustermesh-apiserver
/// health port, on localhost unless told otherwise (metrics say how the
/// cluster is built; they are not for every network the host is on).
pub const DEFAULT_HEALTH_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9880));

/// How the apiserver runs. Built by the binary from [`crate::Args`]; tests
/// build it directly.
#[derive(Debug, Clone)]
pub struct Config {
    /// This cluster's name: decides which `cilium/synced/<name>/` and
    /// `cilium/cluster-config/<name>` remotes may read, and which
    /// `admin-<name>` certificate is the admin.
    pub cluster_name: ClusterName,
    /// Published in `cilium/cluster-config/<name>`.
    pub cluster_id: ClusterId,
    pub max_connected_clusters: MaxConnectedClusters,
    /// The cluster's etcd (endpoints, optional TLS, timeouts).
    pub etcd: ClientConfig,
    /// The mutual-TLS etcd API. Default 0.0.0.0:32379.
    pub listen: SocketAddr,
    /// Server certificate, key, and the CA bundle client certificates must
    /// chain to.
    pub tls: certs::TlsFiles,
    /// How the TLS files are watched and reloaded (`h2` is always offered).
    pub tls_reload: certs::Config,
    /// Plain HTTP `/healthz`, `/readyz`, `/metrics`. Default 127.0.0.1:9880.
    pub health_listen: SocketAddr,
    /// How long a client may take to complete the TLS handshake. Default 10 s.
    pub handshake_timeout: Duration,
    pub watch: WatchConfig,
}

impl Config {
    /// A configuration with the defaults above.
    pub fn new(
        cluster_name: ClusterName,
        cluster_id: ClusterId,
        max_connected_clusters: MaxConnectedClusters,
        etcd: ClientConfig,
        tls: certs::TlsFiles,
    ) -> Self {
        Self {
            cluster_name,
            cluster_id,
            max_connected_clusters,
            etcd,
            listen: DEFAULT_LISTEN,
            tls,
            tls_reload: certs::Config::default(),
            health_listen: DEFAULT_HEALTH_LISTEN,
            handshake_timeout: Duration::from_secs(10),
            watch: WatchConfig::default(),
        }
    }
}

/// How watches are fanned out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    /// Responses queued for one downstream watch stream before its client
    /// counts as too slow and the stream is closed with etcd's "too many
    /// requests". At 1,000 writes/s under a watched prefix this is ten
    /// seconds of backlog. Default 10,000.
    pub outbox_capacity: usize,
    /// Events each shared upstream watch keeps, so that a watch starting at a
    /// recent revision (an agent that listed and now watches from the list's
    /// revision) joins from memory instead of opening its own etcd watch.
    /// Default 10,000.
    pub history_events: usize,
    /// While events of a shared watch arrive faster than one per this
    /// period, they are sent to watchers together once per period instead of
    /// one response each; a lone event goes out at once. Trades at most this
    /// much delivery delay for far fewer responses at high rates. Zero sends
    /// every etcd response on its own. Default 5 ms.
    pub fan_out_linger: Duration,
    /// Delay before re-opening a broken upstream watch: from `min_backoff`,
    /// doubling up to `max_backoff`. Defaults 100 ms and 5 s.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            outbox_capacity: 10_000,
            history_events: 10_000,
            fan_out_linger: Duration::from_millis(5),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}
