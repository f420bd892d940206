//! A cluster's control plane: etcd, the operator, the
//! clustermesh-apiserver and the Hubble Relay, daemons in the cluster's own namespace, started
//! one at a time (each refused while it runs), tracked in `mesh.json` at
//! once, and waited for until their health endpoint answers.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result};

use super::{Mesh, STARTUP_TIMEOUT, STOP_GRACE, plan};
use crate::{
    process::{self, refuse_running, spawn_daemon, wait_until},
    state::{ClusterInfo, ProcessInfo, UiInfo},
    topology,
};

/// Where the etcd binary is.
const ETCD_BINARY: &str = "/usr/bin/etcd";
/// How long a health probe may take to connect.
const HEALTH_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a health probe waits for the answer.
const HEALTH_READ_TIMEOUT: Duration = Duration::from_secs(2);

impl Mesh {
    /// Creates a cluster's control-plane namespace, plugs it into the
    /// fabric and starts etcd, the operator and the apiserver in it.
    pub(super) fn start_control_plane(&mut self, cluster: &str) -> Result<()> {
        let c = self.state.cluster(cluster)?.clone();
        topology::create_netns(&c.cp_netns)?;
        topology::plug(
            &self.state.fabric_netns,
            Some(&c.cp_netns),
            "fab0",
            &plan::fabric_port(&self.state, c.id, None),
            c.cp_ip,
        )?;
        self.start_etcd(cluster)?;
        self.start_kube(cluster)?;
        self.start_operator(cluster)?;
        self.start_apiserver(cluster)?;
        self.start_kvstoremesh(cluster)?;
        Ok(())
    }

    /// Starts a cluster's etcd and waits until it is healthy.
    pub fn start_etcd(&mut self, cluster: &str) -> Result<()> {
        let c = self.state.cluster(cluster)?;
        let (args, health) = (plan::etcd_args(c), plan::etcd_health(c));
        self.launch(
            cluster,
            ControlPlane::Etcd,
            Path::new(ETCD_BINARY),
            &args,
            &health,
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

    /// Starts a cluster's operator and waits until it is healthy.
    pub fn start_operator(&mut self, cluster: &str) -> Result<()> {
        let c = self.state.cluster(cluster)?;
        let (args, health) = (plan::operator_args(c), c.operator_health.clone());
        let program = self.bin("clustermesh-operator")?;
        self.launch(cluster, ControlPlane::Operator, &program, &args, &health)
    }

    /// Stops a cluster's operator.
    pub fn stop_operator(&mut self, cluster: &str) -> Result<()> {
        self.stop_control_plane(cluster, ControlPlane::Operator)
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
        let c = self.state.cluster(cluster)?;
        let (args, health) = (plan::apiserver_args(c, id), c.apiserver_health.clone());
        let program = self.bin("clustermesh-apiserver")?;
        self.launch(cluster, ControlPlane::Apiserver, &program, &args, &health)
    }

    /// Stops a cluster's apiserver.
    pub fn stop_apiserver(&mut self, cluster: &str) -> Result<()> {
        self.stop_control_plane(cluster, ControlPlane::Apiserver)
    }

    /// Starts a cluster's kvstoremesh and waits until it serves (not until
    /// it is ready: remotes that are cut off would hold that up); nothing
    /// for a cluster without one.
    pub fn start_kvstoremesh(&mut self, cluster: &str) -> Result<()> {
        let c = self.state.cluster(cluster)?;
        let Some(k) = &c.kvstoremesh else {
            return Ok(());
        };
        std::fs::create_dir_all(&k.config_dir)
            .with_context(|| format!("creating {}", k.config_dir.display()))?;
        let (args, health) = (plan::kvstoremesh_args(c, k), k.health.clone());
        let program = self.bin("clustermesh-apiserver")?;
        self.launch(cluster, ControlPlane::Kvstoremesh, &program, &args, &health)
    }

    /// Stops a cluster's kvstoremesh (the cache stays in its etcd until
    /// its lease runs out).
    pub fn stop_kvstoremesh(&mut self, cluster: &str) -> Result<()> {
        self.stop_control_plane(cluster, ControlPlane::Kvstoremesh)
    }

    /// Starts a cluster's Hubble Relay (in its control-plane namespace) and
    /// waits until it serves; nothing for a mesh without Hubble.
    pub fn start_relay(&mut self, cluster: &str) -> Result<()> {
        let c = self.state.cluster(cluster)?;
        let (Some(args), Some(metrics)) = (plan::relay_args(c), c.hubble_relay_metrics.clone())
        else {
            return Ok(());
        };
        let program = self.bin("clustermesh-relay")?;
        self.launch(cluster, ControlPlane::Relay, &program, &args, &metrics)
    }

    /// Stops a cluster's Hubble Relay.
    pub fn stop_relay(&mut self, cluster: &str) -> Result<()> {
        self.stop_control_plane(cluster, ControlPlane::Relay)
    }

    /// Starts the mesh's Hubble UI (in the root namespace, on the host's
    /// fabric address, reading from every cluster's relay and agents) and
    /// waits until it serves; nothing for a mesh without relays.
    pub fn start_ui(&mut self) -> Result<()> {
        if self.state.clusters.iter().all(|c| c.hubble_relay.is_none()) {
            return Ok(());
        }
        let ui = match self.state.ui.clone() {
            Some(ui) => ui,
            None => {
                let dir = self.state.own("ui")?;
                let ca = crate::pki::ca(self.state.ca_cert.parent().expect("pki dir"))?;
                let (client_cert, client_key) = crate::pki::hubble_ui(&ca, &dir.join("certs"))?;
                let ui = UiInfo {
                    listen: format!("{}:{}", self.state.host_ip, plan::UI_PORT),
                    client_cert,
                    client_key,
                    process: None,
                };
                self.state.ui = Some(ui.clone());
                self.state.save()?;
                ui
            }
        };
        refuse_running("ui", "the mesh", ui.process.as_ref())?;
        let args = plan::ui_args(&self.state, &ui);
        let program = self.bin("clustermesh-ui")?;
        let log = self.state.dir.join("ui").join("ui.log");
        let process = spawn_daemon(None, &program, &args, &[], &log)?;
        if let Some(ui) = &mut self.state.ui {
            ui.process = Some(process.clone());
        }
        self.state.hubble_ui = Some(format!("http://{}/", ui.listen));
        self.state.save()?;
        wait_until("the Hubble UI", STARTUP_TIMEOUT, Some(&process), || {
            http_ok(&ui.listen, "/healthz")
        })
    }

    /// Stops the mesh's Hubble UI.
    pub fn stop_ui(&mut self) -> Result<()> {
        if let Some(p) = self.state.ui.as_mut().and_then(|ui| ui.process.take()) {
            process::stop(&p, STOP_GRACE);
        }
        self.state.save()
    }

    /// Starts a control-plane daemon of `cluster` in its namespace (refused
    /// while it runs), tracks it in `mesh.json` at once, and waits until
    /// `health` answers 200 on the daemon's health path.
    fn launch(
        &mut self,
        cluster: &str,
        which: ControlPlane,
        program: &Path,
        args: &[String],
        health: &str,
    ) -> Result<()> {
        let c = self.state.cluster(cluster)?;
        let name = which.name();
        refuse_running(name, cluster, which.slot(c))?;
        let log = self.log_path(cluster, name);
        let process = spawn_daemon(Some(&c.cp_netns), program, args, &[], &log)?;
        *which.slot_mut(self.state.cluster_mut(cluster)?)? = Some(process.clone());
        self.state.save()?;
        wait_until(
            &format!("{cluster} {name}"),
            STARTUP_TIMEOUT,
            Some(&process),
            || http_ok(health, which.health_path()),
        )
    }

    /// Stops a control-plane daemon of `cluster` (SIGTERM, then SIGKILL).
    fn stop_control_plane(&mut self, cluster: &str, which: ControlPlane) -> Result<()> {
        if let Some(p) = which.slot_mut(self.state.cluster_mut(cluster)?)?.take() {
            process::stop(&p, STOP_GRACE);
        }
        self.state.save()
    }
}

/// The daemons of a cluster's control-plane namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ControlPlane {
    Etcd,
    Operator,
    Apiserver,
    Kvstoremesh,
    Relay,
}

impl ControlPlane {
    fn name(self) -> &'static str {
        match self {
            Self::Etcd => "etcd",
            Self::Operator => "operator",
            Self::Apiserver => "apiserver",
            Self::Kvstoremesh => "kvstoremesh",
            Self::Relay => "relay",
        }
    }

    /// The path that answers 200 once the daemon is up.
    fn health_path(self) -> &'static str {
        match self {
            Self::Etcd => "/health",
            Self::Operator => "/healthz",
            Self::Apiserver => "/readyz",
            Self::Kvstoremesh => "/healthz",
            Self::Relay => "/metrics",
        }
    }

    /// The daemon's process, if it runs.
    fn slot(self, c: &ClusterInfo) -> Option<&ProcessInfo> {
        match self {
            Self::Etcd => c.etcd.as_ref(),
            Self::Operator => c.operator.as_ref(),
            Self::Apiserver => c.apiserver.as_ref(),
            Self::Kvstoremesh => c.kvstoremesh.as_ref()?.process.as_ref(),
            Self::Relay => c.relay.as_ref(),
        }
    }

    /// Where the daemon's process is recorded (refused for a kvstoremesh
    /// the cluster does not have).
    fn slot_mut(self, c: &mut ClusterInfo) -> Result<&mut Option<ProcessInfo>> {
        Ok(match self {
            Self::Etcd => &mut c.etcd,
            Self::Operator => &mut c.operator,
            Self::Apiserver => &mut c.apiserver,
            Self::Kvstoremesh => {
                let name = c.name.clone();
                &mut c
                    .kvstoremesh
                    .as_mut()
                    .ok_or_else(|| {
                        anyhow::Error::new(crate::error::Refused(format!(
                            "{name} runs without kvstoremesh (`clustermesh up --kvstoremesh` makes one)"
                        )))
                    })?
                    .process
            }
            Self::Relay => &mut c.relay,
        })
    }
}

/// GET `path` on `addr` (plain HTTP) returns 200.
fn http_ok(addr: &str, path: &str) -> bool {
    http_get(addr, path).is_ok_and(|(status, _)| status == 200)
}

/// GET `path` on `addr` (plain HTTP/1.0): the status code and the body.
pub(super) fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let sock: SocketAddr = addr
        .parse()
        .with_context(|| format!("{addr} is not host:port"))?;
    let mut s = TcpStream::connect_timeout(&sock, HEALTH_CONNECT_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(HEALTH_READ_TIMEOUT))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .with_context(|| format!("reading {path} from {addr}"))?;
    let answer = String::from_utf8_lossy(&buf);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("{addr}{path} answered no HTTP status"))?;
    Ok((status, body.to_string()))
}

impl Mesh {
    /// What a cluster's kvstoremesh says on `/status` (JSON), `None` for a
    /// cluster without one.
    pub fn kvstoremesh_status(&self, cluster: &str) -> Result<Option<serde_json::Value>> {
        let Some(k) = &self.state.cluster(cluster)?.kvstoremesh else {
            return Ok(None);
        };
        let (status, body) = http_get(&k.health, "/status")?;
        if status != 200 {
            anyhow::bail!("{cluster}'s kvstoremesh answered {status} on /status: {body}");
        }
        Ok(Some(serde_json::from_str(&body).with_context(|| {
            format!("{cluster}'s kvstoremesh /status is not JSON")
        })?))
    }

    /// A cluster's apiserver's Prometheus metrics (text).
    pub fn apiserver_metrics(&self, cluster: &str) -> Result<String> {
        let c = self.state.cluster(cluster)?;
        let (status, body) = http_get(&c.apiserver_health, "/metrics")?;
        if status != 200 {
            anyhow::bail!("{cluster}'s apiserver answered {status} on /metrics");
        }
        Ok(body)
    }

    /// Why a cluster's kvstoremesh is not ready (`None`: ready, or none).
    pub fn kvstoremesh_not_ready(&self, cluster: &str) -> Result<Option<String>> {
        let Some(k) = &self.state.cluster(cluster)?.kvstoremesh else {
            return Ok(None);
        };
        Ok(match http_get(&k.health, "/readyz") {
            Ok((200, _)) => None,
            Ok((status, body)) => Some(format!("{status}: {}", body.trim())),
            Err(e) => Some(format!("{e:#}")),
        })
    }
}
