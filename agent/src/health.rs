//! `/healthz`, `/readyz` (the JSON body every daemon uses) and Prometheus
//! `/metrics` over TCP.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{
    control_loop::{Answer, LoopHandle, Query},
    metrics::AgentMetrics,
};

pub(crate) struct HealthServer {
    addr: SocketAddr,
    metrics: Arc<AgentMetrics>,
    control: LoopHandle,
}

impl HealthServer {
    pub(crate) fn new(addr: SocketAddr, metrics: Arc<AgentMetrics>, control: LoopHandle) -> Self {
        Self {
            addr,
            metrics,
            control,
        }
    }

    pub(crate) async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let listener = TcpListener::bind(self.addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", self.addr))?;
        info!(addr = %self.addr, "health and metrics listening");
        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state((self.metrics, self.control));
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await?;
        Ok(())
    }
}

fn json(health: &daemon::Health) -> impl IntoResponse + use<> {
    (
        StatusCode::from_u16(health.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        [("content-type", "application/json")],
        health.to_json(),
    )
}

/// 200 while the control loop answers.
async fn healthz(State((_, control)): State<(Arc<AgentMetrics>, LoopHandle)>) -> impl IntoResponse {
    use daemon::Check;
    let check = match control.query(Query::Status).await {
        Some(Answer::Status(_)) => Check::ok("answering"),
        _ => Check::failed("the control loop stopped"),
    };
    json(&daemon::Health::liveness([("control-loop", check)]))
}

/// 200 once every source finished its initial sync (or the sync timeout
/// passed and the agent works with what it has).
async fn readyz(State((_, control)): State<(Arc<AgentMetrics>, LoopHandle)>) -> impl IntoResponse {
    use daemon::Check;
    let checks = match control.query(Query::Status).await {
        Some(Answer::Status(s)) => {
            let sync = if s.synced {
                Check::ok("every source synced")
            } else if s.sync_timed_out {
                Check::ok("sync timeout passed; programming from a partial view")
            } else {
                Check::failed("waiting for the initial sync")
            };
            vec![("control-loop", Check::ok("answering")), ("sync", sync)]
        }
        _ => vec![("control-loop", Check::failed("the control loop stopped"))],
    };
    json(&daemon::Health::readiness(checks))
}

async fn metrics(State((metrics, _)): State<(Arc<AgentMetrics>, LoopHandle)>) -> impl IntoResponse {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}
