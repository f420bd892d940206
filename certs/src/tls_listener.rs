use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use std::sync::Arc;

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::JoinSet,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tracing::{debug, warn};

/// The pause after a failed `accept` (out of file descriptors and the
/// like): short enough that service resumes at once when the cause goes
/// away, long enough not to spin a core on the failure meanwhile.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Who is on the other end of a connection: the common name of the
/// certificate it proved it owns (empty if the certificate has none). Every
/// RPC finds it in its request extensions and authorizes on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub common_name: String,
    pub remote_addr: SocketAddr,
}

/// A connection whose mutual TLS handshake succeeded, handed to tonic.
pub struct PeerStream {
    stream: TlsStream<TcpStream>,
    info: PeerInfo,
    /// Dropped with the connection (e.g. to count open connections).
    guard: Option<Box<dyn Send + Sync>>,
}

impl std::fmt::Debug for PeerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerStream")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl PeerStream {
    /// Who is on the other end.
    pub fn info(&self) -> &PeerInfo {
        &self.info
    }

    /// Keeps `guard` until the connection closes (its `Drop` runs then).
    pub fn with_guard(mut self, guard: impl Send + Sync + 'static) -> Self {
        self.guard = Some(Box::new(guard));
        self
    }
}

impl Connected for PeerStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Accepts TCP connections and completes the mutual TLS handshake on each,
/// concurrently and with a deadline, so a slow or silent client never holds
/// up the others. A client without a certificate, or with one that does not
/// chain to the client CA bundle, fails the handshake and never reaches gRPC.
/// The acceptor's configuration follows certificate reloads by itself
/// ([`certs::ServerTls`]); established connections are not touched.
pub struct TlsListener {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    on_failure: HandshakeFailed,
}

/// Called with a short, bounded reason (`no-certificate`, `unknown-ca`,
/// `bad-certificate`, `timeout`, `other`) for every failed handshake, e.g.
/// to count it in a metric.
pub type HandshakeFailed = Arc<dyn Fn(&'static str) + Send + Sync>;

/// How many authenticated connections may wait for the gRPC server.
const ACCEPTED_QUEUE: usize = 64;

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("addr", &self.listener.local_addr().ok())
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// A listener that calls `on_failure` for each failed handshake.
    pub fn new(
        listener: TcpListener,
        acceptor: TlsAcceptor,
        handshake_timeout: Duration,
        on_failure: HandshakeFailed,
    ) -> Self {
        Self {
            listener,
            acceptor,
            handshake_timeout,
            on_failure,
        }
    }

    /// Accepts on a task of its own until `shutdown`; the stream of
    /// authenticated connections is for tonic's `serve_with_incoming`.
    pub fn into_incoming(
        self,
        shutdown: CancellationToken,
    ) -> ReceiverStream<io::Result<PeerStream>> {
        let (accepted, incoming) = mpsc::channel(ACCEPTED_QUEUE);
        tokio::spawn(self.run(accepted, shutdown));
        ReceiverStream::new(incoming)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts until `shutdown` (or until the receiver of `accepted` is
    /// gone), sending each authenticated connection to `accepted`.
    pub async fn run(
        self,
        accepted: mpsc::Sender<io::Result<PeerStream>>,
        shutdown: CancellationToken,
    ) {
        let mut handshakes = JoinSet::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = accepted.closed() => break,
                Some(done) = handshakes.join_next() => {
                    if let Ok(Some(stream)) = done
                        && accepted.send(Ok(stream)).await.is_err()
                    {
                        break;
                    }
                }
                incoming = self.listener.accept() => match incoming {
                    Ok((tcp, remote_addr)) => {
                        let acceptor = self.acceptor.clone();
                        let on_failure = self.on_failure.clone();
                        let timeout = self.handshake_timeout;
                        handshakes.spawn(handshake(acceptor, tcp, remote_addr, timeout, on_failure));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off a
                        // little instead of spinning.
                        warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                },
            }
        }
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    remote_addr: SocketAddr,
    timeout: Duration,
    on_failure: HandshakeFailed,
) -> Option<PeerStream> {
    let _ = tcp.set_nodelay(true);
    let stream = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            let reason = failure_reason(&e);
            on_failure(reason);
            debug!(%remote_addr, reason, error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            on_failure("timeout");
            debug!(%remote_addr, ?timeout, "TLS handshake timed out");
            return None;
        }
    };
    let common_name =
        crate::peer_common_name(stream.get_ref().1.peer_certificates().unwrap_or(&[]))
            .unwrap_or_default();
    Some(PeerStream {
        stream,
        info: PeerInfo {
            common_name,
            remote_addr,
        },
        guard: None,
    })
}

/// A short, bounded label for a failed handshake.
fn failure_reason(e: &io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::NoCertificatesPresented) => "no-certificate",
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer)) => "unknown-ca",
        Some(Error::InvalidCertificate(_)) => "bad-certificate",
        _ => "other",
    }
}
