//! `/healthz` and Prometheus `/metrics` over TCP.

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
            .route("/metrics", get(metrics))
            .with_state((self.metrics, self.control));
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await?;
        Ok(())
    }
}

async fn healthz(State((_, control)): State<(Arc<AgentMetrics>, LoopHandle)>) -> impl IntoResponse {
    match control.query(Query::Status).await {
        Some(Answer::Status(s)) if s.synced => (StatusCode::OK, "ok\n".to_string()),
        Some(Answer::Status(_)) => (
            StatusCode::OK,
            "ok (waiting for the initial sync)\n".to_string(),
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "control loop stopped\n".to_string(),
        ),
    }
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
