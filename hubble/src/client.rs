//! Connecting to a Hubble server or relay: a unix socket (plaintext) or
//! `host:port` over TCP, plaintext or with mutual TLS (rustls, with the
//! mesh CA and a client certificate), as Hubble addresses are written
//! (`unix:///path`, `/path.sock`, `host:port`, `tls://host:port`).

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

/// Hubble's default dial timeout (`--timeout`).
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a Hubble server or relay listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A unix socket (`unix:///path` or a path).
    Unix(PathBuf),
    /// `host:port`; `tls` when written `tls://host:port`.
    Tcp { host_port: String, tls: bool },
}

impl FromStr for Address {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix://") {
            return Ok(Self::Unix(path.into()));
        }
        if s.starts_with('/') || s.ends_with(".sock") {
            return Ok(Self::Unix(s.into()));
        }
        let (rest, tls) = match s.strip_prefix("tls://") {
            Some(rest) => (rest, true),
            None => (s, false),
        };
        if rest.is_empty() || !rest.contains(':') {
            return Err(format!(
                "invalid server address {s:?}: expected host:port, tls://host:port, unix:///path or a socket path"
            ));
        }
        Ok(Self::Tcp {
            host_port: rest.to_owned(),
            tls,
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
            Self::Tcp {
                host_port,
                tls: true,
            } => write!(f, "tls://{host_port}"),
            Self::Tcp { host_port, .. } => f.write_str(host_port),
        }
    }
}

/// How to authenticate a TLS connection.
#[derive(Clone)]
pub struct ClientTls {
    pub connector: TlsConnector,
    /// The name the server's certificate must carry.
    pub server_name: String,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{address} needs TLS settings (a CA, a client certificate and a server name)")]
    TlsRequired { address: Address },
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    #[error("cannot connect to {address}")]
    Connect {
        address: Address,
        #[source]
        source: tonic::transport::Error,
    },
}

/// A channel to `address`. TCP uses TLS when `tls` is given (and must when
/// the address says `tls://`). The connection is made now, within
/// [`DIAL_TIMEOUT`], so that an unreachable server is an error here.
pub async fn connect(address: &Address, tls: Option<ClientTls>) -> Result<Channel, ConnectError> {
    let connect_err = |source| ConnectError::Connect {
        address: address.clone(),
        source,
    };
    // The URI only names the authority for HTTP/2; the connector dials.
    let endpoint = Endpoint::from_static("http://hubble.invalid")
        .connect_timeout(DIAL_TIMEOUT)
        .tcp_nodelay(true);
    match address {
        Address::Unix(path) => {
            let path = path.clone();
            endpoint
                .connect_with_connector(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move { UnixStream::connect(path).await.map(TokioIo::new) }
                }))
                .await
                .map_err(connect_err)
        }
        Address::Tcp {
            host_port,
            tls: wants_tls,
        } => {
            let host_port = host_port.clone();
            match tls {
                None if *wants_tls => Err(ConnectError::TlsRequired {
                    address: address.clone(),
                }),
                None => endpoint
                    .connect_with_connector(tower::service_fn(move |_| {
                        let host_port = host_port.clone();
                        async move {
                            let tcp = TcpStream::connect(host_port).await?;
                            tcp.set_nodelay(true)?;
                            std::io::Result::Ok(TokioIo::new(tcp))
                        }
                    }))
                    .await
                    .map_err(connect_err),
                Some(tls) => {
                    let name = ServerName::try_from(tls.server_name.clone())
                        .map_err(|_| ConnectError::ServerName(tls.server_name.clone()))?;
                    endpoint
                        .connect_with_connector(tower::service_fn(move |_| {
                            let (host_port, name) = (host_port.clone(), name.clone());
                            let connector = tls.connector.clone();
                            async move {
                                let tcp = TcpStream::connect(host_port).await?;
                                tcp.set_nodelay(true)?;
                                let stream = connector.connect(name, tcp).await?;
                                std::io::Result::Ok(TokioIo::new(stream))
                            }
                        }))
                        .await
                        .map_err(connect_err)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_hubble_writes_them() {
        assert_eq!(
            "unix:///var/run/cilium/hubble.sock".parse(),
            Ok(Address::Unix("/var/run/cilium/hubble.sock".into()))
        );
        assert_eq!(
            "/tmp/h.sock".parse(),
            Ok(Address::Unix("/tmp/h.sock".into()))
        );
        assert_eq!(
            "tls://10.0.0.1:4245".parse(),
            Ok(Address::Tcp {
                host_port: "10.0.0.1:4245".into(),
                tls: true
            })
        );
        assert_eq!(
            "localhost:4245".parse::<Address>().unwrap().to_string(),
            "localhost:4245"
        );
        assert!("localhost".parse::<Address>().is_err());
    }
}
