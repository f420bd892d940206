//! Building, driving and removing a local mesh: the public face ([`Mesh`],
//! [`MeshSpec`]) and the order of `up` and `down`. The steps live in the
//! submodules, one concern each:
//!
//! - `plan`: names, addresses and daemon flags, pure;
//! - `control_plane`: a cluster's etcd, operator and apiserver;
//! - `node`: node namespaces, their agents and what the agents report;
//! - `remote`: connecting clusters (checks, remote-cluster configs);
//! - `partition`: cutting and healing the network between clusters;
//! - `workload`: pods through the CNI plugin, echo servers, requests;
//! - `admin`: the admin's access to a cluster's etcd.

mod admin;
mod control_plane;
mod kube;
mod node;
mod partition;
mod plan;
mod remote;
mod workload;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Result;

pub use self::{
    admin::{admin_client, etcd_admin_config},
    workload::{ECHO_PORT, SERVICE_FRONTEND, WORKLOAD_NAMESPACE, request, run_cni},
};
use crate::{
    error::refuse,
    interrupt::{self, Interrupted},
    mesh_dir, pki,
    process::{self, binary, wait_until},
    state::MeshState,
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
    /// Kubernetes mode: each cluster runs its own Kubernetes API server;
    /// agents and operators read Pods, Services and policies from it.
    pub kubernetes: bool,
    /// Each cluster runs kvstoremesh: it mirrors the remotes into the
    /// cluster's etcd, and agents read them from their own apiserver.
    pub kvstoremesh: bool,
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
            kubernetes: false,
            kvstoremesh: false,
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

/// How long a daemon may take to answer on its health endpoint or API
/// after it was started (and agents to sync, remotes to become ready).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a daemon may take to exit after SIGTERM before SIGKILL.
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
        if spec.kubernetes
            && let Err(e) = k8s::local_server::bin_dir()
        {
            refuse!("--kubernetes: {e}");
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
            let name = plan::cluster_name(i);
            let cp_ip = plan::control_plane_ip(s.subnet, i);
            let dir = s.own(&name)?;
            let certs = pki::cluster(&ca, &s.ca_cert, &dir.join("certs"), &name, cp_ip.into())?;
            let etcd_tls = pki::etcd(&dir.join("certs"), &name, cp_ip.into())?;
            let mut cluster = plan::cluster(s, i, spec.nodes, &dir, certs, etcd_tls);
            if spec.kubernetes {
                cluster.kube = Some(plan::kube(&cluster, &dir.join("kube")));
            }
            if spec.kvstoremesh {
                let (cert, key) = pki::local_reader(&ca, &dir.join("certs"), &name)?;
                let k = plan::kvstoremesh(&cluster, &dir.join("kvstoremesh"), cert, key);
                std::fs::create_dir_all(&k.config_dir)?;
                certs::write_atomically(
                    &k.cache_access,
                    plan::cache_access_text(&cluster, &k).as_bytes(),
                    0o644,
                )?;
                cluster.kvstoremesh = Some(k);
            }
            s.clusters.push(cluster);
        }
        self.state.save()?;
        let names: Vec<String> = self.state.clusters.iter().map(|c| c.name.clone()).collect();
        for name in &names {
            if spec.kubernetes {
                progress(&format!(
                    "{name}: Kubernetes API server (etcd, kube-apiserver, kube-controller-manager)"
                ))?;
            }
            let kvstoremesh = if spec.kvstoremesh {
                ", kvstoremesh"
            } else {
                ""
            };
            progress(&format!(
                "{name}: control plane (etcd, operator, clustermesh-apiserver{kvstoremesh})"
            ))?;
            self.start_control_plane(name)?;
        }
        for name in &names {
            let nodes = self.state.cluster(name)?.nodes.clone();
            for node in nodes.iter().map(|n| &n.name) {
                progress(&format!("{name}/{node}: network namespace and agent"))?;
                self.start_node(name, node)?;
            }
        }
        for name in &names {
            for n in self.state.cluster(name)?.nodes.clone() {
                wait_until(
                    &format!("agent {name}/{} to be synced", n.name),
                    STARTUP_TIMEOUT,
                    n.agent.as_ref(),
                    || node::agent_status(&n).is_ok_and(|s| s.synced && s.pod_cidr.is_some()),
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
        for name in &names {
            if self.state.cluster(name)?.hubble_relay.is_some() {
                progress(&format!("{name}: Hubble Relay"))?;
                self.start_relay(name)?;
            }
        }
        if self.state.clusters.iter().any(|c| c.hubble_relay.is_some()) {
            progress(&format!(
                "Hubble UI on http://{}:{}/",
                self.state.host_ip,
                plan::UI_PORT
            ))?;
            self.start_ui()?;
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
        if let Some(p) = state.ui.as_ref().and_then(|ui| ui.process.as_ref()) {
            process::stop(p, STOP_GRACE);
        }
        for c in &state.clusters {
            let kvstoremesh = c.kvstoremesh.as_ref().and_then(|k| k.process.as_ref());
            for p in [
                c.relay.as_ref(),
                kvstoremesh,
                c.apiserver.as_ref(),
                c.operator.as_ref(),
                c.etcd.as_ref(),
            ]
            .into_iter()
            .flatten()
            {
                process::stop(p, STOP_GRACE);
            }
            if let Some(k) = &c.kube {
                for p in [&k.controller_manager, &k.apiserver, &k.etcd]
                    .into_iter()
                    .flatten()
                {
                    process::stop(p, STOP_GRACE);
                }
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
        let _ = std::fs::remove_dir_all(plan::bpffs_root(&state));
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

    /// `DIR/<cluster>/logs/<name>.log`: where a daemon of `cluster` logs.
    fn log_path(&self, cluster: &str, name: &str) -> PathBuf {
        self.state
            .dir
            .join(cluster)
            .join("logs")
            .join(format!("{name}.log"))
    }
}
