//! Clusters set up as on real machines: `clustermesh cluster init` writes
//! the files, every daemon (apiserver, operator, agent) is started from the
//! command line of its generated systemd unit (`UnitCommand`), etcd serves
//! mutual TLS (one member or three), each node is a network namespace
//! acting as a host, and pods are made through the CNI plugin. Clusters are
//! connected and disconnected only through their admin descriptors
//! (`clustermesh connect --from A-admin.yaml --to B-admin.yaml`).
//!
//! Everything is removed on drop (daemons killed, namespaces and pinned
//! maps deleted), also when a test panics; the daemons' logs are printed
//! then. Not for the local mesh of `clustermesh up` ([`crate::TestMesh`]).

use std::{
    fs,
    io::{Read, Write},
    net::{Ipv4Addr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use agent::{ApiClient, IdentityView, IpCacheView, StatusView};
use anyhow::{Context, Result, bail};
use certs::{Ca, CertName, Validity};
use cluster_setup::{Component, Layout, UnitCommand};
use etcd_harness::{EtcdOptions, ServerTls, free_port};

/// How long a daemon may take to answer on its health endpoint.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a daemon may take to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The interface that links a host to the other hosts.
const HOST_IFNAME: &str = "host0";
/// The hosts' network; host `i` (from 0) is `.{i + 1}`.
const HOST_NET: [u8; 3] = [172, 31, 0];

/// Runs the built `clustermesh` command; its stdout, or why it failed.
pub fn clustermesh(args: &[&str]) -> Result<String> {
    let out = Command::new(localmesh::default_bin_dir().join("clustermesh"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("run clustermesh")?;
    if !out.status.success() {
        bail!(
            "clustermesh {} exited with {}:\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A path as a `&str` argument.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Options for an etcd serving mutual TLS on 127.0.0.1, with a new CA
/// written to `ca_dir` (`ca.crt`, `ca.key`: `cluster init --etcd-ca-dir`
/// reuses it to issue the components' client certificates).
pub fn tls_etcd_options(ca_dir: &Path) -> Result<EtcdOptions> {
    let ca = Ca::generate("test etcd CA", Validity::days(3650)?)?;
    ca.write(ca_dir)?;
    let server = ca
        .issue_server(
            &CertName::new("etcd")?,
            &[],
            &["127.0.0.1".parse()?],
            Validity::days(30)?,
        )?
        .write(ca_dir)?;
    Ok(EtcdOptions {
        tls: Some(ServerTls {
            cert: server.cert,
            key: server.key,
            client_ca: Some(ca_dir.join("ca.crt")),
        }),
        ..EtcdOptions::default()
    })
}

/// A new mesh CA in `dir` (what `cluster init --ca-dir` takes).
pub fn mesh_ca(dir: &Path, name: &str) -> Result<Ca> {
    let ca = Ca::generate(name, Validity::days(3650)?)?;
    ca.write(dir)?;
    Ok(ca)
}

/// Machines on one network: a namespace each, linked with a veth pair
/// (two hosts) on `172.31.0.0/24`. The agents route pod CIDRs between them.
pub struct Hosts {
    hosts: Vec<(netns::NetNs, Ipv4Addr)>,
}

impl Hosts {
    /// Two linked hosts, with names unique to this process.
    pub fn pair(prefix: &str) -> Result<Self> {
        let mut hosts = Vec::new();
        for i in 0..2u8 {
            let ns = netns::NetNs::unique(prefix)?;
            hosts.push((
                ns,
                Ipv4Addr::new(HOST_NET[0], HOST_NET[1], HOST_NET[2], i + 1),
            ));
        }
        hosts[0].0.ip(&[
            "link",
            "add",
            HOST_IFNAME,
            "type",
            "veth",
            "peer",
            "name",
            HOST_IFNAME,
            "netns",
            hosts[1].0.name(),
        ])?;
        for (ns, ip) in &hosts {
            ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", HOST_IFNAME])?;
            ns.link_up(HOST_IFNAME)?;
        }
        Ok(Self { hosts })
    }

    /// Host `i`'s namespace and address.
    pub fn host(&self, i: usize) -> (&netns::NetNs, Ipv4Addr) {
        let (ns, ip) = &self.hosts[i];
        (ns, *ip)
    }
}

/// A daemon started from its unit's command line; stopped (SIGTERM, then
/// SIGKILL after a grace) and started again as `systemctl restart` does;
/// killed on drop. Its log is appended to across restarts.
pub struct UnitDaemon {
    name: String,
    unit: PathBuf,
    log: PathBuf,
    /// `host:port` and path answering 200 when the daemon is ready.
    health: (String, &'static str),
    child: Option<Child>,
    restarts: u32,
}

impl UnitDaemon {
    /// Starts the daemon of the rendered unit file `unit` and waits until
    /// its health endpoint answers 200.
    pub fn start(
        name: String,
        unit: PathBuf,
        log: PathBuf,
        health: (String, &'static str),
    ) -> Result<Self> {
        let mut d = Self {
            name,
            unit,
            log,
            health,
            child: None,
            restarts: 0,
        };
        d.spawn()?;
        d.wait_ready()?;
        Ok(d)
    }

    fn spawn(&mut self) -> Result<()> {
        // Read again at every start: a new unit (an upgrade) takes effect.
        let cmd = UnitCommand::from_unit_file(&self.unit)
            .with_context(|| format!("read {}", self.unit.display()))?;
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = cmd.command();
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        etcd_harness::die_with_parent(&mut command);
        self.child = Some(
            command
                .spawn()
                .with_context(|| format!("start {}", self.name))?,
        );
        Ok(())
    }

    /// Waits until the health endpoint answers 200; fails at once, with the
    /// log, when the daemon exits.
    pub fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let (addr, path) = self.health.clone();
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                bail!("{} exited with {status}:\n{}", self.name, self.log_tail());
            }
            if http_status(&addr, path) == Some(200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready on {addr}{path} within {READY_TIMEOUT:?}:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the daemon as systemd does (SIGTERM; SIGKILL after a grace),
    /// starts it again from its unit and waits until it is ready.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.restarts += 1;
        self.spawn()?;
        self.wait_ready()
    }

    /// SIGTERM, then SIGKILL if it has not exited after the grace.
    fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // SAFETY: kill has no memory preconditions; the pid is our child's.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_GRACE;
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                eprintln!("{} did not stop within {STOP_GRACE:?}: killed", self.name);
                child.kill()?;
                child.wait()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The process ID of the running daemon.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last lines of the daemon's log.
    pub fn log_tail(&self) -> String {
        localmesh::log_tail(&self.log, 30)
    }
}

impl Drop for UnitDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The status code of GET `path` on `addr`.
fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

/// Removes a directory on drop (a node's pinned maps).
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What a cluster is made from: its name and ID, the mesh CA, its etcd
/// (endpoints and the CA of [`tls_etcd_options`]) and the host its one
/// node runs on.
pub struct ClusterSpec<'a> {
    pub name: &'a str,
    pub id: u32,
    pub mesh_ca_dir: &'a Path,
    pub etcd_endpoints: Vec<String>,
    pub etcd_ca_dir: &'a Path,
    /// The node's namespace (its host) and address there.
    pub host: (&'a netns::NetNs, Ipv4Addr),
}

/// One cluster made by `cluster init`, its apiserver, operator and one
/// agent (node `n1`) running from the units; the etcd is the caller's (so
/// that it can kill members). Fields drop in order: the agent first.
pub struct RealCluster {
    pub name: String,
    /// `cluster init`'s output (`--out`, also `--root`).
    pub out: PathBuf,
    /// The admin descriptor (`cluster export --admin`).
    pub admin: PathBuf,
    pub agent_socket: PathBuf,
    pub agent: UnitDaemon,
    pub apiserver: UnitDaemon,
    pub operator: UnitDaemon,
    _bpffs: RemoveDir,
}

/// The addresses a test cluster's components listen on (fresh ports), and
/// the `cluster init` command line that configures them.
#[derive(Debug, Clone)]
pub struct ClusterInit {
    pub listen: String,
    pub apiserver_health: String,
    pub operator_health: String,
    pub agent_health: String,
}

impl Default for ClusterInit {
    fn default() -> Self {
        Self::new()
    }
}

impl ClusterInit {
    pub fn new() -> Self {
        let addr = || format!("127.0.0.1:{}", free_port());
        Self {
            listen: addr(),
            apiserver_health: addr(),
            operator_health: addr(),
            agent_health: addr(),
        }
    }

    /// `cluster init` for cluster `name` (ID `id`, pod pool
    /// `10.<id>.0.0/16`) into `out` (also its `--root`), with the mesh CA
    /// of `ca_dir` (a new one without), the etcd at `etcd_endpoints` whose
    /// CA is in `etcd_ca_dir`, and the binaries of `bin_dir`.
    #[allow(clippy::too_many_arguments)]
    pub fn args(
        &self,
        name: &str,
        id: u32,
        ca_dir: Option<&Path>,
        etcd_endpoints: &str,
        etcd_ca_dir: &Path,
        out: &Path,
        bin_dir: &Path,
    ) -> Vec<String> {
        let mut args: Vec<String> = ["cluster", "init", "--name", name, "--id", &id.to_string()]
            .map(String::from)
            .to_vec();
        if let Some(ca_dir) = ca_dir {
            args.extend(["--ca-dir".into(), arg(ca_dir).into()]);
        }
        args.extend(
            [
                "--etcd-endpoints",
                etcd_endpoints,
                "--etcd-ca-dir",
                arg(etcd_ca_dir),
                "--apiserver-endpoints",
                &self.listen,
                "--apiserver-listen",
                &self.listen,
                "--apiserver-health-listen",
                &self.apiserver_health,
                "--operator-health-listen",
                &self.operator_health,
                "--agent-health-listen",
                &self.agent_health,
                "--pod-cidr-pool",
                &format!("10.{id}.0.0/16"),
                "--root",
                arg(out),
                "--bin-dir",
                arg(bin_dir),
                "--out",
                arg(out),
            ]
            .map(String::from),
        );
        args
    }
}

impl RealCluster {
    /// `cluster init` into `dir`, then the apiserver, the admin descriptor,
    /// the operator and the agent, each started once the one before is
    /// ready.
    pub fn start(dir: &Path, spec: &ClusterSpec<'_>) -> Result<Self> {
        let name = spec.name;
        fs::create_dir_all(dir)?;
        let out = dir.join("tree");
        let init = ClusterInit::new();
        let args = init.args(
            name,
            spec.id,
            Some(spec.mesh_ca_dir),
            &spec.etcd_endpoints.join(","),
            spec.etcd_ca_dir,
            &out,
            &localmesh::default_bin_dir(),
        );
        clustermesh(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        let ClusterInit {
            apiserver_health,
            operator_health,
            agent_health,
            ..
        } = init;
        let unit = |c: Component| out.join(Layout::unit_file(c));
        let apiserver = UnitDaemon::start(
            format!("{name} apiserver"),
            unit(Component::Apiserver),
            dir.join("apiserver.log"),
            (apiserver_health, "/readyz"),
        )?;
        let admin = dir.join(format!("{name}-admin.yaml"));
        clustermesh(&[
            "cluster",
            "export",
            "--dir",
            arg(&out),
            "--admin",
            "--out",
            arg(&admin),
        ])?;
        let operator = UnitDaemon::start(
            format!("{name} operator"),
            unit(Component::Operator),
            dir.join("operator.log"),
            (operator_health, "/healthz"),
        )?;
        // What the person installing the node writes next to the unit.
        let (host, host_ip) = spec.host;
        let bpffs = PathBuf::from("/sys/fs/bpf").join(netns::unique_name("rc"));
        let agent_socket = dir.join("agent.sock");
        fs::write(
            out.join("etc/clustermesh/agent").join(Layout::NODE_ENV),
            format!(
                "CLUSTERMESH_NODE_NAME=n1\nCLUSTERMESH_NODE_IP={host_ip}\n\
                 CLUSTERMESH_NODE_NETNS={}\nCLUSTERMESH_BPFFS_DIR={}\n\
                 CLUSTERMESH_API_SOCKET={}\nCLUSTERMESH_STATE_DIR={}\n",
                host.path().display(),
                bpffs.display(),
                agent_socket.display(),
                dir.join("agent-state").display(),
            ),
        )?;
        let bpffs = RemoveDir(bpffs);
        let agent = UnitDaemon::start(
            format!("{name} agent"),
            unit(Component::Agent),
            dir.join("agent.log"),
            (agent_health, "/healthz"),
        )?;
        Ok(Self {
            name: name.to_owned(),
            out,
            admin,
            agent_socket,
            agent,
            apiserver,
            operator,
            _bpffs: bpffs,
        })
    }

    /// Writes the admin descriptor again (after a certificate rotation).
    pub fn export_admin(&self) -> Result<()> {
        clustermesh(&[
            "cluster",
            "export",
            "--dir",
            arg(&self.out),
            "--admin",
            "--out",
            arg(&self.admin),
        ])?;
        Ok(())
    }

    fn api(&self) -> ApiClient {
        let mut api = ApiClient::new(&self.agent_socket);
        api.set_timeout(Duration::from_secs(5));
        api
    }

    /// The agent's status.
    pub fn status(&self) -> Result<StatusView> {
        Ok(self.api().get("/v1/status")?)
    }

    /// Whether the agent is synced and has `remote` ready and connected.
    pub fn remote_ready(&self, remote: &str) -> bool {
        self.status().is_ok_and(|s| {
            s.synced
                && s.remotes
                    .iter()
                    .any(|r| r.name == remote && r.ready && r.connected)
        })
    }

    /// Sessions the agent opened to `remote` since it started.
    pub fn remote_connects(&self, remote: &str) -> Option<u64> {
        self.status()
            .ok()?
            .remotes
            .iter()
            .find(|r| r.name == remote)
            .map(|r| r.connects)
    }

    /// Whether the agent answers and has no remote `remote` any more.
    pub fn remote_gone(&self, remote: &str) -> bool {
        self.status()
            .is_ok_and(|s| !s.remotes.iter().any(|r| r.name == remote))
    }

    /// What the agent holds of cluster `id`: its identities and the ipcache
    /// entries naming them, sorted.
    pub fn remote_state(&self, id: u32) -> Result<(Vec<IdentityView>, Vec<IpCacheView>)> {
        let of_cluster = |identity: u32| identity >> 16 == id;
        let mut identities: Vec<IdentityView> = self.api().get("/v1/identities")?;
        identities.retain(|i| of_cluster(i.id));
        identities.sort_by_key(|i| i.id);
        let mut ipcache: Vec<IpCacheView> = self.api().get("/v1/ipcache")?;
        ipcache.retain(|e| of_cluster(e.identity));
        ipcache.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        Ok((identities, ipcache))
    }

    /// Makes a pod on the node through the CNI plugin, as a container
    /// runtime would.
    pub fn add_pod(&self, name: &str, labels: &[(&str, &str)]) -> Result<Pod> {
        let netns = netns::NetNs::unique("rcpod")?;
        let labels: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
            .collect();
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "clustermesh",
            "type": "clustermesh-cni",
            "agentSocket": self.agent_socket,
            "runtimeConfig": {"labels": labels, "namespace": "default"},
        });
        let container = format!("{}-{name}-{}", self.name, netns.name());
        let result = localmesh::run_cni(
            &localmesh::default_bin_dir().join("clustermesh-cni"),
            "ADD",
            &container,
            netns.name(),
            &conf.to_string(),
            None,
        )?;
        let result: serde_json::Value = serde_json::from_slice(&result)?;
        let ip = result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["address"].as_str()?.split('/').next()?.parse().ok())
            .next()
            .with_context(|| format!("no IPv4 address in the CNI result {result}"))?;
        Ok(Pod { netns, ip })
    }

    /// The process IDs of the running daemons.
    pub fn pids(&self) -> Vec<u32> {
        [&self.apiserver, &self.operator, &self.agent]
            .iter()
            .filter_map(|d| d.pid())
            .collect()
    }

    /// The last lines of every daemon's log.
    pub fn logs(&self) -> String {
        [&self.apiserver, &self.operator, &self.agent]
            .iter()
            .map(|d| format!("---- {} ----\n{}", d.name, d.log_tail()))
            .collect()
    }
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Samples agents' view of one remote each, every 100 ms on a thread of
/// its own, until [`RemoteWatch::finish`]: the proof that a remote stayed
/// ready (and on the session it had) all along, not only at the end.
pub struct RemoteWatch {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<WatchReport>,
}

/// What a [`RemoteWatch`] saw.
#[derive(Debug, Default)]
pub struct WatchReport {
    /// Samples taken (of every agent).
    pub samples: usize,
    /// Samples where an agent did not answer or had the remote not ready
    /// or not connected, in words.
    pub not_ready: Vec<String>,
    /// Reconnects to the remote meanwhile (its `connects` count went up).
    pub reconnects: u64,
}

impl RemoteWatch {
    /// Watches, on each `(cluster, remote)`, the cluster's agent's view of
    /// `remote`.
    pub fn start(watched: &[(&RealCluster, &str)]) -> Self {
        let watched: Vec<(String, PathBuf, String)> = watched
            .iter()
            .map(|(c, r)| (c.name.clone(), c.agent_socket.clone(), (*r).to_owned()))
            .collect();
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut report = WatchReport::default();
            let mut first_connects: Vec<Option<u64>> = vec![None; watched.len()];
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Duration::from_millis(100))
            {
                for (i, (cluster, socket, remote)) in watched.iter().enumerate() {
                    report.samples += 1;
                    let mut api = ApiClient::new(socket);
                    api.set_timeout(Duration::from_secs(2));
                    let status: StatusView = match api.get("/v1/status") {
                        Ok(s) => s,
                        Err(e) => {
                            report.not_ready.push(format!("{cluster}'s agent: {e}"));
                            continue;
                        }
                    };
                    match status.remotes.iter().find(|r| &r.name == remote) {
                        Some(r) if r.ready && r.connected => {
                            let first = *first_connects[i].get_or_insert(r.connects);
                            report.reconnects =
                                report.reconnects.max(r.connects.saturating_sub(first));
                        }
                        Some(r) => report.not_ready.push(format!(
                            "{cluster} -> {remote}: ready={} connected={} {}",
                            r.ready,
                            r.connected,
                            r.last_error.clone().unwrap_or_default()
                        )),
                        None => report
                            .not_ready
                            .push(format!("{cluster} -> {remote}: not configured")),
                    }
                }
            }
            report
        });
        Self { stop, thread }
    }

    /// Stops sampling; what was seen.
    pub fn finish(self) -> WatchReport {
        let _ = self.stop.send(());
        self.thread.join().expect("the watch thread")
    }
}

/// A pod: its namespace (deleted on drop, with its veth) and address.
pub struct Pod {
    pub netns: netns::NetNs,
    pub ip: Ipv4Addr,
}

impl Pod {
    /// Whether one ping from this pod to `to` is answered within a second.
    pub fn pings(&self, to: Ipv4Addr) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                self.netns.name(),
                "ping",
                "-n",
                "-c1",
                "-W1",
            ])
            .arg(to.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}
