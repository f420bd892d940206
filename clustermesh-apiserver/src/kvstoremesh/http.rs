use std::sync::Arc;

use axum::{Json, Router, extract::State, response::IntoResponse, routing::get};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::status::StatusBoard;
use crate::health_server::{encode_metrics, json};

/// kvstoremesh's plain HTTP:
///
/// - `/healthz`: 200 while the process runs;
/// - `/readyz`: 200 once every remote present at start is mirrored (or
///   timed out), 503 with the remotes waited for otherwise (the JSON body
///   every daemon uses, [`daemon::Health`]);
/// - `/metrics`: Prometheus text format;
/// - `/status`: [`super::KvstoremeshStatus`] as JSON.
pub(super) struct HttpServer {
    pub(super) listener: TcpListener,
    pub(super) board: StatusBoard,
    pub(super) registry: Registry,
}

struct HttpState {
    board: StatusBoard,
    registry: Registry,
}

impl HttpServer {
    pub(super) async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let state = Arc::new(HttpState {
            board: self.board,
            registry: self.registry,
        });
        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/status", get(status))
            .with_state(state);
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }
}

async fn healthz() -> impl IntoResponse {
    json(&daemon::Health::liveness([(
        "process",
        daemon::Check::ok("running"),
    )]))
}

async fn readyz(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    let check = if state.board.is_ready() {
        daemon::Check::ok("every remote present at start is mirrored, or timed out")
    } else {
        daemon::Check::failed(state.board.pending())
    };
    json(&daemon::Health::readiness([("remotes", check)]))
}

async fn status(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    Json(state.board.snapshot())
}

async fn metrics(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    encode_metrics(&state.registry)
}
