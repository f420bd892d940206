//! The agent's REST API on a unix socket: endpoints (used by the CNI plugin)
//! and read-only views for the debug client.

use std::{path::PathBuf, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{
    control_loop::{Answer, LoopHandle, Query},
    endpoint::{EndpointId, EndpointRequest},
    endpoint_manager::{EndpointError, EndpointManager},
};

/// Serves the API until shutdown.
pub(crate) struct ApiServer {
    socket: PathBuf,
    state: Arc<ApiState>,
}

struct ApiState {
    endpoints: Arc<EndpointManager>,
    control: LoopHandle,
}

/// The API could not be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("cannot listen on {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("API server failed")]
    Serve(#[source] std::io::Error),
}

impl ApiServer {
    pub(crate) fn new(
        socket: PathBuf,
        endpoints: Arc<EndpointManager>,
        control: LoopHandle,
    ) -> Self {
        Self {
            socket,
            state: Arc::new(ApiState { endpoints, control }),
        }
    }

    pub(crate) async fn run(self, shutdown: CancellationToken) -> Result<(), ApiError> {
        let bind_err = |source| ApiError::Bind {
            path: self.socket.clone(),
            source,
        };
        if let Some(dir) = self.socket.parent() {
            std::fs::create_dir_all(dir).map_err(bind_err)?;
        }
        // A socket file left by a previous run.
        let _ = std::fs::remove_file(&self.socket);
        let listener = UnixListener::bind(&self.socket).map_err(bind_err)?;
        info!(socket = %self.socket.display(), "API listening");
        let app = Router::new()
            .route("/v1/healthz", get(|| async { "ok" }))
            .route("/v1/endpoints", get(list_endpoints).post(add_endpoint))
            .route(
                "/v1/endpoints/{name}",
                get(get_endpoint).delete(delete_endpoint),
            )
            .route("/v1/status", get(|s| query(s, Query::Status)))
            .route("/v1/identities", get(|s| query(s, Query::Identities)))
            .route("/v1/ipcache", get(|s| query(s, Query::IpCache)))
            .route("/v1/services", get(|s| query(s, Query::Services)))
            .route("/v1/fqdn", get(|s| query(s, Query::Fqdn)))
            .route("/v1/policy/{id}", get(policy))
            .route("/v1/maps/{name}", get(map))
            .with_state(self.state.clone());
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        let _ = std::fs::remove_file(&self.socket);
        result.map_err(ApiError::Serve)
    }
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    (
        status,
        [("content-type", "application/json")],
        serde_json::to_vec(value).expect("views serialize"),
    )
        .into_response()
}

fn error(status: u16, message: impl std::fmt::Display) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, &serde_json::json!({ "error": message.to_string() }))
}

fn endpoint_error(e: EndpointError) -> Response {
    let status = e.status();
    error(status, format!("{:#}", anyhow::Error::new(e)))
}

async fn list_endpoints(State(s): State<Arc<ApiState>>) -> Response {
    json(StatusCode::OK, &s.endpoints.list().await)
}

async fn get_endpoint(State(s): State<Arc<ApiState>>, Path(name): Path<String>) -> Response {
    match s.endpoints.get(&name).await {
        Some(ep) => json(StatusCode::OK, &ep),
        None => error(404, format!("no endpoint named {name:?}")),
    }
}

async fn add_endpoint(State(s): State<Arc<ApiState>>, body: Bytes) -> Response {
    let req: EndpointRequest = match serde_json::from_slice(&body) {
        Ok(req) => req,
        Err(e) => return error(400, format!("invalid endpoint request: {e}")),
    };
    match s.endpoints.add(req).await {
        Ok(ep) => json(StatusCode::CREATED, &ep),
        Err(e) => endpoint_error(e),
    }
}

async fn delete_endpoint(State(s): State<Arc<ApiState>>, Path(name): Path<String>) -> Response {
    match s.endpoints.delete(&name).await {
        Ok(ep) => json(StatusCode::OK, &ep),
        Err(e) => endpoint_error(e),
    }
}

async fn policy(State(s): State<Arc<ApiState>>, Path(id): Path<u32>) -> Response {
    query(State(s), Query::Policy(EndpointId::new(id))).await
}

async fn map(State(s): State<Arc<ApiState>>, Path(name): Path<String>) -> Response {
    query(State(s), Query::Map(name)).await
}

async fn query(State(s): State<Arc<ApiState>>, q: Query) -> Response {
    match s.control.query(q).await {
        Some(Answer::Status(v)) => json(StatusCode::OK, &v),
        Some(Answer::Identities(v)) => json(StatusCode::OK, &v),
        Some(Answer::IpCache(v)) => json(StatusCode::OK, &v),
        Some(Answer::Policy(Some(v))) => json(StatusCode::OK, &v),
        Some(Answer::Policy(None)) => error(404, "no such endpoint"),
        Some(Answer::Services(v)) => json(StatusCode::OK, &v),
        Some(Answer::Map(Ok(v))) => json(StatusCode::OK, &v),
        Some(Answer::Map(Err(e))) => error(404, e),
        Some(Answer::Fqdn(v)) => json(StatusCode::OK, &v),
        Some(Answer::Report(v)) => json(StatusCode::OK, &v),
        None => error(503, "the agent is shutting down"),
    }
}
