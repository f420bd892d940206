//! The clustermesh config directory: one YAML file per remote cluster, named
//! after it (as Cilium mounts them from a Secret). Agents and kvstoremesh
//! read the same format.

use std::{
    collections::BTreeMap,
    hash::{DefaultHasher, Hash, Hasher},
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{ClientConfig, TlsConfig, cluster::ClusterName, error::Error};
use serde::Deserialize;

/// A config file as read: the config, or why it is not usable.
pub type ConfigFile = Result<RemoteClusterConfig, String>;

/// One remote cluster's config file (YAML).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RemoteClusterConfig {
    pub endpoints: Vec<String>,
    pub trusted_ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Drop the remote's services after it has been unreachable this long
    /// (our extension; default: keep them, as Cilium does).
    #[serde(default, with = "opt_duration")]
    pub service_cache_ttl: Option<Duration>,
    /// The remote's pod CIDR pools (its operator's `--pod-cidr-pool`), as
    /// the one who connected the clusters knows them: its nodes' pod CIDRs
    /// are routed only inside (our extension; default: not known, and any
    /// CIDR outside the local space is accepted).
    #[serde(default)]
    pub pod_cidr_pools: Vec<ipnet::IpNet>,
}

/// A remote that does not answer its first request within this long is
/// tried again later; its keepalives and requests have short deadlines too,
/// so that a dead remote is noticed in seconds.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

impl RemoteClusterConfig {
    /// Reads one config file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text =
            std::fs::read(path).map_err(|e| format!("config file {}: {e}", path.display()))?;
        Self::parse(path, &text)
    }

    /// Parses the text of the config file at `path`.
    fn parse(path: &Path, text: &[u8]) -> Result<Self, String> {
        serde_norway::from_slice(text).map_err(|e| format!("config file {}: {e}", path.display()))
    }

    /// The etcd client config for this remote: its endpoints, mutual TLS
    /// with the named files (read now), and deadlines short enough that a
    /// dead remote is noticed in seconds.
    pub fn client_config(&self) -> Result<ClientConfig, Error> {
        let tls = TlsConfig::from_files(
            &self.trusted_ca_file,
            Some((&self.cert_file, &self.key_file)),
        )?;
        let mut config = ClientConfig::new(self.endpoints.clone()).with_tls(tls);
        config.connect_timeout = CONNECT_TIMEOUT;
        config.keepalive_interval = KEEPALIVE_INTERVAL;
        config.keepalive_timeout = KEEPALIVE_TIMEOUT;
        config.request_timeout = REQUEST_TIMEOUT;
        Ok(config)
    }
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, de::Error};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => humantime::parse_duration(&s)
                .map(Some)
                .map_err(D::Error::custom),
        }
    }
}

/// The config files of `dir`: name → (parsed config or why not,
/// fingerprint of the file and the files it names).
pub fn scan(dir: &Path, local: &ClusterName) -> BTreeMap<ClusterName, (ConfigFile, u64)> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().to_string();
        // Kubernetes secret mounts keep `..data` and timestamped directories.
        if file_name.starts_with('.') {
            continue;
        }
        let Ok(name) = ClusterName::new(file_name.as_str()) else {
            continue;
        };
        if &name == local {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            continue;
        }
        let Ok(text) = std::fs::read(&path) else {
            continue;
        };
        let mut h = DefaultHasher::new();
        text.hash(&mut h);
        let parsed = RemoteClusterConfig::parse(&path, &text);
        if let Ok(c) = &parsed {
            for f in [&c.trusted_ca_file, &c.cert_file, &c.key_file] {
                std::fs::read(f).unwrap_or_default().hash(&mut h);
            }
        }
        out.insert(name, (parsed, h.finish()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file() {
        let c: RemoteClusterConfig = serde_norway::from_str(
            "endpoints:\n- https://127.0.0.1:2379\ntrusted-ca-file: /a/ca.crt\ncert-file: /a/c.crt\nkey-file: /a/c.key\nservice-cache-ttl: 30s\n",
        )
        .unwrap();
        assert_eq!(c.service_cache_ttl, Some(Duration::from_secs(30)));
        assert!(serde_norway::from_str::<RemoteClusterConfig>("endpoint: []").is_err());
    }

    #[test]
    fn scan_skips_own_hidden_and_invalid_names() {
        let dir = tempfile::tempdir().unwrap();
        let body =
            "endpoints: [https://x:1]\ntrusted-ca-file: /nope\ncert-file: /nope\nkey-file: /nope\n";
        for name in ["c1", "c2", "..data", "Bad_Name"] {
            std::fs::write(dir.path().join(name), body).unwrap();
        }
        std::fs::write(dir.path().join("c3"), "not: [valid").unwrap();
        let found = scan(dir.path(), &ClusterName::new("c1").unwrap());
        let names: Vec<&str> = found.keys().map(ClusterName::as_str).collect();
        assert_eq!(names, ["c2", "c3"]);
        let get = |n: &str| &found[&ClusterName::new(n).unwrap()].0;
        assert!(get("c2").is_ok());
        assert!(get("c3").is_err());
    }
}
