//! What a mesh consists of before anything is made: the names and
//! addresses of clusters, nodes and pods, and the flags that tell each
//! daemon about them. Pure: nothing here touches the system.
//!
//! Cluster `cI` (ID I) of the mesh on fabric subnet `172.(16+k).0.0/16`:
//! its control plane at `172.(16+k).I.2`, node `nJ` at `172.(16+k).I.(10+J)`,
//! pods from `10.I.0.0/16`. Workloads are dual-stack: node `nJ` also has
//! `fd00:172:(16+k)::I:(10+J)` on the fabric (one IPv6 /64 per mesh, the
//! same digits as its IPv4 address) and pods get IPv6 addresses from
//! `fd10:I::/48`, a /64 per node.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use crate::state::{
    ClusterCerts, ClusterInfo, EtcdCerts, KubeInfo, KvstoremeshInfo, MeshState, NodeInfo, UiInfo,
};

/// etcd's client port on the control-plane address.
const ETCD_CLIENT_PORT: u16 = 2379;
/// etcd's peer URL: on loopback, every etcd is a cluster of one.
const ETCD_PEER_URL: &str = "http://127.0.0.1:2380";
/// etcd's metrics and `/health` port on the control-plane address.
const ETCD_METRICS_PORT: u16 = 2381;
/// The clustermesh-apiserver's etcd API (mutual TLS).
const APISERVER_PORT: u16 = 2443;
/// The clustermesh-apiserver's `/readyz` and `/metrics`.
const APISERVER_HEALTH_PORT: u16 = 9880;
/// kvstoremesh's `/healthz`, `/readyz`, `/metrics` and `/status` (Cilium's
/// Helm default).
const KVSTOREMESH_HEALTH_PORT: u16 = 9881;
/// How long kvstoremesh keeps a removed remote's cache for agents to
/// disconnect (Cilium waits 3 minutes; in a local mesh the agents' configs
/// go at the same moment).
const KVSTOREMESH_DRAIN_DELAY: &str = "10s";
/// The operator's `/healthz` and `/metrics`.
const OPERATOR_HEALTH_PORT: u16 = 9234;
/// Each agent's `/healthz` and `/metrics` on its node address.
const AGENT_HEALTH_PORT: u16 = 9876;
/// The Hubble Relay's `/metrics` on the control-plane address.
const RELAY_METRICS_PORT: u16 = 9966;
/// How soon the relay reports a node it lost (Cilium waits 10 s to merge
/// errors of several nodes; a local mesh wants to see it at once).
const RELAY_ERROR_WINDOW: &str = "1s";
/// How long the relay waits before following a lost Peer service again.
const RELAY_RETRY: &str = "2s";
/// How long the relay holds flows to sort them (Cilium's default is 1 s; a
/// local mesh wants them in the UI at once).
const RELAY_SORT_DRAIN: &str = "200ms";
/// The Hubble UI's port on the host's fabric address (Cilium's UI port).
pub(crate) const UI_PORT: u16 = 8081;
/// How many flows each agent's Hubble server keeps.
const HUBBLE_BUFFER_CAPACITY: &str = "16383";
/// Where agents pin their maps (one directory per mesh, then per node).
const BPFFS: &str = "/sys/fs/bpf";

/// The size of the node CIDRs the operator hands out.
const NODE_CIDR_MASK_SIZE: u8 = 24;
/// The size of the IPv6 node CIDRs.
const NODE_CIDR_MASK_SIZE_V6: u8 = 64;
/// The prefix length of the IPv6 fabric (one /64 per mesh).
pub(crate) const FABRIC_V6_PREFIX_LEN: u8 = 64;
/// How often the operator writes its heartbeat: short, so that the local
/// mesh notices a stopped operator quickly.
const OPERATOR_HEARTBEAT_INTERVAL: &str = "10s";
/// The agents' session lease: their keys outlive a crash this long.
const AGENT_SESSION_TTL: &str = "2m";
/// How long a starting agent waits for every cluster's initial sync.
const AGENT_SYNC_TIMEOUT: &str = "30s";

/// The name of the `i`th cluster.
pub(super) fn cluster_name(i: u8) -> String {
    format!("c{i}")
}

/// The IPv6 fabric address of node `j` of cluster `i` on fabric subnet `k`:
/// `fd00:172:(16+k)::i:(10+j)`, the digits of its IPv4 address.
pub(crate) fn node_ipv6(subnet: u8, i: u8, j: u8) -> Ipv6Addr {
    format!(
        "fd00:172:{}::{i}:{}",
        16 + u16::from(subnet),
        10 + u16::from(j)
    )
    .parse()
    .expect("a valid IPv6 address")
}

/// The IPv6 fabric prefix of cluster `i`'s nodes (for partitions).
fn cluster_fabric_v6(subnet: u8, i: u32) -> String {
    format!("fd00:172:{}::{i}:0/112", 16 + u16::from(subnet))
}

/// Cluster `i`'s IPv6 pod pool: `fd10:i::/48` (as `10.i.0.0/16`).
pub(super) fn pod_cidr_pool_v6(i: u8) -> String {
    format!("fd10:{i}::/48")
}

/// The fabric address of cluster `i`'s control plane.
pub(super) fn control_plane_ip(subnet: u8, i: u8) -> Ipv4Addr {
    Ipv4Addr::new(172, 16 + subnet, i, 2)
}

/// Cluster `i` of `state`'s mesh with `nodes` nodes, its files in `dir`.
pub(super) fn cluster(
    state: &MeshState,
    i: u8,
    nodes: u8,
    dir: &Path,
    certs: ClusterCerts,
    etcd_tls: EtcdCerts,
) -> ClusterInfo {
    let cp_ip = control_plane_ip(state.subnet, i);
    ClusterInfo {
        name: cluster_name(i),
        id: u32::from(i),
        cp_netns: format!("{}-c{i}", state.prefix),
        cp_ip,
        etcd_endpoint: format!("https://{cp_ip}:{ETCD_CLIENT_PORT}"),
        etcd_tls: Some(etcd_tls),
        etcd_data: dir.join("etcd"),
        apiserver_endpoint: format!("https://{cp_ip}:{APISERVER_PORT}"),
        apiserver_health: format!("{cp_ip}:{APISERVER_HEALTH_PORT}"),
        operator_health: format!("{cp_ip}:{OPERATOR_HEALTH_PORT}"),
        pod_cidr_pool: format!("10.{i}.0.0/16"),
        pod_cidr_pool_v6: Some(pod_cidr_pool_v6(i)),
        certs,
        etcd: None,
        operator: None,
        apiserver: None,
        hubble_relay: Some(format!("{cp_ip}:{}", hubble::names::RELAY_PORT)),
        hubble_relay_metrics: Some(format!("{cp_ip}:{RELAY_METRICS_PORT}")),
        relay: None,
        nodes: (1..=nodes).map(|j| node(state, i, j, dir)).collect(),
        remotes: Vec::new(),
        kube: None,
        kvstoremesh: None,
    }
}

/// Cluster `c`'s kvstoremesh, its remote configs in `dir`, the agents'
/// `local-<cluster>` certificate at `local_cert`/`local_key`.
pub(super) fn kvstoremesh(
    c: &ClusterInfo,
    dir: &Path,
    local_cert: PathBuf,
    local_key: PathBuf,
) -> KvstoremeshInfo {
    KvstoremeshInfo {
        config_dir: dir.join("remotes"),
        health: format!("{}:{KVSTOREMESH_HEALTH_PORT}", c.cp_ip),
        local_cert,
        local_key,
        cache_access: dir.join("cache.yaml"),
        process: None,
    }
}

/// The text of the agents' `--kvstoremesh-cache` file: their own
/// apiserver, with the `local-<cluster>` certificate.
pub(super) fn cache_access_text(c: &ClusterInfo, k: &KvstoremeshInfo) -> String {
    super::remote::remote_config_text(
        &c.apiserver_endpoint,
        &c.certs.ca,
        &k.local_cert,
        &k.local_key,
    )
}

/// kvstoremesh's flags (`clustermesh-apiserver kvstoremesh …`): it writes
/// into the cluster's etcd with the components' certificate.
pub(super) fn kvstoremesh_args(c: &ClusterInfo, k: &KvstoremeshInfo) -> Vec<String> {
    let mut args = vec!["kvstoremesh".to_string()];
    args.extend(component_args(
        c,
        c.id,
        &[
            ("--clustermesh-config", k.config_dir.display().to_string()),
            ("--health-listen", k.health.clone()),
            ("--drain-delay", KVSTOREMESH_DRAIN_DELAY.into()),
        ],
    ));
    args
}

/// The Kubernetes API server's port on the control-plane address.
pub(super) const KUBE_APISERVER_PORT: u16 = 6443;
/// Its etcd's client and peer URLs, on the control plane's loopback (the
/// mesh's own etcd has the control-plane address's 2379-2381).
const KUBE_ETCD_CLIENT_URL: &str = "http://127.0.0.1:2479";
const KUBE_ETCD_PEER_URL: &str = "http://127.0.0.1:2480";
/// Where the operator keeps its leader Lease.
pub(super) const KUBE_LEASE_NAMESPACE: &str = "kube-system";

/// Cluster `c`'s Kubernetes API server, its files in `dir`.
pub(super) fn kube(c: &ClusterInfo, dir: &Path) -> KubeInfo {
    KubeInfo {
        server: format!("https://{}:{KUBE_APISERVER_PORT}", c.cp_ip),
        kubeconfig: dir.join("admin.kubeconfig"),
        dir: dir.to_path_buf(),
        etcd_data: dir.join("etcd"),
        etcd: None,
        apiserver: None,
        controller_manager: None,
    }
}

/// The Kubernetes API server's etcd's flags.
pub(super) fn kube_etcd_args(k: &KubeInfo) -> Vec<String> {
    vec![
        "--name=kube".into(),
        format!("--data-dir={}", k.etcd_data.display()),
        format!("--listen-client-urls={KUBE_ETCD_CLIENT_URL}"),
        format!("--advertise-client-urls={KUBE_ETCD_CLIENT_URL}"),
        format!("--listen-peer-urls={KUBE_ETCD_PEER_URL}"),
        format!("--initial-advertise-peer-urls={KUBE_ETCD_PEER_URL}"),
        format!("--initial-cluster=kube={KUBE_ETCD_PEER_URL}"),
        "--listen-metrics-urls=http://127.0.0.1:2481".into(),
    ]
}

/// The etcd URL the Kubernetes API server stores into.
pub(super) fn kube_etcd_url() -> &'static str {
    KUBE_ETCD_CLIENT_URL
}

/// Node `j` of cluster `i`.
fn node(state: &MeshState, i: u8, j: u8, cluster_dir: &Path) -> NodeInfo {
    let ip = Ipv4Addr::new(172, 16 + state.subnet, i, 10 + j);
    let dir = cluster_dir.join(format!("n{j}"));
    NodeInfo {
        name: format!("n{j}"),
        netns: format!("{}-c{i}-n{j}", state.prefix),
        ip,
        ipv6: Some(node_ipv6(state.subnet, i, j)),
        api_socket: dir.join("agent.sock"),
        bpffs: PathBuf::from(BPFFS)
            .join(&state.prefix)
            .join(format!("c{i}-n{j}")),
        health: format!("{ip}:{AGENT_HEALTH_PORT}"),
        state_dir: dir.join("state"),
        clustermesh_dir: dir.join("clustermesh"),
        agent: None,
        hubble_socket: Some(dir.join("hubble.sock")),
    }
}

/// Where the mesh's agents pin their maps (`down` removes it whole).
pub(super) fn bpffs_root(state: &MeshState) -> PathBuf {
    PathBuf::from(BPFFS).join(&state.prefix)
}

/// The fabric-side name of the veth that plugs the control plane of
/// cluster `id` (`node`: `Some(j)`, of its node `nJ`) into the fabric.
pub(super) fn fabric_port(state: &MeshState, id: u32, node: Option<&str>) -> String {
    let node = node.map(|n| n.trim_start_matches('n')).unwrap_or_default();
    match node {
        "" => format!("{}c{id}", state.prefix),
        j => format!("{}c{id}n{j}", state.prefix),
    }
}

/// The namespace of pod `name` of `cluster`.
pub(super) fn pod_netns(state: &MeshState, cluster: &str, name: &str) -> String {
    format!("{}-{cluster}-{name}", state.prefix)
}

/// What a partition of cluster `c` cuts off: its fabric /24 (control plane
/// and nodes) and its pods, and their IPv6 counterparts.
pub(super) fn partition_nets(state: &MeshState, c: &ClusterInfo) -> Vec<String> {
    let mut nets = vec![
        format!("172.{}.{}.0/24", 16 + state.subnet, c.id),
        c.pod_cidr_pool.clone(),
    ];
    if let Some(v6) = &c.pod_cidr_pool_v6 {
        nets.push(cluster_fabric_v6(state.subnet, c.id));
        nets.push(v6.clone());
    }
    nets
}

/// The nftables chain of the partition between `a` and `b` (either order).
pub(super) fn partition_chain(a: &str, b: &str) -> String {
    let (x, y) = if a < b { (a, b) } else { (b, a) };
    format!("cut-{x}-{y}")
}

/// Where etcd answers `/health`.
pub(super) fn etcd_health(c: &ClusterInfo) -> String {
    format!("{}:{ETCD_METRICS_PORT}", c.cp_ip)
}

/// etcd's flags: one member, served with the cluster's own etcd CA when it
/// has one.
pub(super) fn etcd_args(c: &ClusterInfo) -> Vec<String> {
    let mut args = vec![
        format!("--name={}", c.name),
        format!("--data-dir={}", c.etcd_data.display()),
        format!("--listen-client-urls={}", c.etcd_endpoint),
        format!("--advertise-client-urls={}", c.etcd_endpoint),
        format!("--listen-peer-urls={ETCD_PEER_URL}"),
        format!("--initial-advertise-peer-urls={ETCD_PEER_URL}"),
        format!("--initial-cluster={}={ETCD_PEER_URL}", c.name),
        format!("--listen-metrics-urls=http://{}", etcd_health(c)),
        "--logger=zap".into(),
        "--log-outputs=stderr".into(),
    ];
    if let Some(t) = &c.etcd_tls {
        args.extend([
            format!("--cert-file={}", t.server_cert.display()),
            format!("--key-file={}", t.server_key.display()),
            format!("--trusted-ca-file={}", t.ca.display()),
            "--client-cert-auth=true".into(),
        ]);
    }
    args
}

/// The operator's flags.
pub(super) fn operator_args(c: &ClusterInfo) -> Vec<String> {
    let mut flags = vec![
        ("--pod-cidr-pool", c.pod_cidr_pool.clone()),
        ("--node-cidr-mask-size", NODE_CIDR_MASK_SIZE.to_string()),
    ];
    if let Some(v6) = &c.pod_cidr_pool_v6 {
        flags.extend([
            ("--pod-cidr-pool-v6", v6.clone()),
            (
                "--node-cidr-mask-size-v6",
                NODE_CIDR_MASK_SIZE_V6.to_string(),
            ),
        ]);
    }
    flags.extend([
        ("--health-listen", c.operator_health.clone()),
        ("--heartbeat-interval", OPERATOR_HEARTBEAT_INTERVAL.into()),
        ("--id", format!("{}-operator", c.name)),
    ]);
    let mut args = component_args(c, c.id, &flags);
    if let Some(k) = &c.kube {
        args.extend([
            "--k8s-kubeconfig".to_string(),
            k.kubeconfig.display().to_string(),
            "--k8s-namespace".to_string(),
            KUBE_LEASE_NAMESPACE.to_string(),
        ]);
    }
    args
}

/// The apiserver's flags, publishing cluster ID `id` (the cluster's own,
/// unless a test wants a misconfigured one).
pub(super) fn apiserver_args(c: &ClusterInfo, id: u32) -> Vec<String> {
    component_args(
        c,
        id,
        &[
            (
                "--listen",
                c.apiserver_endpoint.trim_start_matches("https://").into(),
            ),
            ("--tls-cert", c.certs.server_cert.display().to_string()),
            ("--tls-key", c.certs.server_key.display().to_string()),
            ("--tls-client-ca", c.certs.ca.display().to_string()),
            ("--health-listen", c.apiserver_health.clone()),
        ],
    )
}

/// The flags of `clustermesh-agent run` on node `n`.
pub(super) fn agent_args(c: &ClusterInfo, n: &NodeInfo) -> Vec<String> {
    let mut args = vec!["run".to_string()];
    let mut flags = vec![
        ("--node-name", n.name.clone()),
        ("--node-ip", n.ip.to_string()),
    ];
    if let Some(v6) = n.ipv6 {
        flags.push(("--node-ipv6", v6.to_string()));
    }
    flags.extend([
        (
            "--clustermesh-config",
            n.clustermesh_dir.display().to_string(),
        ),
        ("--bpffs-dir", n.bpffs.display().to_string()),
        ("--api-socket", n.api_socket.display().to_string()),
        ("--state-dir", n.state_dir.display().to_string()),
        ("--health-listen", n.health.clone()),
        ("--session-ttl", AGENT_SESSION_TTL.into()),
        ("--sync-timeout", AGENT_SYNC_TIMEOUT.into()),
        ("--pod-cidr-pool", c.pod_cidr_pools().join(",")),
    ]);
    args.extend(component_args(c, c.id, &flags));
    if let Some(k) = &c.kvstoremesh {
        args.extend([
            "--kvstoremesh-cache".to_string(),
            k.cache_access.display().to_string(),
        ]);
    }
    if let Some(k) = &c.kube {
        args.extend([
            "--k8s-kubeconfig".to_string(),
            k.kubeconfig.display().to_string(),
        ]);
    }
    if let Some(socket) = &n.hubble_socket {
        args.extend(["--hubble-socket".to_string(), socket.display().to_string()]);
        args.extend([
            "--hubble-event-buffer-capacity".to_string(),
            HUBBLE_BUFFER_CAPACITY.to_string(),
        ]);
    }
    if let Some(h) = &c.certs.hubble {
        for (flag, value) in [
            (
                "--hubble-listen-address",
                format!("{}:{}", n.ip, hubble::names::SERVER_PORT),
            ),
            (
                "--hubble-tls-cert-file",
                h.server_cert.display().to_string(),
            ),
            ("--hubble-tls-key-file", h.server_key.display().to_string()),
            (
                "--hubble-tls-client-ca-files",
                c.certs.ca.display().to_string(),
            ),
        ] {
            args.extend([flag.to_string(), value]);
        }
    }
    args
}

/// The Hubble Relay's flags: it follows the Peer service of the cluster's
/// first node (its unix socket: the relay runs on the same machine), dials
/// every node with the relay's client certificate, and serves mutual TLS
/// with the cluster's Hubble certificate. `None` for a mesh without Hubble.
pub(super) fn relay_args(c: &ClusterInfo) -> Option<Vec<String>> {
    let (listen, metrics, h) = (
        c.hubble_relay.as_ref()?,
        c.hubble_relay_metrics.as_ref()?,
        c.certs.hubble.as_ref()?,
    );
    let peer = c.nodes.first()?.hubble_socket.as_ref()?;
    let pairs = [
        ("--cluster-name", c.name.clone()),
        ("--node-name", format!("{}-relay", c.name)),
        ("--listen", listen.clone()),
        ("--health-listen", String::new()),
        ("--metrics-listen", metrics.clone()),
        ("--peer-service", format!("unix://{}", peer.display())),
        ("--retry-timeout", RELAY_RETRY.into()),
        ("--error-aggregation-window", RELAY_ERROR_WINDOW.into()),
        ("--sort-buffer-drain-timeout", RELAY_SORT_DRAIN.into()),
        (
            "--tls-client-cert-file",
            h.relay_client_cert.display().to_string(),
        ),
        (
            "--tls-client-key-file",
            h.relay_client_key.display().to_string(),
        ),
        (
            "--tls-hubble-server-ca-files",
            c.certs.ca.display().to_string(),
        ),
        (
            "--tls-server-cert-file",
            h.server_cert.display().to_string(),
        ),
        ("--tls-server-key-file", h.server_key.display().to_string()),
        ("--tls-client-ca-files", c.certs.ca.display().to_string()),
    ];
    Some(
        pairs
            .into_iter()
            .flat_map(|(flag, value)| [flag.to_string(), value])
            .collect(),
    )
}

/// The Hubble UI's flags: every cluster's relay (mutual TLS with the UI's
/// own certificate) and every node's agent socket, for the services panel.
pub(super) fn ui_args(s: &MeshState, ui: &UiInfo) -> Vec<String> {
    let mut args = vec![
        "--listen".to_string(),
        ui.listen.clone(),
        "--tls-ca-cert-files".into(),
        s.ca_cert.display().to_string(),
        "--tls-client-cert-file".into(),
        ui.client_cert.display().to_string(),
        "--tls-client-key-file".into(),
        ui.client_key.display().to_string(),
        "--tls-relay-server-name".into(),
        "hubble-relay.{cluster}.hubble-grpc.cilium.io".into(),
    ];
    for c in &s.clusters {
        if let Some(relay) = &c.hubble_relay {
            args.extend(["--relay".to_string(), format!("{}={relay}", c.name)]);
        }
        for n in &c.nodes {
            args.extend([
                "--agent".to_string(),
                format!("{}={}:{}", c.name, n.name, n.api_socket.display()),
            ]);
        }
    }
    args
}

/// A component's flags: which cluster it belongs to (publishing ID `id`),
/// its own `flags`, then how it reaches its cluster's etcd (with the
/// components' client certificate when etcd is served with TLS).
fn component_args(c: &ClusterInfo, id: u32, flags: &[(&str, String)]) -> Vec<String> {
    let mut pairs = vec![
        ("--cluster-name", c.name.clone()),
        ("--cluster-id", id.to_string()),
    ];
    pairs.extend(flags.iter().cloned());
    pairs.push(("--etcd-endpoints", c.etcd_endpoint.clone()));
    if let Some(t) = &c.etcd_tls {
        pairs.extend([
            ("--etcd-ca", t.ca.display().to_string()),
            ("--etcd-cert", t.client_cert.display().to_string()),
            ("--etcd-key", t.client_key.display().to_string()),
        ]);
    }
    pairs
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certs(dir: &Path) -> (ClusterCerts, EtcdCerts) {
        let f = |name: &str| dir.join(name);
        let certs = ClusterCerts {
            server_cert: f("server.crt"),
            server_key: f("server.key"),
            admin_cert: f("admin.crt"),
            admin_key: f("admin.key"),
            remote_cert: f("remote.crt"),
            remote_key: f("remote.key"),
            ca: f("ca.crt"),
            hubble: None,
        };
        let etcd = EtcdCerts {
            ca: f("etcd-ca.crt"),
            server_cert: f("etcd.crt"),
            server_key: f("etcd.key"),
            client_cert: f("components.crt"),
            client_key: f("components.key"),
            admin_cert: f("etcd-admin.crt"),
            admin_key: f("etcd-admin.key"),
        };
        (certs, etcd)
    }

    #[test]
    fn names_and_addresses_follow_from_the_subnet_and_the_index() {
        let state = MeshState::new("/m".into(), 3, PathBuf::new(), false);
        let (certs, etcd) = certs(Path::new("/m/c2/certs"));
        let c = cluster(&state, 2, 2, Path::new("/m/c2"), certs, etcd);
        assert_eq!((c.name.as_str(), c.id), ("c2", 2));
        assert_eq!(c.cp_netns, "cm3-c2");
        assert_eq!(c.cp_ip, Ipv4Addr::new(172, 19, 2, 2));
        assert_eq!(c.etcd_endpoint, "https://172.19.2.2:2379");
        assert_eq!(c.apiserver_endpoint, "https://172.19.2.2:2443");
        assert_eq!(etcd_health(&c), "172.19.2.2:2381");
        assert_eq!(c.pod_cidr_pool, "10.2.0.0/16");
        let n: Vec<_> = c.nodes.iter().map(|n| (&n.name, &n.netns, n.ip)).collect();
        assert_eq!(
            n,
            [
                (
                    &"n1".to_string(),
                    &"cm3-c2-n1".to_string(),
                    Ipv4Addr::new(172, 19, 2, 11)
                ),
                (
                    &"n2".to_string(),
                    &"cm3-c2-n2".to_string(),
                    Ipv4Addr::new(172, 19, 2, 12)
                ),
            ]
        );
        assert_eq!(c.nodes[0].bpffs, Path::new("/sys/fs/bpf/cm3/c2-n1"));
        assert_eq!(c.nodes[0].api_socket, Path::new("/m/c2/n1/agent.sock"));
        assert_eq!(fabric_port(&state, 2, None), "cm3c2");
        assert_eq!(fabric_port(&state, 2, Some("n1")), "cm3c2n1");
        assert_eq!(
            partition_nets(&state, &c),
            [
                "172.19.2.0/24",
                "10.2.0.0/16",
                "fd00:172:19::2:0/112",
                "fd10:2::/48"
            ]
        );
        assert_eq!(c.pod_cidr_pool_v6.as_deref(), Some("fd10:2::/48"));
        assert_eq!(
            c.nodes[1].ipv6,
            Some("fd00:172:19::2:12".parse::<Ipv6Addr>().unwrap())
        );
        assert_eq!(partition_chain("c2", "c1"), partition_chain("c1", "c2"));
    }

    #[test]
    fn every_component_names_its_cluster_and_reaches_etcd_with_tls() {
        let state = MeshState::new("/m".into(), 0, PathBuf::new(), false);
        let (certs, etcd) = certs(Path::new("/m/c1/certs"));
        let c = cluster(&state, 1, 1, Path::new("/m/c1"), certs, etcd);
        let flag = |args: &[String], name: &str| {
            let i = args.iter().position(|a| a == name);
            i.map(|i| args[i + 1].clone())
        };
        for args in [
            operator_args(&c),
            apiserver_args(&c, 1),
            agent_args(&c, &c.nodes[0]),
        ] {
            assert_eq!(flag(&args, "--cluster-name").as_deref(), Some("c1"));
            assert_eq!(flag(&args, "--cluster-id").as_deref(), Some("1"));
            assert_eq!(
                flag(&args, "--etcd-endpoints").as_deref(),
                Some("https://172.16.1.2:2379")
            );
            assert_eq!(
                flag(&args, "--etcd-cert").as_deref(),
                Some("/m/c1/certs/components.crt")
            );
        }
        assert_eq!(agent_args(&c, &c.nodes[0])[0], "run");
        assert_eq!(
            flag(&apiserver_args(&c, 7), "--cluster-id").as_deref(),
            Some("7")
        );
        assert!(etcd_args(&c).contains(&"--client-cert-auth=true".to_string()));
    }
}
