use std::{fmt, net::SocketAddr};

use k8s::watch::{HealthSnapshot, KubeHealth};
use kvstore::{
    Client, IdentityCache, IdentityCacheRunner, IdentityGcConfig, IdentityRange, Session,
    SessionHandle,
};
use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    config::OperatorConfig,
    crd_installer::CrdInstaller,
    error_chain,
    health_server::{HealthServer, HealthServerError},
    heartbeat::Heartbeat,
    identity_collector::IdentityCollector,
    ipam_reconciler::IpamReconciler,
    leader_election::{
        Election, LeaderElection, LeaderElectionConfig, LeaderElectionError, LeaderHandle,
    },
    lease_election::{LeaseElection, LeaseElectionConfig},
    metrics::OperatorMetrics,
    policy_validator::PolicyValidator,
    service_exporter::{ServiceExporter, ServiceSource},
};

/// Why the operator could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("set up the etcd client")]
    Client(#[source] kvstore::Error),
    #[error("set up the Kubernetes client")]
    Kubernetes(#[source] k8s::ClientError),
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
/// leads, runs the identity garbage collector, the heartbeat, the service
/// export and (when configured) pod CIDR IPAM; always serves `/healthz` and
/// `/metrics`.
///
/// In Kubernetes mode ([`OperatorConfig::kubernetes`]) the leader is elected
/// on a Lease instead of the etcd key, every instance installs the policy
/// CRDs and probes the API server, and the leader exports the global
/// Services (instead of the etcd service definitions) and writes each
/// policy's `Valid` condition.
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
    crd_installer: Option<CrdInstaller>,
    handle: OperatorHandle,
}

/// What the Kubernetes mode shares between its components.
#[derive(Clone)]
struct Kubernetes {
    client: kube::Client,
    health: KubeHealth,
    /// `true` once the CRDs are served.
    crds: watch::Receiver<bool>,
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
    kubernetes: Option<Kubernetes>,
}

impl fmt::Debug for Kubernetes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kubernetes")
            .field("health", &self.health)
            .field("crds", &*self.crds.borrow())
            .finish_non_exhaustive()
    }
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

    /// The Kubernetes API server as this instance sees it; `None` unless
    /// in Kubernetes mode.
    pub fn kubernetes(&self) -> Option<HealthSnapshot> {
        self.kubernetes.as_ref().map(|k| k.health.snapshot())
    }

    /// Whether the policy CRDs are installed; `None` unless in Kubernetes
    /// mode.
    pub fn crds_installed(&self) -> Option<bool> {
        self.kubernetes.as_ref().map(|k| *k.crds.borrow())
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
    kubernetes: Option<Kubernetes>,
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
        let (kubernetes, crd_installer) = match &config.kubernetes {
            Some(k) => {
                let kube_client = k8s::client(&k.access)
                    .await
                    .map_err(OperatorError::Kubernetes)?;
                let (installer, crds) = CrdInstaller::new(kube_client.clone());
                let parts = Kubernetes {
                    client: kube_client,
                    health: KubeHealth::default(),
                    crds,
                };
                (Some(parts), Some(installer))
            }
            None => (None, None),
        };
        let metrics = match &kubernetes {
            Some(k) => OperatorMetrics::for_kubernetes(identities.clone(), range, k.health.clone()),
            None => OperatorMetrics::new(identities.clone(), range),
        };
        let (election, leader) = match (&config.kubernetes, &kubernetes) {
            (Some(k), Some(parts)) => {
                let (e, leader) = LeaseElection::new(
                    parts.client.clone(),
                    session_handle.clone(),
                    LeaseElectionConfig::new(
                        config.id.clone(),
                        k.lease_namespace.clone(),
                        k.lease_name.clone(),
                        config.session_ttl,
                    ),
                    metrics.clone(),
                );
                (Election::Lease(Box::new(e)), leader)
            }
            _ => {
                let (e, leader) = LeaderElection::new(
                    client.clone(),
                    session_handle.clone(),
                    LeaderElectionConfig::new(config.id.clone(), config.session_ttl),
                    metrics.clone(),
                );
                (Election::Etcd(Box::new(e)), leader)
            }
        };
        let (mut health, health_addr) = HealthServer::new(
            config.health_listen,
            config.cluster_name.clone(),
            leader.clone(),
            session_handle.clone(),
            identities.clone(),
            metrics.clone(),
        );
        if let Some(k) = &kubernetes {
            health = health.with_kubernetes(k.health.clone(), k.crds.clone());
        }
        let handle = OperatorHandle {
            leader,
            session: session_handle,
            identities,
            metrics,
            health_addr,
            kubernetes,
        };
        Ok((
            Self {
                config,
                client,
                session,
                identities: identities_runner,
                election,
                health,
                crd_installer,
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
            kubernetes = %self
                .config
                .kubernetes
                .as_ref()
                .map_or("off".to_string(), |k| format!(
                    "{}, Lease {}/{}",
                    k.access, k.lease_namespace, k.lease_name
                )),
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
        if let Some(k) = &self.handle.kubernetes {
            let probe = k.health.clone().probe(k.client.clone(), stop.clone());
            background.spawn(async move {
                probe.await;
                Ok(())
            });
        }
        if let Some(installer) = self.crd_installer {
            let install = installer.run(stop.clone());
            background.spawn(async move {
                install.await;
                Ok(())
            });
        }
        let duties = Duties {
            client: self.client.clone(),
            session: self.handle.session.clone(),
            config: self.config.clone(),
            metrics: self.handle.metrics.clone(),
            kubernetes: self.handle.kubernetes.clone(),
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
            let mut exporter = ServiceExporter::new(
                self.client.clone(),
                self.session.clone(),
                c.cluster_name.clone(),
                c.cluster_id,
            )
            .with_metrics(self.metrics.clone());
            if let Some(k) = &self.kubernetes {
                exporter = exporter.with_source(ServiceSource::Kubernetes {
                    client: k.client.clone(),
                    health: k.health.clone(),
                });
                let validator = PolicyValidator::new(
                    k.client.clone(),
                    k.health.clone(),
                    k.crds.clone(),
                    self.metrics.clone(),
                );
                let t = token.clone();
                tasks.spawn(async move {
                    validator.run(t).await;
                    ("policy validation", Ok(()))
                });
            }
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
