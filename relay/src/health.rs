//! The relay's gRPC health: serving when it can relay.

use std::time::Duration;

use hubble::names::OBSERVER_HEALTH_SERVICE;
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::info;

use crate::PeerPool;

/// Keeps `reporter` at SERVING for `""` and `hubble.server.Observer` while
/// the relay follows the Peer service and at least one peer is available,
/// NOT_SERVING otherwise (Cilium's relay `health.go`). Re-checked on every
/// change of the pool and every `interval` (a connection that died is
/// unavailable at once, before the pool hears of it).
pub(crate) async fn report_health(
    pool: PeerPool,
    reporter: HealthReporter,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut changes = pool.subscribe();
    let mut last = None;
    loop {
        let serving = pool.is_serving();
        if last != Some(serving) {
            let status = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            let state = pool.state();
            info!(
                ?status,
                peer_service_connected = state.peer_service_connected,
                peers = state.peers.len(),
                available = state.peers.values().filter(|p| p.is_available()).count(),
                "relay health"
            );
            for service in ["", OBSERVER_HEALTH_SERVICE] {
                reporter.set_service_status(service, status).await;
            }
            last = Some(serving);
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = changes.changed() => if changed.is_err() { break },
            () = tokio::time::sleep(interval) => {}
        }
    }
    for service in ["", OBSERVER_HEALTH_SERVICE] {
        reporter
            .set_service_status(service, ServingStatus::NotServing)
            .await;
    }
}
