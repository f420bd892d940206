//! Building, driving and removing a local mesh.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use agent::{ApiClient, StatusView};
use anyhow::{Context, Result, bail};
use kvstore::{Client, ClientConfig, StoreValue, TlsConfig, keys};

use crate::{
    error::refuse,
    interrupt::{self, Interrupted},
    mesh_dir, pki,
    process::{self, binary, failure_cause, spawn_daemon},
    state::{ClusterInfo, EndpointInfo, MeshState, NodeInfo, ProcessInfo},
    subnet, topology,
};

/// What `up` builds.
#[derive(Debug, Clone)]
pub struct MeshSpec {
    /// Clusters `c1`…`cN` with IDs 1…N (1-8).
    pub clusters: u8,
    /// Nodes per cluster (1-8).
    pub nodes: u8,
    /// Where everything lives (certificates, data, logs, sockets, `mesh.json`).
    pub dir: PathBuf,
    /// Where `etcd`-less binaries are: `clustermesh`, `clustermesh-agent`,
    /// `clustermesh-cni`, `clustermesh-operator`, `clustermesh-apiserver`.
    pub bin_dir: PathBuf,
    /// Sample workloads: a client and echo servers, a global service.
    pub workloads: bool,
    /// Connect every pair of clusters.
    pub connect: bool,
    /// The fabric subnet's index (`172.(16+k).0.0/16`, see
    /// [`crate::parse_subnet`]); `None` takes the first free one that
    /// clashes with no address or route of the host.
    pub subnet: Option<u8>,
}

impl MeshSpec {
    /// Two clusters of two nodes with workloads, binaries next to the
    /// running executable.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            clusters: 2,
            nodes: 2,
            dir: dir.into(),
            bin_dir: default_bin_dir(),
            workloads: true,
            connect: true,
            subnet: None,
        }
    }
}

/// The directory of the running executable (a test binary in
/// `target/<profile>/deps` looks one level up).
pub fn default_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

/// The service every mesh with workloads offers.
pub const SERVICE_FRONTEND: &str = "10.96.0.10:80";
/// The namespace of the sample workloads.
pub const WORKLOAD_NAMESPACE: &str = "demo";
/// The echo servers' port.
pub const ECHO_PORT: u16 = 8080;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A local mesh (see the crate documentation).
#[derive(Debug)]
pub struct Mesh {
    pub state: MeshState,
}

impl Mesh {
    /// Builds the mesh described by `spec`, reporting each step. On failure
    /// what was started stays described in `mesh.json`; `down` removes it.
    pub fn up(spec: &MeshSpec, progress: &mut dyn FnMut(&str)) -> Result<Self> {
        if !(1..=8).contains(&spec.clusters) {
            refuse!("--clusters must be 1-8, not {}", spec.clusters);
        }
        if !(1..=8).contains(&spec.nodes) {
            refuse!("--nodes must be 1-8, not {}", spec.nodes);
        }
        for name in [
            "clustermesh",
            "clustermesh-agent",
            "clustermesh-cni",
            "clustermesh-operator",
            "clustermesh-apiserver",
        ] {
            binary(&spec.bin_dir, name)?;
        }
        let (dir, created_dir) = mesh_dir::prepare(&spec.dir)?;
        let k = subnet::acquire(&dir, spec.subnet).inspect_err(|_| {
            if created_dir {
                let _ = std::fs::remove_dir(&dir);
            }
        })?;
        let mut state = MeshState::new(dir.clone(), k, spec.bin_dir.clone(), created_dir);
        state.save()?;
        state.own("pki")?;
        let mut mesh = Self { state };
        let mut step = |msg: &str| {
            progress(msg);
            interrupt::check()
        };
        if let Err(e) = mesh.build(spec, &mut step) {
            if interrupt::interrupted() {
                progress("interrupted: removing what was started");
                return match Self::down(&dir, progress) {
                    Ok(()) => Err(Interrupted.into()),
                    Err(down) => Err(down.context(format!(
                        "interrupted, and removing what was started failed; \
                         `clustermesh down --dir {}` removes the rest",
                        dir.display()
                    ))),
                };
            }
            return Err(e.context(format!(
                "building the mesh failed; `clustermesh down --dir {}` removes what was started",
                dir.display()
            )));
        }
        Ok(mesh)
    }

    /// `progress` reports a step and fails once `up` was interrupted.
    fn build(
        &mut self,
        spec: &MeshSpec,
        progress: &mut dyn FnMut(&str) -> Result<()>,
    ) -> Result<()> {
        let s = &mut self.state;
        progress(&format!(
            "fabric {} (172.{}.0.0/16)",
            s.fabric_netns,
            16 + s.subnet
        ))?;
        topology::create_fabric(&s.fabric_netns)?;
        topology::plug(
            &s.fabric_netns,
            None,
            &s.host_link,
            &format!("{}h", s.prefix),
            s.host_ip,
        )?;
        progress("mesh CA")?;
        let ca = pki::ca(s.ca_cert.parent().expect("pki dir"))?;
        for i in 1..=spec.clusters {
            let name = format!("c{i}");
            let cp_ip = Ipv4Addr::new(172, 16 + s.subnet, i, 2);
            let cdir = s.own(&name)?;
            let certs = pki::cluster(&ca, &s.ca_cert, &cdir.join("certs"), &name, cp_ip.into())?;
            let etcd_tls = pki::etcd(&cdir.join("certs"), &name, cp_ip.into())?;
            let nodes = (1..=spec.nodes)
                .map(|j| {
                    let ip = Ipv4Addr::new(172, 16 + s.subnet, i, 10 + j);
                    NodeInfo {
                        name: format!("n{j}"),
                        netns: format!("{}-c{i}-n{j}", s.prefix),
                        ip,
                        api_socket: cdir.join(format!("n{j}")).join("agent.sock"),
                        bpffs: PathBuf::from("/sys/fs/bpf")
                            .join(&s.prefix)
                            .join(format!("c{i}-n{j}")),
                        health: format!("{ip}:9876"),
                        state_dir: cdir.join(format!("n{j}")).join("state"),
                        agent: None,
                    }
                })
                .collect();
            s.clusters.push(ClusterInfo {
                name: name.clone(),
                id: i as u32,
                cp_netns: format!("{}-c{i}", s.prefix),
                cp_ip,
                etcd_endpoint: format!("https://{cp_ip}:2379"),
                etcd_tls: Some(etcd_tls),
                etcd_data: cdir.join("etcd"),
                apiserver_endpoint: format!("https://{cp_ip}:2443"),
                apiserver_health: format!("{cp_ip}:9880"),
                operator_health: format!("{cp_ip}:9234"),
                pod_cidr_pool: format!("10.{i}.0.0/16"),
                certs,
                clustermesh_dir: cdir.join("clustermesh"),
                etcd: None,
                operator: None,
                apiserver: None,
                nodes,
                remotes: Vec::new(),
            });
        }
        self.state.save()?;
        let names: Vec<String> = self.state.clusters.iter().map(|c| c.name.clone()).collect();
        for name in &names {
            progress(&format!(
                "{name}: control plane (etcd, operator, clustermesh-apiserver)"
            ))?;
            self.start_control_plane(name)?;
        }
        for name in &names {
            let nodes: Vec<String> = self
                .state
                .cluster(name)?
                .nodes
                .iter()
                .map(|n| n.name.clone())
                .collect();
            for node in &nodes {
                progress(&format!("{name}/{node}: network namespace and agent"))?;
                self.start_node(name, node)?;
            }
        }
        for name in &names {
            for node in self.state.cluster(name)?.nodes.clone() {
                wait_until(
                    &format!("agent {name}/{} to be synced", node.name),
                    STARTUP_TIMEOUT,
                    node.agent.as_ref(),
                    || agent_status(&node).is_ok_and(|s| s.synced && s.pod_cidr.is_some()),
                )?;
            }
        }
        if spec.connect && names.len() > 1 {
            for (x, a) in names.iter().enumerate() {
                for b in &names[x + 1..] {
                    progress(&format!("connect {a} <-> {b}"))?;
                    self.connect(a, b, true)?;
                }
            }
            progress("waiting for every remote cluster to be ready")?;
            self.wait_ready(STARTUP_TIMEOUT)?;
        }
        if spec.workloads {
            progress("workloads: client and echo servers, global service demo/echo")?;
            self.add_workloads()?;
        }
        self.state.save()
    }

    /// Reads the mesh in `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        Ok(Self {
            state: MeshState::load(dir)?,
        })
    }

    /// Removes everything of the mesh in `dir`: processes, namespaces,
    /// pinned maps, files. Works on a half-built mesh too.
    pub fn down(dir: &Path, progress: &mut dyn FnMut(&str)) -> Result<()> {
        let state = MeshState::load(dir)?;
        mesh_dir::check_owner(dir, &state)?;
        progress("stopping workloads and agents");
        for e in &state.endpoints {
            if let Some(p) = &e.server {
                process::kill(p);
            }
        }
        for c in &state.clusters {
            for n in &c.nodes {
                if let Some(p) = &n.agent {
                    process::stop(p, STOP_GRACE);
                }
            }
        }
        progress("stopping control planes");
        for c in &state.clusters {
            for p in [&c.apiserver, &c.operator, &c.etcd].into_iter().flatten() {
                process::stop(p, STOP_GRACE);
            }
        }
        progress("removing namespaces and pinned maps");
        for e in &state.endpoints {
            topology::delete_netns(&e.netns);
        }
        for c in &state.clusters {
            for n in &c.nodes {
                topology::delete_netns(&n.netns);
                let _ = std::fs::remove_dir_all(&n.bpffs);
            }
            topology::delete_netns(&c.cp_netns);
        }
        // Pods created outside mesh.json (a crash between CNI ADD and save).
        if let Ok(list) = topology::ip(&["netns", "list"]) {
            for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
                if ns.starts_with(&format!("{}-", state.prefix)) {
                    topology::delete_netns(ns);
                }
            }
        }
        topology::delete_netns(&state.fabric_netns);
        let _ = topology::ip(&["link", "del", &state.host_link]);
        let _ = std::fs::remove_dir_all(PathBuf::from("/sys/fs/bpf").join(&state.prefix));
        subnet::release(state.subnet);
        progress(&format!(
            "removing what the mesh made in {}",
            state.dir.display()
        ));
        mesh_dir::remove_owned(&state, progress)
    }

    fn bin(&self, name: &str) -> Result<PathBuf> {
        binary(&self.state.bin_dir, name)
    }

    /// Starts (or restarts) a cluster's etcd, operator and apiserver.
    fn start_control_plane(&mut self, cluster: &str) -> Result<()> {
        let c = self.state.cluster(cluster)?.clone();
        let fabric = self.state.fabric_netns.clone();
        topology::create_netns(&c.cp_netns)?;
        topology::plug(
            &fabric,
            Some(&c.cp_netns),
            "fab0",
            &format!("{}c{}", self.state.prefix, c.id),
            c.cp_ip,
        )?;
        self.start_etcd(cluster)?;
        self.start_operator(cluster)?;
        self.start_apiserver(cluster)?;
        Ok(())
    }

    /// Starts a cluster's operator and waits until it is healthy.
    pub fn start_operator(&mut self, cluster: &str) -> Result<()> {
        let c = self.state.cluster(cluster)?.clone();
        let args = with_etcd(
            &c,
            vec![
                "--cluster-name".into(),
                c.name.clone(),
                "--cluster-id".into(),
                c.id.to_string(),
                "--pod-cidr-pool".into(),
                c.pod_cidr_pool.clone(),
                "--node-cidr-mask-size".into(),
                "24".into(),
                "--health-listen".into(),
                c.operator_health.clone(),
                "--heartbeat-interval".into(),
                "10s".into(),
                "--id".into(),
                format!("{}-operator", c.name),
            ],
        );
        let program = self.bin("clustermesh-operator")?;
        self.launch(
            cluster,
            ControlPlane::Operator,
            &program,
            &args,
            &c.operator_health,
            "/healthz",
        )
    }

    /// Stops a cluster's operator.
    pub fn stop_operator(&mut self, cluster: &str) -> Result<()> {
        self.stop_control_plane(cluster, ControlPlane::Operator)
    }

    /// Starts a cluster's etcd and waits until it is healthy.
    pub fn start_etcd(&mut self, cluster: &str) -> Result<()> {
        let c = self.state.cluster(cluster)?.clone();
        let args: Vec<String> = vec![
            format!("--name={}", c.name),
            format!("--data-dir={}", c.etcd_data.display()),
            format!("--listen-client-urls={}", c.etcd_endpoint),
            format!("--advertise-client-urls={}", c.etcd_endpoint),
            "--listen-peer-urls=http://127.0.0.1:2380".into(),
            "--initial-advertise-peer-urls=http://127.0.0.1:2380".into(),
            format!("--initial-cluster={}=http://127.0.0.1:2380", c.name),
            format!("--listen-metrics-urls=http://{}:2381", c.cp_ip),
            "--logger=zap".into(),
            "--log-outputs=stderr".into(),
        ]
        .into_iter()
        .chain(c.etcd_tls.iter().flat_map(|t| {
            [
                format!("--cert-file={}", t.server_cert.display()),
                format!("--key-file={}", t.server_key.display()),
                format!("--trusted-ca-file={}", t.ca.display()),
                "--client-cert-auth=true".into(),
            ]
        }))
        .collect::<Vec<_>>();
        let health = format!("{}:2381", c.cp_ip);
        self.launch(
            cluster,
            ControlPlane::Etcd,
            Path::new("/usr/bin/etcd"),
            &args,
            &health,
            "/health",
        )
    }

    /// Stops a cluster's etcd (its data stays).
    pub fn stop_etcd(&mut self, cluster: &str) -> Result<()> {
        self.stop_control_plane(cluster, ControlPlane::Etcd)
    }

    /// Stops a cluster's etcd, deletes its data and starts it again: the
    /// same etcd cluster ID with revisions from 1, as an etcd without
    /// persistent storage comes back.
    pub fn wipe_etcd(&mut self, cluster: &str) -> Result<()> {
        self.stop_etcd(cluster)?;
        let data = self.state.cluster(cluster)?.etcd_data.clone();
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .with_context(|| format!("removing {}", data.display()))?;
        }
        self.start_etcd(cluster)
    }

    /// Starts a cluster's apiserver and waits until it is ready.
    pub fn start_apiserver(&mut self, cluster: &str) -> Result<()> {
        let id = self.state.cluster(cluster)?.id;
        self.start_apiserver_as(cluster, id)
    }

    /// Restarts a cluster's apiserver publishing another cluster ID (to test
    /// how peers refuse a misconfigured cluster).
    pub fn restart_apiserver_with_id(&mut self, cluster: &str, id: u32) -> Result<()> {
        self.stop_apiserver(cluster)?;
        self.start_apiserver_as(cluster, id)
    }

    fn start_apiserver_as(&mut self, cluster: &str, id: u32) -> Result<()> {
        let c = self.state.cluster(cluster)?.clone();
        let args = with_etcd(
            &c,
            vec![
                "--cluster-name".into(),
                c.name.clone(),
                "--cluster-id".into(),
                id.to_string(),
                "--listen".into(),
                c.apiserver_endpoint
                    .trim_start_matches("https://")
                    .to_string(),
                "--tls-cert".into(),
                c.certs.server_cert.display().to_string(),
                "--tls-key".into(),
                c.certs.server_key.display().to_string(),
                "--tls-client-ca".into(),
                c.certs.ca.display().to_string(),
                "--health-listen".into(),
                c.apiserver_health.clone(),
            ],
        );
        let program = self.bin("clustermesh-apiserver")?;
        self.launch(
            cluster,
            ControlPlane::Apiserver,
            &program,
            &args,
            &c.apiserver_health,
            "/readyz",
        )
    }

    /// Stops a cluster's apiserver.
    pub fn stop_apiserver(&mut self, cluster: &str) -> Result<()> {
        self.stop_control_plane(cluster, ControlPlane::Apiserver)
    }

    /// Starts a control-plane daemon of `cluster` in its namespace (refused
    /// while it runs), tracks it in `mesh.json` at once, and waits until
    /// `health` answers 200 on `path`.
    fn launch(
        &mut self,
        cluster: &str,
        which: ControlPlane,
        program: &Path,
        args: &[String],
        health: &str,
        path: &str,
    ) -> Result<()> {
        let c = self.state.cluster(cluster)?.clone();
        let name = which.name();
        refuse_running(name, cluster, which.slot(&c).as_ref())?;
        let log = self
            .state
            .dir
            .join(cluster)
            .join("logs")
            .join(format!("{name}.log"));
        let process = spawn_daemon(Some(&c.cp_netns), program, args, &[], &log)?;
        *which.slot_mut(self.state.cluster_mut(cluster)?) = Some(process.clone());
        self.state.save()?;
        wait_until(
            &format!("{cluster} {name}"),
            STARTUP_TIMEOUT,
            Some(&process),
            || http_ok(health, path),
        )
    }

    /// Stops a control-plane daemon of `cluster` (SIGTERM, then SIGKILL).
    fn stop_control_plane(&mut self, cluster: &str, which: ControlPlane) -> Result<()> {
        if let Some(p) = which.slot_mut(self.state.cluster_mut(cluster)?).take() {
            process::stop(&p, STOP_GRACE);
        }
        self.state.save()
    }

    fn start_node(&mut self, cluster: &str, node: &str) -> Result<()> {
        let c = self.state.cluster(cluster)?.clone();
        let n = c
            .nodes
            .iter()
            .find(|n| n.name == node)
            .context("node")?
            .clone();
        topology::create_netns(&n.netns)?;
        let j = node.trim_start_matches('n');
        topology::plug(
            &self.state.fabric_netns,
            Some(&n.netns),
            "fab0",
            &format!("{}c{}n{j}", self.state.prefix, c.id),
            n.ip,
        )?;
        std::fs::create_dir_all(&c.clustermesh_dir)?;
        self.start_agent(cluster, node)
    }

    /// Starts (or restarts) a node's agent; returns once its API answers.
    pub fn start_agent(&mut self, cluster: &str, node: &str) -> Result<()> {
        let c = self.state.cluster(cluster)?.clone();
        let n = c
            .nodes
            .iter()
            .find(|n| n.name == node)
            .context("node")?
            .clone();
        refuse_running(&format!("agent {node}"), cluster, n.agent.as_ref())?;
        if let Some(dir) = n.api_socket.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let agent = spawn_daemon(
            Some(&n.netns),
            &self.bin("clustermesh-agent")?,
            &with_etcd(
                &c,
                vec![
                    "run".into(),
                    "--cluster-name".into(),
                    c.name.clone(),
                    "--cluster-id".into(),
                    c.id.to_string(),
                    "--node-name".into(),
                    n.name.clone(),
                    "--node-ip".into(),
                    n.ip.to_string(),
                    "--clustermesh-config".into(),
                    c.clustermesh_dir.display().to_string(),
                    "--bpffs-dir".into(),
                    n.bpffs.display().to_string(),
                    "--api-socket".into(),
                    n.api_socket.display().to_string(),
                    "--state-dir".into(),
                    n.state_dir.display().to_string(),
                    "--health-listen".into(),
                    n.health.clone(),
                    "--session-ttl".into(),
                    "2m".into(),
                    "--sync-timeout".into(),
                    "30s".into(),
                    "--pod-cidr-pool".into(),
                    c.pod_cidr_pool.clone(),
                ],
            ),
            &[("CLUSTERMESH_LOG", "info")],
            &self
                .state
                .dir
                .join(cluster)
                .join("logs")
                .join(format!("agent-{node}.log")),
        )?;
        let n_mut = self
            .state
            .cluster_mut(cluster)?
            .nodes
            .iter_mut()
            .find(|x| x.name == node)
            .context("node")?;
        n_mut.agent = Some(agent.clone());
        self.state.save()?;
        let info = self.node(cluster, node)?.clone();
        wait_until(
            &format!("agent {cluster}/{node} API"),
            STARTUP_TIMEOUT,
            Some(&agent),
            || agent_status(&info).is_ok(),
        )
    }

    /// Kills a node's agent as a crash would. The datapath keeps working.
    pub fn kill_agent(&mut self, cluster: &str, node: &str) -> Result<()> {
        let n = self
            .state
            .cluster_mut(cluster)?
            .nodes
            .iter_mut()
            .find(|x| x.name == node)
            .context("node")?;
        if let Some(p) = n.agent.take() {
            process::kill(&p);
        }
        self.state.save()
    }

    pub fn node(&self, cluster: &str, node: &str) -> Result<&NodeInfo> {
        self.state
            .cluster(cluster)?
            .nodes
            .iter()
            .find(|n| n.name == node)
            .with_context(|| format!("no node {node} in {cluster}"))
    }

    /// The agent API of a node.
    pub fn agent_api(&self, cluster: &str, node: &str) -> Result<ApiClient> {
        Ok(ApiClient::new(&self.node(cluster, node)?.api_socket))
    }

    /// Status of every agent (or why it does not answer).
    pub fn agent_statuses(&self) -> Vec<(String, String, Result<StatusView, String>)> {
        self.state
            .clusters
            .iter()
            .flat_map(|c| {
                c.nodes
                    .iter()
                    .map(move |n| (c.name.clone(), n.name.clone(), agent_status(n)))
            })
            .collect()
    }

    /// Waits until every agent is synced and every configured remote is ready.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let missing = self.not_ready();
            if missing.is_empty() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "still waiting after {timeout:?} for: {}",
                    missing.join("; ")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// What is not ready yet, in words.
    pub fn not_ready(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for c in &self.state.clusters {
            for n in &c.nodes {
                match agent_status(n) {
                    Err(e) => missing.push(format!("{}/{}: {e}", c.name, n.name)),
                    Ok(s) if !s.synced => {
                        missing.push(format!("{}/{}: not synced", c.name, n.name))
                    }
                    Ok(s) => {
                        for remote in &c.remotes {
                            match s.remotes.iter().find(|r| &r.name == remote) {
                                Some(r) if r.ready => {}
                                Some(r) => missing.push(format!(
                                    "{}/{} -> {remote}: {}",
                                    c.name,
                                    n.name,
                                    r.last_error.clone().unwrap_or_else(|| "not ready".into())
                                )),
                                None => missing.push(format!(
                                    "{}/{} -> {remote}: not configured yet",
                                    c.name, n.name
                                )),
                            }
                        }
                        // A disconnected remote the agent still has is not the
                        // configured state yet (`status --wait` after `disconnect`).
                        for r in s.remotes.iter().filter(|r| !c.remotes.contains(&r.name)) {
                            missing.push(format!(
                                "{}/{} -> {}: still connected after disconnect",
                                c.name, n.name, r.name
                            ));
                        }
                    }
                }
            }
        }
        missing
    }

    /// Checks that `from`'s agents can use `to`, then writes the remote
    /// config (and, bidirectionally, the reverse). Returns what was checked.
    pub fn connect(&mut self, from: &str, to: &str, bidirectional: bool) -> Result<Vec<String>> {
        self.distinct_clusters("connect", from, to)?;
        let mut checks = self.check_connect(from, to)?;
        if bidirectional {
            checks.extend(self.check_connect(to, from)?);
        }
        self.write_remote_config(from, to)?;
        if bidirectional {
            self.write_remote_config(to, from)?;
        }
        self.state.save()?;
        Ok(checks)
    }

    /// Removes the remote config(s); agents drain that cluster's entries.
    pub fn disconnect(&mut self, from: &str, to: &str, bidirectional: bool) -> Result<()> {
        self.distinct_clusters("disconnect", from, to)?;
        let pairs: Vec<(&str, &str)> = if bidirectional {
            vec![(from, to), (to, from)]
        } else {
            vec![(from, to)]
        };
        for (a, b) in pairs {
            let c = self.state.cluster_mut(a)?;
            let _ = std::fs::remove_file(c.clustermesh_dir.join(b));
            c.remotes.retain(|r| r != b);
        }
        self.state.save()
    }

    /// Writes the remote config without `connect`'s checks (to test what
    /// agents do with a bad peer).
    pub fn write_remote_config_unchecked(&mut self, from: &str, to: &str) -> Result<()> {
        self.write_remote_config(from, to)?;
        self.state.save()
    }

    /// Sets how long `from`'s agents keep `to`'s services while `to` is
    /// unreachable (rewrites the remote config; agents reconnect).
    pub fn set_service_cache_ttl(&mut self, from: &str, to: &str, ttl: &str) -> Result<()> {
        self.write_remote_config_with(from, to, Some(ttl))?;
        self.state.save()
    }

    fn write_remote_config(&mut self, from: &str, to: &str) -> Result<()> {
        self.write_remote_config_with(from, to, None)
    }

    fn write_remote_config_with(
        &mut self,
        from: &str,
        to: &str,
        service_cache_ttl: Option<&str>,
    ) -> Result<()> {
        let target = self.state.cluster(to)?.clone();
        let c = self.state.cluster_mut(from)?;
        std::fs::create_dir_all(&c.clustermesh_dir)?;
        let mut text = format!(
            "endpoints:\n- {}\ntrusted-ca-file: {}\ncert-file: {}\nkey-file: {}\n",
            target.apiserver_endpoint,
            c.certs.ca.display(),
            c.certs.remote_cert.display(),
            c.certs.remote_key.display()
        );
        if let Some(ttl) = service_cache_ttl {
            text.push_str(&format!("service-cache-ttl: {ttl}\n"));
        }
        text.push_str(&format!("pod-cidr-pools: [{}]\n", target.pod_cidr_pool));
        let path = c.clustermesh_dir.join(to);
        let tmp = c.clustermesh_dir.join(format!(".{to}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
        if !c.remotes.iter().any(|r| r == to) {
            c.remotes.push(to.to_string());
        }
        Ok(())
    }

    /// The checks `connect` makes before changing anything.
    fn check_connect(&self, from: &str, to: &str) -> Result<Vec<String>> {
        let a = self.state.cluster(from)?;
        let b = self.state.cluster(to)?;
        let mut checks = Vec::new();
        if a.name == b.name {
            bail!("cannot connect {from} to itself");
        }
        for c in [a, b] {
            kvstore::ClusterName::new(c.name.as_str())
                .map_err(|e| anyhow::anyhow!("cluster name {:?}: {e}", c.name))?;
        }
        checks.push(format!("names {from} and {to} are valid and distinct"));
        let remote = runtime()?.block_on(read_cluster_config(a, b))?;
        if remote.id != b.id {
            bail!(
                "{to}'s apiserver publishes cluster ID {} but the mesh expects {}",
                remote.id,
                b.id
            );
        }
        if remote.id == a.id || remote.id == 0 {
            bail!(
                "{to} has cluster ID {} which {from} cannot accept (0 or its own ID {})",
                remote.id,
                a.id
            );
        }
        checks.push(format!(
            "cluster IDs {} and {} are distinct and in range",
            a.id, b.id
        ));
        let mode = remote.mode().map_err(|e| anyhow::anyhow!("{to}: {e}"))?;
        // Our own mode, as our apiserver publishes it in our etcd.
        let own = runtime()?.block_on(async {
            let name = kvstore::ClusterName::new(a.name.as_str())?;
            let kv = admin_client(a)
                .await?
                .get(&keys::cluster_config(&name))
                .await?
                .with_context(|| format!("{from} publishes no cilium/cluster-config/{from}"))?;
            anyhow::Ok(kvstore::values::ClusterConfig::decode(&a.name, &kv.value)?)
        })?;
        let own_mode = own.mode().map_err(|e| anyhow::anyhow!("{from}: {e}"))?;
        if own_mode != mode {
            bail!("max-connected-clusters differs: {from} {own_mode}, {to} {mode}");
        }
        checks.push(format!(
            "max-connected-clusters is {own_mode} on {from} and {mode} on {to} (their cluster-config)"
        ));
        checks.push(format!("{from}'s remote certificate is accepted by {to}'s apiserver and {to}'s server certificate is trusted (mutual TLS)"));
        let (pa, pb): (ipnet::IpNet, ipnet::IpNet) =
            (a.pod_cidr_pool.parse()?, b.pod_cidr_pool.parse()?);
        if pa.contains(&pb.network()) || pb.contains(&pa.network()) {
            bail!("pod CIDR pools overlap: {from} {pa}, {to} {pb}");
        }
        checks.push(format!("pod CIDR pools {pa} and {pb} do not overlap"));
        let (ids_a, ips_a, ips_b) = runtime()?.block_on(async {
            let ca = admin_client(a).await?;
            let cb = admin_client(b).await?;
            anyhow::Ok((
                ca.count(&keys::identity_masters()).await?,
                ca.count(&keys::ipcache()).await?,
                cb.count(&keys::ipcache()).await?,
            ))
        })?;
        let range = kvstore::IdentityRange::allocation(kvstore::ClusterId::new(a.id, mode)?, mode);
        checks.push(format!(
            "identity headroom in {from}: {ids_a} used of {}",
            range.len()
        ));
        // Every agent of `from` holds both clusters' entries: the smallest
        // ipcache map among them, as the agents report it from the kernel.
        let capacities: Vec<(String, usize)> = a
            .nodes
            .iter()
            .filter_map(|n| {
                let status = agent_status(n).ok()?;
                Some((n.name.clone(), *status.map_capacity.get("ipcache")?))
            })
            .collect();
        let Some((node, capacity)) = capacities.iter().min_by_key(|(_, c)| *c).cloned() else {
            bail!(
                "no agent of {from} reports its ipcache map capacity; are {from}'s agents running?"
            );
        };
        if ips_a + ips_b > i64::try_from(capacity).unwrap_or(i64::MAX) {
            bail!(
                "ipcache map would overflow: {} entries for {capacity} slots on {from}/{node}",
                ips_a + ips_b
            );
        }
        checks.push(format!(
            "ipcache map headroom: {} entries of {capacity} (smallest of {} {from} agents: {node})",
            ips_a + ips_b,
            capacities.len()
        ));
        Ok(checks)
    }

    /// Both clusters exist and are two, not one.
    fn distinct_clusters(&self, verb: &str, a: &str, b: &str) -> Result<()> {
        self.state.cluster(a)?;
        self.state.cluster(b)?;
        if a == b {
            refuse!("cannot {verb} {a} with itself: name two different clusters");
        }
        Ok(())
    }

    /// Partitions two clusters: nodes and control planes of one cannot
    /// reach those of the other (both ways).
    pub fn cut(&mut self, a: &str, b: &str) -> Result<()> {
        self.distinct_clusters("partition", a, b)?;
        if self
            .state
            .cuts
            .iter()
            .any(|(x, y)| (x == a && y == b) || (x == b && y == a))
        {
            refuse!("{a} and {b} are already partitioned");
        }
        let nets = |c: &ClusterInfo| {
            vec![
                format!("172.{}.{}.0/24", 16 + self.state.subnet, c.id),
                c.pod_cidr_pool.clone(),
            ]
        };
        let (na, nb) = (nets(self.state.cluster(a)?), nets(self.state.cluster(b)?));
        topology::cut(&self.state.fabric_netns, &chain_name(a, b), &na, &nb)?;
        self.state.cuts.push((a.to_string(), b.to_string()));
        self.state.save()
    }

    /// Heals a partition made by [`Mesh::cut`].
    pub fn heal(&mut self, a: &str, b: &str) -> Result<()> {
        self.distinct_clusters("heal", a, b)?;
        let Some((a, b)) = self
            .state
            .cuts
            .iter()
            .find(|(x, y)| (x == a && y == b) || (x == b && y == a))
            .cloned()
        else {
            refuse!("{a} and {b} are not partitioned");
        };
        let (a, b) = (a.as_str(), b.as_str());
        topology::heal(&self.state.fabric_netns, &chain_name(a, b))?;
        self.state.cuts.retain(|(x, y)| !(x == a && y == b));
        self.state.save()
    }

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
        let netns = format!("{}-{cluster}-{name}", self.state.prefix);
        topology::create_netns(&netns)?;
        let labels_map: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "clustermesh",
            "type": "clustermesh-cni",
            "agentSocket": n.api_socket,
            "runtimeConfig": {"labels": labels_map, "namespace": WORKLOAD_NAMESPACE},
        });
        let out = run_cni(
            &self.bin("clustermesh-cni")?,
            "ADD",
            &format!("{cluster}-{name}"),
            &netns,
            &conf.to_string(),
        )?;
        let result: serde_json::Value = serde_json::from_slice(&out).context("CNI result")?;
        let ip: Ipv4Addr = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .context("CNI result without an address")?
            .parse()?;
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
                &self
                    .state
                    .dir
                    .join(cluster)
                    .join("logs")
                    .join(format!("pod-{name}.log")),
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
            labels: labels_map,
            server,
            port: echo_port,
        };
        self.state.endpoints.push(info.clone());
        self.state.save()?;
        if let Some(port) = echo_port {
            let addr = SocketAddr::from((ip, port));
            let ns = info.netns.clone();
            wait_until(
                &format!("echo server in {cluster}/{name}"),
                Duration::from_secs(10),
                info.server.as_ref(),
                || {
                    in_netns(&ns, move || {
                        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                    })
                    .unwrap_or(false)
                },
            )?;
        }
        Ok(info)
    }

    /// Deletes a pod through the CNI plugin.
    pub fn remove_endpoint(&mut self, cluster: &str, name: &str) -> Result<()> {
        let e = self.state.endpoint(cluster, name)?.clone();
        let n = self.node(cluster, &e.node)?.clone();
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "clustermesh", "agentSocket": n.api_socket});
        run_cni(
            &self.bin("clustermesh-cni")?,
            "DEL",
            &format!("{cluster}-{name}"),
            &e.netns,
            &conf.to_string(),
        )?;
        if let Some(p) = &e.server {
            process::kill(p);
        }
        topology::delete_netns(&e.netns);
        self.state
            .endpoints
            .retain(|x| !(x.cluster == cluster && x.name == name));
        self.state.save()
    }

    fn add_workloads(&mut self) -> Result<()> {
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

    /// Writes a key into a cluster's etcd (as its admin).
    pub fn put(&self, cluster: &str, key: &str, value: Vec<u8>) -> Result<()> {
        let c = self.state.cluster(cluster)?.clone();
        let key = key.to_string();
        runtime()?.block_on(async move {
            admin_client(&c).await?.put(&key, value).await?;
            anyhow::Ok(())
        })
    }

    /// Deletes a key from a cluster's etcd.
    pub fn delete(&self, cluster: &str, key: &str) -> Result<bool> {
        let c = self.state.cluster(cluster)?.clone();
        let key = key.to_string();
        runtime()?.block_on(async move { Ok(admin_client(&c).await?.delete(&key).await?) })
    }

    /// Lists keys under a prefix of a cluster's etcd.
    pub fn list(&self, cluster: &str, prefix: &kvstore::KeyPrefix) -> Result<Vec<kvstore::Kv>> {
        let c = self.state.cluster(cluster)?.clone();
        let prefix = prefix.clone();
        runtime()?.block_on(async move { Ok(admin_client(&c).await?.list(&prefix, 1000).await?.0) })
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

fn chain_name(a: &str, b: &str) -> String {
    let (x, y) = if a < b { (a, b) } else { (b, a) };
    format!("cut-{x}-{y}")
}

/// A small runtime for the async etcd client from sync code.
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// A client of a cluster's etcd, straight (the admin's path).
pub async fn admin_client(c: &ClusterInfo) -> Result<Client> {
    let config = etcd_admin_config(c)?;
    Client::connect(&config)
        .await
        .with_context(|| format!("cluster {} etcd", c.name))
}

/// Reads `to`'s cluster config through its apiserver with `from`'s remote
/// certificate: proves reachability, mutual TLS trust and authorization.
async fn read_cluster_config(
    from: &ClusterInfo,
    to: &ClusterInfo,
) -> Result<kvstore::values::ClusterConfig> {
    let tls = TlsConfig::from_files(
        &from.certs.ca,
        Some((&from.certs.remote_cert, &from.certs.remote_key)),
    )?;
    let mut config = ClientConfig::new([to.apiserver_endpoint.clone()]).with_tls(tls);
    config.connect_timeout = Duration::from_secs(3);
    config.request_timeout = Duration::from_secs(5);
    let client = Client::connect(&config).await.map_err(|e| {
        let message = format!(
            "{} cannot use {}'s apiserver at {} ({}): {}",
            from.name,
            to.name,
            to.apiserver_endpoint,
            e.kind(),
            e.full_message()
        );
        // Nothing answering is the peer's unavailability (exit 69); a TLS or
        // authorization refusal is a configuration problem (exit 1).
        match e.kind() {
            kvstore::ErrorKind::Unreachable
            | kvstore::ErrorKind::ConnectionClosed
            | kvstore::ErrorKind::UpstreamUnavailable
            | kvstore::ErrorKind::Timeout => anyhow::Error::new(crate::Unavailable(message)),
            _ => anyhow::anyhow!(message),
        }
    })?;
    let name = kvstore::ClusterName::new(to.name.as_str())?;
    let kv = client
        .get(&keys::cluster_config(&name))
        .await
        .map_err(|e| anyhow::anyhow!("reading {}'s cluster config: {}", to.name, e.full_message()))?
        .with_context(|| format!("{} publishes no cilium/cluster-config/{}", to.name, to.name))?;
    Ok(kvstore::values::ClusterConfig::decode(&to.name, &kv.value)?)
}

fn agent_status(n: &NodeInfo) -> Result<StatusView, String> {
    let mut client = ApiClient::new(&n.api_socket);
    client.set_timeout(Duration::from_secs(5));
    client.get("/v1/status").map_err(|e| e.to_string())
}

/// The daemons of a cluster's control-plane namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ControlPlane {
    Etcd,
    Operator,
    Apiserver,
}

impl ControlPlane {
    fn name(self) -> &'static str {
        match self {
            Self::Etcd => "etcd",
            Self::Operator => "operator",
            Self::Apiserver => "apiserver",
        }
    }

    fn slot(self, c: &ClusterInfo) -> &Option<ProcessInfo> {
        match self {
            Self::Etcd => &c.etcd,
            Self::Operator => &c.operator,
            Self::Apiserver => &c.apiserver,
        }
    }

    fn slot_mut(self, c: &mut ClusterInfo) -> &mut Option<ProcessInfo> {
        match self {
            Self::Etcd => &mut c.etcd,
            Self::Operator => &mut c.operator,
            Self::Apiserver => &mut c.apiserver,
        }
    }
}

/// A daemon's flags followed by how it reaches its cluster's etcd (with
/// the components' client certificate when etcd is served with TLS).
fn with_etcd(c: &ClusterInfo, mut args: Vec<String>) -> Vec<String> {
    args.extend(["--etcd-endpoints".to_string(), c.etcd_endpoint.clone()]);
    if let Some(t) = &c.etcd_tls {
        args.extend([
            "--etcd-ca".to_string(),
            t.ca.display().to_string(),
            "--etcd-cert".to_string(),
            t.client_cert.display().to_string(),
            "--etcd-key".to_string(),
            t.client_key.display().to_string(),
        ]);
    }
    args
}

/// How the admin (the CLI, tests) reaches a cluster's etcd.
pub fn etcd_admin_config(c: &ClusterInfo) -> Result<ClientConfig> {
    let mut config = ClientConfig::new([c.etcd_endpoint.clone()]);
    if let Some(t) = &c.etcd_tls {
        config = config.with_tls(
            TlsConfig::from_files(&t.ca, Some((&t.admin_cert, &t.admin_key)))
                .with_context(|| format!("cluster {}'s etcd admin certificate", c.name))?,
        );
    }
    config.connect_timeout = Duration::from_secs(3);
    config.request_timeout = Duration::from_secs(5);
    Ok(config)
}

/// Refuses to start what runs already: a second copy would fail on its
/// ports and overwrite the first one's PID, which nothing could stop then.
fn refuse_running(what: &str, cluster: &str, process: Option<&ProcessInfo>) -> Result<()> {
    if let Some(p) = process
        && process::is_running(p)
    {
        refuse!(
            "{what} of {cluster} is already running (pid {}); stop it first with \
             `clustermesh mesh stop {what} {cluster}`",
            p.pid
        );
    }
    Ok(())
}

/// Polls `ok` until it holds; fails after `timeout` with the process's log.
fn wait_until(
    what: &str,
    timeout: Duration,
    process: Option<&ProcessInfo>,
    mut ok: impl FnMut() -> bool,
) -> Result<()> {
    let start = Instant::now();
    while !ok() {
        interrupt::check()?;
        if let Some(p) = process
            && !process::is_running(p)
        {
            bail!(
                "{what}: the process exited: {} (log: {})",
                failure_cause(&p.log),
                p.log.display()
            );
        }
        if start.elapsed() > timeout {
            let log = process
                .map(|p| {
                    format!(
                        "; last log line: {} (log: {})",
                        failure_cause(&p.log),
                        p.log.display()
                    )
                })
                .unwrap_or_default();
            bail!("{what} not ready within {timeout:?}{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// GET `path` on `addr` (plain HTTP) returns 200.
fn http_ok(addr: &str, path: &str) -> bool {
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200")
        || String::from_utf8_lossy(&buf).starts_with("HTTP/1.0 200")
}

fn run_cni(cni: &Path, command: &str, container: &str, netns: &str, conf: &str) -> Result<Vec<u8>> {
    let mut child = std::process::Command::new(cni)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", Path::new("/run/netns").join(netns))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", cni.parent().unwrap_or(Path::new("/")))
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

/// Runs `f` on a thread inside the named network namespace.
pub fn in_netns<R: Send>(netns: &str, f: impl FnOnce() -> R + Send) -> Result<R> {
    let file = std::fs::File::open(Path::new("/run/netns").join(netns))
        .with_context(|| format!("open network namespace {netns}"))?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // SAFETY: setns on a dedicated, short-lived thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(anyhow::anyhow!(
                        "enter {netns}: {}",
                        std::io::Error::last_os_error()
                    ));
                }
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in {netns} panicked"))?
    })
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
