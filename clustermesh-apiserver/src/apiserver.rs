use std::{fmt, io, net::SocketAddr, sync::Arc, time::Duration};

use certs::{ServerTls, TlsMetrics};
use etcd_client::proto::{PbLeaseServer, PbMaintenanceServer};
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, sync::mpsc};
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::Server;
use tracing::{info, warn};

use certs::TlsListener;

use crate::{
    access_guard::AccessGuard,
    authorizer::Authorizer,
    cluster_config_publisher::{ClusterConfigPublisher, PublisherStatus},
    config::Config,
    health_server::HealthServer,
    kv_service::KvRouter,
    lease_service::LeaseService,
    lock_service::LockService,
    maintenance_service::MaintenanceService,
    metrics::Metrics,
    spawn::spawn_logged,
    upstream::{Upstream, UpstreamError},
    watch_hub::WatchHub,
    watch_service::WatchService,
};

/// Label of the server certificate in the TLS expiry metrics.
const TLS_ROLE: &str = "apiserver-server";

/// Authenticated connections waiting for the gRPC server to take them. The
/// server takes each at once; the queue only absorbs a burst of completed
/// handshakes (every agent of a cluster reconnecting after a restart), and
/// when it is full the handshakes wait rather than pile up.
const ACCEPTED_QUEUE: usize = 64;

/// How often an idle client connection is pinged, and how long it has to
/// answer: a remote agent that vanished without closing its connection (its
/// node died, the network was cut) is noticed within 40 s and its watches
/// are freed, for one small frame per connection every 30 s.
const CLIENT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const CLIENT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Streams one client connection may have open at once. A remote agent
/// uses a few, the fan-out benchmark 50; the bound only stops one
/// connection from holding unbounded server state.
const MAX_STREAMS_PER_CONNECTION: u32 = 10_000;

/// Why the apiserver could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApiserverError {
    #[error("loading the TLS files failed")]
    LoadTls(#[source] certs::LoadError),
    #[error("invalid etcd configuration")]
    Upstream(#[source] UpstreamError),
    #[error("invalid etcd configuration")]
    EtcdClient(#[source] kvstore::Error),
    #[error("binding {addr} failed")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("serving the etcd API failed")]
    Serve(#[source] tonic::transport::Error),
}

impl ApiserverError {
    /// Whether the configuration is at fault (bad files or flags), as
    /// opposed to the environment.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Self::LoadTls(_) | Self::Upstream(_) | Self::EtcdClient(_)
        )
    }
}

/// The whole apiserver: the mutual-TLS etcd API (KV, Watch with fan-out,
/// Lease, Lock, Maintenance status), the cluster config publisher, the
/// health and metrics server, and the certificate reloader.
///
/// [`Apiserver::bind`] validates the configuration, loads the certificates
/// and binds both listeners (so a bad file or a taken port fails before
/// anything runs, and tests can bind port 0 and read the address);
/// [`Apiserver::run`] serves until shutdown.
pub struct Apiserver {
    config: Config,
    tls: ServerTls,
    listener: TlsListener,
    health: HealthServer,
    publisher: ClusterConfigPublisher,
    publisher_status: PublisherStatus,
    upstream: Upstream,
    hub: Arc<WatchHub>,
    metrics: Metrics,
    local_addr: SocketAddr,
    health_addr: SocketAddr,
}

impl fmt::Debug for Apiserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Apiserver")
            .field("cluster", &self.config.cluster_name)
            .field("local_addr", &self.local_addr)
            .field("health_addr", &self.health_addr)
            .finish_non_exhaustive()
    }
}

impl Apiserver {
    /// How long open streams get to end after shutdown before their
    /// connections are closed.
    pub const DRAIN_GRACE: Duration = Duration::from_secs(5);

    pub async fn bind(config: Config) -> Result<Self, ApiserverError> {
        let mut tls_config = config.tls_reload.clone();
        // grpc-go clients (etcdctl, Cilium) refuse a server without h2.
        tls_config.alpn_protocols = vec![b"h2".to_vec()];
        let tls =
            ServerTls::load(config.tls.clone(), tls_config).map_err(ApiserverError::LoadTls)?;

        let mut registry = Registry::default();
        daemon::register_process_metrics(
            &mut registry,
            "clustermesh-apiserver",
            env!("CARGO_PKG_VERSION"),
        );
        let metrics = Metrics::register(&mut registry);
        let tls_metrics = TlsMetrics::new();
        tls_metrics.register(&mut registry);
        tls_metrics.track(TLS_ROLE, &tls.handle());

        let upstream = Upstream::new(&config.etcd).map_err(ApiserverError::Upstream)?;
        let client = kvstore::Client::connect_lazy(&config.etcd)
            .await
            .map_err(ApiserverError::EtcdClient)?;
        let (publisher, publisher_status) = ClusterConfigPublisher::new(
            client,
            &config.cluster_name,
            config.cluster_id,
            config.max_connected_clusters,
            kvstore::DEFAULT_SESSION_TTL,
        );

        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ApiserverError::Bind { addr, source })
        };
        let tcp = bind(config.listen).await?;
        let local_addr = tcp.local_addr().map_err(|source| ApiserverError::Bind {
            addr: config.listen,
            source,
        })?;
        let listener = TlsListener::new(tcp, tls.acceptor(), config.handshake_timeout, {
            let metrics = metrics.clone();
            Arc::new(move |reason| metrics.tls_handshake_failed(reason))
        });
        let health_tcp = bind(config.health_listen).await?;
        let health_addr = health_tcp
            .local_addr()
            .map_err(|source| ApiserverError::Bind {
                addr: config.health_listen,
                source,
            })?;
        let health = HealthServer::new(
            health_tcp,
            upstream.clone(),
            publisher_status.clone(),
            registry,
        );
        let hub = WatchHub::new(upstream.clone(), config.watch.clone(), metrics.clone());
        Ok(Self {
            config,
            tls,
            listener,
            health,
            publisher,
            publisher_status,
            upstream,
            hub,
            metrics,
            local_addr,
            health_addr,
        })
    }

    /// Where the etcd API listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `/healthz`, `/readyz` and `/metrics` listen.
    pub fn health_addr(&self) -> SocketAddr {
        self.health_addr
    }

    /// Whether the cluster config is published.
    pub fn publisher_status(&self) -> PublisherStatus {
        self.publisher_status.clone()
    }

    /// The watch fan-out (for its statistics).
    pub fn watch_hub(&self) -> Arc<WatchHub> {
        self.hub.clone()
    }

    /// Serves until `shutdown`; then watch streams end with etcd's "server
    /// stopped", connections get [`Apiserver::DRAIN_GRACE`] to drain, and
    /// every task is awaited.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ApiserverError> {
        let Self {
            config,
            tls,
            listener,
            health,
            publisher,
            publisher_status,
            upstream,
            hub,
            metrics,
            local_addr,
            health_addr,
        } = self;
        // A child, so that a server failing on its own stops the other tasks
        // without touching the caller's token.
        let shutdown = shutdown.child_token();
        let tasks = TaskTracker::new();
        // The reloader's handle must outlive the metrics that read it.
        let tls_handle = tls.handle();
        spawn_logged(
            &tasks,
            "watching the TLS files failed; certificates will not be reloaded",
            tls.run(shutdown.clone()),
        );
        let (accepted, incoming) = mpsc::channel(ACCEPTED_QUEUE);
        tasks.spawn(listener.run(accepted, shutdown.clone()));
        spawn_logged(
            &tasks,
            "publishing the cluster config stopped",
            publisher.run(shutdown.clone()),
        );
        spawn_logged(
            &tasks,
            "the health and metrics server stopped",
            health.run(shutdown.clone()),
        );
        tasks.spawn(hub.clone().run(shutdown.clone()));
        tasks.spawn(relist_on_lost_lease(
            publisher_status.session_changes(),
            hub.clone(),
            shutdown.clone(),
        ));

        let authorizer = Arc::new(Authorizer::new(config.cluster_name.clone()));
        let (counted_authorizer, connection_metrics) = (authorizer.clone(), metrics.clone());
        let guard = AccessGuard::new(authorizer.clone(), metrics.clone());
        let watch = WatchService::new(hub, authorizer, metrics, tasks.clone(), shutdown.clone());
        info!(
            cluster = %config.cluster_name,
            cluster_id = config.cluster_id.get(),
            %local_addr,
            %health_addr,
            etcd = upstream.endpoints(),
            "clustermesh-apiserver serving"
        );
        let server = Server::builder()
            .http2_keepalive_interval(Some(CLIENT_KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(CLIENT_KEEPALIVE_TIMEOUT))
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
            .add_service(KvRouter::new(guard.clone(), upstream.clone()))
            .add_service(watch)
            .add_service(PbLeaseServer::new(LeaseService::new(
                guard.clone(),
                upstream.clone(),
            )))
            .add_service(PbMaintenanceServer::new(MaintenanceService::new(
                guard.clone(),
                upstream.clone(),
            )))
            .add_service(LockService::new(guard, upstream))
            .serve_with_incoming_shutdown(
                ReceiverStream::new(incoming).map(move |accepted| {
                    accepted.map(|stream| {
                        let common_name = stream.info().common_name.clone();
                        let role = counted_authorizer.role(&common_name);
                        let guard = connection_metrics.connection_opened(&role, &common_name);
                        stream.with_guard(guard)
                    })
                }),
                shutdown.clone().cancelled_owned(),
            );
        let drained = async {
            shutdown.cancelled().await;
            tokio::time::sleep(Self::DRAIN_GRACE).await;
        };
        let result = tokio::select! {
            result = server => result.map_err(ApiserverError::Serve),
            () = drained => {
                warn!(grace = ?Self::DRAIN_GRACE, "connections did not drain in time; closing them");
                Ok(())
            }
        };
        // Stop what is still running if the server failed on its own.
        shutdown.cancel();
        tasks.close();
        tasks.wait().await;
        drop(tls_handle);
        result
    }
}

/// The apiserver's session lease was lost and replaced: etcd may have lost
/// its data (wiped and restarted with the same cluster ID, when revisions
/// cannot tell). Every watcher is told to list again, so that no remote
/// agent keeps a history that is gone.
async fn relist_on_lost_lease(
    mut session: tokio::sync::watch::Receiver<kvstore::SessionState>,
    hub: Arc<WatchHub>,
    shutdown: CancellationToken,
) {
    let mut generation = session.borrow_and_update().generation;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = session.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let state = *session.borrow_and_update();
        if state.lease.is_some() && state.generation != generation {
            if generation > 0 {
                tracing::warn!(
                    generation = state.generation,
                    "the apiserver's session lease was lost; watchers list again"
                );
                hub.data_lost();
            }
            generation = state.generation;
        }
    }
}
