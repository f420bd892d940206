//! Connecting clusters: the checks `connect` makes before changing
//! anything, and the remote-cluster config files the agents read.

use anyhow::{Context, Result, bail};
use cluster_setup::{Progress, connect_checks};
use kvstore::{Client, ClientConfig, StoreValue, TlsConfig, keys};

use super::{
    Mesh,
    admin::{admin_client, runtime, with_admin_timeouts},
    node::agent_status,
};
use crate::state::ClusterInfo;

impl Mesh {
    /// Checks that `from`'s agents can use `to`, then writes the remote
    /// config (and, bidirectionally, the reverse). Returns what was checked.
    pub fn connect(&mut self, from: &str, to: &str, bidirectional: bool) -> Result<Vec<String>> {
        self.state.distinct_clusters("connect", from, to)?;
        let mut checks = self.check_connect(from, to)?;
        if bidirectional {
            checks.extend(self.check_connect(to, from)?);
        }
        self.write_remote_config(from, to, None)?;
        if bidirectional {
            self.write_remote_config(to, from, None)?;
        }
        self.state.save()?;
        Ok(checks)
    }

    /// Removes the remote config(s); agents drain that cluster's entries.
    pub fn disconnect(&mut self, from: &str, to: &str, bidirectional: bool) -> Result<()> {
        self.state.distinct_clusters("disconnect", from, to)?;
        let pairs: Vec<(&str, &str)> = if bidirectional {
            vec![(from, to), (to, from)]
        } else {
            vec![(from, to)]
        };
        for (a, b) in pairs {
            let c = self.state.cluster_mut(a)?;
            let _ = std::fs::remove_file(c.clustermesh_dir.join(b));
            if let Some(k) = &c.kvstoremesh {
                let _ = std::fs::remove_file(k.config_dir.join(b));
            }
            c.remotes.retain(|r| r != b);
        }
        self.state.save()
    }

    /// Writes the remote config without `connect`'s checks (to test what
    /// agents do with a bad peer).
    pub fn write_remote_config_unchecked(&mut self, from: &str, to: &str) -> Result<()> {
        self.write_remote_config(from, to, None)?;
        self.state.save()
    }

    /// Sets how long `from`'s agents keep `to`'s services while `to` is
    /// unreachable (rewrites the remote config; agents reconnect).
    pub fn set_service_cache_ttl(&mut self, from: &str, to: &str, ttl: &str) -> Result<()> {
        self.write_remote_config(from, to, Some(ttl))?;
        self.state.save()
    }

    /// Writes `from`'s config for remote `to` (atomically) and records the
    /// connection; the caller saves the state. Without kvstoremesh the
    /// agents' file names `to`'s apiserver; with it, kvstoremesh's file
    /// does, and the agents' file names `from`'s own apiserver (with the
    /// `local-<from>` certificate), where kvstoremesh mirrors `to`.
    fn write_remote_config(
        &mut self,
        from: &str,
        to: &str,
        service_cache_ttl: Option<&str>,
    ) -> Result<()> {
        let target = self.state.cluster(to)?.clone();
        let c = self.state.cluster_mut(from)?;
        let pools = format!("pod-cidr-pools: [{}]\n", target.pod_cidr_pools().join(", "));
        let mut direct = remote_config_text(
            &target.apiserver_endpoint,
            &c.certs.ca,
            &c.certs.remote_cert,
            &c.certs.remote_key,
        );
        if let Some(ttl) = service_cache_ttl {
            direct.push_str(&format!("service-cache-ttl: {ttl}\n"));
        }
        direct.push_str(&pools);
        match &c.kvstoremesh {
            None => write_atomically(&c.clustermesh_dir, to, &direct)?,
            Some(k) => {
                // kvstoremesh reaches the remote (and applies the service
                // cache TTL); the agents read its cache on their own
                // apiserver, and still check the remote's routes against
                // its pools.
                write_atomically(&k.config_dir, to, &direct)?;
                let mut cached = remote_config_text(
                    &c.apiserver_endpoint,
                    &c.certs.ca,
                    &k.local_cert,
                    &k.local_key,
                );
                cached.push_str(&pools);
                write_atomically(&c.clustermesh_dir, to, &cached)?;
            }
        }
        if !c.remotes.iter().any(|r| r == to) {
            c.remotes.push(to.to_string());
        }
        Ok(())
    }

    /// The checks `connect` makes before changing anything: measured here
    /// (mesh.json, the agents' sockets), decided by the product's
    /// [`cluster_setup::connect_checks`], as `connect --from ADMIN.yaml`
    /// decides them.
    fn check_connect(&self, from: &str, to: &str) -> Result<Vec<String>> {
        let a = self.state.cluster(from)?;
        let b = self.state.cluster(to)?;
        let mut checks = vec![connect_checks::names(&a.name, &b.name)?];
        let remote = runtime()?.block_on(read_cluster_config(a, b))?;
        if remote.id != b.id {
            bail!(
                "{to}'s apiserver publishes cluster ID {} but the mesh expects {}",
                remote.id,
                b.id
            );
        }
        let mode = remote.mode().map_err(|e| anyhow::anyhow!("{to}: {e}"))?;
        // Our own mode, as our apiserver publishes it in our etcd.
        let own = runtime()?.block_on(async {
            let name = kvstore::ClusterName::new(a.name.as_str())?;
            let kv = admin_client(a)
                .await?
                .get(&keys::cluster_config(&name))
                .await?
                .with_context(|| format!("{from} publishes no cilium/cluster-config/{from}"))?;
            anyhow::Ok(kvstore::values::ClusterConfig::decode(&a.name, &kv.value)?)
        })?;
        let own_mode = own.mode().map_err(|e| anyhow::anyhow!("{from}: {e}"))?;
        checks.push(connect_checks::ids(
            (&a.name, own.id),
            (&b.name, remote.id),
            own_mode,
        )?);
        checks.push(connect_checks::modes((from, own_mode), (to, mode))?);
        checks.push(format!("{from}'s remote certificate is accepted by {to}'s apiserver and {to}'s server certificate is trusted (mutual TLS)"));
        let pools = |c: &ClusterInfo| -> Result<Vec<ipnet::IpNet>> {
            Ok(c.pod_cidr_pools()
                .iter()
                .map(|p| p.parse())
                .collect::<Result<_, _>>()?)
        };
        checks.push(line(connect_checks::pod_cidrs(
            (from, &pools(a)?),
            (to, &pools(b)?),
        )?));
        let (ids_a, ips_a, ips_b) = runtime()?.block_on(async {
            let ca = admin_client(a).await?;
            let cb = admin_client(b).await?;
            anyhow::Ok((
                ca.count(&keys::identity_masters()).await?,
                ca.count(&keys::ipcache()).await?,
                cb.count(&keys::ipcache()).await?,
            ))
        })?;
        checks.push(connect_checks::identity_headroom(
            from, a.id, own_mode, ids_a,
        )?);
        // Every agent of `from` holds both clusters' entries: the smallest
        // ipcache map among them, as the agents report it from the kernel.
        let capacities: Vec<(String, usize)> = a
            .nodes
            .iter()
            .filter_map(|n| {
                let status = agent_status(n).ok()?;
                Some((n.name.clone(), *status.map_capacity.get("ipcache")?))
            })
            .collect();
        checks.push(line(connect_checks::ipcache_headroom(
            from,
            ips_a + ips_b,
            &capacities,
        )?));
        Ok(checks)
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
fn remote_config_text(
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

/// Reads `to`'s cluster config through its apiserver with `from`'s remote
/// certificate: proves reachability, mutual TLS trust and authorization.
async fn read_cluster_config(
    from: &ClusterInfo,
    to: &ClusterInfo,
) -> Result<kvstore::values::ClusterConfig> {
    let tls = TlsConfig::from_files(
        &from.certs.ca,
        Some((&from.certs.remote_cert, &from.certs.remote_key)),
    )?;
    let config =
        with_admin_timeouts(ClientConfig::new([to.apiserver_endpoint.clone()]).with_tls(tls));
    let client = Client::connect(&config).await.map_err(|e| {
        let message = format!(
            "{} cannot use {}'s apiserver at {} ({}): {}",
            from.name,
            to.name,
            to.apiserver_endpoint,
            e.kind(),
            e.full_message()
        );
        // Nothing answering is the peer's unavailability (exit 69); a TLS or
        // authorization refusal is a configuration problem (exit 1).
        match e.kind() {
            kvstore::ErrorKind::Unreachable
            | kvstore::ErrorKind::ConnectionClosed
            | kvstore::ErrorKind::UpstreamUnavailable
            | kvstore::ErrorKind::Timeout => anyhow::Error::new(crate::Unavailable(message)),
            _ => anyhow::anyhow!(message),
        }
    })?;
    let name = kvstore::ClusterName::new(to.name.as_str())?;
    let kv = client
        .get(&keys::cluster_config(&name))
        .await
        .map_err(|e| anyhow::anyhow!("reading {}'s cluster config: {}", to.name, e.full_message()))?
        .with_context(|| format!("{} publishes no cilium/cluster-config/{}", to.name, to.name))?;
    Ok(kvstore::values::ClusterConfig::decode(&to.name, &kv.value)?)
}
