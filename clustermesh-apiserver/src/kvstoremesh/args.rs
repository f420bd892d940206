use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;

use super::config::{DEFAULT_KVSTOREMESH_HEALTH_LISTEN, KvstoremeshConfig};
use crate::args::{ArgsError, etcd_client_config, local_cluster};

/// The environment variables `clustermesh-apiserver kvstoremesh` reads, one
/// per flag (a flag on the command line wins over its variable).
pub mod kvstoremesh_env {
    pub const CLUSTER_NAME: &str = "CLUSTERMESH_KVSTOREMESH_CLUSTER_NAME";
    pub const CLUSTER_ID: &str = "CLUSTERMESH_KVSTOREMESH_CLUSTER_ID";
    pub const MAX_CONNECTED_CLUSTERS: &str = "CLUSTERMESH_KVSTOREMESH_MAX_CONNECTED_CLUSTERS";
    pub const ETCD_ENDPOINTS: &str = "CLUSTERMESH_KVSTOREMESH_ETCD_ENDPOINTS";
    pub const ETCD_CA: &str = "CLUSTERMESH_KVSTOREMESH_ETCD_CA";
    pub const ETCD_CERT: &str = "CLUSTERMESH_KVSTOREMESH_ETCD_CERT";
    pub const ETCD_KEY: &str = "CLUSTERMESH_KVSTOREMESH_ETCD_KEY";
    pub const CLUSTERMESH_CONFIG: &str = "CLUSTERMESH_KVSTOREMESH_CLUSTERMESH_CONFIG";
    pub const HEALTH_LISTEN: &str = "CLUSTERMESH_KVSTOREMESH_HEALTH_LISTEN";
    pub const PER_CLUSTER_READY_TIMEOUT: &str = "CLUSTERMESH_KVSTOREMESH_PER_CLUSTER_READY_TIMEOUT";
    pub const GLOBAL_READY_TIMEOUT: &str = "CLUSTERMESH_KVSTOREMESH_GLOBAL_READY_TIMEOUT";
    pub const DRAIN_DELAY: &str = "CLUSTERMESH_KVSTOREMESH_DRAIN_DELAY";
    pub const SERVICE_CACHE_TTL: &str = "CLUSTERMESH_KVSTOREMESH_SERVICE_CACHE_TTL";
}

use kvstoremesh_env as env;

/// The command line of `clustermesh-apiserver kvstoremesh`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "clustermesh-apiserver kvstoremesh",
    version,
    about = "Mirrors every remote cluster of the clustermesh config directory into the local etcd (cilium/cache/...), so that local agents read one local endpoint"
)]
pub struct KvstoremeshArgs {
    /// This (local) cluster's name (lowercase letters, digits and '-', at
    /// most 32).
    #[arg(long, env = env::CLUSTER_NAME, value_name = "NAME")]
    pub cluster_name: String,

    /// This cluster's ID in the mesh: 1..=255, or 1..=511 with
    /// --max-connected-clusters 511. No remote may claim it.
    #[arg(long, env = env::CLUSTER_ID, value_name = "ID")]
    pub cluster_id: u32,

    /// Mesh size mode, the same on every cluster of a mesh: 255 or 511.
    #[arg(long, env = env::MAX_CONNECTED_CLUSTERS, value_name = "N", default_value_t = 255)]
    pub max_connected_clusters: u32,

    /// The LOCAL etcd the mirror is written into: http://host:port or
    /// https://host:port, comma-separated.
    #[arg(long, env = env::ETCD_ENDPOINTS, value_name = "URL[,URL…]", value_delimiter = ',', required = true)]
    pub etcd_endpoints: Vec<String>,

    /// CA bundle that signs the local etcd's server certificate (https
    /// endpoints).
    #[arg(long, env = env::ETCD_CA, value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,

    /// Client certificate for the local etcd, when it requires one.
    #[arg(long, env = env::ETCD_CERT, value_name = "FILE", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,

    /// Key of --etcd-cert.
    #[arg(long, env = env::ETCD_KEY, value_name = "FILE", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,

    /// Directory with one file per remote cluster, named after it (YAML:
    /// endpoints, trusted-ca-file, cert-file, key-file, optional
    /// service-cache-ttl), the format agents read. Followed for changes.
    #[arg(long, env = env::CLUSTERMESH_CONFIG, value_name = "DIR")]
    pub clustermesh_config: PathBuf,

    /// Address of plain-HTTP /healthz, /readyz, /metrics and /status.
    #[arg(long, env = env::HEALTH_LISTEN, value_name = "ADDR", default_value_t = DEFAULT_KVSTOREMESH_HEALTH_LISTEN)]
    pub health_listen: SocketAddr,

    /// A remote present at start that has not connected within this long
    /// no longer holds readiness back.
    #[arg(long, env = env::PER_CLUSTER_READY_TIMEOUT, value_name = "DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub per_cluster_ready_timeout: Duration,

    /// Ready after this long, whatever the remotes do.
    #[arg(long, env = env::GLOBAL_READY_TIMEOUT, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    pub global_ready_timeout: Duration,

    /// After a remote's config file is removed: its cluster config is
    /// withdrawn at once, its cache deleted after this grace period (for
    /// local agents to let go). The file's return cancels the drain.
    #[arg(long, env = env::DRAIN_DELAY, value_name = "DURATION", default_value = "3m", value_parser = humantime::parse_duration)]
    pub drain_delay: Duration,

    /// Drop a remote's services and service exports from the cache once it
    /// has been unreachable this long (they return when it answers again).
    /// A remote's own `service-cache-ttl` overrides it. Default: keep them.
    #[arg(long, env = env::SERVICE_CACHE_TTL, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub service_cache_ttl: Option<Duration>,
}

impl KvstoremeshArgs {
    /// Validates the flags and reads the local etcd's TLS files.
    pub fn into_config(self) -> Result<KvstoremeshConfig, ArgsError> {
        let (name, id, mode) = local_cluster(
            &self.cluster_name,
            self.cluster_id,
            self.max_connected_clusters,
        )?;
        let etcd = etcd_client_config(
            &self.etcd_endpoints,
            self.etcd_ca.as_deref(),
            self.etcd_cert.as_deref(),
            self.etcd_key.as_deref(),
        )?;
        let mut config = KvstoremeshConfig::new(name, id, mode, etcd, self.clustermesh_config);
        config.health_listen = self.health_listen;
        config.per_cluster_ready_timeout = self.per_cluster_ready_timeout;
        config.global_ready_timeout = self.global_ready_timeout;
        config.drain_delay = self.drain_delay;
        config.service_cache_ttl = self.service_cache_ttl;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use kvstore::MaxConnectedClusters;

    use super::*;

    fn parse(extra: &[&str]) -> Result<KvstoremeshConfig, String> {
        let mut argv = vec!["kvstoremesh"];
        argv.extend(extra);
        let args = KvstoremeshArgs::try_parse_from(argv).map_err(|e| e.to_string())?;
        args.into_config().map_err(|e| {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            msg
        })
    }

    const OK: &[&str] = &[
        "--cluster-name=c1",
        "--cluster-id=1",
        "--etcd-endpoints=http://127.0.0.1:2379",
        "--clustermesh-config=/etc/clustermesh",
    ];

    #[test]
    fn defaults_follow_cilium() {
        let c = parse(OK).unwrap();
        assert_eq!(c.cluster_name.as_str(), "c1");
        assert_eq!(c.health_listen, DEFAULT_KVSTOREMESH_HEALTH_LISTEN);
        assert_eq!(c.per_cluster_ready_timeout, Duration::from_secs(15));
        assert_eq!(c.global_ready_timeout, Duration::from_secs(600));
        assert_eq!(c.drain_delay, Duration::from_secs(180));
        assert_eq!(c.service_cache_ttl, None);
        assert_eq!(c.clustermesh_config, PathBuf::from("/etc/clustermesh"));
    }

    #[test]
    fn durations_and_modes() {
        let mut argv = OK.to_vec();
        argv.extend([
            "--per-cluster-ready-timeout=2s",
            "--global-ready-timeout=1m30s",
            "--drain-delay=500ms",
            "--service-cache-ttl=1h",
            "--max-connected-clusters=511",
            "--health-listen=127.0.0.1:1",
        ]);
        let c = parse(&argv).unwrap();
        assert_eq!(c.per_cluster_ready_timeout, Duration::from_secs(2));
        assert_eq!(c.global_ready_timeout, Duration::from_secs(90));
        assert_eq!(c.drain_delay, Duration::from_millis(500));
        assert_eq!(c.service_cache_ttl, Some(Duration::from_secs(3600)));
        assert_eq!(c.max_connected_clusters, MaxConnectedClusters::C511);
        assert!(parse(&[OK, &["--drain-delay=soon"]].concat()).is_err());
    }

    #[test]
    fn bad_flags_are_explained_as_for_the_apiserver() {
        let with = |flag: &str| {
            let mut argv: Vec<&str> = OK
                .iter()
                .copied()
                .filter(|a| !a.starts_with(flag.split('=').next().unwrap()))
                .collect();
            argv.push(flag);
            parse(&argv).unwrap_err()
        };
        assert!(with("--cluster-id=0").contains("from 1 to 255"));
        assert!(with("--cluster-name=default").contains("default"));
        assert!(with("--etcd-endpoints=https://e:1").contains("--etcd-ca is missing"));
        assert!(
            parse(&OK[..3])
                .unwrap_err()
                .contains("--clustermesh-config")
        );
    }
}
