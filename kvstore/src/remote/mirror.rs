//! Delivery of remote-cluster configs without copying files to nodes:
//! `clustermesh connect --from … --to …` stores each remote's config
//! (endpoints, CA bundle, the `remote-<local>` certificate and key) in the
//! local etcd under `clustermesh/admin/remote-clusters/<remote>`
//! ([`RemoteClusterRecord`]); every agent mirrors that prefix into its
//! clustermesh config directory, where [`super::RemoteClusters`] picks the
//! files up as if written by hand.
//!
//! For remote `c2` the mirror writes `DIR/.clustermesh-mirror/c2/{ca.crt,
//! client.crt,client.key}` (the key 0600) and then `DIR/c2` naming them,
//! each through a temporary file and a rename. It removes only what it
//! wrote: `DIR/.clustermesh-mirror/owned` lists the names it owns (written
//! before the config file appears, so a crash never orphans one). A file
//! `DIR/c2` it does not own (written by hand, or by the local mesh harness)
//! wins: the record is not mirrored and a warning says so.
//!
//! Behind kvstoremesh ([`ConfigMirror::through_cache`]) the agents read
//! every remote from the local apiserver's cache: their file for `c2` names
//! the local apiserver and its `local-<cluster>` certificate, with `c2`'s
//! pod CIDR pools from the record, and no material of the record is
//! written (only kvstoremesh, mirroring into its own directory, holds the
//! `remote-<local>` key).
//!
//! The records live in the cluster's own etcd, so an etcd that loses its
//! data (wiped and rebuilt empty, or replaced) would take the mesh's
//! connections with it. The mirror therefore removes a config only for a
//! delete it watched (`clustermesh disconnect`): when the etcd's data is
//! lost while the agent runs, it keeps the configs and stores the records
//! it holds again (each only if absent, so the agents of a cluster race
//! harmlessly and a record written since wins). Lost while the agent was
//! down: each record is also kept beside its files
//! (`.clustermesh-mirror/c2/record.json`, 0600), and the etcd holds a mark
//! ([`keys::REMOTE_CLUSTER_RECORDS_MARK`]) once any record was stored; at
//! start, records the mirror owns that an etcd without the mark lacks were
//! lost with its data, not disconnected, and are kept and stored again.
//! (Behind kvstoremesh the agents keep no record: kvstoremesh restores.)

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use super::RemoteClusterConfig;
use crate::{
    Client, ClusterName, Event, StoreValue, WatchStore, WatchStoreConfig, keys,
    values::RemoteClusterRecord,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The mirror's own directory inside the config directory (hidden: the
/// directory scan skips it).
pub(crate) const MIRROR_DIR: &str = ".clustermesh-mirror";
/// The names the mirror owns, one a line.
const OWNED_FILE: &str = "owned";
/// Each mirrored record as stored, beside its files (it holds the key).
const RECORD_FILE: &str = "record.json";

/// Mirrors the stored remote-cluster records into the config directory.
pub struct ConfigMirror {
    /// The local etcd (where the records are).
    pub client: Client,
    /// The clustermesh config directory.
    pub dir: PathBuf,
    pub local: ClusterName,
    /// Read every remote through the local kvstoremesh cache: how to reach
    /// the local apiserver (endpoints, CA, a `local-<cluster>` certificate;
    /// its other fields are not used). `None`: reach each remote's
    /// apiserver directly.
    pub through_cache: Option<RemoteClusterConfig>,
}

impl ConfigMirror {
    /// Follows the records until `shutdown`; the directory follows each
    /// complete view of them (after the first list, then every change).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), tokio::task::JoinError> {
        let config = WatchStoreConfig::new(keys::remote_cluster_records())
            .with_name("remote cluster records")
            .keeping_entries_on_data_loss();
        let (store, mut events) =
            WatchStore::<RemoteClusterRecord>::new(self.client.clone(), config);
        let mut losses = store.stats().data_losses();
        let token = shutdown.child_token();
        let watch = tokio::spawn(store.run(token.clone()));
        let mut records = BTreeMap::new();
        let mut synced = false;
        let mut started = false;
        let mut marked = false;
        let mut shadowed = BTreeSet::new();
        loop {
            // Events first: a restore works from every change received.
            let event = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                e = events.recv() => e,
                changed = losses.changed(), if synced => {
                    if changed.is_err() {
                        break;
                    }
                    self.restore(&records).await;
                    continue;
                }
            };
            match event {
                None => break,
                Some(Event::Upsert { key, value }) => {
                    records.insert(key, value);
                }
                Some(Event::Delete { key }) => {
                    records.remove(&key);
                }
                Some(Event::Synced) => synced = true,
            }
            if synced && events.is_empty() {
                if !started {
                    started = true;
                    self.recover_lost_while_down(&mut records).await?;
                }
                if !marked && !records.is_empty() {
                    marked = self.mark().await;
                }
                let (dir, local, wanted) = (self.dir.clone(), self.local.clone(), records.clone());
                let cache = self.through_cache.clone();
                match tokio::task::spawn_blocking(move || {
                    reconcile(&dir, &local, &wanted, cache.as_ref())
                })
                .await?
                {
                    Ok(now_shadowed) => {
                        for name in now_shadowed.difference(&shadowed) {
                            warn!(remote = %name, dir = %self.dir.display(),
                                "a config file not written by the mirror exists for this remote; \
                                 it wins over the stored record");
                        }
                        shadowed = now_shadowed;
                    }
                    Err(e) => warn!(dir = %self.dir.display(), error = %e,
                        "cannot mirror the stored remote cluster configs"),
                }
            }
        }
        token.cancel();
        let _ = watch.await;
        Ok(())
    }

    /// At the first complete view: the records this node mirrored that the
    /// etcd lacks, when it lacks the mark too, were lost with its data while
    /// the mirror was down: they are kept and stored again.
    async fn recover_lost_while_down(
        &self,
        records: &mut BTreeMap<String, RemoteClusterRecord>,
    ) -> Result<(), tokio::task::JoinError> {
        match self.client.get(keys::REMOTE_CLUSTER_RECORDS_MARK).await {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {}
            Err(e) => {
                warn!(error = %e.full_message(),
                    "cannot read whether remote cluster records were ever stored; \
                     the stored records alone decide");
                return Ok(());
            }
        }
        let dir = self.dir.clone();
        let saved = tokio::task::spawn_blocking(move || saved_records(&dir)).await?;
        let lost: BTreeMap<String, RemoteClusterRecord> = saved
            .into_iter()
            .filter(|(name, _)| !records.contains_key(name))
            .collect();
        if lost.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = lost.keys().map(String::as_str).collect();
        warn!(remotes = ?names,
            "the local etcd holds neither these remote cluster records nor the mark that \
             records were ever stored: it lost its data while this node was down");
        records.extend(lost.clone());
        self.restore(&lost).await;
        Ok(())
    }

    /// Writes the mark that records were stored; returns whether it is there.
    async fn mark(&self) -> bool {
        match self
            .client
            .create(keys::REMOTE_CLUSTER_RECORDS_MARK, "1", None)
            .await
        {
            Ok(_) => true,
            Err(e) => {
                warn!(error = %e.full_message(), "cannot mark that remote cluster records were stored");
                false
            }
        }
    }

    /// Stores again the records the local etcd lost (each only if absent).
    async fn restore(&self, records: &BTreeMap<String, RemoteClusterRecord>) {
        self.mark().await;
        let mut restored = 0;
        for (name, record) in records {
            let Ok(remote) = ClusterName::new(name.as_str()) else {
                continue;
            };
            let key = keys::remote_cluster_record(&remote);
            match self.client.create(&key, record.encode(), None).await {
                Ok(true) => restored += 1,
                Ok(false) => {}
                Err(e) => warn!(remote = %name, error = %e,
                    "the local etcd lost its data; cannot store this remote cluster's record again \
                     (its config stays mirrored; run `clustermesh connect` again)"),
            }
        }
        warn!(
            kept = records.len(),
            restored,
            "the local etcd lost its data: the remote cluster configs stay, \
             and their records were stored again"
        );
    }
}

/// Makes `dir` hold exactly the `wanted` records it owns; returns the
/// remotes whose file is someone else's (left alone).
pub(crate) fn reconcile(
    dir: &Path,
    local: &ClusterName,
    wanted: &BTreeMap<String, RemoteClusterRecord>,
    through_cache: Option<&RemoteClusterConfig>,
) -> std::io::Result<BTreeSet<String>> {
    let mirror = dir.join(MIRROR_DIR);
    let mut owned = read_owned(&mirror);
    let mut shadowed = BTreeSet::new();
    for (name, record) in wanted {
        if name == local.as_str() || ClusterName::new(name.as_str()).is_err() {
            continue;
        }
        let config = dir.join(name);
        if !owned.contains(name) && config.exists() {
            shadowed.insert(name.clone());
            continue;
        }
        if owned.insert(name.clone()) {
            write_owned(&mirror, &owned)?;
        }
        let material = mirror.join(name);
        let text = match through_cache {
            Some(cache) => {
                remove_dir_if_exists(&material)?;
                record.cached_config_text(cache)
            }
            None => {
                std::fs::create_dir_all(&material)?;
                let (ca, cert, key) = (
                    material.join("ca.crt"),
                    material.join("client.crt"),
                    material.join("client.key"),
                );
                write_if_changed(&ca, record.ca_bundle.as_bytes(), 0o644)?;
                write_if_changed(&cert, record.cert.as_bytes(), 0o644)?;
                write_if_changed(&key, record.key.as_bytes(), 0o600)?;
                write_if_changed(&material.join(RECORD_FILE), &record.encode(), 0o600)?;
                record.config_text(&ca, &cert, &key)
            }
        };
        if write_if_changed(&config, text.as_bytes(), 0o644)? {
            info!(remote = %name, file = %config.display(), "remote cluster config mirrored from etcd");
        }
    }
    let gone: Vec<String> = owned
        .iter()
        .filter(|n| !wanted.contains_key(*n))
        .cloned()
        .collect();
    for name in gone {
        remove_if_exists(&dir.join(&name))?;
        remove_dir_if_exists(&mirror.join(&name))?;
        owned.remove(&name);
        write_owned(&mirror, &owned)?;
        info!(remote = %name, "remote cluster config removed (no longer stored in etcd)");
    }
    Ok(shadowed)
}

/// The records saved beside the files the mirror owns.
fn saved_records(dir: &Path) -> BTreeMap<String, RemoteClusterRecord> {
    let mirror = dir.join(MIRROR_DIR);
    read_owned(&mirror)
        .into_iter()
        .filter_map(|name| {
            let bytes = std::fs::read(mirror.join(&name).join(RECORD_FILE)).ok()?;
            let record = RemoteClusterRecord::decode(&name, &bytes).ok()?;
            Some((name, record))
        })
        .collect()
}

fn read_owned(mirror: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(mirror.join(OWNED_FILE))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn write_owned(mirror: &Path, owned: &BTreeSet<String>) -> std::io::Result<()> {
    std::fs::create_dir_all(mirror)?;
    let text: String = owned.iter().map(|n| format!("{n}\n")).collect();
    write_if_changed(&mirror.join(OWNED_FILE), text.as_bytes(), 0o644).map(|_| ())
}

fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn remove_dir_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes `path` through a temporary file and a rename (a reader never sees
/// half a file), unless it already holds `bytes`. Returns whether it wrote.
fn write_if_changed(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    certs::write_atomically(path, bytes, mode)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> RemoteClusterRecord {
        RemoteClusterRecord {
            cluster: name.into(),
            id: 2,
            endpoints: vec!["https://127.0.0.1:1".into()],
            ca_bundle: "CA".into(),
            cert: "CERT".into(),
            key: "KEY".into(),
            pod_cidr_pools: Vec::new(),
            service_cache_ttl: None,
        }
    }

    #[test]
    fn mirrors_records_removes_only_its_own_and_leaves_hand_written_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let local = ClusterName::new("c1").unwrap();
        std::fs::write(dir.join("c3"), "hand written").unwrap();
        let wanted: BTreeMap<String, RemoteClusterRecord> = ["c2", "c3", "c1"]
            .into_iter()
            .map(|n| (n.to_owned(), record(n)))
            .collect();
        let shadowed = reconcile(dir, &local, &wanted, None).unwrap();
        assert_eq!(shadowed, BTreeSet::from(["c3".to_owned()]));
        assert_eq!(
            std::fs::read_to_string(dir.join("c3")).unwrap(),
            "hand written"
        );
        assert!(
            !dir.join("c1").exists(),
            "never a file for the local cluster"
        );
        let found = crate::remote::scan(dir, &local);
        let c2 = found[&ClusterName::new("c2").unwrap()].0.as_ref().unwrap();
        assert_eq!(std::fs::read_to_string(&c2.key_file).unwrap(), "KEY");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&c2.key_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);

        // Nothing stored: the mirror's file goes, the hand-written one stays.
        reconcile(dir, &local, &BTreeMap::new(), None).unwrap();
        assert!(!dir.join("c2").exists());
        assert!(!dir.join(MIRROR_DIR).join("c2").exists());
        assert_eq!(
            std::fs::read_to_string(dir.join("c3")).unwrap(),
            "hand written"
        );
    }

    #[test]
    fn behind_kvstoremesh_the_config_names_the_local_cache_and_no_key_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let local = ClusterName::new("c1").unwrap();
        let mut c2 = record("c2");
        c2.pod_cidr_pools = vec!["10.2.0.0/16".parse().unwrap()];
        c2.service_cache_ttl = Some("30s".into());
        let wanted = BTreeMap::from([("c2".to_owned(), c2)]);
        // First mirrored directly, then behind kvstoremesh.
        reconcile(dir, &local, &wanted, None).unwrap();
        assert!(dir.join(MIRROR_DIR).join("c2/client.key").exists());
        let cache = RemoteClusterConfig {
            endpoints: vec!["https://10.0.0.1:2443".into()],
            trusted_ca_file: "/etc/cm/ca.crt".into(),
            cert_file: "/etc/cm/local.crt".into(),
            key_file: "/etc/cm/local.key".into(),
            service_cache_ttl: None,
            pod_cidr_pools: Vec::new(),
        };
        reconcile(dir, &local, &wanted, Some(&cache)).unwrap();
        let found = crate::remote::scan(dir, &local);
        let config = found[&ClusterName::new("c2").unwrap()].0.as_ref().unwrap();
        assert_eq!(config.endpoints, cache.endpoints);
        assert_eq!(config.cert_file, cache.cert_file);
        assert_eq!(config.key_file, cache.key_file);
        assert_eq!(config.trusted_ca_file, cache.trusted_ca_file);
        assert_eq!(
            config.pod_cidr_pools,
            vec!["10.2.0.0/16".parse::<ipnet::IpNet>().unwrap()]
        );
        assert_eq!(config.service_cache_ttl, None, "kvstoremesh applies it");
        assert!(
            !dir.join(MIRROR_DIR).join("c2").exists(),
            "the remote-<local> key is not left on the node"
        );
        reconcile(dir, &local, &BTreeMap::new(), Some(&cache)).unwrap();
        assert!(!dir.join("c2").exists());
    }
}
