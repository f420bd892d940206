//! The world of `make bench BENCH=scale`: many simulated clusters, each a
//! real etcd and a real `clustermesh-apiserver` (the release binary) on
//! 127.0.0.1, filled with synthetic entries written straight into its etcd,
//! and one real agent (its own etcd, its eBPF maps, a node namespace) that
//! connects to them through its clustermesh config directory, as on a node.
//!
//! Only the workloads are synthetic: what the agent reads, over mutual TLS,
//! is what an operator would have published (identities, ipcache entries,
//! sync canaries), and the apiservers publish their own cluster config.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use agent::{ApiClient, StatusView};
use anyhow::{Context, Result, bail};
use bpf::{IPCACHE_MAP, IpCacheKey, IpCacheMap};
use certs::{Ca, CertName, TlsFiles, Validity};
use etcd_client::GetOptions;
use etcd_harness::{EtcdOptions, TestEtcd, free_port};
use futures::{StreamExt, TryStreamExt, stream};
use kvstore::{
    Client, ClientConfig, ClusterName, KeyPrefix, Labels, MaxConnectedClusters, NumericIdentity,
    StoreValue, WatchStoreConfig, keys,
    values::{IdentityEntry, IpIdentityPair},
};
use netns::NetNs;

/// Every cluster of the bench runs in this mode, so that one agent can
/// see 255 remotes (IDs 2…256) besides its own cluster (ID 1).
pub const MODE: MaxConnectedClusters = MaxConnectedClusters::C511;
/// The agent's cluster.
pub const LOCAL_CLUSTER: &str = "scale";
pub const LOCAL_ID: u32 = 1;
/// How long a component may take to come up or an agent to converge.
pub const DEADLINE: Duration = Duration::from_secs(300);
/// Entries per identity (the issue's "10 % as many identities").
pub const ENTRIES_PER_IDENTITY: usize = 10;
/// Remote etcds and apiservers started at once.
const START_CONCURRENCY: usize = 16;
/// etcd transactions in flight per cluster while seeding.
const SEED_CONCURRENCY: usize = 8;
/// Operations per seeding transaction (etcd's `--max-txn-ops` default).
const TXN_OPS: usize = 128;

/// One CA for the whole bench, the apiservers' server certificate (for
/// 127.0.0.1) and the agent's client certificate (`remote-scale`).
///
/// The agent's files (its certificate and a copy of the CA) are in a
/// directory of their own: every apiserver watches the directory of its
/// TLS files, so each read of a file there woke all the apiservers (and
/// cost the reader the kernel's fan-out to them), which no real mesh does.
pub struct Pki {
    pub ca_file: PathBuf,
    pub server: TlsFiles,
    pub client: TlsFiles,
    /// The CA, as the agent reads it.
    pub client_ca_file: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Result<Self> {
        let validity = Validity::days(2)?;
        let ca = Ca::generate("scale-bench-ca", Validity::days(3)?)?;
        ca.write(dir)?;
        let server = ca
            .issue_server(
                &CertName::new("apiserver")?,
                &["localhost".to_owned()],
                &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
                validity,
            )?
            .write(dir)?;
        let client_dir = dir.join("agent");
        fs::create_dir_all(&client_dir)?;
        let client = ca
            .issue_client(&CertName::new(format!("remote-{LOCAL_CLUSTER}"))?, validity)?
            .write(&client_dir)?;
        let client_ca_file = client_dir.join(Ca::CERT_FILE);
        fs::copy(dir.join(Ca::CERT_FILE), &client_ca_file)?;
        Ok(Self {
            ca_file: dir.join(Ca::CERT_FILE),
            server,
            client,
            client_ca_file,
        })
    }
}

/// The remote cluster ID of the `i`-th remote (0-based): 2, 3, …
pub fn remote_id(i: usize) -> u32 {
    LOCAL_ID + 1 + i as u32
}

/// The `k`-th identity (0-based) of cluster `id`.
pub fn identity(id: u32, k: usize) -> NumericIdentity {
    NumericIdentity::new(
        (id << MODE.cluster_shift()) | (NumericIdentity::MIN_ALLOCATABLE + k as u32),
    )
}

/// The address of entry `j` of the `i`-th remote when each remote has room
/// for `stride` addresses (a power of two): `10.0.0.0/8` split in blocks.
pub fn entry_ip(i: usize, stride: usize, j: usize) -> IpAddr {
    let n = (10u32 << 24) + (i * stride + j) as u32;
    IpAddr::V4(Ipv4Addr::from(n))
}

/// The smallest power of two ≥ `n`, the per-remote address block size.
pub fn stride_for(n: usize) -> usize {
    n.next_power_of_two()
}

/// One simulated cluster: its etcd, a direct client to it, and its apiserver.
pub struct Remote {
    pub index: usize,
    pub name: ClusterName,
    pub id: u32,
    pub etcd: TestEtcd,
    pub client: Client,
    apiserver: Option<Child>,
    pub listen: SocketAddr,
    health: SocketAddr,
    log: PathBuf,
}

/// Remotes whose etcd keeps its data in tmpfs (fast); the others keep it
/// on disk: every etcd preallocates a 64 MiB write-ahead log, and 255 of
/// them in tmpfs would hold 16 GiB of memory.
pub const TMPFS_REMOTES: usize = 64;

impl Remote {
    /// Starts the `index`-th remote: etcd, then its apiserver, both ready.
    pub async fn start(index: usize, dir: &Path, pki: &Pki, bin_dir: &Path) -> Result<Self> {
        let id = remote_id(index);
        let name = ClusterName::new(format!("r{id}"))?;
        let etcd = TestEtcd::start_with(EtcdOptions {
            // A million keys and their history fit comfortably.
            extra_args: vec!["--quota-backend-bytes=8589934592".into()],
            on_disk: index >= TMPFS_REMOTES,
            ..EtcdOptions::default()
        })
        .await
        .with_context(|| format!("etcd of {name}"))?;
        let client = Client::connect(&ClientConfig::new(etcd.endpoints())).await?;
        let mut remote = Self {
            index,
            id,
            client,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            health: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            log: dir.join(format!("apiserver-{name}.log")),
            name,
            etcd,
            apiserver: None,
        };
        remote.start_apiserver(pki, bin_dir).await?;
        Ok(remote)
    }

    async fn start_apiserver(&mut self, pki: &Pki, bin_dir: &Path) -> Result<()> {
        let mut last = None;
        for _ in 0..5 {
            self.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
            self.health = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
            let log = fs::File::create(&self.log)?;
            let mut cmd = Command::new(bin_dir.join("clustermesh-apiserver"));
            cmd.args(["--cluster-name", self.name.as_str()])
                .args(["--cluster-id", &self.id.to_string()])
                .args(["--max-connected-clusters", &MODE.as_u32().to_string()])
                .args(["--etcd-endpoints", &self.etcd.endpoint()])
                .args(["--listen", &self.listen.to_string()])
                .args(["--health-listen", &self.health.to_string()])
                .arg("--tls-cert")
                .arg(&pki.server.cert)
                .arg("--tls-key")
                .arg(&pki.server.key)
                .arg("--tls-client-ca")
                .arg(&pki.ca_file)
                .env("CLUSTERMESH_LOG", "warn")
                .env("CM_MALLOC_REPORT", "1")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            etcd_harness::die_with_parent(&mut cmd);
            let mut child = cmd.spawn().context("run clustermesh-apiserver")?;
            let deadline = Instant::now() + Duration::from_secs(60);
            let ready = loop {
                if child.try_wait()?.is_some() {
                    break false;
                }
                if matches!(http_get(self.health, "/readyz"), Ok((200, _))) {
                    break true;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!(
                        "the apiserver of {} was not ready within 60 s: {}",
                        self.name,
                        log_tail(&self.log)
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            if ready {
                self.apiserver = Some(child);
                return Ok(());
            }
            let _ = child.wait();
            last = Some(log_tail(&self.log));
        }
        bail!(
            "the apiserver of {} kept exiting: {}",
            self.name,
            last.unwrap_or_default()
        )
    }

    /// The apiserver's process ID.
    pub fn apiserver_pid(&self) -> Option<u32> {
        self.apiserver.as_ref().map(Child::id)
    }

    /// Writes ipcache entries `entries` (addresses in this remote's block
    /// of `stride`, [`ENTRIES_PER_IDENTITY`] per identity) and the
    /// identities they use, then the sync canaries an operator writes.
    pub async fn seed(&self, entries: std::ops::Range<usize>, stride: usize) -> Result<()> {
        let identities = entries.end.div_ceil(ENTRIES_PER_IDENTITY);
        let mut writes: Vec<(String, Vec<u8>)> = Vec::new();
        for k in entries.start / ENTRIES_PER_IDENTITY..identities {
            let entry = identity_entry(&self.name, self.id, k)?;
            writes.push((keys::identity_master(entry.id), entry.encode()));
        }
        for j in entries {
            let pair = self.pair(stride, j, identities, 0);
            writes.push((keys::ipcache().key(&pair.key()), pair.encode()));
        }
        for store in [
            keys::IDENTITIES_STORE,
            keys::IPCACHE_STORE,
            keys::NODES_STORE,
            keys::SERVICES_STORE,
        ] {
            writes.push((keys::canary(&self.name, store), b"synced".to_vec()));
        }
        self.write(writes).await
    }

    /// Entry `j`'s pair: its address, and identity `(j /
    /// ENTRIES_PER_IDENTITY + shift) % identities` (a shift moves entries
    /// to another of the `identities` identities).
    pub fn pair(&self, stride: usize, j: usize, identities: usize, shift: usize) -> IpIdentityPair {
        IpIdentityPair::host(
            entry_ip(self.index, stride, j),
            identity(
                self.id,
                (j / ENTRIES_PER_IDENTITY + shift) % identities.max(1),
            ),
            Some(self.node_ip()),
        )
    }

    /// The (made-up) node all of this remote's entries live on.
    pub fn node_ip(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 168, (self.id >> 8) as u8, self.id as u8))
    }

    /// Puts (`Some`) and deletes (`None`) in transactions of [`TXN_OPS`],
    /// several in flight.
    pub async fn write_ops(&self, ops: Vec<(String, Option<Vec<u8>>)>) -> Result<()> {
        let batches: Vec<Vec<(String, Option<Vec<u8>>)>> =
            ops.chunks(TXN_OPS).map(<[_]>::to_vec).collect();
        stream::iter(batches)
            .map(|batch| self.client.write_batch(batch, None))
            .buffer_unordered(SEED_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn write(&self, puts: Vec<(String, Vec<u8>)>) -> Result<()> {
        self.write_ops(puts.into_iter().map(|(k, v)| (k, Some(v))).collect())
            .await
    }

    /// The agent's config file for this remote, through `endpoint` (its
    /// apiserver, or a proxy in front of it).
    pub fn config_file(&self, pki: &Pki, endpoint: SocketAddr) -> String {
        format!(
            "endpoints:\n- https://{endpoint}\ntrusted-ca-file: {}\ncert-file: {}\nkey-file: {}\n",
            pki.client_ca_file.display(),
            pki.client.cert.display(),
            pki.client.key.display()
        )
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        if let Some(mut child) = self.apiserver.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Identity `k` of cluster `name`: an app label and the cluster label
/// every remote identity must carry.
pub fn identity_entry(name: &ClusterName, id: u32, k: usize) -> Result<IdentityEntry> {
    Ok(IdentityEntry {
        id: identity(id, k),
        labels: Labels::parse_canonical(&format!(
            "k8s:app=app-{k};k8s:io.cilium.k8s.policy.cluster={name};k8s:io.kubernetes.pod.namespace=default;"
        ))?,
    })
}

/// Starts remotes `from..to` (0-based indexes), [`START_CONCURRENCY`] at once.
pub async fn start_remotes(
    range: std::ops::Range<usize>,
    dir: &Path,
    pki: &Pki,
    bin_dir: &Path,
) -> Result<Vec<Remote>> {
    let mut remotes: Vec<Remote> = stream::iter(range)
        .map(|i| Remote::start(i, dir, pki, bin_dir))
        .buffer_unordered(START_CONCURRENCY)
        .try_collect()
        .await?;
    remotes.sort_by_key(|r| r.index);
    Ok(remotes)
}

/// Lists `prefix` of every client at once, page by page with the first
/// page size the agent's stores use and no growth, with etcd-client's plain
/// `get` (etcd's answer decoded into messages, the values left alone): the
/// plainest read of the same data.
/// Returns the keys read and the seconds taken.
pub async fn raw_list(clients: &[Client], prefixes: &[KeyPrefix]) -> Result<(usize, f64)> {
    let started = Instant::now();
    let counts: Vec<usize> = stream::iter(
        clients
            .iter()
            .flat_map(|c| prefixes.iter().map(move |p| (c, p))),
    )
    .map(|(client, prefix)| async move {
        let page = WatchStoreConfig::new(prefix.clone()).page_size as i64;
        let mut kv = client
            .raw()
            .kv_client()
            .max_decoding_message_size(256 << 20);
        let (mut start, mut revision, mut n) = (prefix.as_str().as_bytes().to_vec(), 0, 0);
        loop {
            let mut options = GetOptions::new()
                .with_range(prefix.range_end())
                .with_limit(page);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let answer = kv.get(start.clone(), Some(options)).await?;
            if revision == 0 {
                revision = answer.header().map_or(0, |h| h.revision());
            }
            n += answer.kvs().len();
            match answer.kvs().last() {
                Some(last) if answer.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        anyhow::Ok(n)
    })
    .buffer_unordered(usize::MAX)
    .try_collect()
    .await?;
    Ok((counts.iter().sum(), started.elapsed().as_secs_f64()))
}

/// The bench's agent: its own etcd and node namespace, eBPF maps in a bpffs
/// directory of its own, and a clustermesh config directory the bench
/// writes remote clusters into.
pub struct ScaleAgent {
    _etcd: TestEtcd,
    _ns: NetNs,
    dir: tempfile::TempDir,
    pub bpffs: PathBuf,
    pub config_dir: PathBuf,
    child: Option<Child>,
    pub health: SocketAddr,
}

impl ScaleAgent {
    /// Starts an agent and waits until its local state is synced.
    pub async fn start(bin_dir: &Path, ipcache_max_entries: u32) -> Result<Self> {
        let etcd = TestEtcd::start().await.context("the agent's etcd")?;
        let ns = NetNs::unique("cmscale")?;
        // A veth pair inside the namespace holds the node's address (this
        // kernel may lack the dummy link type).
        ns.ip(&[
            "link", "add", "fab0", "type", "veth", "peer", "name", "fab1",
        ])?;
        ns.ip(&["link", "set", "fab1", "up"])?;
        ns.ip(&["addr", "add", "192.168.255.1/24", "dev", "fab0"])?;
        ns.ip(&["link", "set", "fab0", "up"])?;
        let dir = tempfile::Builder::new()
            .prefix("cmscale-agent-")
            .tempdir()?;
        let config_dir = dir.path().join("clustermesh");
        fs::create_dir(&config_dir)?;
        let bpffs = PathBuf::from("/sys/fs/bpf").join(netns::unique_name("cmscale"));
        let health = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let mut agent = Self {
            _etcd: etcd,
            _ns: ns,
            bpffs,
            config_dir,
            child: None,
            health,
            dir,
        };
        let log = fs::File::create(agent.log())?;
        // A tool to run the agent under (`SCALE_AGENT_WRAP`, for example
        // `heaptrack -o FILE`); the figures read from the process (RSS, CPU)
        // are then the tool's, unless it executes the agent in its place
        // (`env VAR=value`).
        let wrap = std::env::var("SCALE_AGENT_WRAP").unwrap_or_default();
        let mut wrap = wrap.split_whitespace();
        let mut cmd = match wrap.next() {
            Some(program) => {
                let mut cmd = Command::new(program);
                cmd.args(wrap).arg(bin_dir.join("clustermesh-agent"));
                cmd
            }
            None => Command::new(bin_dir.join("clustermesh-agent")),
        };
        cmd.arg("run")
            .args(["--cluster-name", LOCAL_CLUSTER])
            .args(["--cluster-id", &LOCAL_ID.to_string()])
            .args(["--max-connected-clusters", &MODE.as_u32().to_string()])
            .args(["--node-name", "n1"])
            .args(["--node-ip", "192.168.255.1"])
            .args(["--etcd-endpoints", &agent._etcd.endpoint()])
            .arg("--node-netns")
            .arg(agent._ns.path())
            .args(["--pod-cidr", "172.31.0.0/24"])
            .arg("--bpffs-dir")
            .arg(&agent.bpffs)
            .arg("--api-socket")
            .arg(agent.socket())
            .arg("--state-dir")
            .arg(agent.dir.path().join("state"))
            .arg("--clustermesh-config")
            .arg(&agent.config_dir)
            .args(["--health-listen", &health.to_string()])
            .args(["--ipcache-max-entries", &ipcache_max_entries.to_string()])
            .args(["--ct-gc-interval", "0s"])
            .env("CLUSTERMESH_LOG", "warn")
            .env("CM_MALLOC_REPORT", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        etcd_harness::die_with_parent(&mut cmd);
        agent.child = Some(cmd.spawn().context("run clustermesh-agent")?);
        agent
            .wait_for("the agent to sync its own cluster", |s| s.synced)
            .await?;
        Ok(agent)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The agent's warnings and errors so far (the last `n`), for error
    /// messages.
    pub fn warnings(&self, n: usize) -> String {
        let log = fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        if lines.is_empty() {
            return "the agent logged no warning".into();
        }
        format!(
            "the agent's last warnings ({} in all):\n{}",
            lines.len(),
            lines[lines.len().saturating_sub(n)..].join("\n")
        )
    }

    pub fn status(&self) -> Result<StatusView> {
        Ok(ApiClient::new(self.socket()).get::<StatusView>("/v1/status")?)
    }

    /// Polls the status every 20 ms until `done` holds; fails after
    /// [`DEADLINE`] or when the agent exits.
    pub async fn wait_for(
        &mut self,
        what: &str,
        mut done: impl FnMut(&StatusView) -> bool,
    ) -> Result<Duration> {
        let started = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "the agent exited ({status}) while waiting for {what}: {}",
                    log_tail(&self.log())
                );
            }
            if let Ok(s) = self.status()
                && done(&s)
            {
                return Ok(started.elapsed());
            }
            if started.elapsed() > DEADLINE {
                bail!(
                    "timed out after {DEADLINE:?} waiting for {what}: {}",
                    log_tail(&self.log())
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Connects the agent to `remote` through `endpoint` (written atomically
    /// into its config directory, as `clustermesh connect` delivers it).
    pub fn connect(&self, remote: &Remote, pki: &Pki, endpoint: SocketAddr) -> Result<()> {
        let tmp = self.dir.path().join(format!(".{}.tmp", remote.name));
        fs::write(&tmp, remote.config_file(pki, endpoint))?;
        fs::rename(&tmp, self.config_dir.join(remote.name.as_str()))?;
        Ok(())
    }

    pub fn ipcache(&self) -> Result<IpCacheMap> {
        Ok(IpCacheMap::open_pinned(&self.bpffs, IPCACHE_MAP)?)
    }

    /// Kernel memory of the pinned ipcache map (bpftool's `bytes_memlock`).
    pub fn ipcache_map_bytes(&self) -> Result<u64> {
        let out = Command::new("bpftool")
            .args(["-j", "map", "show", "pinned"])
            .arg(self.bpffs.join(IPCACHE_MAP))
            .output()
            .context("run bpftool (Debian package bpftool)")?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!("bpftool map show: {}", String::from_utf8_lossy(&out.stderr))
        })?;
        v["bytes_memlock"]
            .as_u64()
            .or_else(|| v["bytes_memlock"].as_str().and_then(|s| s.parse().ok()))
            .context("bpftool printed no bytes_memlock")
    }
}

impl Drop for ScaleAgent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Only the directory this agent created.
        let _ = fs::remove_dir_all(&self.bpffs);
    }
}

/// Whether every entry `pairs` names is in `map` with its identity.
pub fn all_in_map(map: &IpCacheMap, pairs: impl IntoIterator<Item = (IpAddr, u32)>) -> bool {
    pairs.into_iter().all(|(ip, id)| {
        map.get(&IpCacheKey::host(ip))
            .ok()
            .flatten()
            .is_some_and(|v| v.sec_identity == id)
    })
}

/// Whether none of `ips` is in `map`.
pub fn none_in_map(map: &IpCacheMap, ips: impl IntoIterator<Item = IpAddr>) -> bool {
    ips.into_iter()
        .all(|ip| map.get(&IpCacheKey::host(ip)).ok().flatten().is_none())
}

/// Raises this process's open-file limit to its hard limit (children
/// inherit it): hundreds of clusters mean thousands of sockets.
pub fn raise_nofile_limit() -> Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// A plain HTTP/1.0 GET on 127.0.0.1: status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

/// The last lines of a component's log, for error messages.
fn log_tail(path: &Path) -> String {
    format!(
        "last lines of {}:\n{}",
        path.display(),
        localmesh::log_tail(path, 20)
    )
}
