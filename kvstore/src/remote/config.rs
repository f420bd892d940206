//! The clustermesh config directory: one YAML file per remote cluster, named
//! after it (as Cilium mounts them from a Secret). Agents and kvstoremesh
//! read the same format.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
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
    ConfigScanner::default().scan(dir, local)
}

/// Scans a config directory again and again, reading a file only when its
/// metadata (inode, size, modification and change times) differs from the
/// last scan's. With hundreds of remotes, reading every config and TLS file
/// on every scan was most of an idle agent's CPU, and every read woke the
/// directory's own file watch.
///
/// The kernel stamps files with a coarse clock (a few milliseconds), so two
/// writes of the same size in a row can leave the same metadata: a file
/// changed less than [`SETTLE`] ago is read again on every scan.
#[derive(Debug)]
pub struct ConfigScanner {
    files: HashMap<PathBuf, FileRead>,
    settle: Duration,
}

/// How old a file's last change must be for its metadata to stand for its
/// content.
const SETTLE: Duration = Duration::from_secs(2);

impl Default for ConfigScanner {
    fn default() -> Self {
        Self {
            files: HashMap::new(),
            settle: SETTLE,
        }
    }
}

/// A file as last read.
#[derive(Debug)]
struct FileRead {
    stamp: Stamp,
    hash: u64,
    /// For a config file: what it says.
    config: Option<ConfigFile>,
}

/// What changes when a file's content can have changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// Of the file `path` names, through symlinks (a Kubernetes secret
    /// mount swaps its `..data` link: the target's inode changes).
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    /// Changed longer than `settle` before `now` (seconds since the epoch).
    fn settled(&self, now: Duration, settle: Duration) -> bool {
        let at =
            |(s, ns): (i64, i64)| Duration::new(s.max(0) as u64, ns.clamp(0, 999_999_999) as u32);
        at(self.mtime.max(self.ctime)) + settle < now
    }
}

fn hash_of(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl ConfigScanner {
    /// As [`scan`], reading only the files that changed since the last
    /// call.
    pub fn scan(
        &mut self,
        dir: &Path,
        local: &ClusterName,
    ) -> BTreeMap<ClusterName, (ConfigFile, u64)> {
        let mut out = BTreeMap::new();
        let mut seen = HashSet::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let Ok(entries) = std::fs::read_dir(dir) else {
            self.files.clear();
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
            let Some((hash, Some(parsed))) = self.read(&path, true, now) else {
                continue;
            };
            seen.insert(path);
            let mut h = DefaultHasher::new();
            hash.hash(&mut h);
            if let Ok(c) = &parsed {
                for f in [&c.trusted_ca_file, &c.cert_file, &c.key_file] {
                    // A file that cannot be read counts as empty.
                    let file_hash = match self.read(f, false, now) {
                        Some((hash, _)) => hash,
                        None => hash_of(&[]),
                    };
                    file_hash.hash(&mut h);
                    seen.insert(f.clone());
                }
            }
            out.insert(name, (parsed, h.finish()));
        }
        self.files.retain(|path, _| seen.contains(path));
        out
    }

    /// A file's hash (and, for a config file, what it says): from the last
    /// read if its metadata is the same (and settled at `now`), else read
    /// again. `None`: it cannot be read.
    fn read(
        &mut self,
        path: &Path,
        config: bool,
        now: Duration,
    ) -> Option<(u64, Option<ConfigFile>)> {
        let Some(stamp) = Stamp::of(path) else {
            self.files.remove(path);
            return None;
        };
        if let Some(r) = self.files.get(path)
            && r.stamp == stamp
            && stamp.settled(now, self.settle)
            && (!config || r.config.is_some())
        {
            return Some((r.hash, r.config.clone()));
        }
        let Ok(text) = std::fs::read(path) else {
            self.files.remove(path);
            return None;
        };
        let hash = hash_of(&text);
        let parsed = config.then(|| RemoteClusterConfig::parse(path, &text));
        self.files.insert(
            path.to_path_buf(),
            FileRead {
                stamp,
                hash,
                config: parsed.clone(),
            },
        );
        Some((hash, parsed))
    }
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

    #[test]
    fn a_rescan_reads_only_files_whose_metadata_changed() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        std::fs::create_dir(&tls).unwrap();
        let (ca, crt, key) = (tls.join("ca"), tls.join("crt"), tls.join("key"));
        for f in [&ca, &crt, &key] {
            std::fs::write(f, "one").unwrap();
        }
        let body = format!(
            "endpoints: [https://x:1]\ntrusted-ca-file: {}\ncert-file: {}\nkey-file: {}\n",
            ca.display(),
            crt.display(),
            key.display()
        );
        std::fs::write(dir.path().join("c2"), &body).unwrap();
        let local = ClusterName::new("c1").unwrap();
        let c2 = ClusterName::new("c2").unwrap();
        // Files this young are read on every scan: a rewrite of the same
        // size may keep the metadata.
        let mut scanner = ConfigScanner::default();
        let first = scanner.scan(dir.path(), &local)[&c2].1;
        assert_eq!(first, scan(dir.path(), &local)[&c2].1, "as a one-off scan");
        std::fs::write(&ca, "two").unwrap();
        let rewritten = scanner.scan(dir.path(), &local)[&c2].1;
        assert_ne!(rewritten, first);
        assert_eq!(rewritten, scan(dir.path(), &local)[&c2].1);
        // Settled files: what was read last time is used while the metadata
        // stays (a planted hash shows the file was not read again).
        scanner.settle = Duration::ZERO;
        scanner.files.get_mut(&ca).unwrap().hash = 7;
        let planted = scanner.scan(dir.path(), &local)[&c2].1;
        assert_ne!(planted, rewritten);
        std::fs::write(&ca, "three").unwrap();
        assert_eq!(
            scanner.scan(dir.path(), &local)[&c2].1,
            scan(dir.path(), &local)[&c2].1
        );
        // A file that goes is forgotten.
        std::fs::remove_file(dir.path().join("c2")).unwrap();
        assert!(scanner.scan(dir.path(), &local).is_empty());
        assert!(scanner.files.is_empty());
    }
}
