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
    /// How long a client may take to complete the TLS handshake. Default
    /// [`Config::DEFAULT_HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    pub watch: WatchConfig,
}

impl Config {
    /// 10 s: a TLS handshake takes a few round trips, well under a second
    /// even across regions; a client that has not finished by then is
    /// stuck or hostile, and holds a socket and a task until it is dropped.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
            handshake_timeout: Self::DEFAULT_HANDSHAKE_TIMEOUT,
            watch: WatchConfig::default(),
        }
    }
}

/// How watches are fanned out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    /// Responses queued for one downstream watch stream before its client
    /// counts as too slow and the stream is closed with etcd's "too many
    /// requests". Default [`WatchConfig::DEFAULT_OUTBOX_CAPACITY`].
    pub outbox_capacity: usize,
    /// Events each shared upstream watch keeps, so that a watch starting at a
    /// recent revision (an agent that listed and now watches from the list's
    /// revision) joins from memory instead of opening its own etcd watch.
    /// Default [`WatchConfig::DEFAULT_HISTORY_EVENTS`].
    pub history_events: usize,
    /// While events of a shared watch arrive faster than one per this
    /// period, they are sent to watchers together once per period instead of
    /// one response each; a lone event goes out at once. Trades at most this
    /// much delivery delay for far fewer responses at high rates. Zero sends
    /// every etcd response on its own. Default
    /// [`WatchConfig::DEFAULT_FAN_OUT_LINGER`].
    pub fan_out_linger: Duration,
    /// With many watchers the linger grows, so that one shared watch sends
    /// at most about this many responses a second to its watchers in all:
    /// the period is the watchers over this (10 ms for 1,000 watchers and
    /// 50 ms for 5,000 at the default), never below `fan_out_linger` nor
    /// above [`WatchConfig::MAX_FAN_OUT_LINGER`]. Each response costs the
    /// server a write to its client's connection and the client a read,
    /// whatever the events it carries: fewer, larger responses are what
    /// lets one server keep thousands of watchers up to date. Default
    /// [`WatchConfig::DEFAULT_FAN_OUT_RESPONSES_PER_S`].
    pub fan_out_responses_per_s: u32,
    /// Delay before re-opening a broken upstream watch: from `min_backoff`,
    /// doubling up to `max_backoff`. Defaults
    /// [`WatchConfig::DEFAULT_MIN_BACKOFF`] and
    /// [`WatchConfig::DEFAULT_MAX_BACKOFF`].
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// An upstream watch that received nothing from etcd for this long asks
    /// for its progress, and one that gets no answer within
    /// `progress_timeout` is taken for dead (its etcd member hangs without
    /// closing the connection) and resumed, on another member if there are
    /// several. Defaults [`WatchConfig::DEFAULT_PROGRESS_AFTER`] and
    /// [`WatchConfig::DEFAULT_PROGRESS_TIMEOUT`].
    pub progress_after: Duration,
    pub progress_timeout: Duration,
}

impl WatchConfig {
    /// 10,000 responses: at 1,000 writes/s under a watched prefix, ten
    /// seconds of backlog, enough for a client's garbage collection pause
    /// or a slow network, not enough to buffer a client that fell behind
    /// for good.
    pub const DEFAULT_OUTBOX_CAPACITY: usize = 10_000;
    /// 10,000 events: ten seconds at 1,000 writes/s, which covers an agent
    /// that lists and then watches from the list's revision, for the memory
    /// of 10,000 events per watched prefix (a few MiB of ipcache entries).
    pub const DEFAULT_HISTORY_EVENTS: usize = 10_000;
    /// 5 ms: invisible next to the network and etcd's own latency, and at
    /// 1,000 writes/s it turns five responses per watcher into one.
    pub const DEFAULT_FAN_OUT_LINGER: Duration = Duration::from_millis(5);
    /// 100,000 responses a second: about what one core writes over TLS
    /// connections (a write system call each) besides the rest of the
    /// server's work.
    pub const DEFAULT_FAN_OUT_RESPONSES_PER_S: u32 = 100_000;
    /// 100 ms: however many watchers, an event waits at most this long to
    /// be fanned out.
    pub const MAX_FAN_OUT_LINGER: Duration = Duration::from_millis(100);
    /// 100 ms: an etcd restart is resumed from almost at once...
    pub const DEFAULT_MIN_BACKOFF: Duration = Duration::from_millis(100);
    /// ...and 5 s: an etcd that stays down is asked at most every 5 s per
    /// upstream watch, and is found within 5 s of its return.
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5);
    /// 30 s: a quiet range costs one small request every 30 s (etcd 3.4
    /// notifies progress on its own only every 10 minutes)...
    pub const DEFAULT_PROGRESS_AFTER: Duration = Duration::from_secs(30);
    /// ...and etcd, which answers at once, has 10 s to do so.
    pub const DEFAULT_PROGRESS_TIMEOUT: Duration = Duration::from_secs(10);
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            outbox_capacity: Self::DEFAULT_OUTBOX_CAPACITY,
            history_events: Self::DEFAULT_HISTORY_EVENTS,
            fan_out_linger: Self::DEFAULT_FAN_OUT_LINGER,
            fan_out_responses_per_s: Self::DEFAULT_FAN_OUT_RESPONSES_PER_S,
            min_backoff: Self::DEFAULT_MIN_BACKOFF,
            max_backoff: Self::DEFAULT_MAX_BACKOFF,
            progress_after: Self::DEFAULT_PROGRESS_AFTER,
            progress_timeout: Self::DEFAULT_PROGRESS_TIMEOUT,
        }
    }
}
