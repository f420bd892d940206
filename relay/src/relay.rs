//! The relay as one component: pool, Observer, health, metrics, listeners.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use hubble_api::observer::observer_server::ObserverServer;
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::Server;
use tonic_health::{
    ServingStatus,
    pb::health_server::HealthServer,
    server::{HealthReporter, HealthService},
};
use tracing::{debug, info, warn};

use crate::{
    Dialer, PeerManager, PeerPool, RelayConfig, RelayMetrics, RelayObserver, error_chain,
    health::report_health, metrics::serve_metrics,
};

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the relay could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(
        "cannot load the client TLS files (--tls-client-cert-file, --tls-client-key-file, --tls-hubble-server-ca-files)"
    )]
    LoadClientTls(#[source] certs::LoadError),
    #[error(
        "cannot load the server TLS files (--tls-server-cert-file, --tls-server-key-file, --tls-client-ca-files)"
    )]
    LoadServerTls(#[source] certs::LoadError),
    #[error("cannot listen on {addr} ({what})")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("the {what} server failed")]
    Serve {
        what: &'static str,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the metrics server failed")]
    Metrics(#[source] io::Error),
}

/// The addresses the relay listens on (the real ports when 0 was asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundAddrs {
    pub grpc: SocketAddr,
    pub health: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

/// What the owner of a running relay can see: its addresses and its pool.
#[derive(Debug, Clone)]
pub struct RelayHandle {
    bound: watch::Receiver<Option<BoundAddrs>>,
    pool: PeerPool,
    metrics: RelayMetrics,
}

impl RelayHandle {
    /// The addresses, once bound (`None` if the relay stopped before).
    pub async fn bound(&self) -> Option<BoundAddrs> {
        let mut rx = self.bound.clone();
        rx.wait_for(Option::is_some).await.ok().and_then(|a| *a)
    }

    pub fn pool(&self) -> &PeerPool {
        &self.pool
    }

    pub fn metrics(&self) -> &RelayMetrics {
        &self.metrics
    }
}

/// Hubble Relay: a [`PeerManager`] following the Peer service, a
/// [`RelayObserver`] over its pool with gRPC health on `listen` (mutual TLS
/// when configured), gRPC health alone on `health_listen`, `/metrics` on
/// `metrics_listen`.
pub struct Relay {
    config: RelayConfig,
    client_tls: Option<certs::ClientTls>,
    server_tls: Option<certs::ServerTls>,
    metrics: RelayMetrics,
    manager: PeerManager,
    pool: PeerPool,
    bound: watch::Sender<Option<BoundAddrs>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// Loads and checks the TLS files; nothing listens or dials yet.
    pub fn new(config: RelayConfig) -> Result<(Self, RelayHandle), RelayError> {
        let client_tls = config
            .client_tls
            .clone()
            .map(|files| certs::ClientTls::load(files, config.tls_reload.clone()))
            .transpose()
            .map_err(RelayError::LoadClientTls)?;
        let server_tls = config
            .server_tls
            .clone()
            .map(|files| certs::ServerTls::load(files, config.tls_reload.clone()))
            .transpose()
            .map_err(RelayError::LoadServerTls)?;
        let mut dialer = Dialer::new(client_tls.as_ref());
        dialer.connect_timeout = config.dial_timeout;
        dialer.keepalive_interval = config.keepalive_interval;
        dialer.keepalive_timeout = config.keepalive_timeout;
        let metrics = RelayMetrics::new();
        let (manager, pool) = PeerManager::new(config.pool.clone(), dialer, metrics.clone());
        let (bound, bound_rx) = watch::channel(None);
        let handle = RelayHandle {
            bound: bound_rx,
            pool: pool.clone(),
            metrics: metrics.clone(),
        };
        Ok((
            Self {
                config,
                client_tls,
                server_tls,
                metrics,
                manager,
                pool,
                bound,
            },
            handle,
        ))
    }

    /// Listens, follows the Peer service and serves until `shutdown` (or
    /// until a server fails), then stops every part and waits for them.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RelayError> {
        let grpc = bind("gRPC", self.config.listen).await?;
        let health = match self.config.health_listen {
            Some(addr) => Some(bind("health", addr).await?),
            None => None,
        };
        let metrics_listener = match self.config.metrics_listen {
            Some(addr) => Some(bind("metrics", addr).await?),
            None => None,
        };
        let addrs = BoundAddrs {
            grpc: local_addr("gRPC", &grpc, self.config.listen)?,
            health: match (&health, self.config.health_listen) {
                (Some(l), Some(asked)) => Some(local_addr("health", l, asked)?),
                _ => None,
            },
            metrics: match (&metrics_listener, self.config.metrics_listen) {
                (Some(l), Some(asked)) => Some(local_addr("metrics", l, asked)?),
                _ => None,
            },
        };
        info!(
            grpc = %addrs.grpc,
            tls = self.server_tls.is_some(),
            health = ?addrs.health,
            metrics = ?addrs.metrics,
            peer_service = %self.config.pool.peer_service,
            "hubble relay listening"
        );
        self.bound.send_replace(Some(addrs));

        let token = shutdown.child_token();
        let streams = TaskTracker::new();
        let mut tasks: JoinSet<Result<(), RelayError>> = JoinSet::new();

        let reporter = HealthReporter::new();
        for service in ["", hubble::names::OBSERVER_HEALTH_SERVICE] {
            reporter
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
        let health_service =
            || HealthServer::new(HealthService::from_health_reporter(reporter.clone()));

        tasks.spawn({
            let token = token.clone();
            async move {
                self.manager.run(token).await;
                Ok(())
            }
        });
        tasks.spawn({
            let (pool, reporter, token) = (self.pool.clone(), reporter.clone(), token.clone());
            let interval = self.config.health_check_interval;
            async move {
                report_health(pool, reporter, interval, token).await;
                Ok(())
            }
        });
        if let Some(tls) = self.client_tls {
            tasks.spawn(reload_tls("client", tls.run(token.clone())));
        }

        let observer = RelayObserver::new(
            self.pool.clone(),
            self.config.observer.clone(),
            streams.clone(),
            token.clone(),
        );
        let router = Server::builder()
            .add_service(ObserverServer::new(observer))
            .add_service(health_service());
        match self.server_tls {
            Some(tls) => {
                let (accepted, incoming) = tokio::sync::mpsc::channel(64);
                let listener = certs::TlsListener::new(
                    grpc,
                    tls.acceptor(),
                    HANDSHAKE_TIMEOUT,
                    Arc::new(|reason| debug!(reason, "TLS handshake with a client failed")),
                );
                tasks.spawn({
                    let token = token.clone();
                    async move {
                        listener.run(accepted, token).await;
                        Ok(())
                    }
                });
                tasks.spawn(reload_tls("server", tls.run(token.clone())));
                let serve = router.serve_with_incoming_shutdown(
                    ReceiverStream::new(incoming),
                    token.clone().cancelled_owned(),
                );
                tasks.spawn(async move {
                    serve.await.map_err(|source| RelayError::Serve {
                        what: "gRPC",
                        source,
                    })
                });
            }
            None => {
                let serve = router.serve_with_incoming_shutdown(
                    TcpListenerStream::new(grpc),
                    token.clone().cancelled_owned(),
                );
                tasks.spawn(async move {
                    serve.await.map_err(|source| RelayError::Serve {
                        what: "gRPC",
                        source,
                    })
                });
            }
        }
        if let Some(listener) = health {
            let serve = Server::builder()
                .add_service(health_service())
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    token.clone().cancelled_owned(),
                );
            tasks.spawn(async move {
                serve.await.map_err(|source| RelayError::Serve {
                    what: "health",
                    source,
                })
            });
        }
        if let Some(listener) = metrics_listener {
            let (metrics, token) = (self.metrics.clone(), token.clone());
            tasks.spawn(async move {
                serve_metrics(listener, metrics, token)
                    .await
                    .map_err(RelayError::Metrics)
            });
        }

        let mut result = Ok(());
        tokio::select! {
            () = shutdown.cancelled() => {}
            Some(done) = tasks.join_next() => {
                if let Ok(Err(e)) = done {
                    result = Err(e);
                }
            }
        }
        token.cancel();
        streams.close();
        while let Some(done) = tasks.join_next().await {
            if let Ok(Err(e)) = done
                && result.is_ok()
            {
                result = Err(e);
            }
        }
        streams.wait().await;
        info!("hubble relay stopped");
        result
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, RelayError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RelayError::Bind { what, addr, source })
}

fn local_addr(
    what: &'static str,
    listener: &TcpListener,
    asked: SocketAddr,
) -> Result<SocketAddr, RelayError> {
    listener.local_addr().map_err(|source| RelayError::Bind {
        what,
        addr: asked,
        source,
    })
}

/// Reloads TLS files until the token fires; a watch that cannot be set up
/// is logged (the loaded files keep working, only rotation is lost).
async fn reload_tls(
    role: &'static str,
    run: impl Future<Output = Result<(), certs::WatchError>>,
) -> Result<(), RelayError> {
    if let Err(e) = run.await {
        warn!(role, error = %error_chain(&e), "cannot watch the TLS files; certificate rotation needs a restart");
    }
    Ok(())
}
