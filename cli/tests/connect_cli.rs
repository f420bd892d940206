//! `clustermesh connect|disconnect --from A-admin.yaml --to B-admin.yaml`
//! and `status --from A-admin.yaml` end to end, outside the local mesh:
//! clusters made by `cluster init` and exported with `cluster export
//! --admin`, each with a real etcd (mutual TLS) and the real apiserver,
//! operator and agent started from the units' command lines. The agents
//! pick the peer's config up from their own etcd (no file copied), report
//! the remote ready, and drop it after `disconnect`; bad input is refused
//! with the reason and changes nothing in either etcd.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use certs::{Ca, CertName, Validity};
use cluster_setup::{ClusterAdminDescriptor, Component, Layout, UnitCommand};
use etcd_harness::{TestEtcd, free_port};
use kvstore::{Client, ClientConfig, TlsConfig, keys};
use support::{
    Run, clustermesh,
    daemons::{Daemon, bin_dir, daemons_or_skip, tls_etcd},
    ok, s,
};

mod support;

/// How long agents may take to pick up (or drop) a remote.
const PICKUP_TIMEOUT: Duration = Duration::from_secs(90);

/// Removes a directory on drop (a pinned-maps directory).
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One cluster made by `cluster init`, with its etcd and daemons. Fields
/// drop in order: the agent first, the etcd last.
struct TestCluster {
    name: String,
    /// `cluster init`'s output.
    out: PathBuf,
    /// The admin descriptor (`cluster export --admin`).
    admin: PathBuf,
    agent_socket: PathBuf,
    _agent: Option<Daemon>,
    _node: Option<(netns::NetNs, RemoveDir)>,
    _operator: Option<Daemon>,
    _apiserver: Daemon,
    etcd_client: Client,
    _etcd: TestEtcd,
}

impl TestCluster {
    /// `cluster init` (the mesh CA of `ca_dir`), the etcd, the apiserver
    /// and, with `agent`, the operator and one agent (needs root).
    async fn start(tmp: &Path, name: &str, id: u32, ca_dir: &Path, agent: bool) -> Self {
        let dir = tmp.join(name);
        fs::create_dir_all(&dir).unwrap();
        let etcd_ca_dir = dir.join("etcd-pki");
        let etcd = tls_etcd(&etcd_ca_dir).await;
        let out = dir.join("tree");
        let listen = format!("127.0.0.1:{}", free_port());
        let apiserver_health = format!("127.0.0.1:{}", free_port());
        let operator_health = format!("127.0.0.1:{}", free_port());
        let agent_health = format!("127.0.0.1:{}", free_port());
        let id_text = id.to_string();
        let pool = format!("10.{id}.0.0/16");
        ok(&[
            "cluster",
            "init",
            "--name",
            name,
            "--id",
            &id_text,
            "--ca-dir",
            s(ca_dir),
            "--etcd-endpoints",
            &etcd.endpoint(),
            "--etcd-ca-dir",
            s(&etcd_ca_dir),
            "--apiserver-endpoints",
            &listen,
            "--apiserver-listen",
            &listen,
            "--apiserver-health-listen",
            &apiserver_health,
            "--operator-health-listen",
            &operator_health,
            "--agent-health-listen",
            &agent_health,
            "--pod-cidr-pool",
            &pool,
            "--root",
            s(&out),
            "--bin-dir",
            s(&bin_dir()),
            "--out",
            s(&out),
        ]);
        let unit =
            |c: Component| UnitCommand::from_unit_file(&out.join(Layout::unit_file(c))).unwrap();
        let mut apiserver = Daemon::start(
            format!("{name} apiserver"),
            &unit(Component::Apiserver),
            dir.join("apiserver.log"),
        );
        apiserver.wait_ready(&apiserver_health, "/readyz").await;
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
            let mut op = Daemon::start(
                format!("{name} operator"),
                &unit(Component::Operator),
                dir.join("operator.log"),
            );
            op.wait_ready(&operator_health, "/healthz").await;
            operator = Some(op);
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
            let mut a = Daemon::start(
                format!("{name} agent"),
                &unit(Component::Agent),
                dir.join("agent.log"),
            );
            a.wait_ready(&agent_health, "/healthz").await;
            agent_daemon = Some(a);
            node_guard = Some((node, RemoveDir(bpffs)));
        }
        Self {
            name: name.to_owned(),
            out,
            admin,
            agent_socket,
            _agent: agent_daemon,
            _node: node_guard,
            _operator: operator,
            _apiserver: apiserver,
            etcd_client,
            _etcd: etcd,
        }
    }

    /// The agents' clustermesh config directory.
    fn remotes_dir(&self) -> PathBuf {
        self.out
            .join("etc/clustermesh/agent")
            .join(Layout::REMOTES_DIR)
    }

    /// Every record key under the admin prefix with its revision: what
    /// "nothing changed" compares.
    async fn records(&self) -> Vec<(String, i64)> {
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
    fn agent_status(&self) -> serde_json::Value {
        let out = Command::new(bin_dir().join("clustermesh-agent"))
            .args([
                "debug",
                "--api-socket",
                s(&self.agent_socket),
                "status",
                "-o",
                "json",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn read_admin(path: &Path) -> ClusterAdminDescriptor {
    ClusterAdminDescriptor::from_yaml(&fs::read_to_string(path).unwrap()).unwrap()
}

/// A new mesh CA in `dir`.
fn mesh_ca(dir: &Path, name: &str) -> Ca {
    let ca = Ca::generate(name, Validity::days(3650).unwrap()).unwrap();
    ca.write(dir).unwrap();
    ca
}

/// `run` was refused with `code` and `reason` in its error.
fn refused(run: &Run, code: i32, reason: &str) {
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

async fn wait_for_file(path: &Path, exists: bool) {
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

#[tokio::test(flavor = "multi_thread")]
async fn agents_pick_up_a_connection_made_from_admin_descriptors_and_drop_it_on_disconnect() {
    let test = "agents_pick_up_a_connection_made_from_admin_descriptors_and_drop_it_on_disconnect";
    if !daemons_or_skip(test) || !netns::root_or_skip(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ca_dir = tmp.path().join("mesh-ca");
    mesh_ca(&ca_dir, "test mesh CA");
    let c1 = TestCluster::start(tmp.path(), "c1", 1, &ca_dir, true).await;
    let c2 = TestCluster::start(tmp.path(), "c2", 2, &ca_dir, true).await;
    // Each agent reports itself in its etcd; nothing is connected yet.
    for c in [&c1, &c2] {
        let printed = ok(&[
            "status",
            "--from",
            s(&c.admin),
            "--wait",
            "--wait-duration",
            "60s",
        ]);
        assert!(printed.contains("connected to no cluster"), "{printed}");
        assert!(printed.contains("node n1: synced"), "{printed}");
    }
    // A file written by hand for another cluster stays as it is.
    let hand = c1.remotes_dir().join("c7");
    let hand_text = "endpoints: [https://127.0.0.1:1]\ntrusted-ca-file: /nonexistent\n\
                     cert-file: /nonexistent\nkey-file: /nonexistent\n";

    let printed = ok(&[
        "connect",
        "--from",
        s(&c1.admin),
        "--to",
        s(&c2.admin),
        "--ca-dir",
        s(&ca_dir),
    ]);
    for line in [
        "✔ names c1 and c2 are valid and distinct",
        "✔ IDs 1 and 2 are distinct",
        "✔ the issuing CA is in c2's and c1's CA bundle",
        "✔ mutual TLS c1 -> c2",
        "✔ mutual TLS c2 -> c1",
        "✔ pod CIDRs do not overlap: c1 10.1.0.0/16",
        "✔ identity headroom in c1",
        "✔ ipcache headroom in c1",
        "✔ ipcache headroom in c2",
        "✔ stored c1's config for c2 in c1's etcd (clustermesh/admin/remote-clusters/c2)",
        "connected c1 <-> c2",
    ] {
        assert!(printed.contains(line), "{line:?} not in:\n{printed}");
    }
    // The agents mirror the stored config; nobody copied a file.
    wait_for_file(&c1.remotes_dir().join("c2"), true).await;
    wait_for_file(&c2.remotes_dir().join("c1"), true).await;
    for (c, peer) in [(&c1, "c2"), (&c2, "c1")] {
        let printed = ok(&[
            "status",
            "--from",
            s(&c.admin),
            "--wait",
            "--wait-duration",
            "90s",
        ]);
        assert!(
            printed.contains(&format!("connected to {peer}")),
            "{printed}"
        );
        assert!(
            printed.contains(&format!("remote {peer}: ready connected=true")),
            "{printed}"
        );
        // The agent's own status says the same.
        let status = c.agent_status();
        let remote = status["remotes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == peer)
            .unwrap_or_else(|| panic!("{} agent has no remote {peer}: {status}", c.name))
            .clone();
        assert_eq!(remote["ready"], true, "{remote}");
        assert_eq!(remote["connected"], true, "{remote}");
    }
    let key_file = c1.remotes_dir().join(".clustermesh-mirror/c2/client.key");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key_file.display());
    }

    // Connected twice: refused, nothing changed.
    let before = (c1.records().await, c2.records().await);
    let run = clustermesh(&[
        "connect",
        "--from",
        s(&c1.admin),
        "--to",
        s(&c2.admin),
        "--ca-dir",
        s(&ca_dir),
    ]);
    refused(&run, 64, "c1 is already connected to c2");
    assert_eq!((c1.records().await, c2.records().await), before);

    // Disconnect: the records go, the agents drop the files and the remote;
    // a file the mirror did not write stays.
    fs::write(&hand, hand_text).unwrap();
    let printed = ok(&["disconnect", "--from", s(&c1.admin), "--to", s(&c2.admin)]);
    assert!(printed.contains("disconnected c1 <-> c2"), "{printed}");
    assert!(c1.records().await.is_empty() && c2.records().await.is_empty());
    wait_for_file(&c1.remotes_dir().join("c2"), false).await;
    wait_for_file(&c2.remotes_dir().join("c1"), false).await;
    assert_eq!(fs::read_to_string(&hand).unwrap(), hand_text);
    fs::remove_file(&hand).unwrap();
    let printed = ok(&[
        "status",
        "--from",
        s(&c2.admin),
        "--wait",
        "--wait-duration",
        "60s",
    ]);
    assert!(printed.contains("connected to no cluster"), "{printed}");
    assert!(!printed.contains("remote c1"), "{printed}");
    let run = clustermesh(&["disconnect", "--from", s(&c1.admin), "--to", s(&c2.admin)]);
    refused(&run, 64, "c1 and c2 are not connected");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_with_the_reason_and_changes_nothing() {
    let test = "bad_input_is_refused_with_the_reason_and_changes_nothing";
    if !daemons_or_skip(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ca_dir = tmp.path().join("mesh-ca");
    let ca = mesh_ca(&ca_dir, "test mesh CA");
    let other_ca_dir = tmp.path().join("other-ca");
    mesh_ca(&other_ca_dir, "another mesh CA");
    // Apiservers only: the checks need no agent (headroom is then said
    // to be unchecked).
    let c1 = TestCluster::start(tmp.path(), "c1", 1, &ca_dir, false).await;
    let c2 = TestCluster::start(tmp.path(), "c2", 2, &ca_dir, false).await;
    let c3 = TestCluster::start(tmp.path(), "c3", 3, &other_ca_dir, false).await;
    let all = [&c1, &c2, &c3];
    let snapshot = || async {
        let mut v = Vec::new();
        for c in all {
            v.push(c.records().await);
        }
        v
    };
    let nothing = snapshot().await;
    let connect = |from: &Path, to: &Path| {
        clustermesh(&[
            "connect",
            "--from",
            s(from),
            "--to",
            s(to),
            "--ca-dir",
            s(&ca_dir),
        ])
    };
    let variant = |name: &str, change: &dyn Fn(&mut ClusterAdminDescriptor)| {
        let mut d = read_admin(&c2.admin);
        change(&mut d);
        let path = tmp.path().join(name);
        fs::write(&path, d.to_yaml()).unwrap();
        path
    };

    // Wrong CA: c3's apiserver trusts another CA than the one that issues.
    refused(
        &connect(&c1.admin, &c3.admin),
        64,
        "CA mismatch: c3's CA bundle does not hold the issuing CA",
    );
    // Unreachable endpoint.
    let port = free_port();
    let unreachable = variant("c2-unreachable.yaml", &|d| {
        d.apiserver_endpoints = vec![format!("https://127.0.0.1:{port}")];
    });
    refused(
        &connect(&c1.admin, &unreachable),
        69,
        &format!("c2's apiserver at https://127.0.0.1:{port} does not answer"),
    );
    // ID clash (before anything is reached), and a descriptor whose ID is
    // not what the apiserver publishes.
    let clash = variant("c2-clash.yaml", &|d| d.id = 1);
    refused(
        &connect(&c1.admin, &clash),
        64,
        "cluster ID clash: c1 and c2 both have ID 1",
    );
    let wrong_id = variant("c2-wrong-id.yaml", &|d| d.id = 9);
    refused(
        &connect(&c1.admin, &wrong_id),
        64,
        "c2's apiserver publishes cluster ID 2 but its descriptor says 9",
    );
    // An expired admin certificate.
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    let expired_cert = ca
        .issue_client(
            &CertName::new("admin-c2").unwrap(),
            Validity::between(now - 30 * day, now - day).unwrap(),
        )
        .unwrap();
    let expired = variant("c2-expired.yaml", &|d| {
        d.admin.cert = expired_cert.cert_pem().to_owned();
        d.admin.key = expired_cert.key_pem().to_owned();
    });
    refused(
        &connect(&c1.admin, &expired),
        64,
        "c2's admin certificate (CN=admin-c2",
    );
    let run = connect(&c1.admin, &expired);
    assert!(run.stderr.contains("expired on"), "{}", run.stderr);
    // Not a descriptor, mixed forms, no CA.
    let run = clustermesh(&["connect", "--from", s(&c1.admin), "--to", "c2"]);
    assert_eq!(run.code, 64, "{}", run.stderr);
    assert!(
        run.stderr.contains("both admin descriptors"),
        "{}",
        run.stderr
    );
    let run = clustermesh(&["connect", "--from", s(&c1.admin), "--to", s(&c2.admin)]);
    assert_eq!(run.code, 64, "{}", run.stderr);
    assert!(
        run.stderr.contains("--ca-dir DIR is needed"),
        "{}",
        run.stderr
    );
    assert_eq!(snapshot().await, nothing, "a refused connect changed etcd");

    // Connected twice: the second run is refused, in either direction.
    let printed = ok(&[
        "connect",
        "--from",
        s(&c1.admin),
        "--to",
        s(&c2.admin),
        "--ca-dir",
        s(&ca_dir),
        "--mode",
        "unicast",
    ]);
    assert!(
        printed.contains("! no agent of c1 reports its map sizes yet"),
        "{printed}"
    );
    assert!(printed.contains("connected c1 -> c2"), "{printed}");
    assert!(!printed.contains("mutual TLS c2 -> c1"), "{printed}");
    let once = snapshot().await;
    assert_eq!(once[0].len(), 1, "c1 holds its record of c2");
    assert!(once[1].is_empty(), "unicast: c2 holds nothing");
    refused(
        &connect(&c1.admin, &c2.admin),
        64,
        "c1 is already connected to c2",
    );
    refused(
        &connect(&c2.admin, &c1.admin),
        64,
        "c1 is already connected to c2",
    );
    assert_eq!(snapshot().await, once, "a refused connect changed etcd");

    // status --from, without agents: the connection and what is missing.
    let printed = ok(&["status", "--from", s(&c1.admin)]);
    assert!(
        printed.contains("cluster c1 (id 1, max-connected-clusters 255): apiserver answers"),
        "{printed}"
    );
    assert!(printed.contains("connected to c2 (id 2)"), "{printed}");
    let run = clustermesh(&[
        "status",
        "--from",
        s(&c1.admin),
        "--wait",
        "--wait-duration",
        "1s",
    ]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("no agent of c1 reports yet"),
        "{}",
        run.stderr
    );

    let printed = ok(&[
        "disconnect",
        "--from",
        s(&c1.admin),
        "--to",
        s(&c2.admin),
        "--mode",
        "unicast",
    ]);
    assert!(printed.contains("disconnected c1 -> c2"), "{printed}");
    assert_eq!(snapshot().await, nothing);
}
