//! The agent's configuration: flags, environment variables (`CLUSTERMESH_…`)
//! and an optional YAML file (`--config`; keys are the long flag names;
//! flags and environment win over the file).

use std::{
    collections::{BTreeMap, HashSet},
    net::{IpAddr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use bpf::CtLifetimes;
use clap::Parser;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use kvstore::{
    ClientConfig, ClusterId, ClusterName, MaxConnectedClusters, TlsConfig, values::NodeName,
};

use crate::conntrack_gc::ConntrackGcConfig;

/// Environment variable names, in one place.
pub mod env {
    pub const CONFIG: &str = "CLUSTERMESH_CONFIG";
    pub const CLUSTER_NAME: &str = "CLUSTERMESH_CLUSTER_NAME";
    pub const CLUSTER_ID: &str = "CLUSTERMESH_CLUSTER_ID";
    pub const MAX_CONNECTED_CLUSTERS: &str = "CLUSTERMESH_MAX_CONNECTED_CLUSTERS";
    pub const NODE_NAME: &str = "CLUSTERMESH_NODE_NAME";
    pub const NODE_IP: &str = "CLUSTERMESH_NODE_IP";
    pub const NODE_IPV6: &str = "CLUSTERMESH_NODE_IPV6";
    pub const ETCD_ENDPOINTS: &str = "CLUSTERMESH_ETCD_ENDPOINTS";
    pub const ETCD_CA: &str = "CLUSTERMESH_ETCD_CA";
    pub const ETCD_CERT: &str = "CLUSTERMESH_ETCD_CERT";
    pub const ETCD_KEY: &str = "CLUSTERMESH_ETCD_KEY";
    pub const CLUSTERMESH_CONFIG_DIR: &str = "CLUSTERMESH_CLUSTERMESH_CONFIG";
    pub const KVSTOREMESH_CACHE: &str = "CLUSTERMESH_KVSTOREMESH_CACHE";
    pub const BPFFS_DIR: &str = "CLUSTERMESH_BPFFS_DIR";
    pub const API_SOCKET: &str = "CLUSTERMESH_API_SOCKET";
    pub const STATE_DIR: &str = "CLUSTERMESH_STATE_DIR";
    pub const DNS_PROXY_PORT: &str = "CLUSTERMESH_DNS_PROXY_PORT";
    pub const TOFQDNS_MIN_TTL: &str = "CLUSTERMESH_TOFQDNS_MIN_TTL";
    pub const TOFQDNS_MAX_IP_PER_HOSTNAME: &str =
        "CLUSTERMESH_TOFQDNS_ENDPOINT_MAX_IP_PER_HOSTNAME";
    pub const TOFQDNS_MAX_NAMES: &str = "CLUSTERMESH_TOFQDNS_ENDPOINT_MAX_NAMES";
    pub const TOFQDNS_PROXY_RESPONSE_MAX_DELAY: &str =
        "CLUSTERMESH_TOFQDNS_PROXY_RESPONSE_MAX_DELAY";
    pub const NODE_NETNS: &str = "CLUSTERMESH_NODE_NETNS";
    pub const POD_CIDR: &str = "CLUSTERMESH_POD_CIDR";
    pub const POD_CIDR_V6: &str = "CLUSTERMESH_POD_CIDR_V6";
    pub const POD_CIDR_POOL: &str = "CLUSTERMESH_POD_CIDR_POOL";
    pub const HEALTH_LISTEN: &str = "CLUSTERMESH_HEALTH_LISTEN";
    pub const SESSION_TTL: &str = "CLUSTERMESH_SESSION_TTL";
    pub const SYNC_TIMEOUT: &str = "CLUSTERMESH_SYNC_TIMEOUT";
    pub const LOG: &str = "CLUSTERMESH_LOG";
    pub const ENABLE_HUBBLE: &str = "CLUSTERMESH_ENABLE_HUBBLE";
    pub const HUBBLE_SOCKET: &str = "CLUSTERMESH_HUBBLE_SOCKET";
    pub const HUBBLE_LISTEN_ADDRESS: &str = "CLUSTERMESH_HUBBLE_LISTEN_ADDRESS";
    pub const HUBBLE_TLS_CERT_FILE: &str = "CLUSTERMESH_HUBBLE_TLS_CERT_FILE";
    pub const HUBBLE_TLS_KEY_FILE: &str = "CLUSTERMESH_HUBBLE_TLS_KEY_FILE";
    pub const HUBBLE_TLS_CLIENT_CA_FILES: &str = "CLUSTERMESH_HUBBLE_TLS_CLIENT_CA_FILES";
    pub const HUBBLE_EVENT_BUFFER_CAPACITY: &str = "CLUSTERMESH_HUBBLE_EVENT_BUFFER_CAPACITY";
    pub const K8S_KUBECONFIG: &str = "CLUSTERMESH_K8S_KUBECONFIG";
    pub const K8S_IN_CLUSTER: &str = "CLUSTERMESH_K8S_IN_CLUSTER";
    pub const K8S_POD_WAIT: &str = "CLUSTERMESH_K8S_POD_WAIT";
    pub const CT_GC_INTERVAL: &str = "CLUSTERMESH_CT_GC_INTERVAL";
    pub const IPCACHE_MAX_ENTRIES: &str = "CLUSTERMESH_IPCACHE_MAX_ENTRIES";
    pub const CT_TCP_LIFETIME: &str = "CLUSTERMESH_CT_TCP_LIFETIME";
    pub const CT_SYN_LIFETIME: &str = "CLUSTERMESH_CT_SYN_LIFETIME";
    pub const CT_CLOSE_LIFETIME: &str = "CLUSTERMESH_CT_CLOSE_LIFETIME";
    pub const CT_ANY_LIFETIME: &str = "CLUSTERMESH_CT_ANY_LIFETIME";
}

/// The shortest conntrack lifetime: the datapath refreshes an entry's
/// last-seen time at most once a second, so a shorter one would expire
/// connections that are busy.
const MIN_CT_LIFETIME: Duration = Duration::from_secs(1);

/// Default API socket of the agent (and of the CNI plugin and debug client).
pub const DEFAULT_API_SOCKET: &str = "/run/clustermesh/agent.sock";

/// The Hubble socket's default: beside the API socket, with its name
/// (`/run/clustermesh/agent.sock` → `/run/clustermesh/agent.hubble.sock`),
/// so that agents with their own API sockets have their own Hubble sockets.
pub fn default_hubble_socket(api_socket: &std::path::Path) -> PathBuf {
    api_socket.with_extension("hubble.sock")
}

/// `clustermesh-agent run` flags.
#[derive(Debug, Clone, Parser)]
pub struct AgentArgs {
    /// YAML file with defaults for any of these flags (keys are the long flag names).
    #[arg(long, env = env::CONFIG)]
    pub config: Option<PathBuf>,
    /// This cluster's name.
    #[arg(long, env = env::CLUSTER_NAME)]
    pub cluster_name: String,
    /// This cluster's ID (1-255, or 1-511 with --max-connected-clusters 511).
    #[arg(long, env = env::CLUSTER_ID)]
    pub cluster_id: u32,
    /// 255 or 511: how many clusters the mesh may hold.
    #[arg(long, env = env::MAX_CONNECTED_CLUSTERS, default_value = "255")]
    pub max_connected_clusters: u32,
    /// This node's name (unique in the cluster; no `/`).
    #[arg(long, env = env::NODE_NAME)]
    pub node_name: String,
    /// This node's IP: other nodes route its pod CIDR through it.
    #[arg(long, env = env::NODE_IP)]
    pub node_ip: IpAddr,
    /// This node's IPv6 address on the node network: other nodes route its
    /// IPv6 pod CIDR through it (an IPv6 route needs an IPv6 next hop).
    /// Without it the node's IPv6 pods are reachable from this node only.
    #[arg(long, env = env::NODE_IPV6)]
    pub node_ipv6: Option<Ipv6Addr>,
    /// The local cluster's etcd, comma-separated URLs.
    #[arg(long, env = env::ETCD_ENDPOINTS, value_delimiter = ',', required = true)]
    pub etcd_endpoints: Vec<String>,
    /// CA bundle for an etcd that uses TLS.
    #[arg(long, env = env::ETCD_CA)]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long, env = env::ETCD_CERT)]
    pub etcd_cert: Option<PathBuf>,
    /// Client key for etcd.
    #[arg(long, env = env::ETCD_KEY)]
    pub etcd_key: Option<PathBuf>,
    /// Directory with one file per remote cluster (file name = cluster name).
    #[arg(long = "clustermesh-config", env = env::CLUSTERMESH_CONFIG_DIR)]
    pub clustermesh_config: Option<PathBuf>,
    /// The cluster runs kvstoremesh: read every connected remote from the
    /// local apiserver's cache. The file (remote cluster config format:
    /// endpoints, trusted-ca-file, cert-file, key-file) says how to reach
    /// the local apiserver, with a `local-<cluster>` certificate; the
    /// configs mirrored from the stored records then name it.
    #[arg(long, env = env::KVSTOREMESH_CACHE, requires = "clustermesh_config")]
    pub kvstoremesh_cache: Option<PathBuf>,
    /// bpffs directory for this node's pinned maps.
    #[arg(long, env = env::BPFFS_DIR, default_value = "/sys/fs/bpf/clustermesh")]
    pub bpffs_dir: PathBuf,
    /// Unix socket of the REST API (endpoints, debug).
    #[arg(long, env = env::API_SOCKET, default_value = DEFAULT_API_SOCKET)]
    pub api_socket: PathBuf,
    /// Where the endpoint snapshot is kept.
    #[arg(long, env = env::STATE_DIR, default_value = "/var/lib/clustermesh")]
    pub state_dir: PathBuf,
    /// The network namespace the node's interfaces live in (a name under
    /// /run/netns or a path); default: the agent's own.
    #[arg(long, env = env::NODE_NETNS)]
    pub node_netns: Option<String>,
    /// A fixed pod CIDR for this node; without it the operator's IPAM assigns one.
    #[arg(long, env = env::POD_CIDR)]
    pub pod_cidr: Option<Ipv4Net>,
    /// A fixed IPv6 pod CIDR for this node (endpoints become dual-stack);
    /// without it the operator's IPAM assigns one if it has an IPv6 pool
    /// (and --pod-cidr is not given).
    #[arg(long, env = env::POD_CIDR_V6)]
    pub pod_cidr_v6: Option<Ipv6Net>,
    /// The local cluster's pod CIDR pools (the operator's `--pod-cidr-pool`),
    /// comma-separated: no remote node's route may overlap them. Default:
    /// none known (the local nodes' CIDRs are protected all the same).
    #[arg(long, env = env::POD_CIDR_POOL, value_delimiter = ',')]
    pub pod_cidr_pool: Vec<IpNet>,
    /// Address for /healthz and /metrics (e.g. 127.0.0.1:9876); off when unset.
    #[arg(long, env = env::HEALTH_LISTEN)]
    pub health_listen: Option<SocketAddr>,
    /// TTL of the agent's etcd session lease: its keys outlive a crash this long.
    #[arg(long, env = env::SESSION_TTL, default_value = "15m", value_parser = humantime::parse_duration)]
    pub session_ttl: Duration,
    /// How long a (re)starting agent waits for every cluster's initial sync
    /// before it programs routes and services from a partial view (stale
    /// entries are removed only once every source has synced).
    #[arg(long, env = env::SYNC_TIMEOUT, default_value = "60s", value_parser = humantime::parse_duration)]
    pub sync_timeout: Duration,
    /// Run the Hubble server (flows of this node, the Observer and Peer services).
    #[arg(long, env = env::ENABLE_HUBBLE, default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_hubble: bool,
    /// The Hubble server's unix socket (always served when Hubble is on);
    /// default: beside the API socket (`agent.sock` → `agent.hubble.sock`).
    #[arg(long, env = env::HUBBLE_SOCKET)]
    pub hubble_socket: Option<PathBuf>,
    /// The Hubble server's TCP address (`:4244` = every address); served
    /// with mutual TLS once the three --hubble-tls-* files are given, else off.
    #[arg(long, env = env::HUBBLE_LISTEN_ADDRESS, default_value = ":4244", value_parser = parse_listen)]
    pub hubble_listen_address: SocketAddr,
    /// The Hubble server's certificate (a `*.<cluster>.hubble-grpc.cilium.io` name).
    #[arg(long, env = env::HUBBLE_TLS_CERT_FILE)]
    pub hubble_tls_cert_file: Option<PathBuf>,
    /// The key of --hubble-tls-cert-file.
    #[arg(long, env = env::HUBBLE_TLS_KEY_FILE)]
    pub hubble_tls_key_file: Option<PathBuf>,
    /// CA bundle that clients of the Hubble server (relays, CLIs) must be issued by.
    #[arg(long, env = env::HUBBLE_TLS_CLIENT_CA_FILES)]
    pub hubble_tls_client_ca_files: Option<PathBuf>,
    /// How many flows the Hubble server keeps: a power of two minus one.
    #[arg(long, env = env::HUBBLE_EVENT_BUFFER_CAPACITY, default_value = "4095")]
    pub hubble_event_buffer_capacity: hubble::ring::Capacity,
    /// Kubernetes mode through this kubeconfig (its current context):
    /// Pods, Namespaces, Services with their endpoints, Nodes and the
    /// CiliumNetworkPolicy CRDs come from the API server instead of etcd's
    /// policy and service-definition keys. Identities stay in etcd.
    #[arg(long, env = env::K8S_KUBECONFIG, conflicts_with = "k8s_in_cluster")]
    pub k8s_kubeconfig: Option<PathBuf>,
    /// Kubernetes mode with the Pod's service account (a DaemonSet).
    #[arg(long, env = env::K8S_IN_CLUSTER, num_args = 0..=1, default_value_t = false,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub k8s_in_cluster: bool,
    /// How long a CNI ADD for a Pod waits for that Pod to appear in the API
    /// (its labels give the endpoint's identity).
    #[arg(long, env = env::K8S_POD_WAIT, default_value = "10s", value_parser = humantime::parse_duration)]
    pub k8s_pod_wait: Duration,
    /// Capacity of the BPF ipcache map: every address of every cluster
    /// (Cilium's 512k by default; a mesh with more remote entries needs
    /// more, about 50 bytes of kernel memory each).
    #[arg(long, env = env::IPCACHE_MAX_ENTRIES, default_value_t = bpf::DEFAULT_IPCACHE_MAX_ENTRIES, value_parser = clap::value_parser!(u32).range(1024..=16 * 1024 * 1024))]
    pub ipcache_max_entries: u32,
    /// Time between two conntrack garbage collection passes; 0 turns the
    /// collector off (entries then leave only when the LRU map is full).
    #[arg(long, env = env::CT_GC_INTERVAL, default_value = "30s", value_parser = humantime::parse_duration)]
    pub ct_gc_interval: Duration,
    /// How long an established TCP connection's conntrack entries live idle.
    #[arg(long, env = env::CT_TCP_LIFETIME, default_value = "6h", value_parser = humantime::parse_duration)]
    pub ct_tcp_lifetime: Duration,
    /// How long a TCP connection's entries live idle before any reply (a
    /// SYN nobody answered).
    #[arg(long, env = env::CT_SYN_LIFETIME, default_value = "60s", value_parser = humantime::parse_duration)]
    pub ct_syn_lifetime: Duration,
    /// How long a TCP connection's entries live after a FIN or RST.
    #[arg(long, env = env::CT_CLOSE_LIFETIME, default_value = "10s", value_parser = humantime::parse_duration)]
    pub ct_close_lifetime: Duration,
    /// How long the entries of any other protocol (UDP, ICMP, SCTP…) live idle.
    #[arg(long, env = env::CT_ANY_LIFETIME, default_value = "60s", value_parser = humantime::parse_duration)]
    pub ct_any_lifetime: Duration,
    /// Port of the DNS proxy (UDP and TCP, on 169.254.42.2 and
    /// fd00::a9fe:2a02 of the node's `lo`), to which endpoints whose egress
    /// rules have DNS rules send their lookups.
    #[arg(long, env = env::DNS_PROXY_PORT, default_value_t = crate::policy_resolver::DEFAULT_DNS_PROXY_PORT)]
    pub dns_proxy_port: u16,
    /// The shortest time an address learned from a DNS answer stays
    /// allowed (a shorter DNS TTL is raised to it); 0 = the answer's TTL.
    #[arg(long, env = env::TOFQDNS_MIN_TTL, default_value = "0s", value_parser = humantime::parse_duration)]
    pub tofqdns_min_ttl: Duration,
    /// The most addresses an endpoint keeps for one name (Cilium's flag).
    #[arg(long, env = env::TOFQDNS_MAX_IP_PER_HOSTNAME, default_value_t = 50)]
    pub tofqdns_endpoint_max_ip_per_hostname: usize,
    /// The most names an endpoint keeps.
    #[arg(long, env = env::TOFQDNS_MAX_NAMES, default_value_t = 4096)]
    pub tofqdns_endpoint_max_names: usize,
    /// How long an answer waits for its addresses to be in the maps before
    /// the proxy releases it anyway (counted).
    #[arg(long, env = env::TOFQDNS_PROXY_RESPONSE_MAX_DELAY, default_value = "1s", value_parser = humantime::parse_duration)]
    pub tofqdns_proxy_response_max_delay: Duration,
}

/// A listen address; `:PORT` means every address.
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let full = match s.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => s.to_owned(),
    };
    full.parse()
        .map_err(|_| format!("invalid listen address {s:?} (expected host:port or :port)"))
}

/// Why the configuration is unusable (the binary exits with 64).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--cluster-name: {0}")]
    ClusterName(#[source] kvstore::ClusterError),
    #[error("--cluster-id: {0}")]
    ClusterId(#[source] kvstore::ClusterError),
    #[error("--cluster-id 0 cannot join a mesh; use 1-{0}")]
    ClusterIdZero(u32),
    #[error("--max-connected-clusters: {0}")]
    Mode(#[source] kvstore::ClusterError),
    #[error("--node-name must be a non-empty name without '/': {0}")]
    NodeName(#[source] kvstore::values::NodeNameError),
    #[error("--etcd-cert and --etcd-key go together, with --etcd-ca")]
    EtcdTls,
    #[error("reading etcd TLS files")]
    EtcdFiles(#[source] kvstore::Error),
    #[error("--pod-cidr {0} is too small (at least /30)")]
    PodCidr(Ipv4Net),
    #[error("--pod-cidr-v6 {0} is too small (at least /126)")]
    PodCidrV6(Ipv6Net),
    #[error("--kvstoremesh-cache: {0}")]
    KvstoremeshCache(String),
    #[error("--node-netns {0} does not exist")]
    NodeNetns(PathBuf),
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error(
        "--hubble-tls-cert-file, --hubble-tls-key-file and --hubble-tls-client-ca-files go together"
    )]
    HubbleTls,
    #[error(
        "--{flag} {} is too short: at least 1s (the datapath refreshes an entry's last-seen time once a second)",
        humantime::format_duration(*.value)
    )]
    CtLifetime { flag: &'static str, value: Duration },
}

/// The validated configuration of an agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub cluster: ClusterName,
    pub cluster_id: ClusterId,
    pub mode: MaxConnectedClusters,
    pub node_name: NodeName,
    pub node_ip: IpAddr,
    /// The node's IPv6 address, where other nodes route its IPv6 pod CIDR.
    pub node_ipv6: Option<Ipv6Addr>,
    pub etcd: ClientConfig,
    pub clustermesh_config_dir: Option<PathBuf>,
    /// How to reach the local kvstoremesh cache (`--kvstoremesh-cache`).
    pub kvstoremesh_cache: Option<kvstore::remote::RemoteClusterConfig>,
    pub bpffs_dir: PathBuf,
    pub api_socket: PathBuf,
    pub state_dir: PathBuf,
    pub node_netns: Option<PathBuf>,
    pub pod_cidr: Option<Ipv4Net>,
    pub pod_cidr_v6: Option<Ipv6Net>,
    /// The local cluster's pod pools.
    pub pod_cidr_pools: Vec<IpNet>,
    pub health_listen: Option<SocketAddr>,
    pub session_ttl: Duration,
    pub sync_timeout: Duration,
    /// `None`: Hubble is off.
    pub hubble: Option<crate::hubble::HubbleConfig>,
    /// `None`: not in Kubernetes mode.
    pub k8s: Option<k8s::KubeAccess>,
    pub k8s_pod_wait: Duration,
    /// Conntrack garbage collection.
    pub conntrack_gc: ConntrackGcConfig,
    /// Capacity of the BPF ipcache map.
    pub ipcache_max_entries: u32,
    /// The DNS proxy's port.
    pub dns_proxy_port: u16,
    /// What learned names may hold.
    pub fqdn_cache: fqdn::CacheConfig,
    pub dns_proxy_response_max_delay: Duration,
}

impl AgentArgs {
    /// Parses the command line, with `--config FILE` values as defaults.
    pub fn parse_with_file(args: Vec<String>) -> Result<Self, clap::Error> {
        let file = args
            .iter()
            .position(|a| a == "--config")
            .and_then(|i| args.get(i + 1).cloned())
            .or_else(|| {
                args.iter()
                    .find_map(|a| a.strip_prefix("--config=").map(str::to_string))
            })
            .or_else(|| std::env::var(env::CONFIG).ok());
        let mut full = vec![
            args.first()
                .cloned()
                .unwrap_or_else(|| "clustermesh-agent".into()),
        ];
        if let Some(path) = &file {
            match file_args(&PathBuf::from(path)) {
                Ok(extra) => full.extend(extra),
                Err(reason) => {
                    return Err(clap::Error::raw(
                        clap::error::ErrorKind::ValueValidation,
                        format!("config file {path}: {reason}\n"),
                    ));
                }
            }
        }
        let from_file: Vec<String> = full[1..].to_vec();
        let file_len = full.len();
        full.extend(args.into_iter().skip(1));
        // Later flags win: command-line values come after the file's. A
        // list flag (`--etcd-endpoints`) may be repeated on the command
        // line; its values add up, and replace the file's.
        let lists: HashSet<String> = <Self as clap::CommandFactory>::command()
            .get_arguments()
            .filter(|a| matches!(a.get_action(), clap::ArgAction::Append))
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect();
        let deduped = dedupe_flags(full, file_len, &lists);
        Self::try_parse_from(&deduped).map_err(|e| match &file {
            // Say where a bad value came from: the file's keys are the flags.
            Some(path) if blames_file(&e, &from_file, &deduped) => {
                let message = e.to_string();
                let first = message.lines().next().unwrap_or_default();
                let first = first.strip_prefix("error: ").unwrap_or(first);
                clap::Error::raw(
                    e.kind(),
                    format!(
                        "config file {path}: {}\n",
                        first.replace("'--", "'").replace("argument '", "key '")
                    ),
                )
            }
            _ => e,
        })
    }

    /// Validates and builds the configuration.
    pub fn into_config(self) -> Result<AgentConfig, ConfigError> {
        let mode = MaxConnectedClusters::from_u32(self.max_connected_clusters)
            .map_err(ConfigError::Mode)?;
        let cluster = ClusterName::new(self.cluster_name).map_err(ConfigError::ClusterName)?;
        let cluster_id = ClusterId::new(self.cluster_id, mode).map_err(ConfigError::ClusterId)?;
        if !cluster_id.is_meshable() {
            return Err(ConfigError::ClusterIdZero(mode.max_cluster_id()));
        }
        let node_name = NodeName::new(self.node_name).map_err(ConfigError::NodeName)?;
        let mut etcd = ClientConfig::new(self.etcd_endpoints);
        match (&self.etcd_ca, &self.etcd_cert, &self.etcd_key) {
            (None, None, None) => {}
            (Some(ca), cert, key) if cert.is_some() == key.is_some() => {
                let tls = TlsConfig::from_optional_files(ca, cert.as_deref(), key.as_deref());
                etcd.tls = Some(tls.map_err(ConfigError::EtcdFiles)?);
            }
            _ => return Err(ConfigError::EtcdTls),
        }
        if let Some(cidr) = self.pod_cidr
            && cidr.prefix_len() > 30
        {
            return Err(ConfigError::PodCidr(cidr));
        }
        if let Some(cidr) = self.pod_cidr_v6
            && cidr.prefix_len() > 126
        {
            return Err(ConfigError::PodCidrV6(cidr));
        }
        let kvstoremesh_cache = self
            .kvstoremesh_cache
            .as_deref()
            .map(kvstore::remote::RemoteClusterConfig::load)
            .transpose()
            .map_err(ConfigError::KvstoremeshCache)?;
        let node_netns = self.node_netns.as_deref().map(crate::plumbing::netns_path);
        if let Some(path) = &node_netns
            && !path.exists()
        {
            return Err(ConfigError::NodeNetns(path.clone()));
        }
        let hubble_tls = match (
            self.hubble_tls_cert_file,
            self.hubble_tls_key_file,
            self.hubble_tls_client_ca_files,
        ) {
            (None, None, None) => None,
            (Some(cert), Some(key), Some(ca)) => Some(certs::TlsFiles::new(cert, key, ca)),
            _ => return Err(ConfigError::HubbleTls),
        };
        for (flag, value) in [
            ("ct-tcp-lifetime", self.ct_tcp_lifetime),
            ("ct-syn-lifetime", self.ct_syn_lifetime),
            ("ct-close-lifetime", self.ct_close_lifetime),
            ("ct-any-lifetime", self.ct_any_lifetime),
        ] {
            if value < MIN_CT_LIFETIME {
                return Err(ConfigError::CtLifetime { flag, value });
            }
        }
        let conntrack_gc = ConntrackGcConfig {
            interval: self.ct_gc_interval,
            lifetimes: CtLifetimes {
                tcp_established: self.ct_tcp_lifetime,
                tcp_syn: self.ct_syn_lifetime,
                tcp_closing: self.ct_close_lifetime,
                any: self.ct_any_lifetime,
            },
        };
        let hubble = self.enable_hubble.then(|| crate::hubble::HubbleConfig {
            socket: self
                .hubble_socket
                .unwrap_or_else(|| default_hubble_socket(&self.api_socket)),
            tcp: hubble_tls.map(|files| (self.hubble_listen_address, files)),
            capacity: self.hubble_event_buffer_capacity,
        });
        Ok(AgentConfig {
            cluster,
            cluster_id,
            mode,
            node_name,
            node_ip: self.node_ip,
            node_ipv6: self.node_ipv6,
            etcd,
            clustermesh_config_dir: self.clustermesh_config,
            kvstoremesh_cache,
            bpffs_dir: self.bpffs_dir,
            api_socket: self.api_socket,
            state_dir: self.state_dir,
            node_netns,
            pod_cidr: self.pod_cidr,
            pod_cidr_v6: self.pod_cidr_v6.map(|c| c.trunc()),
            pod_cidr_pools: self.pod_cidr_pool.iter().map(IpNet::trunc).collect(),
            health_listen: self.health_listen,
            session_ttl: self.session_ttl,
            sync_timeout: self.sync_timeout,
            hubble,
            k8s: match (self.k8s_kubeconfig, self.k8s_in_cluster) {
                (Some(path), _) => Some(k8s::KubeAccess::Kubeconfig(path)),
                (None, true) => Some(k8s::KubeAccess::InCluster),
                (None, false) => None,
            },
            k8s_pod_wait: self.k8s_pod_wait,
            conntrack_gc,
            ipcache_max_entries: self.ipcache_max_entries,
            dns_proxy_port: self.dns_proxy_port,
            fqdn_cache: fqdn::CacheConfig {
                min_ttl: self.tofqdns_min_ttl,
                max_ips_per_name: self.tofqdns_endpoint_max_ip_per_hostname,
                max_names_per_endpoint: self.tofqdns_endpoint_max_names,
            },
            dns_proxy_response_max_delay: self.tofqdns_proxy_response_max_delay,
        })
    }
}

/// The YAML file as `--key value` arguments.
fn file_args(path: &PathBuf) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let map: BTreeMap<String, serde_norway::Value> =
        serde_norway::from_str(&text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (key, value) in map {
        if key == "config" {
            continue;
        }
        let text = match value {
            serde_norway::Value::String(s) => s,
            serde_norway::Value::Number(n) => n.to_string(),
            serde_norway::Value::Bool(b) => b.to_string(),
            serde_norway::Value::Sequence(items) => items
                .iter()
                .map(|v| match v {
                    serde_norway::Value::String(s) => s.clone(),
                    other => serde_norway::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            other => return Err(format!("{key}: unsupported value {other:?}")),
        };
        out.push(format!("--{key}"));
        out.push(text);
    }
    Ok(out)
}

/// Keeps only the last occurrence of each `--flag value` pair (the file's
/// values, the first `file_len - 1` arguments after the program, come
/// first, so the command line wins), except for the flags in `lists`: those
/// keep every occurrence of the command line, or else the file's. `--config`
/// is dropped.
fn dedupe_flags(args: Vec<String>, file_len: usize, lists: &HashSet<String>) -> Vec<String> {
    // (flag, value, from the file)
    let mut pairs: Vec<(String, Option<String>, bool)> = Vec::new();
    let mut iter = args.into_iter();
    let program = iter.next().unwrap_or_default();
    let mut rest: Vec<String> = iter.collect();
    let file_args = file_len.saturating_sub(1);
    let total = rest.len();
    rest.reverse();
    while let Some(arg) = rest.pop() {
        // The popped argument's position among those after the program.
        let file = total - rest.len() - 1 < file_args;
        if let Some((flag, value)) = arg.split_once('=').filter(|_| arg.starts_with("--")) {
            pairs.push((flag.to_string(), Some(value.to_string()), file));
        } else if arg.starts_with("--") {
            let value = if rest.last().is_some_and(|next| !next.starts_with("--")) {
                rest.pop()
            } else {
                None
            };
            pairs.push((arg, value, file));
        } else {
            pairs.push((arg, None, file));
        }
    }
    let on_command_line: HashSet<String> = pairs
        .iter()
        .filter(|(_, _, file)| !file)
        .map(|(flag, _, _)| flag.clone())
        .collect();
    let mut seen = HashSet::new();
    let mut kept: Vec<(String, Option<String>)> = pairs
        .into_iter()
        .rev()
        .filter(|(flag, _, file)| {
            if flag == "--config" {
                return false;
            }
            if !flag.starts_with("--") {
                return true;
            }
            if lists.contains(flag) {
                return !(*file && on_command_line.contains(flag));
            }
            seen.insert(flag.clone())
        })
        .map(|(flag, value, _)| (flag, value))
        .collect();
    kept.reverse();
    let mut out = vec![program];
    for (flag, value) in kept {
        out.push(flag);
        out.extend(value);
    }
    out
}

/// Whether a parse error is about a flag that came from the config file
/// (and was not given again on the command line).
fn blames_file(e: &clap::Error, from_file: &[String], parsed: &[String]) -> bool {
    let text = e.to_string();
    from_file
        .iter()
        .filter(|a| a.starts_with("--"))
        .map(|a| a.split('=').next().unwrap_or(a))
        .any(|flag| {
            let named = text.contains(&format!("'{flag}")) || text.contains(&format!("'{flag} "));
            named && parsed.iter().filter(|p| p.starts_with(flag)).count() <= 1
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        std::iter::once("clustermesh-agent")
            .chain(list.iter().copied())
            .map(String::from)
            .collect()
    }

    const BASE: &[&str] = &[
        "--cluster-name",
        "c1",
        "--cluster-id",
        "1",
        "--node-name",
        "n1",
        "--node-ip",
        "192.168.0.1",
        "--etcd-endpoints",
        "http://127.0.0.1:2379",
    ];

    #[test]
    fn parses_and_validates() {
        let c = AgentArgs::parse_with_file(args(BASE))
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(c.cluster.as_str(), "c1");
        assert_eq!(c.session_ttl, Duration::from_secs(900));
        let bad = |extra: &[&str]| {
            let mut a = BASE.to_vec();
            a.extend(extra);
            AgentArgs::parse_with_file(args(&a))
                .unwrap()
                .into_config()
                .unwrap_err()
                .to_string()
        };
        assert!(bad(&["--cluster-id", "0"]).contains("cannot join a mesh"));
        assert!(bad(&["--cluster-id", "300"]).contains("out of range"));
        assert!(bad(&["--cluster-name", "C1"]).contains("invalid"));
        assert!(bad(&["--etcd-cert", "/x"]).contains("go together"));
        assert!(bad(&["--pod-cidr", "10.0.0.0/31"]).contains("too small"));
        assert!(bad(&["--pod-cidr-v6", "fd00::/127"]).contains("--pod-cidr-v6"));
        let mut dual = BASE.to_vec();
        dual.extend([
            "--pod-cidr-v6",
            "fd10:1:0:1::5/64",
            "--node-ipv6",
            "fd00::11",
        ]);
        let c = AgentArgs::parse_with_file(args(&dual))
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(
            c.pod_cidr_v6.map(|n| n.to_string()).as_deref(),
            Some("fd10:1:0:1::/64")
        );
        assert_eq!(c.node_ipv6, Some("fd00::11".parse().unwrap()));
        assert!(bad(&["--node-netns", "no-such-ns-for-test"]).contains("does not exist"));
    }

    #[test]
    fn file_values_are_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.yaml");
        std::fs::write(&file, "cluster-name: c2\ncluster-id: 2\nnode-name: from-file\nnode-ip: 10.0.0.1\netcd-endpoints: [http://a:1, http://b:2]\nsync-timeout: 5s\n").unwrap();
        let a = AgentArgs::parse_with_file(args(&[
            "--config",
            file.to_str().unwrap(),
            "--node-name",
            "from-flag",
        ]))
        .unwrap();
        assert_eq!(a.node_name, "from-flag", "flags win over the file");
        assert_eq!(a.cluster_name, "c2");
        assert_eq!(a.etcd_endpoints, ["http://a:1", "http://b:2"]);
        assert_eq!(a.sync_timeout, Duration::from_secs(5));

        // Several etcd members: comma-separated or a repeated flag, which
        // replace the file's list.
        let a = AgentArgs::parse_with_file(args(&[
            "--config",
            file.to_str().unwrap(),
            "--etcd-endpoints",
            "http://c:3,http://d:4",
            "--etcd-endpoints=http://e:5",
        ]))
        .unwrap();
        assert_eq!(a.etcd_endpoints, ["http://c:3", "http://d:4", "http://e:5"]);
        let a = AgentArgs::parse_with_file(args(&[
            "--cluster-name=c2",
            "--cluster-id=2",
            "--node-name=n",
            "--node-ip=10.0.0.1",
            "--etcd-endpoints=http://a:1",
            "--etcd-endpoints=http://b:2",
            "--etcd-endpoints=http://c:3",
        ]))
        .unwrap();
        assert_eq!(a.etcd_endpoints, ["http://a:1", "http://b:2", "http://c:3"]);
        let config = a.into_config().unwrap();
        assert_eq!(config.etcd.endpoints.len(), 3);
    }

    #[test]
    fn bad_file_values_name_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.yaml");
        let path = file.to_str().unwrap();
        let parse = |body: &str, extra: &[&str]| {
            std::fs::write(&file, body).unwrap();
            let mut a = vec!["--config", path];
            a.extend(extra);
            AgentArgs::parse_with_file(args(&a))
                .unwrap_err()
                .to_string()
        };
        let base =
            "cluster-name: c2\nnode-name: n\nnode-ip: 10.0.0.1\netcd-endpoints: [http://a:1]\n";
        let e = parse(&format!("{base}cluster-id: abc\n"), &[]);
        assert!(
            e.contains(&format!("config file {path}")) && e.contains("'cluster-id"),
            "{e}"
        );
        let e = parse(&format!("{base}cluster-id: 2\nbogus: 1\n"), &[]);
        assert!(
            e.contains(&format!("config file {path}")) && e.contains("'bogus'"),
            "{e}"
        );
        // A bad flag on the command line is the command line's, not the file's.
        let e = parse(&format!("{base}cluster-id: 2\n"), &["--session-ttl", "x"]);
        assert!(!e.contains("config file"), "{e}");
    }

    #[test]
    fn conntrack_flags_default_to_the_gc_config_defaults_and_refuse_short_lifetimes() {
        let c = AgentArgs::parse_with_file(args(BASE))
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(c.conntrack_gc, ConntrackGcConfig::default());
        let mut a = BASE.to_vec();
        a.extend([
            "--ct-gc-interval",
            "0",
            "--ct-tcp-lifetime",
            "1h",
            "--ct-syn-lifetime",
            "5s",
            "--ct-close-lifetime",
            "2s",
            "--ct-any-lifetime",
            "90s",
        ]);
        let c = AgentArgs::parse_with_file(args(&a))
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(
            c.conntrack_gc,
            ConntrackGcConfig {
                interval: Duration::ZERO,
                lifetimes: CtLifetimes {
                    tcp_established: Duration::from_secs(3600),
                    tcp_syn: Duration::from_secs(5),
                    tcp_closing: Duration::from_secs(2),
                    any: Duration::from_secs(90),
                },
            }
        );
        let mut a = BASE.to_vec();
        a.extend(["--ct-close-lifetime", "500ms"]);
        let e = AgentArgs::parse_with_file(args(&a))
            .unwrap()
            .into_config()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--ct-close-lifetime 500ms is too short"), "{e}");
    }

    #[test]
    fn durations_are_humantime() {
        let mut a = BASE.to_vec();
        a.extend(["--session-ttl", "500ms", "--sync-timeout", "1m30s"]);
        let a = AgentArgs::parse_with_file(args(&a)).unwrap();
        assert_eq!(a.session_ttl, Duration::from_millis(500));
        assert_eq!(a.sync_timeout, Duration::from_secs(90));
    }
}
