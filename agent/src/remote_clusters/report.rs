//! The agent's report of itself in its cluster's etcd
//! (`clustermesh/status/agents/<node>`, [`AgentReport`], leased with the
//! agent's session): what `clustermesh status --from ADMIN.yaml` shows and
//! what `connect` checks ipcache headroom against, without reaching the
//! nodes themselves.

use std::time::Duration;

use kvstore::{Client, SessionHandle, StoreValue, keys};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::control_loop::{Answer, LoopHandle, Query};

/// How often the report is refreshed (written only when it changed or the
/// session's lease did).
const REPORT_INTERVAL: Duration = Duration::from_secs(2);

pub(crate) struct AgentReporter {
    pub client: Client,
    pub session: SessionHandle,
    pub control: LoopHandle,
}

impl AgentReporter {
    pub(crate) async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut last = None;
        let mut tick = tokio::time::interval(REPORT_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let Some(Answer::Report(report)) = self.control.query(Query::Report).await else {
                return Ok(());
            };
            let lease = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                l = self.session.lease() => l,
            };
            if last.as_ref() == Some(&(lease, report.clone())) {
                continue;
            }
            match self
                .client
                .put_leased(&keys::agent_report(&report.node), report.encode(), lease)
                .await
            {
                Ok(_) => last = Some((lease, report)),
                Err(e) => debug!(error = %e.full_message(), "agent report not written; retrying"),
            }
        }
    }
}
