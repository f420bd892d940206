use std::time::Duration;

use kvstore::Backoff;

use super::{latest_header::LatestHeader, registry::Registry};
use crate::{config::WatchConfig, metrics::Metrics, upstream::Upstream};

/// What the hub's upstream watches (shared watches and catch-ups) use of the
/// hub, and nothing more: the etcd connection, how to back off, the metrics,
/// the newest header seen, and the registry they leave when they end. They
/// cannot subscribe watchers, spawn tasks or stop the hub.
#[derive(Debug)]
pub(super) struct HubContext {
    pub(super) upstream: Upstream,
    pub(super) metrics: Metrics,
    pub(super) latest: LatestHeader,
    pub(super) registry: Registry,
    min_backoff: Duration,
    max_backoff: Duration,
    /// Quiet time before an upstream watch asks for progress, and how long
    /// the answer may take.
    pub(super) progress_after: Duration,
    pub(super) progress_timeout: Duration,
}

impl HubContext {
    pub(super) fn new(upstream: Upstream, metrics: Metrics, config: &WatchConfig) -> Self {
        Self {
            upstream,
            registry: Registry::new(metrics.clone()),
            metrics,
            latest: LatestHeader::default(),
            min_backoff: config.min_backoff,
            max_backoff: config.max_backoff,
            progress_after: config.progress_after,
            progress_timeout: config.progress_timeout,
        }
    }

    /// The delays before re-opening a broken upstream watch.
    pub(super) fn backoff(&self) -> Backoff {
        Backoff::new(self.min_backoff, self.max_backoff)
    }
}
