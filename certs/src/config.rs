use std::time::Duration;

/// How [`ServerTls`](crate::ServerTls) and [`ClientTls`](crate::ClientTls) build
/// their rustls configurations and reload their files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Quiet time after a file event before the files are read. A certificate and
    /// its key are often written one after the other; reading after the burst
    /// avoids a spurious "key does not match" failure. Default: 200 ms.
    pub debounce: Duration,
    /// Upper bound on how long a continuous stream of events can delay a reload.
    /// Default: 2 s.
    pub max_delay: Duration,
    /// Re-read the files this often even when no event arrived: inotify drops
    /// events when its queue overflows and does not work on network file
    /// systems. A re-read of unchanged files costs three small reads and nothing
    /// else. `None` disables it. Default: 60 s.
    pub resync_interval: Option<Duration>,
    /// ALPN protocols offered by the client or accepted by the server. Default:
    /// none. gRPC needs `h2` (grpc-go clients such as etcdctl refuse a server
    /// that does not negotiate it).
    pub alpn_protocols: Vec<Vec<u8>>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
            resync_interval: Some(Duration::from_secs(60)),
            alpn_protocols: Vec::new(),
        }
    }
}
