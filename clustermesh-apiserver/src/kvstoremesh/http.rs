use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::status::StatusBoard;

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

fn json(health: &daemon::Health) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    (
        StatusCode::from_u16(health.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        [(header::CONTENT_TYPE, "application/json")],
        health.to_json(),
    )
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
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            "encoding the metrics failed\n".to_owned(),
        ),
    }
}
