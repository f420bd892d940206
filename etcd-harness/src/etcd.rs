use std::{
    fs::{File, OpenOptions},
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::port::free_port;

/// How long a start or restart may take before it is reported as failed.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful stop may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts with fresh ports when another process took one of ours.
const START_ATTEMPTS: usize = 5;

/// TLS for the client port of a test etcd.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// Server certificate (PEM). Its SANs must cover 127.0.0.1.
    pub cert: PathBuf,
    /// Server key (PEM).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA
    /// (`--client-cert-auth`).
    pub client_ca: Option<PathBuf>,
}

/// How to run a [`TestEtcd`].
#[derive(Debug, Clone, Default)]
pub struct EtcdOptions {
    /// Serve the client port over TLS. Default: plain HTTP.
    pub tls: Option<ServerTls>,
    /// Keep the data on the real disk instead of tmpfs (`/dev/shm`). Default:
    /// tmpfs, because etcd fsyncs every write and tests need speed, not
    /// durability across machine crashes. Benchmarks that compare against raw
    /// etcd use the same setting for both sides.
    pub on_disk: bool,
    /// More `etcd` flags, e.g. `--auto-compaction-retention=1`.
    pub extra_args: Vec<String>,
}

/// A real etcd process owned by a test. See the crate documentation.
#[derive(Debug)]
pub struct TestEtcd {
    options: EtcdOptions,
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    metrics_port: u16,
    child: Option<Child>,
    paused: bool,
    /// `--name`, and the member list of the cluster it belongs to (`None`:
    /// a cluster of itself).
    name: String,
    initial_cluster: Option<String>,
}

impl TestEtcd {
    /// Starts a plain-HTTP etcd on free ports and waits until it is healthy.
    pub async fn start() -> Result<Self> {
        Self::start_with(EtcdOptions::default()).await
    }

    /// Starts an etcd with `options` and waits until it is healthy.
    pub async fn start_with(options: EtcdOptions) -> Result<Self> {
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let mut etcd = Self::unstarted(options.clone(), "test")?;
            match etcd.spawn_and_wait().await {
                Ok(()) => return Ok(etcd),
                Err(e) if etcd.ports_taken() => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.expect("at least one attempt")).context("etcd ports kept being taken")
    }

    /// A server on fresh ports with a fresh temp dir, not started yet.
    pub(crate) fn unstarted(options: EtcdOptions, name: &str) -> Result<Self> {
        Ok(Self {
            dir: temp_dir(options.on_disk).context("create a temp dir for etcd")?,
            options,
            client_port: free_port(),
            peer_port: free_port(),
            metrics_port: free_port(),
            child: None,
            paused: false,
            name: name.to_string(),
            initial_cluster: None,
        })
    }

    /// Makes the server a member of the cluster `members` (`name=peer URL`
    /// pairs, comma-separated), before its first start.
    pub(crate) fn set_initial_cluster(&mut self, members: String) {
        self.initial_cluster = Some(members);
    }

    /// `name=http://127.0.0.1:<peer port>`, this member's entry in an
    /// `--initial-cluster` list.
    pub(crate) fn initial_cluster_entry(&self) -> String {
        format!("{}={}", self.name, self.peer_url())
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// Whether a start failed because another process took one of the ports.
    pub(crate) fn ports_taken(&self) -> bool {
        self.log().contains("address already in use")
    }

    /// The member name (`--name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The client URL as a one-element list, the shape client configs take.
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint()]
    }

    /// The client port on 127.0.0.1.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// Plain-HTTP URL that serves `/health` and Prometheus `/metrics`, also when
    /// the client port uses TLS.
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.metrics_port)
    }

    /// The process ID of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The directory that holds the data dir and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the server process is alive (it may be paused).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the server gracefully (SIGTERM; SIGKILL after 10 s). Data is kept.
    pub async fn stop(&mut self) -> Result<()> {
        self.resume();
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        signal(&child, libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Kills the server (SIGKILL), as a crash would. Data is kept.
    pub fn kill(&mut self) {
        self.resume();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing answers,
    /// like a partition. [`TestEtcd::resume`] undoes it.
    pub fn pause(&mut self) {
        if let Some(child) = &self.child {
            signal(child, libc::SIGSTOP);
            self.paused = true;
        }
    }

    /// Undoes [`TestEtcd::pause`].
    pub fn resume(&mut self) {
        if self.paused {
            if let Some(child) = &self.child {
                signal(child, libc::SIGCONT);
            }
            self.paused = false;
        }
    }

    /// Starts the server again on the same ports with the same data (after
    /// [`TestEtcd::stop`] or [`TestEtcd::kill`]; stops it first if it runs).
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.spawn_and_wait().await
    }

    /// Replaces the server with a new, empty one on the same ports (a new etcd
    /// cluster ID, revisions from 1), like an etcd pod rescheduled without
    /// persistent storage.
    pub async fn wipe_and_restart(&mut self) -> Result<()> {
        self.stop().await?;
        let data = self.dir.path().join("data");
        if data.exists() {
            std::fs::remove_dir_all(&data).context("remove the etcd data dir")?;
        }
        self.spawn_and_wait().await
    }

    /// Fetches etcd's Prometheus metrics.
    pub async fn metrics(&self) -> Result<String> {
        let (status, body) = http_get(self.metrics_port, "/metrics").await?;
        if status != 200 {
            bail!("etcd /metrics answered {status}");
        }
        Ok(body)
    }

    /// Sum of all samples of one metric (all label sets), e.g.
    /// `etcd_debugging_mvcc_watcher_total` or `process_cpu_seconds_total`.
    pub async fn metric(&self, name: &str) -> Result<f64> {
        let text = self.metrics().await?;
        Ok(sum_metric(&text, name))
    }

    /// An `etcdctl` command (API v3) pointed at this server.
    pub fn etcdctl(&self) -> Command {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()));
        cmd
    }

    /// The server's log so far (stdout and stderr of every run).
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(self.log_path()) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    async fn spawn_and_wait(&mut self) -> Result<()> {
        let log_start = self.spawn()?;
        self.wait_ready(log_start).await
    }

    /// Starts the process without waiting; returns where this run's log
    /// starts, for [`TestEtcd::wait_ready`]. (Members of a new cluster
    /// become healthy only once a quorum runs, so a cluster spawns them all
    /// before waiting.)
    pub(crate) fn spawn(&mut self) -> Result<u64> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("open the etcd log")?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let peer = self.peer_url();
        let client = self.endpoint();
        let initial_cluster = self
            .initial_cluster
            .clone()
            .unwrap_or_else(|| self.initial_cluster_entry());
        let mut cmd = Command::new("etcd");
        cmd.arg(format!("--name={}", self.name))
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .arg(format!("--listen-metrics-urls={}", self.metrics_url()))
            .arg("--logger=zap")
            .arg("--log-outputs=stderr");
        if let Some(tls) = &self.options.tls {
            cmd.arg(format!("--cert-file={}", tls.cert.display()))
                .arg(format!("--key-file={}", tls.key.display()));
            if let Some(ca) = &tls.client_ca {
                cmd.arg("--client-cert-auth")
                    .arg(format!("--trusted-ca-file={}", ca.display()));
            }
        }
        cmd.args(&self.options.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        crate::die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .context("run `etcd` (Debian package etcd-server; `make test` installs it)")?;
        self.child = Some(child);
        Ok(log_start)
    }

    /// Waits until the server answers `/health` (which needs a leader).
    pub(crate) async fn wait_ready(&mut self, log_start: u64) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!(
                    "etcd exited with {status} before it was ready; log:\n{}",
                    self.log_since(log_start)
                );
            }
            if let Ok((200, body)) = http_get(self.metrics_port, "/health").await
                && body.contains("true")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                bail!(
                    "etcd was not healthy within {READY_TIMEOUT:?}; log:\n{}",
                    self.log_since(log_start)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_since(&self, start: u64) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(self.log_path()) {
            let _ = f.seek(SeekFrom::Start(start));
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A directory for etcd's data: in tmpfs unless `on_disk`.
fn temp_dir(on_disk: bool) -> std::io::Result<TempDir> {
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("etcd-harness-");
        b
    };
    let shm = Path::new("/dev/shm");
    if !on_disk
        && shm.is_dir()
        && let Ok(dir) = builder.tempdir_in(shm)
    {
        return Ok(dir);
    }
    builder.tempdir()
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) with the PID of a child we have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

async fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let io = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .context("etcd did not answer within 5 s")??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP response from etcd")?;
    Ok((status, body.to_string()))
}

fn sum_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            // `name 3` or `name{labels} 3`, but not `name_suffix 3`.
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                return None;
            }
            line.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_metric_over_label_sets() {
        let text = "# HELP x\nx{a=\"1\"} 2\nx{a=\"2\"} 3.5\nx_total 100\nx 1\n";
        assert_eq!(sum_metric(text, "x"), 6.5);
        assert_eq!(sum_metric(text, "x_total"), 100.0);
        assert_eq!(sum_metric(text, "y"), 0.0);
    }

    #[tokio::test]
    async fn starts_restarts_and_cleans_up() {
        let mut etcd = TestEtcd::start().await.expect("start etcd");
        let dir = etcd.dir().to_path_buf();
        let pid = etcd.pid().expect("running");
        assert!(etcd.is_running());

        let put = etcd.etcdctl().args(["put", "k", "v"]).output().unwrap();
        assert!(
            put.status.success(),
            "{}",
            String::from_utf8_lossy(&put.stderr)
        );

        etcd.kill();
        assert!(!etcd.is_running());
        etcd.restart().await.expect("restart");
        assert_ne!(etcd.pid(), Some(pid));
        let get = etcd
            .etcdctl()
            .args(["get", "k", "--print-value-only"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&get.stdout).trim(),
            "v",
            "data survives a restart"
        );
        assert!(etcd.metric("etcd_server_has_leader").await.unwrap() >= 1.0);

        let pid = etcd.pid().unwrap();
        drop(etcd);
        assert!(!dir.exists(), "temp dir removed on drop");
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
        assert!(!alive, "etcd process killed on drop");
    }

    #[test]
    fn data_goes_to_tmpfs_unless_on_disk() {
        let shm = Path::new("/dev/shm");
        let disk = temp_dir(true).unwrap();
        assert!(!disk.path().starts_with(shm), "{}", disk.path().display());
        if shm.is_dir() {
            let fast = temp_dir(false).unwrap();
            assert!(fast.path().starts_with(shm), "{}", fast.path().display());
        }
    }
}
