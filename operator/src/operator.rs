use std::{fmt, net::SocketAddr};

use kvstore::{
    Client, IdentityCache, IdentityCacheRunner, IdentityGcConfig, IdentityRange, Session,
    SessionHandle,
};
use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    config::OperatorConfig,
    error_chain,
    health_server::{HealthServer, HealthServerError},
    heartbeat::Heartbeat,
    identity_collector::IdentityCollector,
    ipam_reconciler::IpamReconciler,
    leader_election::{
        Election, LeaderElection, LeaderElectionConfig, LeaderElectionError, LeaderHandle,
    },
    metrics::OperatorMetrics,
    service_exporter::ServiceExporter,
};

/// Why the operator could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("set up the etcd client")]
    Client(#[source] kvstore::Error),
    #[error("etcd session")]
    Session(#[source] kvstore::Error),
    #[error("identity cache")]
    IdentityCache(#[source] kvstore::Error),
    #[error("leader election")]
    LeaderElection(#[source] LeaderElectionError),
    #[error("health server")]
    HealthServer(#[source] HealthServerError),
}

/// The operator of one cluster: campaigns for leadership and, while it
/// leads, runs the identity garbage collector, the heartbeat and (when
/// configured) pod CIDR IPAM; always serves `/healthz` and `/metrics`.
///
/// Build with [`Operator::new`], run with [`Operator::run`]; watch it through
/// the [`OperatorHandle`].
pub struct Operator {
    config: OperatorConfig,
    client: Client,
    session: Session,
    identities: IdentityCacheRunner,
    election: Election,
    health: HealthServer,
    handle: OperatorHandle,
}

impl fmt::Debug for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Read side of a running [`Operator`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct OperatorHandle {
    leader: LeaderHandle,
    session: SessionHandle,
    identities: IdentityCache,
    metrics: OperatorMetrics,
    health_addr: watch::Receiver<Option<SocketAddr>>,
}

impl OperatorHandle {
    /// Whether this instance leads right now.
    pub fn is_leader(&self) -> bool {
        self.leader.is_leader()
    }

    pub fn leader(&self) -> &LeaderHandle {
        &self.leader
    }

    pub fn session(&self) -> &SessionHandle {
        &self.session
    }

    /// The local cluster's identities, as the operator sees them.
    pub fn identities(&self) -> &IdentityCache {
        &self.identities
    }

    pub fn metrics(&self) -> &OperatorMetrics {
        &self.metrics
    }

    /// The address `/healthz` and `/metrics` are served on, once bound;
    /// `None` if the server stopped before binding.
    pub async fn health_addr(&self) -> Option<SocketAddr> {
        let mut rx = self.health_addr.clone();
        rx.wait_for(Option::is_some).await.ok().and_then(|a| *a)
    }
}

/// What a term of leadership runs.
struct Duties {
    client: Client,
    session: SessionHandle,
    config: OperatorConfig,
    metrics: OperatorMetrics,
}

impl Operator {
    /// Validates `config` and builds the components; connects to nothing yet.
    pub async fn new(config: OperatorConfig) -> Result<(Self, OperatorHandle), OperatorError> {
        let client = Client::connect_lazy(&config.etcd)
            .await
            .map_err(OperatorError::Client)?;
        let (session, session_handle) = Session::new(client.clone(), config.session_ttl);
        let (identities, identities_runner) = IdentityCache::local(client.clone());
        let range = IdentityRange::allocation(config.cluster_id, config.max_connected_clusters);
        let metrics = OperatorMetrics::new(identities.clone(), range);
        let (election, leader) = LeaderElection::new(
            client.clone(),
            session_handle.clone(),
            LeaderElectionConfig::new(config.id.clone(), config.session_ttl),
            metrics.clone(),
        );
        let election = Election::Etcd(Box::new(election));
        let (health, health_addr) = HealthServer::new(
            config.health_listen,
            config.cluster_name.clone(),
            leader.clone(),
            session_handle.clone(),
            identities.clone(),
            metrics.clone(),
        );
        let handle = OperatorHandle {
            leader,
            session: session_handle,
            identities,
            metrics,
            health_addr,
        };
        Ok((
            Self {
                config,
                client,
                session,
                identities: identities_runner,
                election,
                health,
                handle: handle.clone(),
            },
            handle,
        ))
    }

    /// Runs until `shutdown`, then stops the duties, resigns the leadership
    /// and ends the session (whose lease is left to expire, so the heartbeat
    /// stays until a new leader rewrites it). Returns early with an error if
    /// a component fails for good (e.g. the health address is taken).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), OperatorError> {
        let stop = shutdown.child_token();
        let session_stop = CancellationToken::new();
        info!(
            id = %self.config.id,
            cluster = %self.config.cluster_name,
            cluster_id = %self.config.cluster_id,
            etcd = %self.client.endpoints(),
            ipam = self.config.ipam.is_some(),
            "operator starting"
        );
        let mut background: JoinSet<Result<(), OperatorError>> = JoinSet::new();
        background.spawn(
            self.session
                .run(session_stop.clone())
                .map_err_into(OperatorError::Session),
        );
        background.spawn(
            self.identities
                .run(stop.clone())
                .map_err_into(OperatorError::IdentityCache),
        );
        background.spawn(
            self.health
                .run(stop.clone())
                .map_err_into(OperatorError::HealthServer),
        );
        let duties = Duties {
            client: self.client.clone(),
            session: self.handle.session.clone(),
            config: self.config.clone(),
            metrics: self.handle.metrics.clone(),
        };
        let election = self.election.run(stop.clone());
        let lead = duties.run(self.handle.leader.clone(), stop.clone());
        let foreground = async { tokio::join!(election, lead).0 };
        tokio::pin!(foreground);

        let mut result = Ok(());
        let election_result = loop {
            tokio::select! {
                r = &mut foreground => break r,
                Some(done) = background.join_next() => {
                    if let Some(e) = failure(done) {
                        error!(error = %error_chain(&e), "operator component failed; stopping");
                        result = Err(e);
                        stop.cancel();
                    }
                }
            }
        };
        if let Err(e) = election_result {
            result = result.and(Err(OperatorError::LeaderElection(e)));
        }
        // The election resigned after the duties drained; the session goes last.
        stop.cancel();
        session_stop.cancel();
        while let Some(done) = background.join_next().await {
            if let Some(e) = failure(done) {
                result = result.and(Err(e));
            }
        }
        info!("operator stopped");
        result
    }
}

impl Duties {
    /// For every term of leadership: runs the duties with the term's token,
    /// waits for the term to end and for the duties to stop, then drops the
    /// term (which lets the election resign).
    async fn run(self, mut leader: LeaderHandle, shutdown: CancellationToken) {
        loop {
            let term = tokio::select! {
                _ = shutdown.cancelled() => return,
                t = leader.next_term() => match t {
                    Some(t) => t,
                    None => return,
                },
            };
            let token = term.token();
            let mut tasks: JoinSet<(&'static str, Result<(), String>)> = JoinSet::new();
            let c = &self.config;
            let heartbeat = Heartbeat::new(
                self.client.clone(),
                term.lease(),
                c.heartbeat_interval,
                self.metrics.clone(),
            );
            let t = token.clone();
            tasks.spawn(async move {
                (
                    "heartbeat",
                    heartbeat.run(t).await.map_err(|e| error_chain(&e)),
                )
            });
            let mut gc_config = IdentityGcConfig::new(IdentityRange::allocation(
                c.cluster_id,
                c.max_connected_clusters,
            ));
            gc_config.max_deletions_per_minute = c.identity_gc_rate_limit;
            let gc = IdentityCollector::new(
                self.client.clone(),
                gc_config,
                c.identity_gc_interval,
                self.metrics.clone(),
            );
            let t = token.clone();
            tasks.spawn(
                async move { ("identity GC", gc.run(t).await.map_err(|e| error_chain(&e))) },
            );
            let exporter = ServiceExporter::new(
                self.client.clone(),
                self.session.clone(),
                c.cluster_name.clone(),
                c.cluster_id,
            );
            let t = token.clone();
            tasks.spawn(async move {
                (
                    "service export",
                    exporter.run(t).await.map_err(|e| error_chain(&e)),
                )
            });
            if let Some(ipam) = &c.ipam {
                let reconciler = IpamReconciler::new(
                    self.client.clone(),
                    c.cluster_name.clone(),
                    ipam.clone(),
                    self.metrics.clone(),
                );
                let t = token.clone();
                tasks.spawn(async move {
                    ("IPAM", reconciler.run(t).await.map_err(|e| error_chain(&e)))
                });
            }
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    Some(done) = tasks.join_next() => log_duty_end(done, false),
                }
            }
            while let Some(done) = tasks.join_next().await {
                log_duty_end(done, true);
            }
            drop(term);
        }
    }
}

fn log_duty_end(
    done: Result<(&'static str, Result<(), String>), tokio::task::JoinError>,
    term_over: bool,
) {
    match done {
        Ok((duty, Err(e))) => {
            error!(duty, error = %e, "leader duty failed; it stays off until the next term")
        }
        Ok((duty, Ok(()))) if !term_over => warn!(duty, "leader duty ended before the term"),
        Ok(_) => {}
        Err(e) => error!(error = %e, "leader duty panicked"),
    }
}

fn failure(
    done: Result<Result<(), OperatorError>, tokio::task::JoinError>,
) -> Option<OperatorError> {
    match done {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

/// `.map_err` for futures of results, to spawn components that fail with
/// their own error type.
trait MapErrInto<E>: Future<Output = Result<(), E>> + Sized {
    fn map_err_into(
        self,
        f: fn(E) -> OperatorError,
    ) -> impl Future<Output = Result<(), OperatorError>> {
        async move { self.await.map_err(f) }
    }
}

impl<E, F: Future<Output = Result<(), E>>> MapErrInto<E> for F {}
