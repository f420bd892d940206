use std::{fmt, io, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{cluster_config_publisher::PublisherStatus, upstream::Upstream};

/// How long `/readyz` waits for etcd to answer.
const ETCD_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the health server stopped.
#[derive(Debug, thiserror::Error)]
pub enum HealthServerError {
    #[error("serving health and metrics failed")]
    Serve(#[source] io::Error),
}

/// Plain HTTP for probes and scrapers:
///
/// - `/healthz`: 200 while the process serves.
/// - `/readyz`: 200 when etcd answers and the cluster config is published;
///   both answer with the JSON body every daemon uses ([`daemon::Health`]);
///   503 with the reason otherwise.
/// - `/metrics`: Prometheus text format.
pub struct HealthServer {
    listener: TcpListener,
    state: Arc<HealthState>,
}

struct HealthState {
    upstream: Upstream,
    publisher: PublisherStatus,
    registry: Registry,
}

impl fmt::Debug for HealthServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthServer")
            .field("addr", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl HealthServer {
    pub fn new(
        listener: TcpListener,
        upstream: Upstream,
        publisher: PublisherStatus,
        registry: Registry,
    ) -> Self {
        Self {
            listener,
            state: Arc::new(HealthState {
                upstream,
                publisher,
                registry,
            }),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), HealthServerError> {
        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(self.state);
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(HealthServerError::Serve)
    }
}

/// A health answer: the JSON body every daemon uses, with its status code.
pub(crate) fn json(
    health: &daemon::Health,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    (
        StatusCode::from_u16(health.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        [(header::CONTENT_TYPE, "application/json")],
        health.to_json(),
    )
}

async fn healthz() -> impl IntoResponse {
    json(&daemon::Health::liveness([(
        "process",
        daemon::Check::ok("serving"),
    )]))
}

async fn readyz(State(state): State<Arc<HealthState>>) -> impl IntoResponse {
    use daemon::Check;
    let etcd = match tokio::time::timeout(ETCD_CHECK_TIMEOUT, state.upstream.status()).await {
        Ok(Ok(_)) => Check::ok(format!("etcd at {} answers", state.upstream.endpoints())),
        Ok(Err(status)) => Check::failed(format!(
            "etcd at {} does not answer: {}",
            state.upstream.endpoints(),
            status.message()
        )),
        Err(_) => Check::failed(format!(
            "etcd at {} did not answer within {ETCD_CHECK_TIMEOUT:?}",
            state.upstream.endpoints()
        )),
    };
    let config = if state.publisher.is_published() {
        Check::ok("published")
    } else {
        Check::failed(state.publisher.describe())
    };
    json(&daemon::Health::readiness([
        ("etcd", etcd),
        ("cluster-config", config),
    ]))
}

async fn metrics(State(state): State<Arc<HealthState>>) -> impl IntoResponse {
    encode_metrics(&state.registry)
}

/// `registry` in the Prometheus (OpenMetrics) text format.
pub(crate) fn encode_metrics(
    registry: &Registry,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
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
