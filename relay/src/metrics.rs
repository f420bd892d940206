//! The relay's Prometheus metrics and the HTTP server that exposes them.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::ConnectionStatus;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

/// The relay's metrics: `hubble_relay_pool_peer_connection_status{status}`
/// (peers in each connection status, as Cilium's relay exports it), plus
/// `clustermesh_build_info` and the `process_*` metrics. Clones share them.
#[derive(Clone)]
pub struct RelayMetrics {
    registry: Arc<Mutex<Registry>>,
    peer_status: Family<StatusLabels, Gauge>,
}

impl std::fmt::Debug for RelayMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayMetrics")
    }
}

impl Default for RelayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl RelayMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        daemon::register_process_metrics(
            &mut registry,
            "clustermesh-relay",
            env!("CARGO_PKG_VERSION"),
        );
        let peer_status = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "hubble_relay_pool_peer_connection_status",
            "Peers of the relay's pool in each connection status",
            peer_status.clone(),
        );
        let metrics = Self {
            registry: Arc::new(Mutex::new(registry)),
            peer_status,
        };
        metrics.set_peer_statuses(&BTreeMap::new());
        metrics
    }

    /// Sets every status's gauge (those not in `counts` to zero).
    pub fn set_peer_statuses(&self, counts: &BTreeMap<ConnectionStatus, usize>) {
        for status in ConnectionStatus::ALL {
            let n = counts.get(&status).copied().unwrap_or(0);
            self.peer_status
                .get_or_create(&StatusLabels {
                    status: status.as_str(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        encode(&mut text, &registry).expect("writing to a String cannot fail");
        text
    }
}

/// Serves `/metrics` on `listener` until `shutdown`.
pub(crate) async fn serve_metrics(
    listener: TcpListener,
    metrics: RelayMetrics,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .with_state(metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn metrics_text(State(metrics): State<RelayMetrics>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_is_exported() {
        let metrics = RelayMetrics::new();
        metrics.set_peer_statuses(&BTreeMap::from([
            (ConnectionStatus::Ready, 3),
            (ConnectionStatus::TransientFailure, 1),
        ]));
        let text = metrics.encode();
        for line in [
            "hubble_relay_pool_peer_connection_status{status=\"READY\"} 3",
            "hubble_relay_pool_peer_connection_status{status=\"TRANSIENT_FAILURE\"} 1",
            "hubble_relay_pool_peer_connection_status{status=\"NIL_CONNECTION\"} 0",
            "hubble_relay_pool_peer_connection_status{status=\"IDLE\"} 0",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
