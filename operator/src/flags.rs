use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use ipnet::IpNet;
use kvstore::{
    ClientConfig, ClusterError, ClusterId, ClusterName, MaxConnectedClusters, TlsConfig,
};

use k8s::KubeAccess;

use crate::{
    cidr_pool::{CidrPool, CidrPoolError, IpFamily},
    config::{KubernetesConfig, OperatorConfig},
    ipam_reconciler::IpamConfig,
};

/// Shortest session TTL accepted: etcd grants leases in whole seconds, and
/// the leader renews every sixth of the TTL and steps down a third before it.
const MIN_SESSION_TTL: Duration = Duration::from_secs(3);

/// Why the flags do not make a configuration. The binary exits with 64.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid --cluster-name")]
    ClusterName(#[source] ClusterError),
    #[error("invalid --max-connected-clusters")]
    MaxConnectedClusters(#[source] ClusterError),
    #[error("invalid --cluster-id")]
    ClusterId(#[source] ClusterError),
    #[error("invalid --cluster-id 0: a meshed cluster needs an ID from 1 to {0}")]
    ClusterIdZero(u32),
    #[error("invalid --etcd-endpoints {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("invalid etcd TLS settings: {0}")]
    TlsSettings(&'static str),
    #[error("cannot load the etcd TLS files")]
    TlsFiles(#[source] kvstore::Error),
    #[error("invalid {flag}")]
    Pool {
        flag: &'static str,
        #[source]
        source: CidrPoolError,
    },
    #[error("invalid {flag} {value}: {reason}")]
    Value {
        flag: &'static str,
        value: String,
        reason: &'static str,
    },
}

/// The command line of `clustermesh-operator`. Every flag can also be set
/// through the environment variable shown in `--help`; this struct is the
/// one place that names them.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "clustermesh-operator",
    version,
    about = "The clustermesh operator: leader election, identity garbage collection, heartbeat and pod CIDR IPAM for one cluster"
)]
pub struct Flags {
    /// Name of this cluster (lowercase letters, digits and '-', at most 32 characters).
    #[arg(long, env = "CLUSTERMESH_CLUSTER_NAME", value_name = "NAME")]
    pub cluster_name: String,

    /// ID of this cluster: 0..=255, or 0..=511 with --max-connected-clusters 511.
    #[arg(long, env = "CLUSTERMESH_CLUSTER_ID", value_name = "ID")]
    pub cluster_id: u32,

    /// Size of the mesh: 255 or 511 (how many bits of an identity hold the cluster ID).
    #[arg(
        long,
        env = "CLUSTERMESH_MAX_CONNECTED_CLUSTERS",
        value_name = "N",
        default_value_t = 255
    )]
    pub max_connected_clusters: u32,

    /// etcd endpoints of this cluster, comma-separated (http:// or https://).
    #[arg(
        long,
        env = "CLUSTERMESH_ETCD_ENDPOINTS",
        value_name = "URL[,URL...]",
        value_delimiter = ',',
        required = true
    )]
    pub etcd_endpoints: Vec<String>,

    /// CA bundle (PEM) that signs etcd's server certificate; required for https.
    #[arg(long, env = "CLUSTERMESH_ETCD_CA", value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS with etcd; needs --etcd-key.
    #[arg(long, env = "CLUSTERMESH_ETCD_CERT", value_name = "FILE")]
    pub etcd_cert: Option<PathBuf>,

    /// Client key (PEM) for mutual TLS with etcd; needs --etcd-cert.
    #[arg(long, env = "CLUSTERMESH_ETCD_KEY", value_name = "FILE")]
    pub etcd_key: Option<PathBuf>,

    /// ID of this operator instance, the value of the leader key [default: HOSTNAME-PID].
    #[arg(long, env = "CLUSTERMESH_OPERATOR_ID", value_name = "ID")]
    pub id: Option<String>,

    /// TTL of the operator's etcd session lease, which holds the leader key and
    /// the heartbeat: a crashed leader is replaced within about this time.
    #[arg(long, env = "CLUSTERMESH_OPERATOR_SESSION_TTL", value_name = "DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub session_ttl: Duration,

    /// Time between identity garbage collection rounds; an unused identity is
    /// deleted one to two intervals after its last user went away.
    #[arg(long, env = "CLUSTERMESH_OPERATOR_IDENTITY_GC_INTERVAL", value_name = "DURATION", default_value = "15m", value_parser = humantime::parse_duration)]
    pub identity_gc_interval: Duration,

    /// Identity deletions per minute, at most.
    #[arg(
        long,
        env = "CLUSTERMESH_OPERATOR_IDENTITY_GC_RATE_LIMIT",
        value_name = "N",
        default_value_t = 2500
    )]
    pub identity_gc_rate_limit: u32,

    /// Time between heartbeat writes (cilium/.heartbeat).
    #[arg(long, env = "CLUSTERMESH_OPERATOR_HEARTBEAT_INTERVAL", value_name = "DURATION", default_value = "1m", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,

    /// IPv4 pool that node pod CIDRs are cut from, e.g. 10.1.0.0/16. Without it
    /// (and without --pod-cidr-pool-v6) IPAM is off.
    #[arg(long, env = "CLUSTERMESH_OPERATOR_POD_CIDR_POOL", value_name = "CIDR")]
    pub pod_cidr_pool: Option<IpNet>,

    /// Prefix length of each node's IPv4 pod CIDR.
    #[arg(
        long,
        env = "CLUSTERMESH_OPERATOR_NODE_CIDR_MASK_SIZE",
        value_name = "N",
        default_value_t = 24
    )]
    pub node_cidr_mask_size: u8,

    /// IPv6 pool that node pod CIDRs are cut from, e.g. fd00:1::/48.
    #[arg(
        long,
        env = "CLUSTERMESH_OPERATOR_POD_CIDR_POOL_V6",
        value_name = "CIDR"
    )]
    pub pod_cidr_pool_v6: Option<IpNet>,

    /// Prefix length of each node's IPv6 pod CIDR.
    #[arg(
        long,
        env = "CLUSTERMESH_OPERATOR_NODE_CIDR_MASK_SIZE_V6",
        value_name = "N",
        default_value_t = 64
    )]
    pub node_cidr_mask_size_v6: u8,

    /// How long a node's key must stay gone before its pod CIDRs are released
    /// (a node that comes back within it keeps them).
    #[arg(long, env = "CLUSTERMESH_OPERATOR_IPAM_RELEASE_DELAY", value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub ipam_release_delay: Duration,

    /// Address of the /healthz and /metrics HTTP server.
    #[arg(
        long,
        env = "CLUSTERMESH_OPERATOR_HEALTH_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:9234"
    )]
    pub health_listen: SocketAddr,

    /// Kubernetes mode, through this kubeconfig (its current context): the
    /// leader is elected on a Lease, the policy CRDs are installed, global
    /// Services are exported and policies get a Valid condition.
    #[arg(
        long = "k8s-kubeconfig",
        env = "CLUSTERMESH_K8S_KUBECONFIG",
        value_name = "FILE",
        conflicts_with = "k8s_in_cluster"
    )]
    pub k8s_kubeconfig: Option<PathBuf>,

    /// Kubernetes mode, through the Pod's service account.
    #[arg(long = "k8s-in-cluster", env = "CLUSTERMESH_K8S_IN_CLUSTER")]
    pub k8s_in_cluster: bool,

    /// Namespace of the leader Lease (Kubernetes mode).
    #[arg(
        long = "k8s-namespace",
        env = "CLUSTERMESH_OPERATOR_K8S_NAMESPACE",
        value_name = "NS",
        default_value = "kube-system"
    )]
    pub k8s_namespace: String,

    /// Name of the leader Lease (Kubernetes mode) [default: clustermesh-operator-CLUSTER_NAME].
    #[arg(
        long = "k8s-lease-name",
        env = "CLUSTERMESH_OPERATOR_K8S_LEASE_NAME",
        value_name = "NAME"
    )]
    pub k8s_lease_name: Option<String>,
}

impl Flags {
    /// Validates the flags and reads the TLS files.
    pub fn into_config(self) -> Result<OperatorConfig, ConfigError> {
        let cluster_name =
            ClusterName::new(self.cluster_name.as_str()).map_err(ConfigError::ClusterName)?;
        let mode = MaxConnectedClusters::from_u32(self.max_connected_clusters)
            .map_err(ConfigError::MaxConnectedClusters)?;
        if self.cluster_id == 0 {
            return Err(ConfigError::ClusterIdZero(mode.max_cluster_id()));
        }
        let cluster_id = ClusterId::new(self.cluster_id, mode).map_err(ConfigError::ClusterId)?;
        let etcd = self.etcd()?;
        let mut config = OperatorConfig::new(cluster_name, cluster_id, mode, etcd);
        if let Some(id) = self.id {
            if id.trim().is_empty() {
                return Err(value("--id", &id, "must not be empty"));
            }
            config.id = id;
        }
        if self.session_ttl < MIN_SESSION_TTL {
            return Err(value(
                "--session-ttl",
                humantime::format_duration(self.session_ttl),
                "must be at least 3s",
            ));
        }
        config.session_ttl = self.session_ttl;
        for (flag, d) in [
            ("--identity-gc-interval", self.identity_gc_interval),
            ("--heartbeat-interval", self.heartbeat_interval),
        ] {
            if d.is_zero() {
                return Err(value(flag, "0s", "must be longer than zero"));
            }
        }
        config.identity_gc_interval = self.identity_gc_interval;
        config.heartbeat_interval = self.heartbeat_interval;
        if self.identity_gc_rate_limit == 0 {
            return Err(value("--identity-gc-rate-limit", "0", "must be at least 1"));
        }
        config.identity_gc_rate_limit = self.identity_gc_rate_limit;
        let pool = |flag, family, net: Option<IpNet>, mask| {
            net.map(|n| CidrPool::new(family, n, mask))
                .transpose()
                .map_err(|source| ConfigError::Pool { flag, source })
        };
        let ipv4 = pool(
            "--pod-cidr-pool",
            IpFamily::V4,
            self.pod_cidr_pool,
            self.node_cidr_mask_size,
        )?;
        let ipv6 = pool(
            "--pod-cidr-pool-v6",
            IpFamily::V6,
            self.pod_cidr_pool_v6,
            self.node_cidr_mask_size_v6,
        )?;
        if ipv4.is_some() || ipv6.is_some() {
            let mut ipam = IpamConfig::new(ipv4, ipv6);
            ipam.release_delay = self.ipam_release_delay;
            config.ipam = Some(ipam);
        }
        config.health_listen = self.health_listen;
        let access = match (self.k8s_kubeconfig, self.k8s_in_cluster) {
            (Some(path), _) => Some(KubeAccess::Kubeconfig(path)),
            (None, true) => Some(KubeAccess::InCluster),
            (None, false) => None,
        };
        if let Some(access) = access {
            let mut k8s = KubernetesConfig::new(access, &config.cluster_name);
            if !is_dns_name(&self.k8s_namespace, 63) {
                return Err(value(
                    "--k8s-namespace",
                    &self.k8s_namespace,
                    "is not a namespace name (lowercase letters, digits and '-', at most 63)",
                ));
            }
            k8s.lease_namespace = self.k8s_namespace;
            if let Some(name) = self.k8s_lease_name {
                if !is_dns_name(&name, 253) {
                    return Err(value(
                        "--k8s-lease-name",
                        &name,
                        "is not an object name (lowercase letters, digits, '-' and '.', at most 253)",
                    ));
                }
                k8s.lease_name = name;
            }
            config.kubernetes = Some(k8s);
        } else if self.k8s_lease_name.is_some() {
            return Err(value(
                "--k8s-lease-name",
                self.k8s_lease_name.unwrap_or_default(),
                "needs --k8s-kubeconfig or --k8s-in-cluster",
            ));
        }
        Ok(config)
    }

    fn etcd(&self) -> Result<ClientConfig, ConfigError> {
        let endpoints: Vec<String> = self
            .etcd_endpoints
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(ConfigError::Endpoint {
                endpoint: String::new(),
                reason: "no endpoint given".into(),
            });
        }
        let mut https = false;
        for e in &endpoints {
            let rest = match (e.strip_prefix("http://"), e.strip_prefix("https://")) {
                (Some(r), _) => r,
                (_, Some(r)) => {
                    https = true;
                    r
                }
                _ => {
                    return Err(ConfigError::Endpoint {
                        endpoint: e.clone(),
                        reason: "must start with http:// or https://".into(),
                    });
                }
            };
            if rest.is_empty() {
                return Err(ConfigError::Endpoint {
                    endpoint: e.clone(),
                    reason: "has no host".into(),
                });
            }
        }
        if endpoints.iter().any(|e| e.starts_with("http://")) && https {
            return Err(ConfigError::TlsSettings(
                "mixing http:// and https:// endpoints",
            ));
        }
        let mut config = ClientConfig::new(endpoints);
        match (&self.etcd_ca, https) {
            (Some(ca), true) => {
                if self.etcd_cert.is_some() != self.etcd_key.is_some() {
                    return Err(ConfigError::TlsSettings(
                        "--etcd-cert and --etcd-key must be given together",
                    ));
                }
                let tls = TlsConfig::from_optional_files(
                    ca,
                    self.etcd_cert.as_deref(),
                    self.etcd_key.as_deref(),
                );
                config.tls = Some(tls.map_err(ConfigError::TlsFiles)?);
            }
            (None, true) => {
                return Err(ConfigError::TlsSettings(
                    "https:// endpoints need --etcd-ca",
                ));
            }
            (_, false) => {
                if self.etcd_ca.is_some() || self.etcd_cert.is_some() || self.etcd_key.is_some() {
                    return Err(ConfigError::TlsSettings(
                        "--etcd-ca, --etcd-cert and --etcd-key need https:// endpoints",
                    ));
                }
            }
        }
        Ok(config)
    }
}

/// A DNS-1123 label (`max` 63) or subdomain (`max` 253).
fn is_dns_name(name: &str, max: usize) -> bool {
    let allowed = |c: char| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (max > 63 && c == '.')
    };
    !name.is_empty()
        && name.len() <= max
        && name.chars().all(allowed)
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn value(flag: &'static str, value: impl ToString, reason: &'static str) -> ConfigError {
    ConfigError::Value {
        flag,
        value: value.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<OperatorConfig, String> {
        let mut argv = vec!["clustermesh-operator"];
        for (flag, default) in [
            ("--cluster-name", "c1"),
            ("--cluster-id", "1"),
            ("--etcd-endpoints", "http://127.0.0.1:2379"),
        ] {
            if !args.contains(&flag) {
                argv.extend([flag, default]);
            }
        }
        argv.extend(args);
        let flags = Flags::try_parse_from(argv).map_err(|e| e.to_string())?;
        flags.into_config().map_err(|e| crate::error_chain(&e))
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.session_ttl, Duration::from_secs(15));
        assert_eq!(c.identity_gc_interval, Duration::from_secs(900));
        assert_eq!(c.identity_gc_rate_limit, 2500);
        assert_eq!(c.heartbeat_interval, Duration::from_secs(60));
        assert_eq!(c.health_listen, crate::config::DEFAULT_HEALTH_LISTEN);
        assert!(c.ipam.is_none());
        assert!(c.id.ends_with(&format!("-{}", std::process::id())));
    }

    #[test]
    fn several_etcd_members() {
        let comma = parse(&["--etcd-endpoints", "http://a:1,http://b:2,http://c:3"]).unwrap();
        assert_eq!(
            comma.etcd.endpoints,
            ["http://a:1", "http://b:2", "http://c:3"]
        );
        let repeated = parse(&[
            "--etcd-endpoints",
            "http://a:1",
            "--etcd-endpoints",
            "http://b:2,http://c:3",
        ])
        .unwrap();
        assert_eq!(repeated.etcd.endpoints, comma.etcd.endpoints);
    }

    #[test]
    fn ipam_flags() {
        let c = parse(&[
            "--pod-cidr-pool",
            "10.1.0.0/16",
            "--pod-cidr-pool-v6",
            "fd00:1::/48",
            "--ipam-release-delay",
            "30s",
        ])
        .unwrap();
        let ipam = c.ipam.unwrap();
        assert_eq!(ipam.ipv4.unwrap().mask(), 24);
        assert_eq!(ipam.ipv6.unwrap().mask(), 64);
        assert_eq!(ipam.release_delay, Duration::from_secs(30));
        assert_eq!(
            parse(&["--pod-cidr-pool", "10.1.0.0/16"])
                .unwrap()
                .ipam
                .unwrap()
                .release_delay,
            Duration::from_secs(300)
        );
    }

    #[test]
    fn kubernetes_flags() {
        assert!(parse(&[]).unwrap().kubernetes.is_none());
        let k = parse(&["--k8s-kubeconfig", "/etc/kube.conf"])
            .unwrap()
            .kubernetes
            .unwrap();
        assert_eq!(k.access, KubeAccess::Kubeconfig("/etc/kube.conf".into()));
        assert_eq!(k.lease_namespace, "kube-system");
        assert_eq!(k.lease_name, "clustermesh-operator-c1");
        let k = parse(&[
            "--k8s-in-cluster",
            "--k8s-namespace",
            "mesh",
            "--k8s-lease-name",
            "op.lease",
        ])
        .unwrap()
        .kubernetes
        .unwrap();
        assert_eq!(k.access, KubeAccess::InCluster);
        assert_eq!(
            (k.lease_namespace.as_str(), k.lease_name.as_str()),
            ("mesh", "op.lease")
        );
        let err = parse(&["--k8s-in-cluster", "--k8s-kubeconfig", "/k"]).unwrap_err();
        assert!(err.contains("cannot be used with"), "{err}");
        assert_eq!(
            parse(&["--k8s-in-cluster", "--k8s-namespace", "Kube_System"]).unwrap_err(),
            "invalid --k8s-namespace Kube_System: is not a namespace name (lowercase letters, digits and '-', at most 63)"
        );
        assert_eq!(
            parse(&["--k8s-lease-name", "x"]).unwrap_err(),
            "invalid --k8s-lease-name x: needs --k8s-kubeconfig or --k8s-in-cluster"
        );
    }

    #[test]
    fn clear_errors() {
        let err = |args: &[&str]| parse(args).unwrap_err();
        assert_eq!(
            err(&["--pod-cidr-pool", "fd00::/48"]),
            "invalid --pod-cidr-pool: pool fd00::/48 is not an ipv4 CIDR"
        );
        assert_eq!(
            err(&[
                "--pod-cidr-pool",
                "10.1.0.0/16",
                "--node-cidr-mask-size",
                "8"
            ]),
            "invalid --pod-cidr-pool: node CIDR mask size /8 must be between the pool's /16 and /32"
        );
        assert_eq!(
            err(&["--session-ttl", "1s"]),
            "invalid --session-ttl 1s: must be at least 3s"
        );
        assert_eq!(
            err(&["--etcd-ca", "/nonexistent"]),
            "invalid etcd TLS settings: --etcd-ca, --etcd-cert and --etcd-key need https:// endpoints"
        );
        assert_eq!(
            err(&[
                "--etcd-endpoints",
                "https://x:1",
                "--etcd-ca",
                "/nonexistent/ca.pem"
            ]),
            "cannot load the etcd TLS files: read /nonexistent/ca.pem: No such file or directory (os error 2)"
        );
        assert!(err(&["--cluster-id", "256"]).starts_with("invalid --cluster-id: cluster ID 256"));
        assert!(
            err(&["--cluster-id", "0"]).starts_with("invalid --cluster-id 0: a meshed cluster")
        );
        assert!(
            err(&["--max-connected-clusters", "300"])
                .starts_with("invalid --max-connected-clusters")
        );
        assert!(err(&["--etcd-endpoints", "127.0.0.1:2379"]).contains("must start with http://"));
        assert!(err(&["--session-ttl", "soon"]).contains("--session-ttl"));
    }
}
