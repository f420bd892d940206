//! Workloads: pods created through the CNI plugin (a namespace each, some
//! with an echo server), the sample workloads with their global service,
//! and requests made from inside a pod.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use kvstore::{StoreValue, keys};

use super::{Mesh, plan};
use crate::{
    process::{self, spawn_daemon, wait_until},
    state::EndpointInfo,
    topology::{self, in_netns},
};

/// The service every mesh with workloads offers.
pub const SERVICE_FRONTEND: &str = "10.96.0.10:80";
/// The namespace of the sample workloads.
pub const WORKLOAD_NAMESPACE: &str = "demo";
/// The echo servers' port.
pub const ECHO_PORT: u16 = 8080;

/// How long a new echo server may take to listen.
const ECHO_SERVER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one probe of a new echo server may take to connect.
const ECHO_PROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// The interface name of every pod.
const POD_IFNAME: &str = "eth0";

impl Mesh {
    /// Creates a pod on a node through the CNI plugin, optionally with an
    /// echo server on `port`.
    pub fn add_endpoint(
        &mut self,
        cluster: &str,
        node: &str,
        name: &str,
        labels: &[(&str, &str)],
        echo_port: Option<u16>,
    ) -> Result<EndpointInfo> {
        let n = self.node(cluster, node)?.clone();
        let netns = plan::pod_netns(&self.state, cluster, name);
        topology::create_netns(&netns)?;
        let labels_map: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let kubernetes = self.state.cluster(cluster)?.kube.is_some();
        // Kubernetes mode: the Pod object comes first (its labels are the
        // endpoint's), and CNI names it as a kubelet does.
        let cni_args = if kubernetes {
            self.kube_namespace(cluster, WORKLOAD_NAMESPACE)?;
            self.kube_create_pod(cluster, node, WORKLOAD_NAMESPACE, name, &labels_map)?;
            Some(format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={WORKLOAD_NAMESPACE};K8S_POD_NAME={name}"
            ))
        } else {
            None
        };
        // A pod with an echo server declares its port as `http`, as a
        // container port (policies may name it).
        let ports: Vec<serde_json::Value> = echo_port
            .map(|port| serde_json::json!({"name": "http", "port": port, "protocol": "TCP"}))
            .into_iter()
            .collect();
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "clustermesh",
            "type": "clustermesh-cni",
            "agentSocket": n.api_socket,
            "runtimeConfig": {"labels": labels_map, "namespace": WORKLOAD_NAMESPACE, "ports": ports},
        });
        let out = run_cni(
            &self.bin("clustermesh-cni")?,
            "ADD",
            &format!("{cluster}-{name}"),
            &netns,
            &conf.to_string(),
            cni_args.as_deref(),
        )?;
        let result: serde_json::Value = serde_json::from_slice(&out).context("CNI result")?;
        let addresses: Vec<IpAddr> = result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["address"].as_str()?.split('/').next()?.parse().ok())
            .collect();
        let ip: Ipv4Addr = addresses
            .iter()
            .find_map(|a| match a {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            })
            .context("CNI result without an IPv4 address")?;
        let ipv6: Option<Ipv6Addr> = addresses.iter().find_map(|a| match a {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        });
        let server = match echo_port {
            Some(port) => Some(spawn_daemon(
                Some(&netns),
                &self.bin("clustermesh")?,
                &[
                    "tool".into(),
                    "echo-server".into(),
                    "--name".into(),
                    format!("{cluster}/{name}"),
                    "--port".into(),
                    port.to_string(),
                ],
                &[],
                &self.log_path(cluster, &format!("pod-{name}")),
            )?),
            None => None,
        };
        let info = EndpointInfo {
            cluster: cluster.to_string(),
            node: node.to_string(),
            name: name.to_string(),
            namespace: WORKLOAD_NAMESPACE.to_string(),
            netns,
            ip,
            ipv6,
            labels: labels_map,
            server,
            port: echo_port,
        };
        self.state.endpoints.push(info.clone());
        self.state.save()?;
        if let Some(port) = echo_port {
            let addr = SocketAddr::from((ip, port));
            wait_until(
                &format!("echo server in {cluster}/{name}"),
                ECHO_SERVER_TIMEOUT,
                info.server.as_ref(),
                || {
                    in_netns(&info.netns, move || {
                        TcpStream::connect_timeout(&addr, ECHO_PROBE_TIMEOUT).is_ok()
                    })
                    .unwrap_or(false)
                },
            )?;
        }
        if kubernetes {
            self.kube_set_pod_ready(cluster, WORKLOAD_NAMESPACE, name, ip, true)?;
        }
        Ok(info)
    }

    /// Deletes a pod through the CNI plugin.
    pub fn remove_endpoint(&mut self, cluster: &str, name: &str) -> Result<()> {
        let e = self.state.endpoint(cluster, name)?.clone();
        let n = self.node(cluster, &e.node)?;
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "clustermesh", "agentSocket": n.api_socket});
        run_cni(
            &self.bin("clustermesh-cni")?,
            "DEL",
            &format!("{cluster}-{name}"),
            &e.netns,
            &conf.to_string(),
            None,
        )?;
        if self.state.cluster(cluster)?.kube.is_some() {
            self.kube_delete_pod(cluster, &e.namespace, name)?;
        }
        if let Some(p) = &e.server {
            process::kill(p);
        }
        topology::delete_netns(&e.netns);
        self.state
            .endpoints
            .retain(|x| !(x.cluster == cluster && x.name == name));
        self.state.save()
    }

    /// The sample workloads: a client on each cluster's first node, an echo
    /// server on every node, and the global service `demo/echo` in front of
    /// them (local backends first).
    pub(super) fn add_workloads(&mut self) -> Result<()> {
        let clusters = self.state.clusters.clone();
        for c in &clusters {
            self.add_endpoint(
                &c.name,
                &c.nodes[0].name,
                "client",
                &[("app", "client")],
                None,
            )?;
            for n in &c.nodes {
                self.add_endpoint(
                    &c.name,
                    &n.name,
                    &format!("echo-{}", n.name),
                    &[("app", "echo")],
                    Some(ECHO_PORT),
                )?;
            }
        }
        if self.state.clusters.iter().all(|c| c.kube.is_some()) {
            for c in &clusters {
                self.kube_apply_service(&c.name, echo_service())?;
            }
            self.state.service_frontend = Some(SERVICE_FRONTEND.into());
            return self.state.save();
        }
        let def = kvstore::values::ServiceDef::parse(&format!(
            "namespace: {WORKLOAD_NAMESPACE}\nname: echo\nfrontend: 10.96.0.10\nports: [{{name: http, port: 80, targetPort: {ECHO_PORT}}}]\nselector: {{app: echo}}\nglobal: true\naffinity: local\n"
        ))
        .map_err(|e| anyhow::anyhow!(e))?;
        for c in &clusters {
            self.put(&c.name, &keys::service_defs().key(&def.key()), def.encode())?;
        }
        self.state.service_frontend = Some(SERVICE_FRONTEND.into());
        self.state.save()
    }

    /// A request from a pod: connects to `to`, sends a line and returns
    /// (the server's name, the address the client saw).
    pub fn request(
        &self,
        cluster: &str,
        endpoint: &str,
        to: SocketAddr,
        timeout: Duration,
    ) -> Result<(String, SocketAddr)> {
        let e = self.state.endpoint(cluster, endpoint)?;
        in_netns(&e.netns, move || request(to, timeout))?
    }

    /// Whether a connection from a pod to `to` is dropped: `Ok(true)` when the
    /// attempt times out (the SYN is dropped), `Ok(false)` when it connects.
    /// A refusal (nothing listens, or a reset) is an error, not a denial, so a
    /// check of a policy cannot pass on a server that is simply gone.
    pub fn connect_times_out(
        &self,
        cluster: &str,
        endpoint: &str,
        to: SocketAddr,
        timeout: Duration,
    ) -> Result<bool> {
        let e = self.state.endpoint(cluster, endpoint)?;
        match in_netns(&e.netns, move || TcpStream::connect_timeout(&to, timeout))? {
            Ok(_) => Ok(false),
            Err(error) if error.kind() == std::io::ErrorKind::TimedOut => Ok(true),
            Err(error) => Err(anyhow::Error::new(error)
                .context(format!("connect from {cluster}/{endpoint} to {to}"))),
        }
    }
}

/// The global service `demo/echo` of the sample workloads as a Kubernetes
/// Service: the same frontend, port and affinity as the definition a
/// mesh without Kubernetes stores in etcd.
fn echo_service() -> serde_json::Value {
    let (ip, port) = SERVICE_FRONTEND.split_once(':').expect("ip:port");
    serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {
            "name": "echo", "namespace": WORKLOAD_NAMESPACE,
            "annotations": {"service.cilium.io/global": "true", "service.cilium.io/affinity": "local"},
        },
        "spec": {
            "clusterIP": ip,
            "selector": {"app": "echo"},
            "ports": [{"name": "http", "port": port.parse::<u16>().expect("a port"), "targetPort": ECHO_PORT, "protocol": "TCP"}],
        },
    })
}

/// Runs the CNI plugin: `command` (`ADD`, `DEL`) for `container` in the
/// named namespace `netns` (under `/run/netns`), the network config on
/// stdin, `CNI_ARGS` if given. Returns its stdout.
pub fn run_cni(
    cni: &Path,
    command: &str,
    container: &str,
    netns: &str,
    conf: &str,
    args: Option<&str>,
) -> Result<Vec<u8>> {
    let mut cmd = std::process::Command::new(cni);
    cmd.env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", topology::netns_path(netns))
        .env("CNI_IFNAME", POD_IFNAME)
        .env("CNI_PATH", cni.parent().unwrap_or(Path::new("/")));
    if let Some(args) = args {
        cmd.env("CNI_ARGS", args);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("run clustermesh-cni")?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "CNI {command} for {container} failed: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(out.stdout)
}

/// Connects, sends `hello\n`, and reads the echo server's answer.
pub fn request(to: SocketAddr, timeout: Duration) -> Result<(String, SocketAddr)> {
    let mut s =
        TcpStream::connect_timeout(&to, timeout).with_context(|| format!("connect to {to}"))?;
    s.set_read_timeout(Some(timeout))?;
    let peer = s.peer_addr()?;
    s.write_all(b"hello\n")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    let deadline = Instant::now() + timeout;
    while !String::from_utf8_lossy(&buf).contains("hello") && Instant::now() < deadline {
        let n = s
            .read(&mut chunk)
            .with_context(|| format!("read from {to}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    if !text.contains("hello") {
        bail!("incomplete answer from {to}: {text:?}");
    }
    Ok((text.lines().next().unwrap_or_default().to_string(), peer))
}
