//! `mesh.json`: everything a local mesh consists of, written as it is built
//! so that `down` can remove it even after a crash half-way through `up`.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::error::{Refused, refuse};

/// A process the mesh started (a daemon in its own session).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    /// The program, to recognise the process before killing it.
    pub program: String,
    pub log: PathBuf,
}

/// One node: a network namespace with an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    /// The node's IPv6 fabric address, where other nodes route its IPv6
    /// pods (`None`: a mesh from before dual-stack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    pub api_socket: PathBuf,
    pub bpffs: PathBuf,
    pub health: String,
    pub state_dir: PathBuf,
    /// The agent's clustermesh config directory (its own, as on a real
    /// host: the agent mirrors the remote-cluster records into it).
    pub clustermesh_dir: PathBuf,
    pub agent: Option<ProcessInfo>,
    /// The agent's Hubble server socket (`None`: a mesh from before Hubble).
    #[serde(default)]
    pub hubble_socket: Option<PathBuf>,
}

/// Certificates of one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterCerts {
    /// The apiserver's server certificate and key.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// `admin-<cluster>`: full access to the cluster's apiserver.
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    /// `remote-<cluster>`: what this cluster's agents present to remote apiservers.
    pub remote_cert: PathBuf,
    pub remote_key: PathBuf,
    /// The CA bundle this cluster trusts.
    pub ca: PathBuf,
    /// Hubble: the servers' certificate (`*.<cluster>.hubble-grpc.cilium.io`,
    /// agents and relay) and the relay's client certificate (`None`: a mesh
    /// from before Hubble).
    #[serde(default)]
    pub hubble: Option<HubbleCerts>,
}

/// A cluster's Hubble certificates (issued by the mesh CA, so that a relay
/// or a CLI of any cluster can reach every node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubbleCerts {
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub relay_client_cert: PathBuf,
    pub relay_client_key: PathBuf,
}

/// A cluster's etcd certificates: its own CA, the server's, and client
/// certificates for its components and for its admin (the CLI, tests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdCerts {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
}

/// One cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub name: String,
    pub id: u32,
    /// Namespace of the control plane (etcd, operator, apiserver).
    pub cp_netns: String,
    pub cp_ip: Ipv4Addr,
    pub etcd_endpoint: String,
    /// Mutual TLS of the cluster's etcd (`None`: a mesh from before it was
    /// served with TLS, plain HTTP).
    #[serde(default)]
    pub etcd_tls: Option<EtcdCerts>,
    pub etcd_data: PathBuf,
    pub apiserver_endpoint: String,
    pub apiserver_health: String,
    pub operator_health: String,
    pub pod_cidr_pool: String,
    /// The IPv6 pod CIDR pool (`None`: a mesh from before dual-stack, whose
    /// pods have IPv4 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr_pool_v6: Option<String>,
    pub certs: ClusterCerts,
    pub etcd: Option<ProcessInfo>,
    pub operator: Option<ProcessInfo>,
    pub apiserver: Option<ProcessInfo>,
    /// The cluster's Hubble Relay: `host:port` of its Observer (mutual TLS
    /// with the mesh CA), `host:port` of its `/metrics`, and its process
    /// (`None`: a mesh from before Hubble).
    #[serde(default)]
    pub hubble_relay: Option<String>,
    #[serde(default)]
    pub hubble_relay_metrics: Option<String>,
    #[serde(default)]
    pub relay: Option<ProcessInfo>,
    pub nodes: Vec<NodeInfo>,
    /// Clusters this one's agents are connected to.
    pub remotes: Vec<String>,
    /// Kubernetes mode: the cluster's own API server (`None`: the
    /// cluster runs without Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube: Option<KubeInfo>,
    /// The cluster's kvstoremesh (`None`: its agents connect to every
    /// remote's apiserver themselves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kvstoremesh: Option<KvstoremeshInfo>,
}

/// A cluster's kvstoremesh (`clustermesh-apiserver kvstoremesh`, in the
/// control-plane namespace): it mirrors every remote into the cluster's
/// etcd, and the agents read the remotes from their own apiserver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvstoremeshInfo {
    /// The remote configs kvstoremesh reads (the remotes' apiservers, with
    /// the cluster's `remote-<cluster>` certificate); the agents' directory
    /// then names the local apiserver for every remote.
    pub config_dir: PathBuf,
    /// `host:port` of its `/healthz`, `/readyz`, `/metrics` and `/status`.
    pub health: String,
    /// `local-<cluster>`: what the agents present to their own apiserver
    /// to read the cache.
    pub local_cert: PathBuf,
    pub local_key: PathBuf,
    /// The agents' `--kvstoremesh-cache` file: their own apiserver, with
    /// `local_cert`.
    #[serde(default)]
    pub cache_access: PathBuf,
    pub process: Option<ProcessInfo>,
}

/// A cluster's Kubernetes API server: its own etcd (plain HTTP on the
/// control plane's loopback), kube-apiserver on the control-plane address,
/// and kube-controller-manager, all in the control-plane namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeInfo {
    /// `https://<cp-ip>:6443`.
    pub server: String,
    /// The admin's kubeconfig (also used by the operator and the agents).
    pub kubeconfig: PathBuf,
    /// Certificates, keys, token file.
    pub dir: PathBuf,
    pub etcd_data: PathBuf,
    pub etcd: Option<ProcessInfo>,
    pub apiserver: Option<ProcessInfo>,
    pub controller_manager: Option<ProcessInfo>,
}

/// A sample workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    pub cluster: String,
    pub node: String,
    pub name: String,
    pub namespace: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    /// The pod's IPv6 address (dual-stack clusters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    pub labels: BTreeMap<String, String>,
    /// The echo server running in the pod, if any.
    pub server: Option<ProcessInfo>,
    pub port: Option<u16>,
}

/// The whole mesh (`DIR/mesh.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshState {
    pub dir: PathBuf,
    /// Index of the mesh's fabric subnet `172.(16+k).0.0/16` (lets several
    /// meshes exist at once).
    pub subnet: u8,
    /// Prefix of every namespace and interface name of this mesh.
    pub prefix: String,
    pub fabric_netns: String,
    /// The root namespace's port on the fabric (so the CLI reaches etcd and
    /// the apiservers).
    pub host_link: String,
    pub host_ip: Ipv4Addr,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub bin_dir: PathBuf,
    pub clusters: Vec<ClusterInfo>,
    pub endpoints: Vec<EndpointInfo>,
    /// The global service frontend, when workloads were created.
    pub service_frontend: Option<String>,
    /// Pairs of clusters currently partitioned.
    pub cuts: Vec<(String, String)>,
    /// What `up` made inside `dir` (names relative to it), recorded before
    /// it is made: all that `down` removes there.
    #[serde(default)]
    pub owned: Vec<PathBuf>,
    /// Whether `up` created `dir` itself (then `down` removes it when it is
    /// empty afterwards; otherwise it stays).
    #[serde(default)]
    pub created_dir: bool,
    /// The Hubble UI's URL (`None`: a mesh without Hubble, or from before
    /// the UI).
    #[serde(default)]
    pub hubble_ui: Option<String>,
    /// The Hubble UI: its client certificate towards the relays and its
    /// process.
    #[serde(default)]
    pub ui: Option<UiInfo>,
}

/// The mesh's Hubble UI (`clustermesh-ui`, in the root namespace on the
/// host's fabric address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UiInfo {
    pub listen: String,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub process: Option<ProcessInfo>,
}

impl ClusterInfo {
    /// Every pod CIDR pool of the cluster: IPv4, then IPv6 if it has one.
    pub fn pod_cidr_pools(&self) -> Vec<String> {
        std::iter::once(self.pod_cidr_pool.clone())
            .chain(self.pod_cidr_pool_v6.clone())
            .collect()
    }
}

impl MeshState {
    /// An empty mesh in `dir` on fabric subnet `k` (`172.(16+k).0.0/16`):
    /// names, the host's fabric address and the CA paths follow from them.
    pub fn new(dir: PathBuf, k: u8, bin_dir: PathBuf, created_dir: bool) -> Self {
        let prefix = format!("cm{k}");
        let pki = dir.join("pki");
        Self {
            subnet: k,
            fabric_netns: format!("{prefix}-fab"),
            host_link: format!("{prefix}host"),
            host_ip: Ipv4Addr::new(172, 16 + k, 0, 1),
            ca_cert: pki.join("ca.crt"),
            ca_key: pki.join("ca.key"),
            prefix,
            dir,
            bin_dir,
            clusters: Vec::new(),
            endpoints: Vec::new(),
            service_frontend: None,
            cuts: Vec::new(),
            owned: Vec::new(),
            created_dir,
            hubble_ui: None,
            ui: None,
        }
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join("mesh.json")
    }

    /// Reads `DIR/mesh.json`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = Self::path(dir);
        let text = std::fs::read(&path).map_err(|e| {
            anyhow::anyhow!(
                "no mesh at {} ({e}); run `clustermesh up --dir {}` first",
                dir.display(),
                dir.display()
            )
        })?;
        serde_json::from_slice(&text)
            .map_err(|e| anyhow::anyhow!("{} is not a mesh description: {e}", path.display()))
    }

    /// Records that the mesh owns `dir/name` before creating it, so that
    /// `down` removes it even after a crash half-way through.
    pub fn own(&mut self, name: impl Into<PathBuf>) -> anyhow::Result<PathBuf> {
        let name = name.into();
        if !self.owned.contains(&name) {
            self.owned.push(name.clone());
            self.save()?;
        }
        Ok(self.dir.join(name))
    }

    /// Writes `DIR/mesh.json` atomically.
    pub fn save(&self) -> anyhow::Result<()> {
        let path = Self::path(&self.dir);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    pub fn cluster(&self, name: &str) -> anyhow::Result<&ClusterInfo> {
        let i = self.cluster_index(name)?;
        Ok(&self.clusters[i])
    }

    pub fn cluster_mut(&mut self, name: &str) -> anyhow::Result<&mut ClusterInfo> {
        let i = self.cluster_index(name)?;
        Ok(&mut self.clusters[i])
    }

    /// Where cluster `name` is in `clusters`; an unknown name is refused.
    fn cluster_index(&self, name: &str) -> anyhow::Result<usize> {
        self.clusters
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.clusters.iter().map(|c| c.name.as_str()).collect();
                anyhow::Error::new(Refused(format!(
                    "no cluster {name:?} in this mesh (clusters: {})",
                    names.join(", ")
                )))
            })
    }

    /// Both clusters exist and are two, not one (`verb` says what for).
    pub(crate) fn distinct_clusters(&self, verb: &str, a: &str, b: &str) -> anyhow::Result<()> {
        self.cluster(a)?;
        self.cluster(b)?;
        if a == b {
            refuse!("cannot {verb} {a} with itself: name two different clusters");
        }
        Ok(())
    }

    pub fn node(&self, cluster: &str, node: &str) -> anyhow::Result<&NodeInfo> {
        let c = self.cluster(cluster)?;
        let j = node_index(c, node)?;
        Ok(&c.nodes[j])
    }

    pub fn node_mut(&mut self, cluster: &str, node: &str) -> anyhow::Result<&mut NodeInfo> {
        let c = self.cluster_mut(cluster)?;
        let j = node_index(c, node)?;
        Ok(&mut c.nodes[j])
    }

    pub fn endpoint(&self, cluster: &str, name: &str) -> anyhow::Result<&EndpointInfo> {
        self.endpoints
            .iter()
            .find(|e| e.cluster == cluster && e.name == name)
            .ok_or_else(|| {
                anyhow::Error::new(Refused(format!(
                    "no endpoint {name:?} in cluster {cluster:?}"
                )))
            })
    }
}

/// Where node `name` is in `c.nodes`.
fn node_index(c: &ClusterInfo, name: &str) -> anyhow::Result<usize> {
    c.nodes
        .iter()
        .position(|n| n.name == name)
        .ok_or_else(|| anyhow::anyhow!("no node {name} in {}", c.name))
}
