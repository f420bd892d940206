//! The DevTools websocket: requests with deadlines, and one task that reads
//! the socket and routes what arrives.
//!
//! CDP is JSON over a websocket. A request carries an `id` (and, for a page,
//! the `sessionId` of its flattened session); Chromium answers with the same
//! `id`, and sends events (`method`, `params`, `sessionId`) in between. The
//! connection's task writes queued requests, hands each answer to the
//! request waiting for its `id`, and each event to the [`Session`] it names.
//! When the socket closes, every waiting request fails with
//! [`BrowserError::Closed`].

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    net::TcpStream,
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, protocol::WebSocketConfig},
};

use crate::{BrowserError, console};

/// How long any request may wait for its answer.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest message accepted from Chromium: a full-page screenshot of a big
/// window is tens of MiB of base64 (tungstenite's default allows 64 MiB per
/// message and 16 MiB per frame).
const MAX_MESSAGE: usize = 256 << 20;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An answer: the `result` object, or the `error` object's code and message.
type Answer = Result<Value, (i64, String)>;

/// A connected DevTools websocket; the task behind it stops when this drops.
pub(crate) struct Connection {
    outgoing: mpsc::UnboundedSender<String>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

/// What the task and the requesters share.
struct Shared {
    next_id: AtomicU64,
    /// Requests waiting for their answer; `None` once the socket closed (no
    /// request may start waiting then).
    pending: Mutex<Option<HashMap<u64, oneshot::Sender<Answer>>>>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    closed: watch::Sender<bool>,
}

/// What one page's session has seen: its console and its load events.
#[derive(Debug)]
pub(crate) struct Session {
    console: Mutex<Vec<String>>,
    /// How many `Page.loadEventFired` arrived.
    loads: watch::Sender<u64>,
}

impl Session {
    fn new() -> Self {
        Self {
            console: Mutex::new(Vec::new()),
            loads: watch::Sender::new(0),
        }
    }

    fn event(&self, method: &str, params: &Value) {
        if method == "Page.loadEventFired" {
            self.loads.send_modify(|loads| *loads += 1);
        } else if let Some(line) = console::line(method, params) {
            self.console.lock().expect("console lines").push(line);
        }
    }

    /// The console lines so far.
    pub(crate) fn console(&self) -> Vec<String> {
        self.console.lock().expect("console lines").clone()
    }

    /// A receiver of the load count, with the current count already seen:
    /// its `changed()` resolves at the next load event.
    pub(crate) fn next_load(&self) -> watch::Receiver<u64> {
        let mut loads = self.loads.subscribe();
        loads.borrow_and_update();
        loads
    }
}

impl Connection {
    /// Connects to Chromium's browser websocket and starts the task.
    pub(crate) async fn connect(url: &str) -> Result<Self, BrowserError> {
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let (ws, _) = tokio::time::timeout(
            REQUEST_TIMEOUT,
            tokio_tungstenite::connect_async_with_config(url, Some(config), false),
        )
        .await
        .map_err(|_| BrowserError::NoResponse {
            method: "(websocket handshake)".to_owned(),
            timeout: REQUEST_TIMEOUT,
        })?
        .map_err(|source| BrowserError::Connect {
            url: url.to_owned(),
            source: Box::new(source),
        })?;
        let (outgoing, queued) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            next_id: AtomicU64::new(1),
            pending: Mutex::new(Some(HashMap::new())),
            sessions: Mutex::new(HashMap::new()),
            closed: watch::Sender::new(false),
        });
        let task = tokio::spawn(run(ws, queued, shared.clone()));
        Ok(Self {
            outgoing,
            shared,
            task,
        })
    }

    /// Sends `method` (to the page session `session`, or to the browser) and
    /// waits up to [`REQUEST_TIMEOUT`] for its result.
    pub(crate) async fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, BrowserError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        match self
            .shared
            .pending
            .lock()
            .expect("pending requests")
            .as_mut()
        {
            Some(pending) => pending.insert(id, answer),
            None => return Err(BrowserError::Closed),
        };
        if self
            .outgoing
            .send(request(id, session, method, params))
            .is_err()
        {
            self.forget(id);
            return Err(BrowserError::Closed);
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, answered).await {
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err((code, message)))) => Err(BrowserError::Cdp {
                method: method.to_owned(),
                code,
                message,
            }),
            // the task dropped the sender: the socket closed
            Ok(Err(_)) => Err(BrowserError::Closed),
            Err(_) => {
                self.forget(id);
                Err(BrowserError::NoResponse {
                    method: method.to_owned(),
                    timeout: REQUEST_TIMEOUT,
                })
            }
        }
    }

    /// Sends `method` without waiting for (or keeping) its answer: for
    /// clean-ups from `Drop`, where nothing can wait.
    pub(crate) fn send_and_forget(&self, session: Option<&str>, method: &str, params: Value) {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let _ = self.outgoing.send(request(id, session, method, params));
    }

    /// Routes the events of `session_id` to a new [`Session`].
    pub(crate) fn add_session(&self, session_id: &str) -> Arc<Session> {
        let session = Arc::new(Session::new());
        self.shared
            .sessions
            .lock()
            .expect("sessions")
            .insert(session_id.to_owned(), session.clone());
        session
    }

    /// Stops routing events to `session_id`.
    pub(crate) fn remove_session(&self, session_id: &str) {
        self.shared
            .sessions
            .lock()
            .expect("sessions")
            .remove(session_id);
    }

    /// Resolves once the socket has closed.
    pub(crate) async fn closed(&self) {
        let mut closed = self.shared.closed.subscribe();
        // the sender lives in `shared`, which we hold: this cannot fail
        let _ = closed.wait_for(|closed| *closed).await;
    }

    fn forget(&self, id: u64) {
        if let Some(pending) = self
            .shared
            .pending
            .lock()
            .expect("pending requests")
            .as_mut()
        {
            pending.remove(&id);
        }
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("closed", &*self.shared.closed.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    /// Hands an answer to its request, or an event to its session.
    fn dispatch(&self, text: &str) {
        let Ok(mut message) = serde_json::from_str::<Value>(text) else {
            return;
        };
        if let Some(id) = message["id"].as_u64() {
            let waiting = self
                .pending
                .lock()
                .expect("pending requests")
                .as_mut()
                .and_then(|pending| pending.remove(&id));
            // an answer nobody waits for (timed out, or sent from Drop) is dropped
            if let Some(waiting) = waiting {
                let _ = waiting.send(answer(&mut message));
            }
        } else if let (Some(method), Some(session_id)) =
            (message["method"].as_str(), message["sessionId"].as_str())
        {
            let session = self
                .sessions
                .lock()
                .expect("sessions")
                .get(session_id)
                .cloned();
            if let Some(session) = session {
                session.event(method, &message["params"]);
            }
        }
    }

    /// Fails every waiting request and refuses new ones.
    fn close(&self) {
        // dropping the senders wakes their receivers with an error
        self.pending.lock().expect("pending requests").take();
        self.closed.send_replace(true);
    }
}

/// The connection's task: writes queued requests, routes what arrives, until
/// the socket closes or the [`Connection`] drops.
async fn run(mut ws: Ws, mut queued: mpsc::UnboundedReceiver<String>, shared: Arc<Shared>) {
    loop {
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(text))) => shared.dispatch(&text),
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                // pings are answered by tungstenite; CDP sends no binary messages
                Some(Ok(_)) => {}
            },
            request = queued.recv() => match request {
                Some(request) => {
                    if ws.send(Message::text(request)).await.is_err() {
                        break;
                    }
                }
                None => {
                    let _ = ws.close(None).await;
                    break;
                }
            },
        }
    }
    shared.close();
}

fn request(id: u64, session: Option<&str>, method: &str, params: Value) -> String {
    let mut request = json!({"id": id, "method": method, "params": params});
    if let Some(session) = session {
        request["sessionId"] = Value::from(session);
    }
    request.to_string()
}

fn answer(message: &mut Value) -> Answer {
    if let Some(error) = message.get("error") {
        let code = error["code"].as_i64().unwrap_or_default();
        let message = error["message"].as_str().unwrap_or("unknown error");
        let data = error["data"].as_str().map(|data| format!(": {data}"));
        return Err((code, format!("{message}{}", data.unwrap_or_default())));
    }
    Ok(message["result"].take())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_their_session() {
        let browser: Value =
            serde_json::from_str(&request(1, None, "Browser.close", json!({}))).expect("json");
        assert_eq!(
            browser,
            json!({"id": 1, "method": "Browser.close", "params": {}})
        );
        let page: Value =
            serde_json::from_str(&request(2, Some("S"), "Page.enable", json!({}))).expect("json");
        assert_eq!(page["sessionId"], "S");
    }

    #[test]
    fn answers_are_results_or_errors() {
        assert_eq!(
            answer(&mut json!({"id": 1, "result": {"frameId": "F"}})),
            Ok(json!({"frameId": "F"}))
        );
        assert_eq!(
            answer(
                &mut json!({"id": 1, "error": {"code": -32000, "message": "No target", "data": "x"}})
            ),
            Err((-32000, "No target: x".to_owned()))
        );
    }

    #[test]
    fn events_reach_their_session() {
        let shared = Shared {
            next_id: AtomicU64::new(1),
            pending: Mutex::new(Some(HashMap::new())),
            sessions: Mutex::new(HashMap::new()),
            closed: watch::Sender::new(false),
        };
        let session = Arc::new(Session::new());
        shared
            .sessions
            .lock()
            .unwrap()
            .insert("S".to_owned(), session.clone());
        let load = session.next_load();
        shared.dispatch(r#"{"method": "Page.loadEventFired", "sessionId": "S", "params": {}}"#);
        shared.dispatch(
            r#"{"method": "Runtime.consoleAPICalled", "sessionId": "S",
            "params": {"type": "log", "args": [{"type": "string", "value": "hi"}]}}"#,
        );
        shared.dispatch(
            r#"{"method": "Runtime.consoleAPICalled", "sessionId": "other",
            "params": {"type": "log", "args": [{"type": "string", "value": "not mine"}]}}"#,
        );
        assert!(load.has_changed().unwrap());
        assert_eq!(session.console(), ["log: hi"]);
    }
}
