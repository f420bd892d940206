//! A remote cluster (etcd + apiserver that can be stopped and started on
//! the same address), the state it publishes, and kvstoremesh running in
//! this process against a local etcd.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use certs::TlsFiles;
use clustermesh_apiserver::{
    Apiserver, Config, Kvstoremesh, KvstoremeshConfig, KvstoremeshStatus, MirrorView, WatchConfig,
};
use etcd_harness::TestEtcd;
use kvstore::{
    ClientConfig, ClusterId, ClusterName, MaxConnectedClusters, NumericIdentity, StoreValue,
    keys::{Source, StateKind},
    values::{ClusterService, IpIdentityPair, Node},
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::{Pki, direct_client, eventually, http_get};

/// The local cluster kvstoremesh runs in.
pub(crate) const LOCAL: &str = "c1";

pub(crate) fn name(n: &str) -> ClusterName {
    ClusterName::new(n).unwrap()
}

/// A remote cluster: its etcd, its CA, and its apiserver.
pub(crate) struct Remote {
    pub(crate) name: ClusterName,
    pub(crate) id: u32,
    pub(crate) etcd: TestEtcd,
    pub(crate) pki: Pki,
    server_files: TlsFiles,
    addr: Option<SocketAddr>,
    running: Option<(CancellationToken, JoinHandle<()>)>,
}

impl Remote {
    /// Starts the remote's etcd and apiserver.
    pub(crate) async fn start(remote: &str, id: u32) -> Self {
        let etcd = TestEtcd::start().await.unwrap();
        let pki = Pki::new(&format!("{remote}-ca"));
        let server_files = pki.server("apiserver");
        let mut r = Self {
            name: name(remote),
            id,
            etcd,
            pki,
            server_files,
            addr: None,
            running: None,
        };
        r.start_apiserver().await;
        r
    }

    /// Starts the apiserver (again, on the same address).
    pub(crate) async fn start_apiserver(&mut self) {
        let mode = MaxConnectedClusters::C255;
        let mut config = Config::new(
            self.name.clone(),
            ClusterId::new(self.id, mode).unwrap(),
            mode,
            ClientConfig::new(self.etcd.endpoints()),
            self.server_files.clone(),
        );
        config.listen = self.addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        config.health_listen = "127.0.0.1:0".parse().unwrap();
        config.watch = WatchConfig {
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            ..WatchConfig::default()
        };
        let apiserver = Apiserver::bind(config).await.expect("bind the apiserver");
        self.addr = Some(apiserver.local_addr());
        let health = apiserver.health_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { apiserver.run(shutdown).await.expect("apiserver run") }
        });
        self.running = Some((shutdown, task));
        eventually("the remote apiserver to be ready", || async {
            matches!(http_get(health, "/readyz").await, Ok((200, _))).then_some(())
        })
        .await;
    }

    /// Stops the apiserver (its etcd keeps running).
    pub(crate) async fn stop_apiserver(&mut self) {
        if let Some((shutdown, task)) = self.running.take() {
            shutdown.cancel();
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("the apiserver stops in time")
                .unwrap();
        }
    }

    /// Writes the remote's file into the clustermesh config directory:
    /// its apiserver, its CA, a `remote-c1` client certificate it issued,
    /// and `extra` YAML lines.
    pub(crate) fn write_config(&self, dir: &Path, extra: &str) {
        let client = self.pki.client(&format!("remote-{LOCAL}"));
        let body = format!(
            "endpoints:\n- https://{}\ntrusted-ca-file: {}\ncert-file: {}\nkey-file: {}\n{extra}",
            self.addr.unwrap(),
            self.pki.ca_file().display(),
            client.cert.display(),
            client.key.display(),
        );
        std::fs::write(dir.join(self.name.as_str()), body).unwrap();
    }

    /// Writes `state` (full keys) straight into the remote's etcd.
    pub(crate) async fn put_all(&self, state: &BTreeMap<String, Vec<u8>>) {
        let mut etcd = direct_client(&self.etcd).await;
        for (key, value) in state {
            etcd.put(key.as_str(), value.clone(), None).await.unwrap();
        }
    }

    pub(crate) async fn put(&self, key: &str, value: impl Into<Vec<u8>>) {
        let mut etcd = direct_client(&self.etcd).await;
        etcd.put(key, value.into(), None).await.unwrap();
    }

    pub(crate) async fn delete(&self, key: &str) {
        let mut etcd = direct_client(&self.etcd).await;
        etcd.delete(key, None).await.unwrap();
    }

    /// The remote's canaries of every kind it publishes (as its apiserver
    /// and agents write them once their state is complete).
    pub(crate) async fn write_canaries(&self) {
        for kind in StateKind::ALL {
            self.put(
                &kind.canary(&self.name, Source::State),
                "2026-12-01T00:00:00Z",
            )
            .await;
        }
    }

    /// Starts remote `remote` (ID `id`) with [`sample_state`] published and
    /// its canaries written, and writes its file into `dir` (with `extra`
    /// YAML lines): what most tests mirror. Returns the state too.
    pub(crate) async fn start_published(
        remote: &str,
        id: u32,
        dir: &Path,
        extra: &str,
    ) -> (Self, BTreeMap<String, Vec<u8>>) {
        let started = Self::start(remote, id).await;
        started.write_config(dir, extra);
        let state = sample_state(&started.name, id);
        started.put_all(&state).await;
        started.write_canaries().await;
        (started, state)
    }

    pub(crate) async fn stop(mut self) {
        self.stop_apiserver().await;
    }
}

/// A remote's state as its agents and apiserver publish it: two nodes, a
/// service, two identities, two ipcache entries (full keys → bytes).
pub(crate) fn sample_state(remote: &ClusterName, id: u32) -> BTreeMap<String, Vec<u8>> {
    let mut state = BTreeMap::new();
    for n in ["n1", "n2"] {
        state.insert(node_key(remote, n), node(remote, id, n));
    }
    state.insert(
        service_key(remote, "echo"),
        service(remote, id, "echo", 8080),
    );
    for i in [1, 2] {
        let identity = id << 16 | (256 + i);
        state.insert(
            identity_key(identity),
            format!("k8s:app=a{i};k8s:io.cilium.k8s.policy.cluster={remote};").into_bytes(),
        );
        let ip = format!("10.{id}.0.{i}");
        state.insert(ip_key(&ip), ip_entry(&ip, identity));
    }
    state
}

pub(crate) fn node_key(remote: &ClusterName, n: &str) -> String {
    StateKind::Nodes.prefix(remote, Source::State).key(n)
}

pub(crate) fn node(remote: &ClusterName, id: u32, n: &str) -> Vec<u8> {
    Node::new(remote, n, id).encode()
}

pub(crate) fn service_key(remote: &ClusterName, svc: &str) -> String {
    StateKind::Services
        .prefix(remote, Source::State)
        .key(&format!("default/{svc}"))
}

pub(crate) fn service(remote: &ClusterName, id: u32, svc: &str, port: u16) -> Vec<u8> {
    let mut s = ClusterService::new(remote, id, "default", svc);
    s.shared = true;
    s.labels.insert("port".into(), port.to_string());
    s.encode()
}

pub(crate) fn identity_key(identity: u32) -> String {
    format!("cilium/state/identities/v1/id/{identity}")
}

pub(crate) fn ip_key(ip: &str) -> String {
    format!("cilium/state/ip/v1/default/{ip}")
}

pub(crate) fn ip_entry(ip: &str, identity: u32) -> Vec<u8> {
    IpIdentityPair::host(ip.parse().unwrap(), NumericIdentity::new(identity), None).encode()
}

/// Where kvstoremesh mirrors a remote key (Cilium's layout, spelled out
/// here independently of the code under test).
pub(crate) fn cache_key(remote: &ClusterName, key: &str) -> String {
    let r = remote.as_str();
    for kind in ["nodes", "services", "serviceexports"] {
        if let Some(rest) = key.strip_prefix(&format!("cilium/state/{kind}/v1/{r}/")) {
            return format!("cilium/cache/{kind}/v1/{r}/{rest}");
        }
    }
    if let Some(id) = key.strip_prefix("cilium/state/identities/v1/id/") {
        return format!("cilium/cache/identities/v1/{r}/id/{id}");
    }
    if let Some(ip) = key.strip_prefix("cilium/state/ip/v1/default/") {
        return format!("cilium/cache/ip/v1/{r}/{ip}");
    }
    panic!("not a mirrored key: {key}");
}

/// The cache that mirrors `state` exactly.
pub(crate) fn expected_cache(
    remote: &ClusterName,
    state: &BTreeMap<String, Vec<u8>>,
) -> BTreeMap<String, Vec<u8>> {
    state
        .iter()
        .map(|(k, v)| (cache_key(remote, k), v.clone()))
        .collect()
}

/// Every key under `prefix` of `etcd`, with its value.
pub(crate) async fn list(etcd: &TestEtcd, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let mut client = direct_client(etcd).await;
    let resp = client
        .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap();
    resp.kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.value().to_vec(),
            )
        })
        .collect()
}

/// The local cache of everything (`cilium/cache/`).
pub(crate) async fn cache(local: &TestEtcd) -> BTreeMap<String, Vec<u8>> {
    list(local, "cilium/cache/").await
}

/// The cache canaries kvstoremesh wrote for `remote`, by kind.
pub(crate) async fn cache_canaries(local: &TestEtcd, remote: &ClusterName) -> Vec<&'static str> {
    let present = list(local, &format!("cilium/synced/{remote}/")).await;
    StateKind::ALL
        .into_iter()
        .filter(|k| present.contains_key(&k.canary(remote, Source::Cache)))
        .map(StateKind::as_str)
        .collect()
}

/// Waits until the local cache is exactly `expected`.
pub(crate) async fn cache_becomes(
    local: &TestEtcd,
    expected: &BTreeMap<String, Vec<u8>>,
    what: &str,
) {
    let mut last = BTreeMap::new();
    let found = tokio::time::timeout(crate::support::DEADLINE, async {
        loop {
            last = cache(local).await;
            if &last == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "{what}: the cache did not become the expected one\nexpected: {:?}\nfound:    {:?}",
        expected.keys().collect::<Vec<_>>(),
        last.keys().collect::<Vec<_>>()
    );
}

/// kvstoremesh for cluster `c1` running in this process; stopped on drop.
pub(crate) struct Mesh {
    pub(crate) health: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Mesh {
    /// kvstoremesh with short timings for tests, then `tweak`.
    pub(crate) async fn start(
        local: &TestEtcd,
        dir: &Path,
        tweak: impl FnOnce(&mut KvstoremeshConfig),
    ) -> Self {
        let mode = MaxConnectedClusters::C255;
        let mut config = KvstoremeshConfig::new(
            name(LOCAL),
            ClusterId::new(1, mode).unwrap(),
            mode,
            ClientConfig::new(local.endpoints()),
            dir,
        );
        config.health_listen = "127.0.0.1:0".parse().unwrap();
        config.retry_min = Duration::from_millis(100);
        config.retry_max = Duration::from_secs(1);
        config.check_interval = Duration::from_millis(200);
        config.rescan_interval = Duration::from_millis(500);
        tweak(&mut config);
        let mesh = Kvstoremesh::bind(config).await.expect("bind kvstoremesh");
        let health = mesh.health_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { mesh.run(shutdown).await.expect("kvstoremesh run") }
        });
        Self {
            health,
            shutdown,
            task: Some(task),
        }
    }

    /// `/readyz`'s status code.
    pub(crate) async fn readyz(&self) -> u16 {
        http_get(self.health, "/readyz").await.map_or(0, |(s, _)| s)
    }

    pub(crate) async fn wait_ready(&self) {
        eventually("kvstoremesh to be ready", || async {
            (self.readyz().await == 200).then_some(())
        })
        .await;
    }

    /// `/status`.
    pub(crate) async fn status(&self) -> KvstoremeshStatus {
        let (code, body) = http_get(self.health, "/status").await.unwrap();
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    /// How kvstoremesh sees `remote` in `/status`, once it lists it.
    pub(crate) async fn remote(&self, remote: &str) -> Option<MirrorView> {
        self.status()
            .await
            .remotes
            .into_iter()
            .find(|r| r.name == remote)
    }

    /// Waits until `remote`'s view satisfies `check`.
    pub(crate) async fn remote_until(
        &self,
        remote: &str,
        what: &str,
        check: impl Fn(&MirrorView) -> bool,
    ) -> MirrorView {
        eventually(what, || async {
            self.remote(remote).await.filter(|v| check(v))
        })
        .await
    }

    pub(crate) async fn metrics(&self) -> String {
        http_get(self.health, "/metrics").await.unwrap().1
    }

    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("kvstoremesh stops in time")
                .unwrap();
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
