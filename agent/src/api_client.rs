//! A small blocking client of the agent's API (HTTP/1.0 over the unix
//! socket), for the CNI plugin and the debug client.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::de::DeserializeOwned;

/// The agent could not be asked, or said no.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{}", connect_message(socket, source))]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the agent at {socket}")]
    Io {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed answer from the agent: {0}")]
    Malformed(String),
    #[error("agent answered {status}: {message}")]
    Status { status: u16, message: String },
}

/// Why the socket did not answer, in the words a user acts on.
fn connect_message(socket: &Path, source: &std::io::Error) -> String {
    let socket = socket.display();
    match source.kind() {
        std::io::ErrorKind::PermissionDenied => {
            format!("permission denied on the agent socket {socket}: run as root")
        }
        std::io::ErrorKind::NotFound => {
            format!("no agent socket at {socket} (is clustermesh-agent running?)")
        }
        std::io::ErrorKind::ConnectionRefused => {
            format!("connection refused on {socket}: clustermesh-agent is not running")
        }
        _ => format!("cannot reach the agent at {socket}: {source}"),
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
    timeout: Duration,
}

/// How long a request waits for its answer unless set otherwise: long
/// enough for an attach while the agent waits for an identity.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

impl ApiClient {
    pub fn new(socket: impl AsRef<Path>) -> Self {
        Self {
            socket: socket.as_ref().to_path_buf(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// How long to wait for an answer (default [`DEFAULT_TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// One request; returns the status and body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let socket = self.socket.clone();
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|source| ClientError::Connect {
                socket: socket.clone(),
                source,
            })?;
        let io = |source| ClientError::Io {
            socket: socket.clone(),
            source,
        };
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).map_err(io)?;
        stream.write_all(body).map_err(io)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).map_err(io)?;
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| ClientError::Malformed("no header end".into()))?;
        let head = String::from_utf8_lossy(&response[..split]);
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                ClientError::Malformed(head.lines().next().unwrap_or_default().to_string())
            })?;
        Ok((status, response[split + 4..].to_vec()))
    }

    /// A JSON request whose success is 2xx; errors carry the agent's message.
    pub fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<T, ClientError> {
        let (status, body) = self.request(method, path, body)?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(ClientError::Status { status, message });
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Malformed(e.to_string()))
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call("GET", path, None)
    }
}
