use std::time::Duration;

use tracing::info;

use super::{
    config::ConfigFile,
    failure::{Failure, FailureKind},
};
use crate::{client::Client, cluster::ClusterName, keys, value::StoreValue, values::ClusterConfig};

/// How much longer than the probes' period a connection stays silent
/// before a keepalive ping goes out.
const PROBE_MARGIN: Duration = Duration::from_secs(1);

/// Connects to remote cluster `name` as its config file says (mutual TLS,
/// short deadlines), asks its etcd who it is and reads its published
/// `cilium/cluster-config/<name>`. `pinned` is the etcd cluster ID that
/// answered last: it is updated, and a different one is logged (the
/// caller's stores re-list everything anyway). Every failure is classified
/// ([`Failure`]); the config itself is the caller's to check
/// ([`super::ClusterIds::admit`]).
///
/// The caller probes the connection at least every `probe_every`
/// ([`super::probe`]). The HTTP/2 keepalive pings, which find a connection
/// that died without a word, go out only after a longer silence, so the
/// probes' answers keep a healthy connection quiet: with hundreds of
/// remotes, a ping every 2 s to each was a large part of an idle agent's
/// CPU.
pub async fn reach(
    name: &ClusterName,
    file: &ConfigFile,
    pinned: &mut Option<u64>,
    probe_every: Duration,
) -> Result<(Client, ClusterConfig), Failure> {
    let file = file
        .as_ref()
        .map_err(|e| Failure::new(FailureKind::ConfigFileInvalid, e.clone()))?;
    let mut client_config = file
        .client_config()
        .map_err(|e| Failure::new(FailureKind::ConfigFileInvalid, e.full_message()))?;
    client_config.keepalive_interval = client_config
        .keepalive_interval
        .max(probe_every + PROBE_MARGIN);
    let client = Client::connect(&client_config)
        .await
        .map_err(|e| Failure::from_etcd(&e))?;
    let status = client.status().await.map_err(|e| Failure::from_etcd(&e))?;
    if let Some(old) = *pinned
        && old != status.cluster_id
    {
        info!(
            remote = %name,
            old,
            new = status.cluster_id,
            "a different etcd cluster answers; re-listing everything"
        );
    }
    *pinned = Some(status.cluster_id);
    let config = match client.get(&keys::cluster_config(name)).await {
        Ok(Some(kv)) => ClusterConfig::decode(name.as_str(), &kv.value)
            .map_err(|e| Failure::new(FailureKind::ClusterConfigInvalid, e.to_string()))?,
        Ok(None) => {
            return Err(Failure::new(
                FailureKind::ClusterConfigMissing,
                format!(
                    "{} has no cilium/cluster-config/{name} (is its clustermesh-apiserver for this cluster?)",
                    file.endpoints.join(",")
                ),
            ));
        }
        Err(e) => return Err(Failure::from_etcd(&e)),
    };
    Ok((client, config))
}
