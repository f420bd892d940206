//! The admin's path to a cluster's etcd (the CLI, tests): straight to etcd
//! with the cluster's etcd admin certificate, from sync code.

use std::time::Duration;

use anyhow::{Context, Result};
use kvstore::{Client, ClientConfig, TlsConfig};

use super::Mesh;
use crate::state::ClusterInfo;

/// How long the admin waits for a connection: someone is waiting.
const ADMIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one request of the admin may take.
const ADMIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How many keys [`Mesh::list`] fetches per request.
const LIST_PAGE_SIZE: usize = 1000;

impl Mesh {
    /// Writes a key into a cluster's etcd (as its admin).
    pub fn put(&self, cluster: &str, key: &str, value: Vec<u8>) -> Result<()> {
        let c = self.state.cluster(cluster)?;
        runtime()?.block_on(async {
            admin_client(c).await?.put(key, value).await?;
            anyhow::Ok(())
        })
    }

    /// Deletes a key from a cluster's etcd.
    pub fn delete(&self, cluster: &str, key: &str) -> Result<bool> {
        let c = self.state.cluster(cluster)?;
        runtime()?.block_on(async { Ok(admin_client(c).await?.delete(key).await?) })
    }

    /// Lists keys under a prefix of a cluster's etcd.
    pub fn list(&self, cluster: &str, prefix: &kvstore::KeyPrefix) -> Result<Vec<kvstore::Kv>> {
        let c = self.state.cluster(cluster)?;
        runtime()?
            .block_on(async { Ok(admin_client(c).await?.list(prefix, LIST_PAGE_SIZE).await?.0) })
    }
}

/// A small runtime for the async etcd client from sync code.
pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The admin's timeouts: short, because a person waits.
pub(super) fn with_admin_timeouts(mut config: ClientConfig) -> ClientConfig {
    config.connect_timeout = ADMIN_CONNECT_TIMEOUT;
    config.request_timeout = ADMIN_REQUEST_TIMEOUT;
    config
}

/// A client of a cluster's etcd, straight (the admin's path).
pub async fn admin_client(c: &ClusterInfo) -> Result<Client> {
    let config = etcd_admin_config(c)?;
    Client::connect(&config)
        .await
        .with_context(|| format!("cluster {} etcd", c.name))
}

/// How the admin (the CLI, tests) reaches a cluster's etcd.
pub fn etcd_admin_config(c: &ClusterInfo) -> Result<ClientConfig> {
    let mut config = ClientConfig::new([c.etcd_endpoint.clone()]);
    if let Some(t) = &c.etcd_tls {
        config = config.with_tls(
            TlsConfig::from_files(&t.ca, Some((&t.admin_cert, &t.admin_key)))
                .with_context(|| format!("cluster {}'s etcd admin certificate", c.name))?,
        );
    }
    Ok(with_admin_timeouts(config))
}
