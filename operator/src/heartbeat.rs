use std::time::Duration;

use kvstore::{Client, LeaseId, StoreValue, keys, values::Timestamp};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::metrics::OperatorMetrics;

/// Why the heartbeat stopped (it retries write failures itself).
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error("write heartbeat {key}")]
    Write {
        key: String,
        #[source]
        source: kvstore::Error,
    },
}

/// Rewrites `cilium/.heartbeat` with the current RFC 3339 time every
/// `interval`, on the leader's session lease: remote clusters read its age
/// to tell a live cluster from a dead one (Cilium's agents give up after
/// 2 minutes). A failed write is retried after a tenth of the interval.
#[derive(Debug)]
pub struct Heartbeat {
    client: Client,
    lease: LeaseId,
    interval: Duration,
    metrics: OperatorMetrics,
}

impl Heartbeat {
    pub fn new(
        client: Client,
        lease: LeaseId,
        interval: Duration,
        metrics: OperatorMetrics,
    ) -> Self {
        Self {
            client,
            lease,
            interval,
            metrics,
        }
    }

    /// Writes at once, then every interval, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), HeartbeatError> {
        let retry = (self.interval / 10).max(Duration::from_millis(100));
        loop {
            let now = Timestamp::now();
            let write = self
                .client
                .put_leased(keys::HEARTBEAT, now.encode(), self.lease);
            let result = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = write => r,
            };
            let wait = match result {
                Ok(_) => {
                    self.metrics.heartbeat_writes.inc();
                    debug!(time = %now.to_rfc3339(), "heartbeat written");
                    self.interval
                }
                Err(source) => {
                    self.metrics.heartbeat_failures.inc();
                    let e = HeartbeatError::Write {
                        key: keys::HEARTBEAT.to_string(),
                        source,
                    };
                    warn!(error = %crate::error_chain(&e), "heartbeat write failed; retrying");
                    retry
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
