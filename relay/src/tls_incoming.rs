//! Mutual TLS on the relay's gRPC listener.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::JoinSet,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::{debug, warn};

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause after a failed `accept` (out of file descriptors and the
/// like), so as not to spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// A connection whose mutual TLS handshake succeeded.
#[derive(Debug)]
pub(crate) struct TlsConnection {
    stream: TlsStream<TcpStream>,
    remote: Option<SocketAddr>,
    local: Option<SocketAddr>,
}

impl Connected for TlsConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: self.local,
            remote_addr: self.remote,
        }
    }
}

/// Accepts on `listener` until `shutdown` or until `accepted` is closed,
/// handshaking concurrently (a slow client does not hold up the others).
/// Clients without a certificate signed by the client CA never reach gRPC.
pub(crate) async fn accept_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    accepted: mpsc::Sender<io::Result<TlsConnection>>,
    shutdown: CancellationToken,
) {
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = accepted.closed() => break,
            Some(done) = handshakes.join_next() => {
                if let Ok(Some(connection)) = done
                    && accepted.send(Ok(connection)).await.is_err()
                {
                    break;
                }
            }
            incoming = listener.accept() => match incoming {
                Ok((tcp, remote)) => {
                    let acceptor = acceptor.clone();
                    handshakes.spawn(async move {
                        let _ = tcp.set_nodelay(true);
                        let local = tcp.local_addr().ok();
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => Some(TlsConnection { stream, remote: Some(remote), local }),
                            Ok(Err(error)) => {
                                debug!(%remote, %error, "TLS handshake failed");
                                None
                            }
                            Err(_) => {
                                debug!(%remote, "TLS handshake timed out");
                                None
                            }
                        }
                    });
                }
                Err(error) => {
                    warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
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
