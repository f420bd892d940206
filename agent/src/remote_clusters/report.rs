//! The agent's report of itself in its cluster's etcd
//! (`clustermesh/status/agents/<node>`, [`AgentReport`], leased with the
//! agent's session): what `clustermesh status --from ADMIN.yaml` shows and
//! what `connect` checks ipcache headroom against, without reaching the
//! nodes themselves.

use std::time::Duration;

use kvstore::{
    Client, SessionHandle, StoreValue, keys,
    values::{AgentRemoteReport, AgentReport},
};
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
            let Some(Answer::Status(status)) = self.control.query(Query::Status).await else {
                return Ok(());
            };
            let report = AgentReport {
                node: status.node.clone(),
                synced: status.synced,
                maps: status.maps.clone(),
                map_capacity: status.map_capacity.clone(),
                remotes: status
                    .remotes
                    .iter()
                    .map(|r| AgentRemoteReport {
                        name: r.name.clone(),
                        connected: r.connected,
                        ready: r.ready,
                        error: (!r.ready)
                            .then(|| match (&r.last_error_kind, &r.last_error) {
                                (Some(k), Some(e)) => Some(format!("{k}: {e}")),
                                (None, Some(e)) => Some(e.clone()),
                                _ => None,
                            })
                            .flatten(),
                    })
                    .collect(),
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
