//! Helpers shared by the operator's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::{
    future::Future,
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use etcd_harness::TestEtcd;
use kvstore::{
    Client, ClientConfig, ClusterId, ClusterName, MaxConnectedClusters, StoreValue, keys,
    values::{IpamAssignment, Node},
};
use operator::{
    CidrPool, HealthReport, IpFamily, IpamConfig, Operator, OperatorConfig, OperatorHandle,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

pub const DEADLINE: Duration = Duration::from_secs(30);
pub const MODE: MaxConnectedClusters = MaxConnectedClusters::C255;
/// The shortest session TTL the operator accepts: quick fail-over in tests.
pub const TTL: Duration = Duration::from_secs(3);

pub fn cluster() -> ClusterName {
    ClusterName::new("c5").unwrap()
}

pub fn cluster_id() -> ClusterId {
    ClusterId::new(5, MODE).unwrap()
}

pub fn etcd_config(endpoint: &str) -> ClientConfig {
    let mut config = ClientConfig::new([endpoint]);
    config.request_timeout = Duration::from_secs(5);
    config.keepalive_interval = Duration::from_secs(1);
    config.keepalive_timeout = Duration::from_secs(2);
    config
}

pub async fn client(etcd: &TestEtcd) -> Client {
    Client::connect(&etcd_config(&etcd.endpoint()))
        .await
        .expect("connect to the test etcd")
}

/// Polls `condition` until it holds; panics after `DEADLINE`.
pub async fn wait_until<Fut: Future<Output = bool>>(what: &str, condition: impl FnMut() -> Fut) {
    etcd_harness::wait_until(what, DEADLINE, condition).await
}

/// Polls `f` until it returns a value; panics after `DEADLINE`.
pub async fn wait_for<T, Fut: Future<Output = Option<T>>>(what: &str, f: impl FnMut() -> Fut) -> T {
    etcd_harness::eventually(what, DEADLINE, f).await
}

/// A test configuration: short TTL and intervals, health on a free port.
pub fn config(endpoint: &str, id: &str) -> OperatorConfig {
    let mut c = OperatorConfig::new(cluster(), cluster_id(), MODE, etcd_config(endpoint));
    c.id = id.to_string();
    c.session_ttl = TTL;
    c.heartbeat_interval = Duration::from_secs(1);
    c.identity_gc_interval = Duration::from_secs(1);
    c.health_listen = "127.0.0.1:0".parse().unwrap();
    c
}

pub fn ipam(pool: &str, mask: u8, release_delay: Duration) -> IpamConfig {
    let mut ipam = IpamConfig::new(
        Some(CidrPool::new(IpFamily::V4, pool.parse().unwrap(), mask).unwrap()),
        None,
    );
    ipam.release_delay = release_delay;
    ipam
}

/// An operator running in this process, with its own etcd client.
pub struct InProcess {
    pub handle: OperatorHandle,
    pub id: String,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), operator::OperatorError>>>,
}

impl InProcess {
    pub async fn start(config: OperatorConfig) -> Self {
        let id = config.id.clone();
        let (operator, handle) = Operator::new(config).await.expect("build the operator");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(operator.run(shutdown.clone()));
        Self {
            handle,
            id,
            shutdown,
            task: Some(task),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.handle.is_leader()
    }

    /// Graceful stop: the duties stop and the leadership is resigned.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("the operator stops")
                .expect("the operator task")
                .expect("the operator run");
        }
    }

    /// A crash: the whole operator (session keep-alive included) is dropped
    /// without resigning, so its lease runs out.
    pub async fn crash(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    pub async fn health(&self) -> HealthReport {
        let addr = self
            .handle
            .health_addr()
            .await
            .expect("health server bound");
        let (status, body) = http_get(addr, "/healthz").await.expect("GET /healthz");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("healthz JSON")
    }

    pub async fn metrics(&self) -> String {
        let addr = self
            .handle
            .health_addr()
            .await
            .expect("health server bound");
        let (status, body) = http_get(addr, "/metrics").await.expect("GET /metrics");
        assert_eq!(status, 200);
        body
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A minimal HTTP/1.1 GET: status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))??;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .map_err(|_| std::io::Error::other("read timed out"))??;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The value of a metric line `name{labels} value` (or `name value`).
pub fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        (key == name_and_labels).then(|| value.parse().ok())?
    })
}

/// The ID in the leader key, if any.
pub async fn get_leader(client: &Client) -> Option<String> {
    client
        .get(keys::OPERATOR_LEADER)
        .await
        .expect("read the leader key")
        .map(|kv| String::from_utf8(kv.value).unwrap())
}

/// Registers a node (no lease: tests delete it explicitly).
pub async fn register_node(client: &Client, name: &str) {
    let node = Node::new(&cluster(), name, cluster_id().get());
    client
        .put(&keys::nodes_of(&cluster()).key(name), node.encode())
        .await
        .expect("register node");
}

pub async fn deregister_node(client: &Client, name: &str) {
    assert!(
        client
            .delete(&keys::nodes_of(&cluster()).key(name))
            .await
            .expect("delete node"),
        "node {name} existed"
    );
}

/// Every assignment in etcd, by node.
pub async fn assignments(client: &Client) -> std::collections::BTreeMap<String, IpamAssignment> {
    let prefix = keys::ipam_nodes();
    let (kvs, _) = client.list(&prefix, 1000).await.expect("list assignments");
    kvs.into_iter()
        .map(|kv| {
            let node = prefix.strip(&kv.key).unwrap().to_string();
            let a = IpamAssignment::decode(&node, &kv.value).expect("valid assignment");
            (node, a)
        })
        .collect()
}

/// Every CIDR key in etcd: CIDR (as in the key, `10.1.0.0_24`) → node.
pub async fn cidr_keys(client: &Client) -> std::collections::BTreeMap<String, String> {
    let prefix = keys::ipam_cidrs();
    let (kvs, _) = client.list(&prefix, 1000).await.expect("list cidr keys");
    kvs.into_iter()
        .map(|kv| {
            (
                prefix.strip(&kv.key).unwrap().to_string(),
                String::from_utf8(kv.value).unwrap(),
            )
        })
        .collect()
}

/// Checks the IPAM invariants in etcd: no CIDR in two assignments, and every
/// assigned CIDR has a CIDR key that names its node.
pub async fn assert_ipam_consistent(client: &Client) {
    let assignments = assignments(client).await;
    let keys = cidr_keys(client).await;
    let mut seen = std::collections::HashMap::new();
    for (node, a) in &assignments {
        for cidr in a.ipv4.iter().chain(&a.ipv6) {
            if let Some(other) = seen.insert(*cidr, node.clone()) {
                panic!("{cidr} is assigned to both {other} and {node}");
            }
            let key = cidr.to_string().replace('/', "_");
            assert_eq!(
                keys.get(&key),
                Some(node),
                "the CIDR key of {cidr} must name {node}"
            );
        }
    }
}

/// The `clustermesh-operator` binary as a child process; killed on drop
/// (also when the test panics). Its stderr is collected (and echoed).
pub struct OperatorProcess {
    pub id: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl OperatorProcess {
    pub fn spawn(args: &[String], id: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_clustermesh-operator"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn clustermesh-operator");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let tag = id.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{tag}] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            id: id.to_string(),
            child,
            lines,
        }
    }

    /// The standard test flags for one instance.
    pub fn args(endpoint: &str, id: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "--cluster-name",
            "c5",
            "--cluster-id",
            "5",
            "--etcd-endpoints",
            endpoint,
            "--id",
            id,
            "--session-ttl",
            "3s",
            "--heartbeat-interval",
            "1s",
            "--identity-gc-interval",
            "1s",
            "--health-listen",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The health address, from the log line the server writes once bound.
    pub async fn health_addr(&self) -> SocketAddr {
        let mut found = None;
        wait_until("the operator serves /healthz", || {
            found = self.log().iter().find_map(|l| {
                let rest = l.split("serving /healthz and /metrics").nth(1)?;
                let addr = rest.split("addr=").nth(1)?.split_whitespace().next()?;
                addr.parse::<SocketAddr>().ok()
            });
            std::future::ready(found.is_some())
        })
        .await;
        found.unwrap()
    }

    pub async fn health(&self, addr: SocketAddr) -> Option<HealthReport> {
        let (status, body) = http_get(addr, "/healthz").await.ok()?;
        (status == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and the exit code.
    pub async fn terminate(&mut self) -> Option<i32> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the operator did not exit after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion: exit code and stderr.
pub fn run_binary(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_clustermesh-operator"))
        .args(args)
        .output()
        .expect("run clustermesh-operator");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
