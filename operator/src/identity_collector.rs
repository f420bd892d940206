use std::time::Duration;

use kvstore::{Client, IdentityGc, IdentityGcConfig};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::OperatorMetrics;

/// Why a garbage collection round failed (the next round retries).
#[derive(Debug, thiserror::Error)]
pub enum IdentityCollectorError {
    #[error("identity garbage collection round")]
    Round(#[source] kvstore::Error),
}

/// Runs [`IdentityGc`] rounds while this operator leads: one at the start of
/// the term, then every `interval`.
///
/// A round marks unused masters of the local cluster's range and deletes
/// those marked by the previous round of the same term whose `mod_revision`
/// is unchanged, so an identity goes at the earliest one interval after it
/// became unused, and a new leader starts marking from scratch. Deletions are
/// spread to the configured rate.
#[derive(Debug)]
pub struct IdentityCollector {
    gc: IdentityGc,
    interval: Duration,
    metrics: OperatorMetrics,
}

impl IdentityCollector {
    pub fn new(
        client: Client,
        config: IdentityGcConfig,
        interval: Duration,
        metrics: OperatorMetrics,
    ) -> Self {
        Self {
            gc: IdentityGc::new(client, config),
            interval,
            metrics,
        }
    }

    /// Runs rounds until `shutdown` (a round in progress is abandoned; what
    /// it deleted is consistent, each deletion being one transaction).
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), IdentityCollectorError> {
        loop {
            let round = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = self.gc.run_round() => r,
            };
            match round {
                Ok(r) => {
                    self.metrics.gc_rounds.inc();
                    self.metrics.gc_deletions.inc_by(r.deleted as u64);
                    if r.marked > 0 || r.deleted > 0 {
                        info!(
                            masters = r.masters,
                            in_use = r.in_use,
                            marked = r.marked,
                            deleted = r.deleted,
                            locks_deleted = r.locks_deleted,
                            "identity GC round"
                        );
                    }
                }
                Err(source) => {
                    self.metrics.gc_failures.inc();
                    let e = IdentityCollectorError::Round(source);
                    warn!(error = %crate::error_chain(&e), "identity GC round failed; retrying next interval");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}
