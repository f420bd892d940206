//! Clusters made by `cluster init`, each with a real etcd (mutual TLS) and
//! the real apiserver, operator and agent started from the units' command
//! lines, for the tests of `connect` and `certs rotate`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use certs::Ca;
use cluster_setup::{ClusterAdminDescriptor, Component, Layout};
use etcd_harness::TestEtcd;
use integration::{ClusterInit, UnitDaemon};
use kvstore::{Client, ClientConfig, TlsConfig, keys};

use super::{
    Run,
    daemons::{bin_dir, tls_etcd},
    ok, s,
};

/// How long agents may take to pick up (or drop) a remote.
pub(crate) const PICKUP_TIMEOUT: Duration = Duration::from_secs(90);

/// Removes a directory on drop (a pinned-maps directory).
pub(crate) struct RemoveDir(pub(crate) PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One cluster made by `cluster init`, with its etcd and daemons. Fields
/// drop in order: the agent first, the etcd last.
pub(crate) struct TestCluster {
    pub(crate) name: String,
    /// `cluster init`'s output.
    pub(crate) out: PathBuf,
    /// The admin descriptor (`cluster export --admin`).
    pub(crate) admin: PathBuf,
    pub(crate) agent_socket: PathBuf,
    /// The apiserver's `/healthz`, `/readyz` and `/metrics`.
    pub(crate) apiserver_health: String,
    /// The agent's `/healthz` and `/metrics`.
    pub(crate) agent_health: String,
    _agent: Option<UnitDaemon>,
    _node: Option<(netns::NetNs, RemoveDir)>,
    _operator: Option<UnitDaemon>,
    _apiserver: UnitDaemon,
    pub(crate) etcd_client: Client,
    _etcd: TestEtcd,
}

impl TestCluster {
    /// `cluster init` (the mesh CA of `ca_dir`), the etcd, the apiserver
    /// and, with `agent`, the operator and one agent (needs root).
    pub(crate) async fn start(tmp: &Path, name: &str, id: u32, ca_dir: &Path, agent: bool) -> Self {
        let dir = tmp.join(name);
        fs::create_dir_all(&dir).unwrap();
        let etcd_ca_dir = dir.join("etcd-pki");
        let etcd = tls_etcd(&etcd_ca_dir).await;
        let out = dir.join("tree");
        let init = ClusterInit::new();
        let args = init.args(
            name,
            id,
            Some(ca_dir),
            &etcd.endpoint(),
            &etcd_ca_dir,
            &out,
            &bin_dir(),
        );
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
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
            (apiserver_health.clone(), "/readyz"),
        )
        .unwrap();
        let admin = dir.join(format!("{name}-admin.yaml"));
        ok(&[
            "cluster",
            "export",
            "--dir",
            s(&out),
            "--admin",
            "--out",
            s(&admin),
        ]);
        let descriptor = read_admin(&admin);
        let etcd_access = descriptor.etcd.clone();
        let etcd_tls = etcd_access.client.as_ref().unwrap();
        let etcd_client = Client::connect(
            &ClientConfig::new(etcd_access.endpoints.clone()).with_tls(TlsConfig {
                ca_pem: etcd_access.ca_bundle.clone().unwrap().into_bytes(),
                identity_pem: Some((
                    etcd_tls.cert.clone().into_bytes(),
                    etcd_tls.key.clone().into_bytes(),
                )),
                server_name: None,
            }),
        )
        .await
        .unwrap();
        let agent_socket = dir.join("agent.sock");
        let (mut operator, mut agent_daemon, mut node_guard) = (None, None, None);
        if agent {
            operator = Some(
                UnitDaemon::start(
                    format!("{name} operator"),
                    unit(Component::Operator),
                    dir.join("operator.log"),
                    (operator_health, "/healthz"),
                )
                .unwrap(),
            );
            let node = netns::NetNs::unique("cmconn").unwrap();
            node.ip(&["link", "set", "lo", "up"]).unwrap();
            let bpffs = PathBuf::from("/sys/fs/bpf").join(netns::unique_name("cmconn"));
            let node_env = out.join("etc/clustermesh/agent").join(Layout::NODE_ENV);
            fs::write(
                &node_env,
                format!(
                    "CLUSTERMESH_NODE_NAME=n1\nCLUSTERMESH_NODE_IP=127.0.0.{id}\n\
                     CLUSTERMESH_NODE_NETNS={}\nCLUSTERMESH_BPFFS_DIR={}\n\
                     CLUSTERMESH_API_SOCKET={}\nCLUSTERMESH_STATE_DIR={}\n",
                    node.path().display(),
                    bpffs.display(),
                    agent_socket.display(),
                    dir.join("agent-state").display(),
                ),
            )
            .unwrap();
            agent_daemon = Some(
                UnitDaemon::start(
                    format!("{name} agent"),
                    unit(Component::Agent),
                    dir.join("agent.log"),
                    (agent_health.clone(), "/healthz"),
                )
                .unwrap(),
            );
            node_guard = Some((node, RemoveDir(bpffs)));
        }
        Self {
            name: name.to_owned(),
            out,
            admin,
            agent_socket,
            apiserver_health,
            agent_health,
            _agent: agent_daemon,
            _node: node_guard,
            _operator: operator,
            _apiserver: apiserver,
            etcd_client,
            _etcd: etcd,
        }
    }

    /// The agents' clustermesh config directory.
    pub(crate) fn remotes_dir(&self) -> PathBuf {
        self.out
            .join("etc/clustermesh/agent")
            .join(Layout::REMOTES_DIR)
    }

    /// Every record key under the admin prefix with its revision: what
    /// "nothing changed" compares.
    pub(crate) async fn records(&self) -> Vec<(String, i64)> {
        let (kvs, _) = self
            .etcd_client
            .list(&keys::remote_cluster_records(), 100)
            .await
            .unwrap();
        kvs.into_iter()
            .map(|kv| (kv.key, kv.mod_revision))
            .collect()
    }

    /// The agent's own status (`clustermesh-agent debug status -o json`).
    pub(crate) fn agent_status(&self) -> serde_json::Value {
        agent_status(&self.agent_socket)
    }

    /// The directory of this cluster's logs (`apiserver.log`, `agent.log`, …).
    pub(crate) fn log_dir(&self) -> &Path {
        self.out.parent().unwrap()
    }
}

/// The status of the agent on `socket` (`clustermesh-agent debug status -o
/// json`).
pub(crate) fn agent_status(socket: &Path) -> serde_json::Value {
    try_agent_status(socket).unwrap_or_else(|e| panic!("{e}"))
}

/// [`agent_status`], or why the agent did not answer.
pub(crate) fn try_agent_status(socket: &Path) -> Result<serde_json::Value, String> {
    let out = Command::new(bin_dir().join("clustermesh-agent"))
        .args(["debug", "--api-socket", s(socket), "status", "-o", "json"])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

pub(crate) fn read_admin(path: &Path) -> ClusterAdminDescriptor {
    ClusterAdminDescriptor::from_yaml(&fs::read_to_string(path).unwrap()).unwrap()
}

/// A new mesh CA in `dir`.
pub(crate) fn mesh_ca(dir: &Path, name: &str) -> Ca {
    integration::mesh_ca(dir, name).unwrap()
}

/// `run` was refused with `code` and `reason` in its error.
pub(crate) fn refused(run: &Run, code: i32, reason: &str) {
    assert_eq!(
        run.code, code,
        "expected exit {code}:\n{}{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stderr.contains(reason),
        "expected {reason:?} in:\n{}",
        run.stderr
    );
    assert!(run.stderr.contains("nothing was changed"), "{}", run.stderr);
}

pub(crate) async fn wait_for_file(path: &Path, exists: bool) {
    let path = path.to_path_buf();
    let what = format!(
        "{} {}",
        path.display(),
        if exists { "exists" } else { "is gone" }
    );
    etcd_harness::wait_until(&what, PICKUP_TIMEOUT, || {
        let found = path.exists();
        async move { found == exists }
    })
    .await;
}
