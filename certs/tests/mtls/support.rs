//! A tiny PKI in a temp dir, a TLS greeter server and a client, for the tests.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::{Context, bail};
use certs::{
    Ca, CertName, CertificateInfo, Config, ReloadStats, ServerTls, TlsFiles, TlsHandle, Validity,
};
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsConnector, client::TlsStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// How long any test waits for something that should happen.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// The server name in every server certificate made by [`Pki::server`].
pub(crate) const SERVER_NAME: &str = "apiserver.c1.mesh";

/// A CA in a temp dir (removed on drop).
pub(crate) struct Pki {
    pub(crate) dir: TempDir,
    pub(crate) ca: Ca,
}

impl Pki {
    pub(crate) fn new(ca_name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate(ca_name, Validity::days(30).unwrap()).unwrap();
        ca.write(dir.path()).unwrap();
        Self { dir, ca }
    }

    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// A server certificate for [`SERVER_NAME`] and 127.0.0.1, written as
    /// `NAME.crt`/`NAME.key` with `ca.crt` as bundle.
    pub(crate) fn server(&self, name: &str) -> TlsFiles {
        self.ca
            .issue_server(
                &CertName::new(name).unwrap(),
                &[SERVER_NAME.to_owned()],
                &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
                Validity::days(1).unwrap(),
            )
            .unwrap()
            .write(self.dir.path())
            .unwrap()
    }

    /// A client certificate with common name `name`.
    pub(crate) fn client(&self, name: &str) -> TlsFiles {
        self.ca
            .issue_client(&CertName::new(name).unwrap(), Validity::days(1).unwrap())
            .unwrap()
            .write(self.dir.path())
            .unwrap()
    }
}

/// Reload quickly and only on file events, so that tests prove the watcher.
pub(crate) fn fast_config() -> Config {
    Config {
        debounce: Duration::from_millis(50),
        max_delay: Duration::from_millis(500),
        resync_interval: None,
        ..Config::default()
    }
}

/// What the server saw of one connection attempt: the client's CN, or the
/// handshake error.
pub(crate) type Outcome = Result<Option<String>, String>;

/// A mutual TLS server on 127.0.0.1:0 that greets each client with
/// `hello <client CN>` and then echoes lines until it reads `bye`. Its watcher runs; dropping it
/// stops everything.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) handle: TlsHandle,
    outcomes: mpsc::UnboundedReceiver<Outcome>,
    shutdown: CancellationToken,
}

impl TestServer {
    pub(crate) async fn start(files: TlsFiles) -> Self {
        let tls = ServerTls::load(files, fast_config()).unwrap();
        Self::start_with(tls).await
    }

    pub(crate) async fn start_with(tls: ServerTls) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = tls.handle();
        let acceptor = tls.acceptor();
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (tx, outcomes) = mpsc::unbounded_channel();

        tracker.spawn(tls.run(shutdown.clone()));
        let conns = tracker.clone();
        let stop = shutdown.clone();
        tracker.spawn(async move {
            loop {
                let tcp = tokio::select! {
                    () = stop.cancelled() => break,
                    accepted = listener.accept() => accepted.unwrap().0,
                };
                let (acceptor, tx, stop) = (acceptor.clone(), tx.clone(), stop.clone());
                conns.spawn(async move {
                    let stream = match acceptor.accept(tcp).await {
                        Ok(stream) => stream,
                        Err(err) => {
                            let _ = tx.send(Err(err.to_string()));
                            return;
                        }
                    };
                    let cn = certs::peer_common_name(
                        stream.get_ref().1.peer_certificates().unwrap_or(&[]),
                    );
                    let _ = tx.send(Ok(cn.clone()));
                    let mut stream = BufReader::new(stream);
                    let greeting = format!("hello {}\n", cn.as_deref().unwrap_or("<none>"));
                    if stream
                        .get_mut()
                        .write_all(greeting.as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let mut line = String::new();
                    loop {
                        line.clear();
                        tokio::select! {
                            () = stop.cancelled() => return,
                            read = stream.read_line(&mut line) => match read {
                                Ok(0) | Err(_) => return,
                                Ok(_) if line == "bye\n" => {
                                    let _ = stream.get_mut().shutdown().await;
                                    return;
                                }
                                Ok(_) => {
                                    if stream.get_mut().write_all(line.as_bytes()).await.is_err() {
                                        return;
                                    }
                                }
                            },
                        }
                    }
                });
            }
        });
        tracker.close();
        Self {
            addr,
            handle,
            outcomes,
            shutdown,
        }
    }

    /// The server's view of the next connection attempt.
    pub(crate) async fn next_outcome(&mut self) -> Outcome {
        tokio::time::timeout(DEADLINE, self.outcomes.recv())
            .await
            .expect("no connection attempt reached the server in time")
            .expect("server stopped")
    }

    /// Waits until the server's reload counts satisfy `done`.
    pub(crate) async fn wait_for(&self, done: impl FnMut(&ReloadStats) -> bool) -> ReloadStats {
        wait_for(&self.handle, done).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Waits until `handle`'s reload counts satisfy `done`, or panics at the deadline.
pub(crate) async fn wait_for(
    handle: &TlsHandle,
    done: impl FnMut(&ReloadStats) -> bool,
) -> ReloadStats {
    let mut rx = handle.subscribe();
    *tokio::time::timeout(DEADLINE, rx.wait_for(done))
        .await
        .unwrap_or_else(|_| panic!("reload counts did not change in time: {:?}", handle.stats()))
        .unwrap()
}

/// A client connection that got past the greeting.
pub(crate) struct Session {
    stream: BufReader<TlsStream<TcpStream>>,
    pub(crate) greeting: String,
    /// Serial of the certificate the server presented.
    pub(crate) server_serial: String,
}

impl Session {
    /// Connects, completes the handshake as `server_name` and reads the
    /// greeting. With TLS 1.3 a server that refuses the client certificate does
    /// so after the client's handshake is done, so a refusal surfaces here as a
    /// failed or empty read.
    pub(crate) async fn connect(
        config: Arc<ClientConfig>,
        addr: SocketAddr,
        server_name: &str,
    ) -> anyhow::Result<Self> {
        tokio::time::timeout(DEADLINE, async {
            let tcp = TcpStream::connect(addr).await?;
            let name = ServerName::try_from(server_name.to_owned())?;
            let stream = TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .context("client handshake")?;
            let peer = stream
                .get_ref()
                .1
                .peer_certificates()
                .context("no server cert")?;
            let server_serial = CertificateInfo::from_der(&peer[0])?.serial;
            let mut stream = BufReader::new(stream);
            let mut greeting = String::new();
            if stream
                .read_line(&mut greeting)
                .await
                .context("read greeting")?
                == 0
            {
                bail!("server closed the connection without a greeting");
            }
            Ok(Self {
                stream,
                greeting: greeting.trim_end().to_owned(),
                server_serial,
            })
        })
        .await
        .context("connect timed out")?
    }

    /// Sends a line and reads the echo.
    pub(crate) async fn echo(&mut self, message: &str) -> anyhow::Result<String> {
        self.stream
            .get_mut()
            .write_all(format!("{message}\n").as_bytes())
            .await?;
        let mut line = String::new();
        tokio::time::timeout(DEADLINE, self.stream.read_line(&mut line)).await??;
        Ok(line.trim_end().to_owned())
    }
}

/// A plain rustls client (not [`certs::ClientTls`], which refuses to load
/// expired certificates) trusting `ca_pem`, with an optional identity.
pub(crate) fn raw_client_config(
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert)
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(key).unwrap(),
            )
            .unwrap(),
    };
    Arc::new(config)
}

/// A validity window that ended yesterday.
pub(crate) fn expired() -> Validity {
    let now = SystemTime::now();
    Validity::between(
        now - Duration::from_secs(10 * 86_400),
        now - Duration::from_secs(86_400),
    )
    .unwrap()
}

pub(crate) fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// Replaces a file atomically (write a sibling, rename), as `clustermesh certs`
/// and most deployment tools do.
pub(crate) fn replace(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp-test");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
