//! A PKI in a temp dir, a running apiserver in front of a test etcd, clients
//! with a given certificate, and polling helpers.

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use certs::{Ca, CertName, TlsFiles, Validity};
use clustermesh_apiserver::{Apiserver, Config, WatchConfig, WatchHub};
use etcd_harness::TestEtcd;
use kvstore::{ClientConfig, ClusterId, ClusterName, MaxConnectedClusters, TlsConfig};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a test waits for something that should happen.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` until it returns `Some`, failing after [`DEADLINE`] with
/// `what`.
pub(crate) async fn eventually<T, Fut: Future<Output = Option<T>>>(
    what: &str,
    check: impl FnMut() -> Fut,
) -> T {
    etcd_harness::eventually(what, DEADLINE, check).await
}

/// A CA and the certificates issued by it, in a temp dir.
pub(crate) struct Pki {
    pub(crate) dir: TempDir,
    pub(crate) ca: Ca,
}

impl Pki {
    pub(crate) fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate(name, Validity::days(30).unwrap()).unwrap();
        ca.write(dir.path()).unwrap();
        Self { dir, ca }
    }

    pub(crate) fn ca_file(&self) -> PathBuf {
        self.dir.path().join(Ca::CERT_FILE)
    }

    /// A server certificate for 127.0.0.1.
    pub(crate) fn server(&self, name: &str) -> TlsFiles {
        self.ca
            .issue_server(
                &CertName::new(name).unwrap(),
                &["localhost".to_owned()],
                &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
                Validity::days(1).unwrap(),
            )
            .unwrap()
            .write(self.dir.path())
            .unwrap()
    }

    /// A client certificate whose common name is `name`.
    pub(crate) fn client(&self, name: &str) -> TlsFiles {
        self.ca
            .issue_client(&CertName::new(name).unwrap(), Validity::days(1).unwrap())
            .unwrap()
            .write(self.dir.path())
            .unwrap()
    }
}

/// An apiserver for cluster `c1` (ID 1) running in this process in front of
/// `etcd`; stopped on drop.
pub(crate) struct TestApiserver {
    pub(crate) pki: Pki,
    pub(crate) addr: SocketAddr,
    pub(crate) health_addr: SocketAddr,
    pub(crate) hub: Arc<WatchHub>,
    pub(crate) server_files: TlsFiles,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

pub(crate) const CLUSTER: &str = "c1";

impl TestApiserver {
    pub(crate) async fn start(etcd: &TestEtcd) -> Self {
        Self::start_with(etcd, |_| {}).await
    }

    pub(crate) async fn start_with(etcd: &TestEtcd, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_on(etcd.endpoints(), tweak).await
    }

    /// An apiserver in front of the etcd members at `endpoints`.
    pub(crate) async fn start_on(endpoints: Vec<String>, tweak: impl FnOnce(&mut Config)) -> Self {
        let pki = Pki::new("mesh-ca");
        let server_files = pki.server("apiserver");
        let mut config = Config::new(
            ClusterName::new(CLUSTER).unwrap(),
            ClusterId::new(1, MaxConnectedClusters::C255).unwrap(),
            MaxConnectedClusters::C255,
            ClientConfig::new(endpoints),
            server_files.clone(),
        );
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.health_listen = "127.0.0.1:0".parse().unwrap();
        config.tls_reload = certs::Config {
            debounce: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
            resync_interval: None,
            ..certs::Config::default()
        };
        config.watch = WatchConfig {
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            ..WatchConfig::default()
        };
        tweak(&mut config);
        let apiserver = Apiserver::bind(config).await.expect("bind the apiserver");
        let addr = apiserver.local_addr();
        let health_addr = apiserver.health_addr();
        let hub = apiserver.watch_hub();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { apiserver.run(shutdown).await.expect("apiserver run") }
        });
        let server = Self {
            pki,
            addr,
            health_addr,
            hub,
            server_files,
            shutdown,
            task: Some(task),
        };
        server.wait_ready().await;
        server
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Waits until `/readyz` says ready.
    pub(crate) async fn wait_ready(&self) {
        eventually("the apiserver to be ready", || async {
            match http_get(self.health_addr, "/readyz").await {
                Ok((200, _)) => Some(()),
                _ => None,
            }
        })
        .await;
    }

    /// Client TLS settings with a certificate for `cn` from this PKI.
    pub(crate) fn tls(&self, cn: &str) -> TlsConfig {
        let files = self.pki.client(cn);
        TlsConfig::from_files(&self.pki.ca_file(), Some((&files.cert, &files.key))).unwrap()
    }

    /// A kvstore client (etcd-client underneath) with a `cn` certificate.
    pub(crate) async fn client(&self, cn: &str) -> Result<kvstore::Client, kvstore::Error> {
        let config = ClientConfig::new([self.endpoint()]).with_tls(self.tls(cn));
        kvstore::Client::connect(&config).await
    }

    /// The raw etcd-client of [`TestApiserver::client`].
    pub(crate) async fn etcd_client(&self, cn: &str) -> etcd_client::Client {
        self.client(cn)
            .await
            .expect("connect through the apiserver")
            .raw()
    }

    /// `etcdctl` pointed at the apiserver with a `cn` certificate.
    pub(crate) fn etcdctl(&self, cn: &str) -> Command {
        let files = self.pki.client(cn);
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
            .arg(format!("--cacert={}", self.pki.ca_file().display()))
            .arg(format!("--cert={}", files.cert.display()))
            .arg(format!("--key={}", files.key.display()))
            .arg("--dial-timeout=5s")
            .arg("--command-timeout=10s");
        cmd
    }

    /// The apiserver's metrics.
    pub(crate) async fn metrics(&self) -> String {
        http_get(self.health_addr, "/metrics").await.unwrap().1
    }

    /// Sum of one metric's samples (all label sets) whose labels contain
    /// `label_filter`.
    pub(crate) async fn metric(&self, name: &str, label_filter: &str) -> f64 {
        sum_metric(&self.metrics().await, name, label_filter)
    }

    /// Stops the apiserver and waits for it.
    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("the apiserver stops in time")
                .unwrap();
        }
    }
}

impl Drop for TestApiserver {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub(crate) fn sum_metric(text: &str, name: &str, label_filter: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter(|l| l.contains(label_filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A minimal HTTP/1.0 GET.
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .context("no answer")??;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed response")?;
    Ok((status, body.to_owned()))
}

/// Runs a command to completion; returns (success, stdout, stderr).
pub(crate) async fn run(mut cmd: Command) -> (bool, String, String) {
    let output = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("run the command");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A child process killed on drop (also when the test panics).
pub(crate) struct ChildGuard(pub Child);

impl ChildGuard {
    pub(crate) fn spawn(mut cmd: Command) -> Result<Self> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(Self(child))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One watch event as compared between a direct and a proxied watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SeenEvent {
    pub(crate) kind: &'static str,
    pub(crate) key: String,
    pub(crate) value: String,
    pub(crate) mod_revision: i64,
}

impl SeenEvent {
    pub(crate) fn from_etcd(event: &etcd_client::Event) -> Self {
        let kv = event.kv().expect("events carry a key");
        Self {
            kind: match event.event_type() {
                etcd_client::EventType::Put => "PUT",
                etcd_client::EventType::Delete => "DELETE",
            },
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value: String::from_utf8_lossy(kv.value()).into_owned(),
            mod_revision: kv.mod_revision(),
        }
    }
}

/// Watches `prefix` from `start` until an event at `until` or later arrived,
/// re-opening the watch after the last revision whenever the stream breaks
/// (as any etcd client does). Returns the events and how many times the
/// stream broke.
pub(crate) async fn watch_until(
    mut client: etcd_client::Client,
    prefix: &str,
    start: i64,
    until: impl Fn() -> Option<i64>,
) -> Result<(Vec<SeenEvent>, usize)> {
    let deadline = Instant::now() + DEADLINE * 3;
    let mut events: Vec<SeenEvent> = Vec::new();
    let mut breaks = 0;
    let mut next = start;
    loop {
        if Instant::now() > deadline {
            bail!("watch of {prefix} did not reach the end; saw {events:?}");
        }
        let opts = etcd_client::WatchOptions::new()
            .with_prefix()
            .with_start_revision(next);
        let mut stream = match client.watch(prefix, Some(opts)).await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        loop {
            if let (Some(until), Some(last)) = (until(), events.last())
                && last.mod_revision >= until
            {
                return Ok((events, breaks));
            }
            match tokio::time::timeout(Duration::from_millis(200), stream.message()).await {
                Err(_) => continue,
                Ok(Ok(Some(resp))) => {
                    if resp.canceled() {
                        bail!("watch canceled: {}", resp.cancel_reason());
                    }
                    for e in resp.events() {
                        let seen = SeenEvent::from_etcd(e);
                        next = seen.mod_revision + 1;
                        events.push(seen);
                    }
                }
                Ok(Ok(None)) | Ok(Err(_)) => {
                    breaks += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    break;
                }
            }
        }
    }
}

/// `etcdctl` pointed straight at `etcd` with `args`.
pub(crate) fn direct(etcd: &TestEtcd, args: &[&str]) -> Command {
    let mut cmd = etcd.etcdctl();
    cmd.args(args);
    cmd
}

/// An etcd-client connected straight to `etcd`.
pub(crate) async fn direct_client(etcd: &TestEtcd) -> etcd_client::Client {
    etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("connect to etcd")
}

/// etcd's current revision.
pub(crate) async fn current_revision(etcd: &TestEtcd) -> i64 {
    let mut client = direct_client(etcd).await;
    client
        .status()
        .await
        .expect("etcd status")
        .header()
        .expect("a header")
        .revision()
}
