use std::{
    fs::File,
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use clap::Parser;
use kvstore::{
    ClientConfig, ClusterError, ClusterId, ClusterName, MaxConnectedClusters, TlsConfig,
};

use crate::config::{Config, DEFAULT_HEALTH_LISTEN, DEFAULT_LISTEN};

/// The environment variables the binary reads, one per flag (a flag on the
/// command line wins over its variable).
pub mod env {
    pub const CLUSTER_NAME: &str = "CLUSTERMESH_APISERVER_CLUSTER_NAME";
    pub const CLUSTER_ID: &str = "CLUSTERMESH_APISERVER_CLUSTER_ID";
    pub const MAX_CONNECTED_CLUSTERS: &str = "CLUSTERMESH_APISERVER_MAX_CONNECTED_CLUSTERS";
    pub const ETCD_ENDPOINTS: &str = "CLUSTERMESH_APISERVER_ETCD_ENDPOINTS";
    pub const ETCD_CA: &str = "CLUSTERMESH_APISERVER_ETCD_CA";
    pub const ETCD_CERT: &str = "CLUSTERMESH_APISERVER_ETCD_CERT";
    pub const ETCD_KEY: &str = "CLUSTERMESH_APISERVER_ETCD_KEY";
    pub const LISTEN: &str = "CLUSTERMESH_APISERVER_LISTEN";
    pub const TLS_CERT: &str = "CLUSTERMESH_APISERVER_TLS_CERT";
    pub const TLS_KEY: &str = "CLUSTERMESH_APISERVER_TLS_KEY";
    pub const TLS_CLIENT_CA: &str = "CLUSTERMESH_APISERVER_TLS_CLIENT_CA";
    pub const HEALTH_LISTEN: &str = "CLUSTERMESH_APISERVER_HEALTH_LISTEN";
}

/// The command line of `clustermesh-apiserver`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "clustermesh-apiserver",
    version,
    about = "The cluster's mutual-TLS front door: the etcd v3 API for remote clusters, with per-cluster authorization and watch fan-out"
)]
pub struct Args {
    /// This cluster's name (lowercase letters, digits and '-', at most 32).
    #[arg(long, env = env::CLUSTER_NAME, value_name = "NAME")]
    pub cluster_name: String,

    /// This cluster's ID in the mesh: 1..=255, or 1..=511 with
    /// --max-connected-clusters 511.
    #[arg(long, env = env::CLUSTER_ID, value_name = "ID")]
    pub cluster_id: u32,

    /// Mesh size mode, the same on every cluster of a mesh: 255 or 511.
    #[arg(long, env = env::MAX_CONNECTED_CLUSTERS, value_name = "N", default_value_t = 255)]
    pub max_connected_clusters: u32,

    /// The cluster's etcd: http://host:port or https://host:port,
    /// comma-separated.
    #[arg(long, env = env::ETCD_ENDPOINTS, value_name = "URL[,URL…]", value_delimiter = ',', required = true)]
    pub etcd_endpoints: Vec<String>,

    /// CA bundle that signs etcd's server certificate (https endpoints).
    #[arg(long, env = env::ETCD_CA, value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,

    /// Client certificate for etcd, when etcd requires one.
    #[arg(long, env = env::ETCD_CERT, value_name = "FILE", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,

    /// Key of --etcd-cert.
    #[arg(long, env = env::ETCD_KEY, value_name = "FILE", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,

    /// Address of the mutual-TLS etcd API.
    #[arg(long, env = env::LISTEN, value_name = "ADDR", default_value_t = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Server certificate (PEM, optionally followed by its chain); reloaded
    /// when it changes.
    #[arg(long, env = env::TLS_CERT, value_name = "FILE")]
    pub tls_cert: PathBuf,

    /// Key of --tls-cert (PEM); reloaded when it changes.
    #[arg(long, env = env::TLS_KEY, value_name = "FILE")]
    pub tls_key: PathBuf,

    /// CA bundle that client certificates must chain to (one CA per
    /// cluster, or old and new during a rotation); reloaded when it changes.
    #[arg(long, env = env::TLS_CLIENT_CA, value_name = "FILE")]
    pub tls_client_ca: PathBuf,

    /// Address of plain-HTTP /healthz, /readyz and /metrics.
    #[arg(long, env = env::HEALTH_LISTEN, value_name = "ADDR", default_value_t = DEFAULT_HEALTH_LISTEN)]
    pub health_listen: SocketAddr,
}

/// A flag value that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("invalid --cluster-name {name:?}")]
    ClusterName {
        name: String,
        #[source]
        source: ClusterError,
    },
    #[error("invalid --cluster-name \"default\": that name is for clusters outside a mesh")]
    DefaultClusterName,
    #[error("invalid --max-connected-clusters {value}")]
    MaxConnectedClusters {
        value: u32,
        #[source]
        source: ClusterError,
    },
    #[error("invalid --cluster-id {id}")]
    ClusterId {
        id: u32,
        #[source]
        source: ClusterError,
    },
    #[error("invalid --cluster-id 0: a meshed cluster needs an ID from 1 to {max}")]
    ZeroClusterId { max: u32 },
    #[error("invalid --etcd-endpoints {endpoint:?}: use http://host:port or https://host:port")]
    EtcdEndpoint { endpoint: String },
    #[error("--etcd-endpoints mixes http:// and https://")]
    MixedEtcdSchemes,
    #[error("--etcd-endpoints use https:// but --etcd-ca is missing")]
    MissingEtcdCa,
    #[error("--etcd-ca, --etcd-cert and --etcd-key need https:// etcd endpoints")]
    EtcdTlsWithHttp,
    #[error("cannot read {flag} {path}")]
    ReadFile {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Args {
    /// Validates the flags and reads the etcd TLS files. (The apiserver's
    /// own certificate files are checked to be readable here and fully
    /// validated when they are loaded.)
    pub fn into_config(self) -> Result<Config, ArgsError> {
        let (cluster_name, cluster_id, mode) = local_cluster(
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

        for (flag, path) in [
            ("--tls-cert", &self.tls_cert),
            ("--tls-key", &self.tls_key),
            ("--tls-client-ca", &self.tls_client_ca),
        ] {
            File::open(path).map_err(|source| ArgsError::ReadFile {
                flag,
                path: path.clone(),
                source,
            })?;
        }
        let mut config = Config::new(
            cluster_name,
            cluster_id,
            mode,
            etcd,
            certs::TlsFiles::new(self.tls_cert, self.tls_key, self.tls_client_ca),
        );
        config.listen = self.listen;
        config.health_listen = self.health_listen;
        Ok(config)
    }
}

/// Validates `--cluster-name`, `--cluster-id` and `--max-connected-clusters`
/// (shared by the apiserver and kvstoremesh): a meshable name, a mode of
/// 255 or 511, an ID from 1 to the mode.
pub(crate) fn local_cluster(
    name: &str,
    id: u32,
    max_connected_clusters: u32,
) -> Result<(ClusterName, ClusterId, MaxConnectedClusters), ArgsError> {
    let cluster_name = ClusterName::new(name).map_err(|source| ArgsError::ClusterName {
        name: name.to_owned(),
        source,
    })?;
    if cluster_name.as_str() == "default" {
        return Err(ArgsError::DefaultClusterName);
    }
    let invalid_mode = ArgsError::MaxConnectedClusters {
        value: max_connected_clusters,
        source: ClusterError::InvalidMaxConnectedClusters(max_connected_clusters),
    };
    // 0 means 255 inside a cluster config, but a flag must say what it means.
    let mode = match max_connected_clusters {
        0 => return Err(invalid_mode),
        n => MaxConnectedClusters::from_u32(n).map_err(|_| invalid_mode)?,
    };
    let cluster_id =
        ClusterId::new(id, mode).map_err(|source| ArgsError::ClusterId { id, source })?;
    if id == 0 {
        return Err(ArgsError::ZeroClusterId { max: mode.as_u32() });
    }
    Ok((cluster_name, cluster_id, mode))
}

/// The etcd client config of `--etcd-endpoints`, `--etcd-ca`, `--etcd-cert`
/// and `--etcd-key` (shared by the apiserver and kvstoremesh): one scheme
/// for every endpoint, a CA for https, TLS files only with https; the files
/// are read now.
pub(crate) fn etcd_client_config(
    endpoints: &[String],
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<ClientConfig, ArgsError> {
    let mut https = None;
    for endpoint in endpoints {
        let secure = if endpoint.starts_with("https://") {
            true
        } else if endpoint.starts_with("http://") {
            false
        } else {
            return Err(ArgsError::EtcdEndpoint {
                endpoint: endpoint.clone(),
            });
        };
        if *https.get_or_insert(secure) != secure {
            return Err(ArgsError::MixedEtcdSchemes);
        }
    }
    let https = https.unwrap_or(false);
    let tls = match (ca, https) {
        (Some(ca), true) => Some(TlsConfig {
            ca_pem: read("--etcd-ca", ca)?,
            identity_pem: match (cert, key) {
                (Some(cert), Some(key)) => {
                    Some((read("--etcd-cert", cert)?, read("--etcd-key", key)?))
                }
                _ => None,
            },
            server_name: None,
        }),
        (None, true) => return Err(ArgsError::MissingEtcdCa),
        (None, false) if cert.is_none() => None,
        (_, false) => return Err(ArgsError::EtcdTlsWithHttp),
    };
    let mut etcd = ClientConfig::new(endpoints.to_vec());
    etcd.tls = tls;
    Ok(etcd)
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, ArgsError> {
    std::fs::read(path).map_err(|source| ArgsError::ReadFile {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        for f in ["s.crt", "s.key", "ca.crt"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        let p = |f: &str| dir.path().join(f).display().to_string();
        let mut argv = vec![
            "clustermesh-apiserver".to_owned(),
            format!("--tls-cert={}", p("s.crt")),
            format!("--tls-key={}", p("s.key")),
            format!("--tls-client-ca={}", p("ca.crt")),
        ];
        argv.extend(
            extra
                .iter()
                .map(|s| s.replace("DIR", &dir.path().display().to_string())),
        );
        let args = Args::try_parse_from(argv).map_err(|e| e.to_string())?;
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
        "--etcd-endpoints=http://127.0.0.1:2379,http://127.0.0.1:2380",
    ];

    #[test]
    fn valid_flags() {
        let config = parse(OK).unwrap();
        assert_eq!(config.cluster_name.as_str(), "c1");
        assert_eq!(config.cluster_id.get(), 1);
        assert_eq!(config.etcd.endpoints.len(), 2);
        assert_eq!(config.listen, DEFAULT_LISTEN);
        let config = parse(&[
            "--cluster-name=c1",
            "--cluster-id=300",
            "--max-connected-clusters=511",
            "--etcd-endpoints=http://e:2379",
            "--listen=127.0.0.1:1234",
        ])
        .unwrap();
        assert_eq!(config.max_connected_clusters, MaxConnectedClusters::C511);
        assert_eq!(config.listen.port(), 1234);
        // Several etcd members: comma-separated or a repeated flag.
        let config = parse(&[
            "--cluster-name=c1",
            "--cluster-id=1",
            "--etcd-endpoints=http://a:1",
            "--etcd-endpoints=http://b:2,http://c:3",
        ])
        .unwrap();
        assert_eq!(
            config.etcd.endpoints,
            ["http://a:1", "http://b:2", "http://c:3"]
        );
    }

    #[test]
    fn bad_flags_are_explained() {
        let err = |extra: &[&str]| parse(extra).unwrap_err();
        assert!(
            err(&[
                "--cluster-name=C1",
                "--cluster-id=1",
                "--etcd-endpoints=http://e:1"
            ])
            .contains("invalid --cluster-name \"C1\"")
        );
        assert!(
            err(&[
                "--cluster-name=default",
                "--cluster-id=1",
                "--etcd-endpoints=http://e:1"
            ])
            .contains("default")
        );
        assert!(
            err(&[
                "--cluster-name=c1",
                "--cluster-id=0",
                "--etcd-endpoints=http://e:1"
            ])
            .contains("from 1 to 255")
        );
        assert!(
            err(&[
                "--cluster-name=c1",
                "--cluster-id=256",
                "--etcd-endpoints=http://e:1"
            ])
            .contains("out of range")
        );
        assert!(
            err(&[
                "--cluster-name=c1",
                "--cluster-id=1",
                "--max-connected-clusters=100",
                "--etcd-endpoints=http://e:1"
            ])
            .contains("255 or 511")
        );
        assert!(
            err(&[
                "--cluster-name=c1",
                "--cluster-id=1",
                "--etcd-endpoints=e:1"
            ])
            .contains("http://host:port")
        );
        assert!(
            err(&[
                "--cluster-name=c1",
                "--cluster-id=1",
                "--etcd-endpoints=https://e:1"
            ])
            .contains("--etcd-ca is missing")
        );
        assert!(
            err(&[
                "--cluster-name=c1",
                "--cluster-id=1",
                "--etcd-endpoints=https://e:1",
                "--etcd-ca=DIR/nope"
            ])
            .contains("cannot read --etcd-ca")
        );
        assert!(
            err(&[
                "--cluster-name=c1",
                "--cluster-id=1",
                "--etcd-endpoints=http://e:1",
                "--etcd-ca=DIR/ca.crt"
            ])
            .contains("need https://")
        );
        assert!(
            err(&[
                "--cluster-name=c1",
                "--cluster-id=1",
                "--etcd-endpoints=http://e:1",
                "--etcd-cert=DIR/s.crt"
            ])
            .contains("--etcd-key")
        );
        assert!(err(&["--cluster-id=1", "--etcd-endpoints=http://e:1"]).contains("--cluster-name"));
    }
}
