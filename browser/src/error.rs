//! What can go wrong driving Chromium.

use std::{path::PathBuf, process::ExitStatus, time::Duration};

/// Launching, talking to or driving Chromium failed.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// Creating the user-data dir or starting the Chromium binary failed.
    #[error("cannot start Chromium `{chromium}`")]
    Spawn {
        chromium: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Chromium exited before it opened its DevTools port.
    #[error("launch failed: Chromium exited ({status}); its stderr ends with:\n{stderr}")]
    LaunchFailed { status: ExitStatus, stderr: String },
    /// Chromium did not write `DevToolsActivePort` in time.
    #[error(
        "no DevToolsActivePort in {user_data_dir} within {timeout:?}; Chromium's stderr ends with:\n{stderr}"
    )]
    NoDevToolsPort {
        user_data_dir: PathBuf,
        timeout: Duration,
        stderr: String,
    },
    /// The websocket handshake with Chromium failed.
    #[error("cannot connect to the DevTools websocket {url}")]
    Connect {
        url: String,
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    /// The DevTools websocket closed (Chromium exited or was killed).
    #[error("the DevTools websocket is closed (Chromium exited or was killed)")]
    Closed,
    /// Chromium answered a request with an error.
    #[error("CDP {method} failed: {message} (code {code})")]
    Cdp {
        method: String,
        code: i64,
        message: String,
    },
    /// Chromium did not answer a request in time.
    #[error("no answer to CDP {method} within {timeout:?}")]
    NoResponse { method: String, timeout: Duration },
    /// Chromium's answer lacked what the method promises.
    #[error("unexpected answer to CDP {method}: {detail}")]
    BadResponse { method: String, detail: String },
    /// Navigating failed (unreachable host, refused connection, ...).
    #[error("navigation to {url} failed: {error}")]
    Navigate { url: String, error: String },
    /// The page did not fire its load event in time.
    #[error("no load event from {url} within {timeout:?}")]
    LoadTimeout { url: String, timeout: Duration },
    /// Evaluated JavaScript threw (or returned a rejected promise).
    #[error("exception from `{expression}`: {text}")]
    Js { expression: String, text: String },
    /// Evaluated JavaScript returned a value of another shape than asked for.
    #[error("cannot decode the value of `{expression}`: {value}")]
    Decode {
        expression: String,
        value: String,
        #[source]
        source: serde_json::Error,
    },
    /// No element matches the selector to click.
    #[error("no element matches `{selector}`")]
    NoElement { selector: String },
    /// The element to click has an empty box (hidden, `display: none`).
    #[error("element `{selector}` has an empty box; cannot click it")]
    NotVisible { selector: String },
    /// A condition did not hold before its deadline.
    #[error("timed out waiting for {what} (last: {last})")]
    Timeout { what: String, last: String },
    /// Writing a screenshot failed.
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
