//! Connections to Hubble servers: unix socket or TCP, plaintext or mutual
//! TLS, each watched so that the pool learns at once when one is gone.

use std::{
    fmt,
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpStream, UnixStream},
};
use tokio_rustls::TlsConnector;
use tokio_util::sync::{CancellationToken, DropGuard, WaitForCancellationFutureOwned};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{Host, PeerAddress};

/// How a connection is secured.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Security {
    Plaintext,
    /// Mutual TLS with the relay's client certificate; the server's
    /// certificate must name `server_name`.
    Tls {
        server_name: String,
    },
}

impl Security {
    /// From a Peer service notification: TLS when it names a server.
    pub fn from_server_name(server_name: Option<&str>) -> Self {
        match server_name {
            Some(name) if !name.is_empty() => Self::Tls {
                server_name: name.to_owned(),
            },
            _ => Self::Plaintext,
        }
    }

    pub fn server_name(&self) -> Option<&str> {
        match self {
            Self::Plaintext => None,
            Self::Tls { server_name } => Some(server_name),
        }
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error(
        "{address} requires TLS (server name {server_name}) but the relay has no client certificate (--tls-client-cert-file)"
    )]
    NoClientTls {
        address: String,
        server_name: String,
    },
    #[error("invalid TLS server name {server_name:?}")]
    ServerName { server_name: String },
    #[error("cannot connect to {address}")]
    Connect {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// How the relay dials Hubble servers (peers and the Peer service).
#[derive(Clone)]
pub struct Dialer {
    /// Mutual TLS with the relay's client certificate (hot-reloaded), if the
    /// relay has one.
    tls: Option<TlsConnector>,
    /// Time allowed for TCP connect and the TLS handshake.
    pub connect_timeout: Duration,
    /// HTTP/2 pings on every connection, busy or idle: a node that stops
    /// answering (cut off, frozen) is dropped after `interval + timeout`.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

impl fmt::Debug for Dialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dialer")
            .field("tls", &self.tls.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .finish()
    }
}

impl Dialer {
    /// A dialer that presents `tls`'s certificate to TLS peers (none: TLS
    /// peers cannot be dialled, plaintext ones can).
    pub fn new(tls: Option<&certs::ClientTls>) -> Self {
        Self {
            tls: tls.map(certs::ClientTls::connector),
            connect_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(3),
            keepalive_timeout: Duration::from_secs(3),
        }
    }

    /// Connects to `address` now. The connection is never re-dialled by
    /// itself: once [`Connection::gone`] fires, the owner dials again.
    pub async fn dial(
        &self,
        address: &PeerAddress,
        security: &Security,
    ) -> Result<Connection, DialError> {
        let tls = match security {
            Security::Plaintext => None,
            Security::Tls { server_name } => {
                let connector = self.tls.clone().ok_or_else(|| DialError::NoClientTls {
                    address: address.to_string(),
                    server_name: server_name.clone(),
                })?;
                let name = ServerName::try_from(server_name.clone()).map_err(|_| {
                    DialError::ServerName {
                        server_name: server_name.clone(),
                    }
                })?;
                Some((connector, name))
            }
        };
        let closing = CancellationToken::new();
        let gone = CancellationToken::new();
        let connector = Connector {
            address: address.clone(),
            tls,
            closing: closing.clone(),
            gone: gone.clone(),
            used: Arc::new(AtomicBool::new(false)),
        };
        // The URI only fills `:authority`; the connector decides where to go.
        let authority = match (address, security) {
            (_, Security::Tls { server_name }) => server_name.clone(),
            (PeerAddress::Tcp { .. }, Security::Plaintext) => address.to_string(),
            (PeerAddress::Unix(_), Security::Plaintext) => "localhost".to_owned(),
        };
        let connect_err = |source| DialError::Connect {
            address: address.to_string(),
            source,
        };
        let endpoint = Endpoint::from_shared(format!("http://{authority}"))
            .map_err(connect_err)?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(self.keepalive_interval)
            .keep_alive_timeout(self.keepalive_timeout)
            .keep_alive_while_idle(true);
        let channel = endpoint
            .connect_with_connector(connector)
            .await
            .map_err(connect_err)?;
        Ok(Connection {
            channel,
            closing,
            gone,
        })
    }
}

/// One HTTP/2 connection to a Hubble server. Clones share it.
#[derive(Clone)]
pub struct Connection {
    channel: Channel,
    closing: CancellationToken,
    gone: CancellationToken,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("closing", &self.is_closing())
            .field("gone", &self.is_gone())
            .finish()
    }
}

impl Connection {
    /// The channel to make calls on.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Tears the connection down now, failing the calls in flight (the peer
    /// was deleted or moved).
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Whether [`Connection::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.closing.is_cancelled()
    }

    /// Whether the connection is gone (closed by either side or dead).
    pub fn is_gone(&self) -> bool {
        self.gone.is_cancelled()
    }

    /// Resolves when the connection is gone.
    pub fn gone(&self) -> WaitForCancellationFutureOwned {
        self.gone.clone().cancelled_owned()
    }

    /// Resolves when [`Connection::close`] is called.
    pub fn closed(&self) -> WaitForCancellationFutureOwned {
        self.closing.clone().cancelled_owned()
    }
}

/// Dials once: tonic re-dials a channel whose connection broke, but the
/// pool wants to decide when (per-peer backoff), so later calls fail.
#[derive(Clone)]
struct Connector {
    address: PeerAddress,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    closing: CancellationToken,
    gone: CancellationToken,
    used: Arc<AtomicBool>,
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<WatchedIo>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if this.used.swap(true, Ordering::SeqCst) {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "connection gone; the relay's peer pool reconnects",
                ));
            }
            let inner: Box<dyn Io> = match &this.address {
                PeerAddress::Unix(path) => {
                    let stream = UnixStream::connect(path).await?;
                    this.secure(stream).await?
                }
                PeerAddress::Tcp { host, port } => {
                    let stream = match host {
                        Host::Ip(ip) => TcpStream::connect((*ip, *port)).await?,
                        Host::Name(name) => TcpStream::connect((name.as_str(), *port)).await?,
                    };
                    stream.set_nodelay(true)?;
                    this.secure(stream).await?
                }
            };
            Ok(TokioIo::new(WatchedIo {
                inner,
                closing: Box::pin(this.closing.clone().cancelled_owned()),
                _gone: this.gone.clone().drop_guard(),
            }))
        })
    }
}

impl Connector {
    async fn secure<S>(&self, stream: S) -> io::Result<Box<dyn Io>>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        match &self.tls {
            None => Ok(Box::new(stream)),
            Some((connector, name)) => Ok(Box::new(connector.connect(name.clone(), stream).await?)),
        }
    }
}

/// The connection's socket: fails reads and writes once the relay closes
/// it, and marks the connection gone when hyper drops it (peer closed,
/// keepalive timeout, error, or close).
struct WatchedIo {
    inner: Box<dyn Io>,
    closing: Pin<Box<WaitForCancellationFutureOwned>>,
    _gone: DropGuard,
}

impl WatchedIo {
    fn poll_closing(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.closing.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closed by the relay",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.poll_closing(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_closing(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
