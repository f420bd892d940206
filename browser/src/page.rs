//! A tab: navigation, JavaScript, waiting, clicks, screenshots, console.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use base64::Engine;
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};

use crate::{
    BrowserError,
    browser::string_field,
    connection::{Connection, Session},
    console,
};

/// How long [`Page::goto`] waits for the load event.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// How often [`Page::wait_for`] and [`Page::wait_for_value`] evaluate.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A tab of a [`Browser`](crate::Browser), from
/// [`Browser::new_page`](crate::Browser::new_page); the tab closes when this
/// drops.
#[derive(Debug)]
pub struct Page {
    connection: Arc<Connection>,
    target_id: String,
    session_id: String,
    session: Arc<Session>,
}

impl Page {
    pub(crate) fn new(connection: Arc<Connection>, target_id: String, session_id: String) -> Self {
        let session = connection.add_session(&session_id);
        Self {
            connection,
            target_id,
            session_id,
            session,
        }
    }

    /// Turns on the events the page relies on and sets its viewport.
    pub(crate) async fn enable(&self, (width, height): (u32, u32)) -> Result<(), BrowserError> {
        for domain in ["Page", "Runtime", "Log"] {
            self.call(&format!("{domain}.enable"), json!({})).await?;
        }
        let viewport =
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false});
        self.call("Emulation.setDeviceMetricsOverride", viewport)
            .await?;
        Ok(())
    }

    /// Navigates to `url` and waits (up to 30 s) for its load event. A
    /// navigation Chromium reports as failed (refused connection, unknown
    /// host) is [`BrowserError::Navigate`] naming the URL; an HTTP error
    /// status is not an error (the page shows it).
    pub async fn goto(&self, url: &str) -> Result<(), BrowserError> {
        let mut loads = self.session.next_load();
        let navigated = self.call("Page.navigate", json!({"url": url})).await?;
        if let Some(error) = navigated["errorText"].as_str().filter(|e| !e.is_empty()) {
            return Err(BrowserError::Navigate {
                url: url.to_owned(),
                error: error.to_owned(),
            });
        }
        if navigated.get("loaderId").is_none() {
            // a same-document navigation (only the fragment changed): no load
            return Ok(());
        }
        let load_timeout = || BrowserError::LoadTimeout {
            url: url.to_owned(),
            timeout: LOAD_TIMEOUT,
        };
        tokio::select! {
            loaded = tokio::time::timeout(LOAD_TIMEOUT, loads.changed()) => match loaded {
                Ok(Ok(())) => Ok(()),
                // the session's sender lives as long as this page
                Ok(Err(_)) => Err(BrowserError::Closed),
                Err(_) => Err(load_timeout()),
            },
            () = self.connection.closed() => Err(BrowserError::Closed),
        }
    }

    /// Evaluates `js` in the page (awaiting a promise it returns) and
    /// decodes its value; `undefined` is `null`, which decodes as `()` or
    /// `None`. A thrown exception or rejected promise is
    /// [`BrowserError::Js`] with the exception and the expression. DOM
    /// nodes do not serialize: return what you need from them.
    pub async fn eval<T: DeserializeOwned>(&self, js: &str) -> Result<T, BrowserError> {
        let value = self.evaluate(js).await?;
        decode(js, &value)
    }

    /// Evaluates `js` every 50 ms until it returns `true`. After `deadline`:
    /// [`BrowserError::Timeout`] with `what` and the last outcome (`false`,
    /// or the last error, e.g. an exception while the element is missing).
    /// Errors are retried until then, except a closed connection.
    pub async fn wait_for(
        &self,
        what: &str,
        js_bool: &str,
        deadline: Duration,
    ) -> Result<(), BrowserError> {
        self.poll(what, js_bool, deadline, |value| match value {
            Value::Bool(true) => Ok(Some(())),
            Value::Bool(false) => Ok(None),
            other => Err(format!("not a boolean: {other}")),
        })
        .await
    }

    /// Evaluates `js` every 50 ms until it returns something other than
    /// `null` or `undefined`, and decodes that. Timeouts and errors as in
    /// [`Page::wait_for`].
    pub async fn wait_for_value<T: DeserializeOwned>(
        &self,
        what: &str,
        js: &str,
        deadline: Duration,
    ) -> Result<T, BrowserError> {
        self.poll(what, js, deadline, |value| match value {
            Value::Null => Ok(None),
            value => decode(js, &value)
                .map(Some)
                .map_err(|error| error.to_string()),
        })
        .await
    }

    /// Clicks the first element matching the CSS `selector` as a user would:
    /// scrolls it into view and presses and releases the left mouse button
    /// at the centre of its box (so whatever is on top there gets the
    /// click). No match is [`BrowserError::NoElement`]; an empty box is
    /// [`BrowserError::NotVisible`].
    pub async fn click(&self, selector: &str) -> Result<(), BrowserError> {
        #[derive(Deserialize)]
        struct Centre {
            x: f64,
            y: f64,
            width: f64,
            height: f64,
        }
        let quoted = Value::from(selector).to_string();
        let js = format!(
            "(() => {{ const el = document.querySelector({quoted}); if (!el) return null; \
             el.scrollIntoView({{block: 'center', inline: 'center', behavior: 'instant'}}); \
             const r = el.getBoundingClientRect(); \
             return {{x: r.left + r.width / 2, y: r.top + r.height / 2, \
             width: r.width, height: r.height}}; }})()"
        );
        let Some(centre) = self.eval::<Option<Centre>>(&js).await? else {
            return Err(BrowserError::NoElement {
                selector: selector.to_owned(),
            });
        };
        if centre.width <= 0.0 || centre.height <= 0.0 {
            return Err(BrowserError::NotVisible {
                selector: selector.to_owned(),
            });
        }
        let (x, y) = (centre.x, centre.y);
        let events = [
            json!({"type": "mouseMoved", "x": x, "y": y, "button": "none", "buttons": 0}),
            json!({"type": "mousePressed", "x": x, "y": y, "button": "left", "buttons": 1, "clickCount": 1}),
            json!({"type": "mouseReleased", "x": x, "y": y, "button": "left", "buttons": 0, "clickCount": 1}),
        ];
        for event in events {
            self.call("Input.dispatchMouseEvent", event).await?;
        }
        Ok(())
    }

    /// Writes a PNG of the visible part of the page to `path`, creating its
    /// parent directories.
    pub async fn screenshot(&self, path: &Path) -> Result<(), BrowserError> {
        const METHOD: &str = "Page.captureScreenshot";
        let shot = self.call(METHOD, json!({"format": "png"})).await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(string_field(&shot, METHOD, "data")?)
            .map_err(|error| BrowserError::BadResponse {
                method: METHOD.to_owned(),
                detail: format!("data is not base64: {error}"),
            })?;
        let write_error = |source| BrowserError::Write {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(write_error)?;
        }
        tokio::fs::write(path, png).await.map_err(write_error)
    }

    /// What the page logged so far, one `level: text` line per message:
    /// console calls (`log: ...`, `warning: ...`), uncaught exceptions
    /// (`exception: ...`) and Chromium's own messages (`error: Failed to load
    /// resource ...`).
    pub fn console(&self) -> Vec<String> {
        self.session.console()
    }

    async fn call(&self, method: &str, params: Value) -> Result<Value, BrowserError> {
        self.connection
            .call(Some(&self.session_id), method, params)
            .await
    }

    /// `Runtime.evaluate` by value; the value (`null` for `undefined`, the
    /// text of NaN, Infinity or a BigInt).
    async fn evaluate(&self, js: &str) -> Result<Value, BrowserError> {
        let evaluated = self
            .call(
                "Runtime.evaluate",
                json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        if let Some(details) = evaluated.get("exceptionDetails") {
            return Err(BrowserError::Js {
                expression: js.to_owned(),
                text: console::exception_text(details),
            });
        }
        let result = &evaluated["result"];
        Ok(
            match (result.get("value"), result["unserializableValue"].as_str()) {
                (Some(value), _) => value.clone(),
                (None, Some(text)) => Value::from(text),
                (None, None) => Value::Null,
            },
        )
    }

    /// Evaluates `js` every [`POLL_INTERVAL`] until `ready` accepts its value
    /// (`Ok(Some)`), at least once; `Ok(None)` and `Err(reason)` try again
    /// until `deadline`, as do evaluation errors other than a closed
    /// connection.
    async fn poll<T>(
        &self,
        what: &str,
        js: &str,
        deadline: Duration,
        mut ready: impl FnMut(Value) -> Result<Option<T>, String>,
    ) -> Result<T, BrowserError> {
        let end = Instant::now() + deadline;
        loop {
            let remaining = end.saturating_duration_since(Instant::now());
            // an evaluation may hang (a promise that never settles): bound it too
            let last =
                match tokio::time::timeout(remaining.max(POLL_INTERVAL), self.evaluate(js)).await {
                    Ok(Ok(value)) => match ready(value.clone()) {
                        Ok(Some(done)) => return Ok(done),
                        Ok(None) => value.to_string(),
                        Err(reason) => reason,
                    },
                    Ok(Err(BrowserError::Closed)) => return Err(BrowserError::Closed),
                    Ok(Err(error)) => error.to_string(),
                    Err(_) => "the evaluation did not finish".to_owned(),
                };
            let remaining = end.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(BrowserError::Timeout {
                    what: what.to_owned(),
                    last,
                });
            }
            tokio::time::sleep(POLL_INTERVAL.min(remaining)).await;
        }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        self.connection.remove_session(&self.session_id);
        self.connection.send_and_forget(
            None,
            "Target.closeTarget",
            json!({"targetId": self.target_id}),
        );
    }
}

fn decode<T: DeserializeOwned>(js: &str, value: &Value) -> Result<T, BrowserError> {
    T::deserialize(value).map_err(|source| BrowserError::Decode {
        expression: js.to_owned(),
        value: value.to_string(),
        source,
    })
}
