//! Reads the datapath's flow events and counts what the datapath decided:
//! policy verdicts by direction, drops by reason. The ring buffer has one
//! consumer per node; the Hubble observer is to take its flows from this
//! same reader.

use std::{path::PathBuf, sync::Arc, time::Duration};

use bpf::{DropReason, FlowDirection, FlowEvent, FlowReader, Verdict};
use tokio_util::sync::CancellationToken;

use crate::metrics::AgentMetrics;

/// How long one poll of the ring buffer waits, so that shutdown is seen.
const POLL: Duration = Duration::from_millis(200);

/// See the module documentation.
pub(crate) struct FlowCounter {
    bpffs_dir: PathBuf,
    metrics: Arc<AgentMetrics>,
}

impl FlowCounter {
    pub(crate) fn new(bpffs_dir: PathBuf, metrics: Arc<AgentMetrics>) -> Self {
        Self { bpffs_dir, metrics }
    }

    /// Polls on a blocking thread (off the async runtime) until shutdown.
    pub(crate) async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tokio::task::spawn_blocking(move || {
            let mut reader = FlowReader::open(&self.bpffs_dir)?;
            while !shutdown.is_cancelled() {
                if let Some(event) = reader.next_timeout(POLL)? {
                    self.metrics.count_flow(&labels(&event));
                }
            }
            anyhow::Ok(())
        })
        .await?
    }
}

/// The metric labels of one flow event: (direction, verdict, drop reason).
pub(crate) fn labels(event: &FlowEvent) -> (&'static str, &'static str, Option<&'static str>) {
    let direction = match event.direction {
        FlowDirection::ToEndpoint => "ingress",
        FlowDirection::FromEndpoint => "egress",
    };
    let verdict = match event.verdict {
        Verdict::Forwarded => "forwarded",
        Verdict::Dropped => "dropped",
        Verdict::Translated => "translated",
    };
    let reason = event.drop_reason.map(|r| match r {
        DropReason::Policy => "policy-denied",
        DropReason::PolicyDeny => "policy-deny-rule",
        DropReason::NoBackend => "no-service-backend",
        DropReason::ConntrackFull => "conntrack-full",
        DropReason::Malformed => "malformed",
        DropReason::Nat => "nat-failed",
        DropReason::Other(_) => "unknown",
    });
    (direction, verdict, reason)
}
