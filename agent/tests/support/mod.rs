//! Test topology for agent tests: a fabric bridge, node namespaces wired to
//! it, real `clustermesh-agent` processes per node, pods created through the
//! real `clustermesh-cni` binary, and TCP helpers that run inside pods.
#![allow(dead_code, unreachable_pub)]

pub mod dns;

use std::{
    fs::File,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use agent::{ApiClient, Endpoint, StatusView};
use anyhow::{Context, Result, bail};
use netns::{NetNs, Veth, unique_name};

pub const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `f` until it returns true; panics with `what` after `DEADLINE`.
pub fn wait_for(what: &str, f: impl FnMut() -> bool) {
    assert!(
        netns::wait_until(DEADLINE, f),
        "timed out after {DEADLINE:?} waiting for {what}"
    );
}

/// A bridge in its own namespace that node namespaces plug into.
pub struct Fabric {
    pub ns: NetNs,
    links: Vec<Veth>,
}

impl Fabric {
    pub fn new() -> Result<Self> {
        let ns = NetNs::unique("cmfab")?;
        ns.ip(&["link", "add", "br0", "type", "bridge"])?;
        ns.ip(&["link", "set", "br0", "up"])?;
        Ok(Self {
            ns,
            links: Vec::new(),
        })
    }

    /// Plugs `node` in with `ip/24` on its `fab0`.
    pub fn plug(&mut self, node: &NetNs, ip: Ipv4Addr) -> Result<()> {
        let peer = unique_name("fb");
        let veth = Veth::create("fab0", Some(node), &peer, Some(&self.ns))?;
        self.ns.ip(&["link", "set", &peer, "master", "br0"])?;
        node.add_addr("fab0", &format!("{ip}/24"))?.keep();
        self.links.push(veth);
        Ok(())
    }
}

/// How to run one node's agent.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub cluster: String,
    pub cluster_id: u32,
    pub name: String,
    pub ip: Ipv4Addr,
    pub pod_cidr: String,
    pub etcd: String,
    pub clustermesh_dir: Option<PathBuf>,
    /// Kubernetes mode through this kubeconfig.
    pub kubeconfig: Option<PathBuf>,
}

/// A node: namespace, bpffs dir, state dir and its agent process.
pub struct Node {
    pub spec: NodeSpec,
    pub ns: NetNs,
    pub dir: tempfile::TempDir,
    pub bpffs: PathBuf,
    pub agent: Option<AgentProcess>,
    /// More `clustermesh-agent run` flags.
    pub extra_args: Vec<String>,
}

impl Node {
    pub fn new(spec: NodeSpec, fabric: &mut Fabric) -> Result<Self> {
        let ns = NetNs::unique("cmnode")?;
        fabric.plug(&ns, spec.ip)?;
        let bpffs = PathBuf::from("/sys/fs/bpf").join(unique_name("cmagent"));
        Ok(Self {
            spec,
            ns,
            dir: tempfile::tempdir()?,
            bpffs,
            agent: None,
            extra_args: Vec::new(),
        })
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    pub fn api(&self) -> ApiClient {
        ApiClient::new(self.socket())
    }

    /// Starts the agent and waits until it answers and is synced.
    pub fn start_agent(&mut self) -> Result<()> {
        let s = &self.spec;
        let log = self.dir.path().join("agent.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_clustermesh-agent"));
        cmd.arg("run")
            .args(["--cluster-name", &s.cluster])
            .args(["--cluster-id", &s.cluster_id.to_string()])
            .args(["--node-name", &s.name])
            .args(["--node-ip", &s.ip.to_string()])
            .args(["--etcd-endpoints", &s.etcd])
            .args(["--node-netns", &self.ns.path().to_string_lossy()])
            .args(["--pod-cidr", &s.pod_cidr])
            .args(["--bpffs-dir", &self.bpffs.to_string_lossy()])
            .args(["--api-socket", &self.socket().to_string_lossy()])
            .args([
                "--state-dir",
                &self.dir.path().join("state").to_string_lossy(),
            ])
            .args(["--session-ttl", "30s", "--sync-timeout", "20s"])
            .args(&self.extra_args);
        if let Some(dir) = &s.clustermesh_dir {
            cmd.args(["--clustermesh-config", &dir.to_string_lossy()]);
        }
        if let Some(k) = &s.kubeconfig {
            cmd.args(["--k8s-kubeconfig", &k.to_string_lossy()]);
        }
        cmd.env("CLUSTERMESH_LOG", "info,agent=debug");
        self.agent = Some(AgentProcess::spawn(cmd, &log)?);
        wait_for(&format!("agent {} to be synced", s.name), || {
            self.api()
                .get::<StatusView>("/v1/status")
                .map(|st| st.synced)
                .unwrap_or(false)
        });
        Ok(())
    }

    /// The agent's process id, while one runs.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(AgentProcess::pid)
    }

    /// Kills the agent as a crash would (SIGKILL).
    pub fn kill_agent(&mut self) {
        self.agent = None;
    }

    pub fn status(&self) -> StatusView {
        self.api().get("/v1/status").expect("agent status")
    }

    /// Creates a pod namespace and adds it through the CNI plugin.
    pub fn add_pod(&self, name: &str, labels: &[(&str, &str)]) -> Result<Pod> {
        self.add_pod_with_args(name, labels, None)
    }

    /// Adds the Kubernetes Pod `namespace/name` (CNI_ARGS `K8S_POD_*`, as
    /// a kubelet passes them): its endpoint gets the Pod's labels.
    pub fn add_k8s_pod(&self, namespace: &str, name: &str) -> Result<Pod> {
        self.add_pod_with_args(
            name,
            &[],
            Some(&format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={name}"
            )),
        )
    }

    fn add_pod_with_args(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        cni_args: Option<&str>,
    ) -> Result<Pod> {
        let ns = NetNs::unique("cmpod")?;
        let labels: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect();
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "clustermesh",
            "type": "clustermesh-cni",
            "agentSocket": self.socket(),
            "runtimeConfig": {"labels": labels},
        });
        let out = run_cni_with_args("ADD", name, Some(&ns), &conf.to_string(), cni_args)?;
        if !out.status.success() {
            bail!(
                "CNI ADD failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let result: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("CNI result")?;
        let address = result["ips"][0]["address"]
            .as_str()
            .context("CNI result has an address")?;
        let ip: Ipv4Addr = address.split('/').next().unwrap().parse()?;
        let endpoint: Endpoint = self.api().get(&format!("/v1/endpoints/{name}"))?;
        Ok(Pod {
            name: name.to_string(),
            ns,
            ip,
            endpoint,
        })
    }

    /// Removes a pod through the CNI plugin.
    pub fn delete_pod(&self, pod: &Pod) -> Result<()> {
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "clustermesh", "agentSocket": self.socket()});
        let out = run_cni("DEL", &pod.name, Some(&pod.ns), &conf.to_string())?;
        if !out.status.success() {
            bail!("CNI DEL failed: {}", String::from_utf8_lossy(&out.stdout));
        }
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.agent = None;
        let _ = bpf::Datapath::remove_pins(&self.bpffs);
    }
}

/// Runs the real CNI binary the way a container runtime does.
pub fn run_cni(
    command: &str,
    container: &str,
    ns: Option<&NetNs>,
    stdin: &str,
) -> Result<std::process::Output> {
    run_cni_with_args(command, container, ns, stdin, None)
}

/// [`run_cni`] with `CNI_ARGS`.
pub fn run_cni_with_args(
    command: &str,
    container: &str,
    ns: Option<&NetNs>,
    stdin: &str,
    cni_args: Option<&str>,
) -> Result<std::process::Output> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clustermesh-cni"));
    cmd.env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ns) = ns {
        cmd.env("CNI_NETNS", ns.path());
    }
    if let Some(args) = cni_args {
        cmd.env("CNI_ARGS", args);
    }
    let mut child = cmd.spawn()?;
    child.stdin.take().unwrap().write_all(stdin.as_bytes())?;
    Ok(child.wait_with_output()?)
}

/// A pod: its namespace and endpoint.
pub struct Pod {
    pub name: String,
    pub ns: NetNs,
    pub ip: Ipv4Addr,
    pub endpoint: Endpoint,
}

/// An agent child process; killed (SIGKILL) on drop. Its log is printed
/// when a test fails.
pub struct AgentProcess {
    child: Child,
    log: PathBuf,
}

impl AgentProcess {
    pub fn spawn(mut cmd: Command, log: &Path) -> Result<Self> {
        let file = File::options().create(true).append(true).open(log)?;
        cmd.stdout(file.try_clone()?).stderr(file);
        // SAFETY: prctl only; the agent dies with the test.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().context("start clustermesh-agent")?;
        Ok(Self {
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let mut text = String::new();
            let _ = File::open(&self.log).and_then(|mut f| f.read_to_string(&mut text));
            let tail: Vec<&str> = text.lines().rev().take(80).collect();
            eprintln!("---- agent log {} (last lines) ----", self.log.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// An echo server in a pod: answers each connection with `<name>\n` then
/// echoes one line.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    pub fn start(pod: &Pod, port: u16) -> Result<Self> {
        Self::start_in(&pod.ns, SocketAddr::from((pod.ip, port)), pod.name.clone())
    }

    /// A server on `addr` inside `ns` that greets with `greeting`.
    pub fn start_in(ns: &NetNs, addr: SocketAddr, greeting: String) -> Result<Self> {
        let listener = ns.enter(move || TcpListener::bind(addr))??;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        let _ = s.write_all(format!("{greeting}\n").as_bytes());
                        let mut buf = [0u8; 256];
                        if let Ok(n) = s.read(&mut buf) {
                            let _ = s.write_all(&buf[..n]);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self {
            stop,
            addr,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from `pod` to `to`, sends a line, and returns (server name,
/// the peer address the client saw). Fails on refusal or after `timeout`.
pub fn request(pod: &Pod, to: SocketAddr, timeout: Duration) -> Result<(String, SocketAddr)> {
    let stream = pod
        .ns
        .enter(move || TcpStream::connect_timeout(&to, timeout))??;
    stream.set_read_timeout(Some(timeout))?;
    let peer = stream.peer_addr()?;
    let mut stream = stream;
    stream.write_all(b"ping\n")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    let deadline = Instant::now() + timeout;
    while !String::from_utf8_lossy(&buf).contains("ping") && Instant::now() < deadline {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    if !text.contains("ping") {
        bail!("incomplete answer {text:?}");
    }
    Ok((text.lines().next().unwrap_or_default().to_string(), peer))
}

/// Whether a connection from `pod` to `to` is dropped: the attempt times out
/// (the SYN goes unanswered). A refusal or any other error is not a denial
/// (it is printed and the answer is `false`), so a check cannot pass on a
/// server that is simply gone. Every denial checked first has a positive
/// control: the same pod reaching the same server while allowed.
pub fn denied(pod: &Pod, to: SocketAddr) -> bool {
    match pod
        .ns
        .enter(move || TcpStream::connect_timeout(&to, Duration::from_millis(800)))
    {
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::TimedOut => true,
        Ok(Ok(_)) => false,
        Ok(Err(error)) => {
            eprintln!("not a denial: connect from {} to {to}: {error}", pod.name);
            false
        }
        Err(error) => {
            eprintln!("not a denial: cannot enter {}: {error}", pod.name);
            false
        }
    }
}
