use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::PathBuf,
    time::Duration,
};

use kvstore::{ClientConfig, ClusterId, ClusterName, MaxConnectedClusters};

/// `/healthz`, `/readyz`, `/metrics` and `/status` of kvstoremesh: the port
/// Cilium's Helm chart gives kvstoremesh's health endpoint, on every
/// address (the kubelet probes it from outside the pod).
pub const DEFAULT_KVSTOREMESH_HEALTH_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 9881));

/// How kvstoremesh runs. Built by the binary from
/// [`crate::KvstoremeshArgs`]; tests build it directly (and shorten the
/// timeouts).
#[derive(Debug, Clone)]
pub struct KvstoremeshConfig {
    /// This (local) cluster: a config file named after it is not a remote.
    pub cluster_name: ClusterName,
    /// Remotes may not claim it.
    pub cluster_id: ClusterId,
    /// Every remote must run in the same mode.
    pub max_connected_clusters: MaxConnectedClusters,
    /// The LOCAL etcd the mirror is written into.
    pub etcd: ClientConfig,
    /// One file per remote cluster ([`kvstore::remote::RemoteClusterConfig`]).
    pub clustermesh_config: PathBuf,
    /// Plain HTTP `/healthz`, `/readyz`, `/metrics`, `/status`. Default
    /// [`DEFAULT_KVSTOREMESH_HEALTH_LISTEN`].
    pub health_listen: SocketAddr,
    /// A remote present at start that has not connected within this long
    /// stops counting for readiness. Default 15 s (Cilium's).
    pub per_cluster_ready_timeout: Duration,
    /// Ready after this long whatever the remotes do. Default 10 min
    /// (Cilium's).
    pub global_ready_timeout: Duration,
    /// Grace between withdrawing a removed remote's cluster config and
    /// deleting its cache, for the local agents to let go of it. Default
    /// 3 min (Cilium's).
    pub drain_delay: Duration,
    /// Drop a remote's services and service exports from the cache once it
    /// has been unreachable this long (a remote's config file may say
    /// otherwise). Default: never (Cilium's `--clustermesh-cache-ttl` 0).
    pub service_cache_ttl: Option<Duration>,
    /// TTL of the session lease every mirrored key is written on: a
    /// restarted kvstoremesh finds its keys within it. Default
    /// [`kvstore::DEFAULT_SESSION_TTL`].
    pub session_ttl: Duration,
    /// Delays between failed attempts to reach a remote: from `retry_min`,
    /// doubling up to `retry_max`, jittered. Defaults 500 ms and 30 s.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// How often a connected remote is asked whether it answers, and the
    /// status, metrics and readiness are refreshed. Default 1 s.
    pub check_interval: Duration,
    /// Rescan of the config directory in case a file event was missed.
    /// Default 10 s.
    pub rescan_interval: Duration,
}

impl KvstoremeshConfig {
    pub const DEFAULT_PER_CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(15);
    pub const DEFAULT_GLOBAL_READY_TIMEOUT: Duration = Duration::from_secs(10 * 60);
    pub const DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(3 * 60);
    pub const DEFAULT_RETRY_MIN: Duration = Duration::from_millis(500);
    pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(30);
    pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(1);
    pub const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(10);

    /// A configuration with the defaults above.
    pub fn new(
        cluster_name: ClusterName,
        cluster_id: ClusterId,
        max_connected_clusters: MaxConnectedClusters,
        etcd: ClientConfig,
        clustermesh_config: impl Into<PathBuf>,
    ) -> Self {
        Self {
            cluster_name,
            cluster_id,
            max_connected_clusters,
            etcd,
            clustermesh_config: clustermesh_config.into(),
            health_listen: DEFAULT_KVSTOREMESH_HEALTH_LISTEN,
            per_cluster_ready_timeout: Self::DEFAULT_PER_CLUSTER_READY_TIMEOUT,
            global_ready_timeout: Self::DEFAULT_GLOBAL_READY_TIMEOUT,
            drain_delay: Self::DEFAULT_DRAIN_DELAY,
            service_cache_ttl: None,
            session_ttl: kvstore::DEFAULT_SESSION_TTL,
            retry_min: Self::DEFAULT_RETRY_MIN,
            retry_max: Self::DEFAULT_RETRY_MAX,
            check_interval: Self::DEFAULT_CHECK_INTERVAL,
            rescan_interval: Self::DEFAULT_RESCAN_INTERVAL,
        }
    }
}
