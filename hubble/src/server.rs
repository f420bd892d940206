//! Serving the `Observer` and `Peer` services and gRPC health (service
//! `hubble.server.Observer`) on a unix socket (always; local clients such
//! as `hubble --server unix://...`) and on TCP with mutual TLS (relays and
//! remote CLIs, which must present a certificate of the mesh CA).

use std::{
    io,
    net::SocketAddr,
    os::unix::fs::FileTypeExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use certs::{HandshakeFailed, TlsListener};
use hubble_api::{observer::observer_server::ObserverServer, peer::peer_server::PeerServer};
use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::{
    names::OBSERVER_HEALTH_SERVICE,
    observer::{FlowRecord, LocalObserver},
    peer::PeerService,
};

/// How long a TLS client has to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often namespaces are collected from the ring (so that a namespace
/// outlives its flows there, as `GetNamespaces` promises).
const NAMESPACE_SCAN: Duration = Duration::from_secs(10);

/// Where to listen.
pub struct Listen {
    /// The unix socket (created; a stale socket at the path is replaced,
    /// any other file is an error).
    pub unix_socket: PathBuf,
    /// TCP with mutual TLS, if wanted.
    pub tcp: Option<TcpListen>,
}

/// A TCP listener and the TLS acceptor that authenticates its clients.
pub struct TcpListen {
    pub addr: SocketAddr,
    pub acceptor: TlsAcceptor,
    /// Told the reason of each failed handshake (for a metric).
    pub on_handshake_failure: HandshakeFailed,
}

/// Binding a listener failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on unix socket {path}")]
    Unix {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} exists and is not a socket; refusing to replace it (remove it or choose another --hubble-socket)"
    )]
    NotASocket { path: PathBuf },
    #[error(
        "{path} is in use by another running server (another agent with the same --hubble-socket?)"
    )]
    InUse { path: PathBuf },
    #[error("cannot listen on {addr}")]
    Tcp {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// A bound Hubble server, ready to [`run`](Self::run).
pub struct HubbleServer<T> {
    observer: Arc<LocalObserver<T>>,
    peer: PeerService,
    unix: UnixListener,
    unix_path: PathBuf,
    tcp: Option<TlsListener>,
    tcp_addr: Option<SocketAddr>,
}

impl<T> std::fmt::Debug for HubbleServer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubbleServer")
            .field("unix", &self.unix_path)
            .field("tcp", &self.tcp_addr)
            .finish_non_exhaustive()
    }
}

impl<T: FlowRecord> HubbleServer<T> {
    /// Binds the listeners (so that a taken port is an error at start).
    pub async fn bind(
        listen: Listen,
        observer: Arc<LocalObserver<T>>,
        peer: PeerService,
    ) -> Result<Self, ServerError> {
        let unix = bind_unix(&listen.unix_socket)?;
        let (tcp, tcp_addr) = match listen.tcp {
            None => (None, None),
            Some(t) => {
                let tcp_err = |source| ServerError::Tcp {
                    addr: t.addr,
                    source,
                };
                let listener = TcpListener::bind(t.addr).await.map_err(tcp_err)?;
                let addr = listener.local_addr().map_err(tcp_err)?;
                let listener = TlsListener::new(
                    listener,
                    t.acceptor,
                    HANDSHAKE_TIMEOUT,
                    t.on_handshake_failure,
                );
                (Some(listener), Some(addr))
            }
        };
        Ok(Self {
            observer,
            peer,
            unix,
            unix_path: listen.unix_socket,
            tcp,
            tcp_addr,
        })
    }

    /// The TCP address, once bound (port 0 resolved).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Serves until `shutdown`, then removes the socket it created.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), tonic::transport::Error> {
        let (reporter, health) = tonic_health::server::health_reporter();
        for service in ["", OBSERVER_HEALTH_SERVICE] {
            reporter
                .set_service_status(service, ServingStatus::Serving)
                .await;
        }
        let observer = ObserverServer::from_arc(self.observer.clone());
        let peer = PeerServer::new(self.peer);
        let router = || {
            Server::builder()
                .add_service(health.clone())
                .add_service(observer.clone())
                .add_service(peer.clone())
        };
        let tasks = TaskTracker::new();
        {
            let (observer, shutdown) = (self.observer.clone(), shutdown.clone());
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(NAMESPACE_SCAN);
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        _ = tick.tick() => observer.track_namespaces(),
                    }
                }
            });
        }
        info!(socket = %self.unix_path.display(), tcp = ?self.tcp_addr, "Hubble server listening");
        let unix = router().serve_with_incoming_shutdown(
            UnixListenerStream::new(self.unix),
            shutdown.clone().cancelled_owned(),
        );
        let result = match self.tcp {
            None => unix.await,
            Some(tcp) => {
                let tcp = router().serve_with_incoming_shutdown(
                    tcp.into_incoming(shutdown.clone()),
                    shutdown.clone().cancelled_owned(),
                );
                let (a, b) = tokio::join!(unix, tcp);
                a.and(b)
            }
        };
        tasks.close();
        tasks.wait().await;
        if let Err(e) = std::fs::remove_file(&self.unix_path) {
            warn!(error = %e, socket = %self.unix_path.display(), "cannot remove the Hubble socket");
        }
        result
    }
}

/// Binds `path`, replacing a stale socket left by an earlier run.
fn bind_unix(path: &Path) -> Result<UnixListener, ServerError> {
    let unix_err = |source| ServerError::Unix {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServerError::InUse {
                    path: path.to_path_buf(),
                });
            }
            std::fs::remove_file(path).map_err(unix_err)?;
        }
        Ok(_) => {
            return Err(ServerError::NotASocket {
                path: path.to_path_buf(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(unix_err(e)),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(unix_err)?;
    }
    UnixListener::bind(path).map_err(unix_err)
}
