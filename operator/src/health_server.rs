use std::net::SocketAddr;

use axum::{
    Json, Router,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};
use k8s::watch::KubeHealth;
use kvstore::{ClusterName, IdentityCache, SessionHandle};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{leader_election::LeaderHandle, metrics::OperatorMetrics};

/// Why the health server stopped.
#[derive(Debug, thiserror::Error)]
pub enum HealthServerError {
    #[error("listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serve health and metrics")]
    Serve(#[source] std::io::Error),
}

/// The body of `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HealthReport {
    /// `ok`, or `degraded` while the operator holds no etcd session lease
    /// (etcd unreachable) or, in Kubernetes mode, the API server does not
    /// answer: the HTTP status is 200 either way, since a restart would not
    /// help.
    pub status: String,
    pub id: String,
    pub cluster: String,
    /// Whether this instance leads.
    pub leader: bool,
    /// Who leads, as far as this instance knows.
    pub leader_id: Option<String>,
    /// The session lease (hex), if one is held.
    pub session_lease: Option<String>,
    /// Whether the identity cache completed its initial list.
    pub identities_synced: bool,
    /// The same checks as every daemon's report ([`daemon::Health`]).
    pub checks: std::collections::BTreeMap<String, daemon::Check>,
    /// Services this cluster exports (as of this instance's last term).
    #[serde(default)]
    pub services_exported: u64,
    /// The Kubernetes API server, in Kubernetes mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesReport>,
}

/// The Kubernetes part of `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct KubernetesReport {
    /// The API server answered the last probe.
    pub connected: bool,
    /// Its version (`v1.20.2`), once known.
    pub version: Option<String>,
    /// The last probe's error, while not connected.
    pub last_error: Option<String>,
    /// Times the connection was lost.
    pub disconnects: u64,
    /// Whether the policy CRDs are installed.
    pub crds_installed: bool,
}

#[derive(Clone)]
struct Sources {
    id: String,
    cluster: ClusterName,
    leader: LeaderHandle,
    session: SessionHandle,
    identities: IdentityCache,
    metrics: OperatorMetrics,
    kubernetes: Option<(KubeHealth, watch::Receiver<bool>)>,
}

/// Serves `/healthz` (JSON [`HealthReport`]) and `/metrics` (Prometheus
/// text) over plain HTTP. Binds in [`HealthServer::run`]; the bound address
/// (useful with port 0) is published on the receiver given by `new`.
pub struct HealthServer {
    listen: SocketAddr,
    sources: Sources,
    bound: watch::Sender<Option<SocketAddr>>,
}

impl std::fmt::Debug for HealthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthServer")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl HealthServer {
    pub fn new(
        listen: SocketAddr,
        cluster: ClusterName,
        leader: LeaderHandle,
        session: SessionHandle,
        identities: IdentityCache,
        metrics: OperatorMetrics,
    ) -> (Self, watch::Receiver<Option<SocketAddr>>) {
        let (bound, rx) = watch::channel(None);
        (
            Self {
                listen,
                sources: Sources {
                    id: leader.id().to_string(),
                    cluster,
                    leader,
                    session,
                    identities,
                    metrics,
                    kubernetes: None,
                },
                bound,
            },
            rx,
        )
    }

    /// Also reports the Kubernetes API server (`health`) and whether the
    /// policy CRDs are installed (`crds`).
    pub fn with_kubernetes(mut self, health: KubeHealth, crds: watch::Receiver<bool>) -> Self {
        self.sources.kubernetes = Some((health, crds));
        self
    }

    /// Serves until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), HealthServerError> {
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .map_err(|source| HealthServerError::Bind {
                addr: self.listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| HealthServerError::Bind {
                addr: self.listen,
                source,
            })?;
        info!(%addr, "serving /healthz and /metrics (and /readyz)");
        self.bound.send_replace(Some(addr));
        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(self.sources);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(HealthServerError::Serve)
    }
}

/// The operator's checks: its etcd session, its identity cache and, in
/// Kubernetes mode, the API server.
fn checks(s: &Sources) -> Vec<(&'static str, daemon::Check)> {
    use daemon::Check;
    let lease = s.session.current().lease;
    let mut checks = vec![
        (
            "etcd-session",
            match lease {
                Some(l) => Check::ok(format!("lease {l}")),
                None => Check::failed("no etcd session lease (etcd unreachable)"),
            },
        ),
        (
            "identities",
            if s.identities.is_synced() {
                Check::ok("initial list done")
            } else {
                Check::failed("waiting for the initial list")
            },
        ),
    ];
    if let Some(k) = kubernetes(s) {
        checks.push((
            "kubernetes",
            match (&k.version, k.connected) {
                (Some(v), true) => Check::ok(format!("API server {v}")),
                _ => Check::failed(format!(
                    "API server unreachable: {}",
                    k.last_error.as_deref().unwrap_or("not probed yet")
                )),
            },
        ));
    }
    checks
}

fn kubernetes(s: &Sources) -> Option<KubernetesReport> {
    let (health, crds) = s.kubernetes.as_ref()?;
    let snapshot = health.snapshot();
    Some(KubernetesReport {
        connected: snapshot.connected,
        version: snapshot.version,
        last_error: snapshot.last_error,
        disconnects: snapshot.disconnects,
        crds_installed: *crds.borrow(),
    })
}

async fn healthz(State(s): State<Sources>) -> Json<HealthReport> {
    let lease = s.session.current().lease;
    let kubernetes = kubernetes(&s);
    let connected = kubernetes.as_ref().is_none_or(|k| k.connected);
    Json(HealthReport {
        status: if lease.is_some() && connected {
            "ok"
        } else {
            "degraded"
        }
        .to_string(),
        id: s.id.clone(),
        cluster: s.cluster.to_string(),
        leader: s.leader.is_leader(),
        leader_id: s.leader.leader(),
        session_lease: lease.map(|l| l.to_string()),
        identities_synced: s.identities.is_synced(),
        checks: checks(&s)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        services_exported: u64::try_from(s.metrics.services_exported()).unwrap_or(0),
        kubernetes,
    })
}

/// 200 once the operator holds a session and has listed the identities.
async fn readyz(State(s): State<Sources>) -> Response {
    let health = daemon::Health::readiness(checks(&s));
    (
        axum::http::StatusCode::from_u16(health.http_status())
            .unwrap_or(axum::http::StatusCode::SERVICE_UNAVAILABLE),
        [(header::CONTENT_TYPE, "application/json")],
        health.to_json(),
    )
        .into_response()
}

async fn metrics(State(s): State<Sources>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}
