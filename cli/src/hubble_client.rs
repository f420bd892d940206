//! Connecting the CLI to a Hubble server or relay: the address, the TLS files
//! to use with it, and the error an unreachable server gives (address, cause
//! and a hint). The dialling itself is `hubble::client::connect`.

use std::{fmt, path::PathBuf};

use hubble::client::{Address, ClientTls};
use tonic::transport::Channel;

/// The files and name for mutual TLS with a Hubble server or relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsOptions {
    /// The CA bundle the server's certificate must chain to.
    pub(crate) ca: PathBuf,
    pub(crate) client_cert: PathBuf,
    pub(crate) client_key: PathBuf,
    /// The name the server's certificate must carry.
    pub(crate) server_name: String,
}

/// A server to ask, as resolved from the flags or from `mesh.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Server {
    pub(crate) address: Address,
    pub(crate) tls: Option<TlsOptions>,
    /// What it is, for messages (`the relay of c1`, `node c1/n1`).
    pub(crate) what: String,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.what.is_empty() {
            write!(f, "{}", self.address)
        } else {
            write!(f, "{} at {}", self.what, self.address)
        }
    }
}

/// The server could not be reached (or its TLS files could not be read).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("cannot read the TLS files for {server}")]
    TlsFiles {
        server: String,
        #[source]
        source: certs::LoadError,
    },
    #[error("cannot connect to {server}: {cause}; {hint}")]
    Unreachable {
        server: String,
        cause: String,
        hint: &'static str,
    },
}

/// Opens a channel to `server` now (within Hubble's 5 s dial timeout).
pub(crate) async fn connect(server: &Server) -> Result<Channel, ConnectError> {
    let tls = match &server.tls {
        None => None,
        Some(t) => {
            let files =
                certs::TlsFiles::new(t.client_cert.clone(), t.client_key.clone(), t.ca.clone());
            let config = certs::Config {
                alpn_protocols: vec![b"h2".to_vec()],
                ..Default::default()
            };
            let client =
                certs::ClientTls::load(files, config).map_err(|source| ConnectError::TlsFiles {
                    server: server.to_string(),
                    source,
                })?;
            Some(ClientTls {
                connector: client.connector(),
                server_name: t.server_name.clone(),
            })
        }
    };
    hubble::client::connect(&server.address, tls)
        .await
        .map_err(|e| ConnectError::Unreachable {
            server: server.to_string(),
            // The client's own message repeats the address: keep its causes.
            cause: std::error::Error::source(&e).map_or_else(|| e.to_string(), error_chain),
            hint: hint(&server.address),
        })
}

fn hint(address: &Address) -> &'static str {
    match address {
        Address::Unix(_) => {
            "is the agent running (it creates the socket) and is this process allowed to open it?"
        }
        Address::Tcp { tls: false, .. } => {
            "is a Hubble server or relay listening there? (a TLS server needs tls:// or the --tls-* flags)"
        }
        Address::Tcp { tls: true, .. } => {
            "is a Hubble server or relay listening there, with a certificate of this CA for the server name?"
        }
    }
}

/// An error and its causes on one line, each said once.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_absent_socket_says_where_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server {
            address: Address::Unix(dir.path().join("hubble.sock")),
            tls: None,
            what: "node c1/n1".into(),
        };
        let err = connect(&server).await.unwrap_err().to_string();
        assert!(
            err.starts_with("cannot connect to node c1/n1 at unix://"),
            "{err}"
        );
        assert!(err.contains("No such file or directory"), "{err}");
        assert!(err.contains("is the agent running"), "{err}");
    }

    #[tokio::test]
    async fn a_closed_port_says_where_and_why() {
        // Bind and drop: nothing listens on the port afterwards.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Server {
            address: format!("127.0.0.1:{port}").parse().unwrap(),
            tls: None,
            what: String::new(),
        };
        let err = connect(&server).await.unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("cannot connect to 127.0.0.1:{port}: ")),
            "{err}"
        );
        assert!(err.contains("refused"), "{err}");
    }
}
