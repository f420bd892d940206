//! Connecting clusters, through the product: each cluster's admin
//! descriptor, as `clustermesh cluster export` writes one for a cluster on
//! real hosts, and [`cluster_setup::connection`], which checks against the
//! live clusters and stores each side's record in its own etcd. Every
//! agent mirrors the record into its own config directory; with
//! kvstoremesh, kvstoremesh mirrors it (to reach the remote) and the agents
//! mirror a file naming their own apiserver's cache (`--kvstoremesh-cache`).

use anyhow::{Context, Result};
use cluster_setup::{
    ClientCert, ClusterAdminDescriptor, ConnectError, ConnectMode, DESCRIPTOR_VERSION, EtcdAccess,
    Progress, connection,
};
use kvstore::{StoreValue, keys, values::RemoteClusterRecord};

use super::{
    Mesh,
    admin::{admin_client, runtime},
};

impl Mesh {
    /// Checks that `from`'s agents can use `to`, then connects them (and,
    /// bidirectionally, the reverse). Returns what was checked.
    pub fn connect(&mut self, from: &str, to: &str, bidirectional: bool) -> Result<Vec<String>> {
        self.state.distinct_clusters("connect", from, to)?;
        let (a, b) = (self.admin_descriptor(from)?, self.admin_descriptor(to)?);
        let ca = crate::pki::ca(self.state.ca_cert.parent().expect("pki dir"))?;
        let mut checks = Vec::new();
        runtime()?
            .block_on(connection::connect(
                &a,
                &b,
                connect_mode(bidirectional),
                &ca,
                &mut |p| checks.push(line(p)),
            ))
            .map_err(from_connect_error)?;
        self.record_remote(from, to)?;
        if bidirectional {
            self.record_remote(to, from)?;
        }
        self.state.save()?;
        Ok(checks)
    }

    /// Disconnects: the stored records go (the agents remove their mirrored
    /// files and drain that cluster's entries), and so do the config files
    /// the harness wrote itself.
    pub fn disconnect(&mut self, from: &str, to: &str, bidirectional: bool) -> Result<()> {
        self.state.distinct_clusters("disconnect", from, to)?;
        let pairs: Vec<(&str, &str)> = if bidirectional {
            vec![(from, to), (to, from)]
        } else {
            vec![(from, to)]
        };
        // The files the harness wrote itself (kvstoremesh, a test's own).
        let mut files = Vec::new();
        for (a, b) in &pairs {
            let c = self.state.cluster(a)?;
            let dirs = c
                .nodes
                .iter()
                .map(|n| n.clustermesh_dir.clone())
                .chain(c.kvstoremesh.as_ref().map(|k| k.config_dir.clone()));
            // Not the agents' mirrored files: the agents remove those.
            files.extend(dirs.map(|d| d.join(b)).filter(|f| {
                std::fs::read_to_string(f).is_ok_and(|t| !RemoteClusterRecord::is_mirrored(&t))
            }));
        }
        // The records first: when they cannot go, nothing changes.
        let stored = runtime()?.block_on(connection::disconnect(
            &self.admin_descriptor(from)?,
            &self.admin_descriptor(to)?,
            connect_mode(bidirectional),
        ));
        match stored {
            Ok(_) => {}
            Err(ConnectError::Refused(_)) if !files.is_empty() => {}
            Err(e) => return Err(from_connect_error(e)),
        }
        for file in files {
            std::fs::remove_file(&file).with_context(|| format!("remove {}", file.display()))?;
        }
        for (a, b) in pairs {
            self.state.cluster_mut(a)?.remotes.retain(|r| r != b);
        }
        self.state.save()
    }

    /// Writes the remote config without `connect`'s checks (to test what
    /// agents do with a bad peer): a file in each agent's directory, as an
    /// administrator could write by hand.
    pub fn write_remote_config_unchecked(&mut self, from: &str, to: &str) -> Result<()> {
        self.write_remote_config(from, to)?;
        self.record_remote(from, to)?;
        self.state.save()
    }

    /// Sets how long `from` keeps `to`'s services while `to` is
    /// unreachable, in the stored record: the agents (or kvstoremesh, which
    /// then applies it) mirror it and reconnect.
    pub fn set_service_cache_ttl(&mut self, from: &str, to: &str, ttl: &str) -> Result<()> {
        let c = self.state.cluster(from)?;
        let name = kvstore::ClusterName::new(to)?;
        let key = keys::remote_cluster_record(&name);
        runtime()?.block_on(async {
            let etcd = admin_client(c).await?;
            let kv = etcd
                .get(&key)
                .await?
                .with_context(|| format!("{from} is not connected to {to} ({key} is missing)"))?;
            let mut record = RemoteClusterRecord::decode(to, &kv.value)?;
            record.service_cache_ttl = Some(ttl.to_owned());
            etcd.put(&key, record.encode()).await?;
            anyhow::Ok(())
        })
    }

    /// Cluster `name`'s admin descriptor: what `clustermesh cluster export`
    /// writes for a cluster on real hosts, from the mesh's files.
    pub fn admin_descriptor(&self, name: &str) -> Result<ClusterAdminDescriptor> {
        let c = self.state.cluster(name)?;
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
        };
        let etcd_tls = c
            .etcd_tls
            .as_ref()
            .map(|t| -> Result<_> {
                Ok((
                    read(&t.ca)?,
                    ClientCert {
                        cert: read(&t.admin_cert)?,
                        key: read(&t.admin_key)?,
                    },
                ))
            })
            .transpose()?;
        let pools = c
            .pod_cidr_pools()
            .iter()
            .map(|p| p.parse())
            .collect::<Result<_, _>>()?;
        let descriptor = ClusterAdminDescriptor {
            version: DESCRIPTOR_VERSION,
            kind: ClusterAdminDescriptor::KIND.to_owned(),
            name: c.name.clone(),
            id: c.id,
            max_connected_clusters: kvstore::MaxConnectedClusters::default().as_u32(),
            apiserver_endpoints: vec![c.apiserver_endpoint.clone()],
            ca_bundle: read(&c.certs.ca)?,
            pod_cidr_pools: pools,
            admin: ClientCert {
                cert: read(&c.certs.admin_cert)?,
                key: read(&c.certs.admin_key)?,
            },
            etcd: EtcdAccess {
                endpoints: vec![c.etcd_endpoint.clone()],
                ca_bundle: etcd_tls.as_ref().map(|(ca, _)| ca.clone()),
                client: etcd_tls.map(|(_, client)| client),
            },
        };
        descriptor
            .validate()
            .with_context(|| format!("{name}'s admin descriptor"))?;
        Ok(descriptor)
    }

    /// Records that `from` has remote `to` (the caller saves the state).
    fn record_remote(&mut self, from: &str, to: &str) -> Result<()> {
        let c = self.state.cluster_mut(from)?;
        if !c.remotes.iter().any(|r| r == to) {
            c.remotes.push(to.to_string());
        }
        Ok(())
    }

    /// Writes `from`'s config for remote `to` (atomically) and records the
    /// connection; the caller saves the state. Without kvstoremesh the
    /// agents' file names `to`'s apiserver; with it, kvstoremesh's file
    /// does, and the agents' file names `from`'s own apiserver (with the
    /// `local-<from>` certificate), where kvstoremesh mirrors `to`.
    fn write_remote_config(&mut self, from: &str, to: &str) -> Result<()> {
        let target = self.state.cluster(to)?.clone();
        let c = self.state.cluster_mut(from)?;
        let pools = format!("pod-cidr-pools: [{}]\n", target.pod_cidr_pools().join(", "));
        let mut direct = remote_config_text(
            &target.apiserver_endpoint,
            &c.certs.ca,
            &c.certs.remote_cert,
            &c.certs.remote_key,
        );
        direct.push_str(&pools);
        let agent_dirs: Vec<std::path::PathBuf> =
            c.nodes.iter().map(|n| n.clustermesh_dir.clone()).collect();
        match &c.kvstoremesh {
            None => {
                for dir in &agent_dirs {
                    write_atomically(dir, to, &direct)?;
                }
            }
            Some(k) => {
                // kvstoremesh reaches the remote (and applies the service
                // cache TTL); the agents read its cache on their own
                // apiserver, and still check the remote's routes against
                // its pools.
                write_atomically(&k.config_dir, to, &direct)?;
                let mut cached = super::plan::cache_access_text(c, k);
                cached.push_str(&pools);
                for dir in &agent_dirs {
                    write_atomically(dir, to, &cached)?;
                }
            }
        }
        Ok(())
    }
}

fn connect_mode(bidirectional: bool) -> ConnectMode {
    if bidirectional {
        ConnectMode::Bidirectional
    } else {
        ConnectMode::Unicast
    }
}

/// A cluster that does not answer is the peer's unavailability (exit 69);
/// a refusal is a configuration problem (exit 1).
fn from_connect_error(e: ConnectError) -> anyhow::Error {
    match e {
        ConnectError::Unreachable { .. } => anyhow::Error::new(crate::Unavailable(e.to_string())),
        ConnectError::Refused(reason) => anyhow::anyhow!(reason),
    }
}

/// A check's line, whether it passed or could not be made.
fn line(p: Progress) -> String {
    match p {
        Progress::Done(line) => line,
        Progress::Warning(line) => format!("not checked: {line}"),
    }
}

/// A remote config file's text: where to connect and with which files.
pub(super) fn remote_config_text(
    endpoint: &str,
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> String {
    format!(
        "endpoints:\n- {endpoint}\ntrusted-ca-file: {}\ncert-file: {}\nkey-file: {}\n",
        ca.display(),
        cert.display(),
        key.display()
    )
}

/// Writes `dir/name` through a temporary file and a rename, so that a
/// reader never sees half a file.
fn write_atomically(dir: &std::path::Path, name: &str, text: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    certs::write_atomically(&dir.join(name), text.as_bytes(), 0o644)?;
    Ok(())
}
