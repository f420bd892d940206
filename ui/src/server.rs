//! The HTTP side: the embedded front end, `healthz`, the live events
//! (`api/events`, server-sent events) and a JSON snapshot (`api/snapshot`).
//! Every path the page uses is relative, so the UI works behind a proxy
//! under any path prefix.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use futures::{Stream, StreamExt, stream};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::hub::{Frame, Hub};

mod files {
    include!(concat!(env!("OUT_DIR"), "/web_files.rs"));
}

/// How soon a page's EventSource reconnects after losing the stream.
const RECONNECT: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct AppState {
    hub: Arc<Hub>,
    shutdown: CancellationToken,
}

/// The UI's routes; streams end when `shutdown` is cancelled.
pub fn router(hub: Arc<Hub>, shutdown: CancellationToken) -> Router {
    Router::new()
        .route("/", get(|| async { file("index.html") }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/events", get(events))
        .route("/api/snapshot", get(snapshot))
        .route("/assets/{*path}", get(asset))
        .with_state(AppState { hub, shutdown })
}

async fn asset(Path(path): Path<String>) -> Response {
    file(&format!("assets/{path}"))
}

fn file(name: &str) -> Response {
    let Some((_, body)) = files::FILES.iter().find(|(n, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, format!("no file {name} in the UI\n")).into_response();
    };
    let mime = match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json" | "map") => "application/json",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    };
    let mut response = (*body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    // index.html names the bundle; both change with every build.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn snapshot(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.hub.snapshot())
}

async fn events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (first, rx) = state.hub.subscribe();
    let hub = state.hub.clone();
    let live = stream::unfold(rx, move |mut rx| {
        let hub = hub.clone();
        async move {
            match rx.recv().await {
                Ok(frame) => Some((vec![frame], rx)),
                // Too slow to keep up: start again from a snapshot.
                Err(RecvError::Lagged(_)) => Some(hub.subscribe()),
                Err(RecvError::Closed) => None,
            }
        }
    })
    .flat_map(stream::iter);
    let retry = Event::default().retry(RECONNECT).comment("clustermesh-ui");
    let frames = stream::once(async move { Ok(retry) })
        .chain(
            stream::iter(first)
                .chain(live)
                .map(|f: Frame| Ok(Event::default().event(f.event).data(&*f.data))),
        )
        .take_until(state.shutdown.cancelled_owned());
    Sse::new(frames).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
