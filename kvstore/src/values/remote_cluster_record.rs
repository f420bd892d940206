use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

use crate::{
    cluster::ClusterName,
    value::{DecodeError, InvalidReason, StoreValue, decode_json},
};

/// One remote cluster as the local cluster's administrator connected it
/// (`clustermesh connect --from … --to …`), stored in the LOCAL etcd at
/// `clustermesh/admin/remote-clusters/<remote>` (our extension, outside
/// `cilium/`, so no apiserver role of another cluster ever reads it).
///
/// It holds everything an agent needs to reach the remote, so that no file
/// is copied to the nodes by hand: the remote's apiserver endpoints and the
/// CA bundle of its server certificate, the `remote-<local>` client
/// certificate and key issued for this connection, and the remote's pod
/// CIDR pools. Every agent mirrors it into a file of its clustermesh config
/// directory (the [`crate::remote::RemoteClusterConfig`] format, with the
/// PEM material in files beside it).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoteClusterRecord {
    /// The remote cluster (the key's last segment).
    pub cluster: String,
    /// Its cluster ID, as its apiserver published it when connected.
    pub id: u32,
    /// `https://host:port` URLs of its clustermesh-apiserver.
    pub endpoints: Vec<String>,
    /// PEM: the CA bundle its apiserver's certificate chains to.
    pub ca_bundle: String,
    /// PEM: the `remote-<local>` client certificate.
    pub cert: String,
    /// PEM: its key.
    pub key: String,
    /// The remote's pod CIDR pools (routes of its nodes are accepted only
    /// inside them); empty when not known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_cidr_pools: Vec<ipnet::IpNet>,
    /// Drop the remote's services after it has been unreachable this long
    /// (a duration such as `30s`; the config file's `service-cache-ttl`).
    /// `None`: keep them, as Cilium does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_cache_ttl: Option<String>,
}

impl std::fmt::Debug for RemoteClusterRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteClusterRecord")
            .field("cluster", &self.cluster)
            .field("id", &self.id)
            .field("endpoints", &self.endpoints)
            .field("pod_cidr_pools", &self.pod_cidr_pools)
            .finish_non_exhaustive()
    }
}

impl RemoteClusterRecord {
    /// How a config file the agents mirrored from a record begins (the
    /// files someone else wrote are theirs to remove).
    pub const MIRRORED_HEADER: &str = "# Mirrored from clustermesh/admin/remote-clusters/ in the local etcd\n# by the agent or kvstoremesh (`clustermesh connect`); edits here are overwritten.";

    /// Whether a config file's text is one the agents mirrored (by its
    /// first line, which every version wrote alike).
    pub fn is_mirrored(text: &str) -> bool {
        let first = Self::MIRRORED_HEADER.lines().next().unwrap_or_default();
        text.lines().next() == Some(first)
    }

    /// The text of the agent's config file for this remote, naming the
    /// files where the PEM material was written.
    pub fn config_text(&self, ca: &Path, cert: &Path, key: &Path) -> String {
        let mut t = mirrored_text(&self.endpoints, ca, cert, key);
        self.push_pools(&mut t);
        if let Some(ttl) = &self.service_cache_ttl {
            t.push_str(&format!("service-cache-ttl: {ttl}\n"));
        }
        t
    }

    /// The text of an agent's config file for this remote behind
    /// kvstoremesh: the remote is read from the local apiserver's cache
    /// (reached as `local` says); the record gives only the pod CIDR pools
    /// (kvstoremesh applies the service cache TTL).
    pub fn cached_config_text(&self, local: &crate::remote::RemoteClusterConfig) -> String {
        let mut t = mirrored_text(
            &local.endpoints,
            &local.trusted_ca_file,
            &local.cert_file,
            &local.key_file,
        );
        self.push_pools(&mut t);
        t
    }

    fn push_pools(&self, t: &mut String) {
        if !self.pod_cidr_pools.is_empty() {
            let pools: Vec<String> = self.pod_cidr_pools.iter().map(|p| p.to_string()).collect();
            t.push_str(&format!("pod-cidr-pools: [{}]\n", pools.join(", ")));
        }
    }
}

/// A mirrored config file's header and connection lines.
fn mirrored_text(endpoints: &[String], ca: &Path, cert: &Path, key: &Path) -> String {
    let mut t = format!("{}\nendpoints:\n", RemoteClusterRecord::MIRRORED_HEADER);
    for e in endpoints {
        t.push_str(&format!("- {e}\n"));
    }
    t.push_str(&format!(
        "trusted-ca-file: {}\ncert-file: {}\nkey-file: {}\n",
        ca.display(),
        cert.display(),
        key.display()
    ));
    t
}

impl StoreValue for RemoteClusterRecord {
    const KIND: &'static str = "remote cluster record";

    fn decode(key: &str, bytes: &[u8]) -> Result<Self, DecodeError> {
        let record: Self = decode_json(Self::KIND, key, bytes)?;
        if let Err(e) = ClusterName::new(record.cluster.as_str()) {
            return Err(DecodeError::new(
                Self::KIND,
                key,
                InvalidReason::InvalidCluster,
                e,
            ));
        }
        if key != record.cluster {
            return Err(DecodeError::new(
                Self::KIND,
                key,
                InvalidReason::KeyMismatch,
                format!("value is for {}", record.cluster),
            ));
        }
        if record.endpoints.is_empty() || record.cert.is_empty() || record.key.is_empty() {
            return Err(DecodeError::new(
                Self::KIND,
                key,
                InvalidReason::MissingField,
                "endpoints, cert and key are required",
            ));
        }
        if let Some(ttl) = &record.service_cache_ttl
            && let Err(e) = humantime::parse_duration(ttl)
        {
            return Err(DecodeError::new(
                Self::KIND,
                key,
                InvalidReason::Malformed,
                format!("serviceCacheTtl {ttl:?}: {e}"),
            ));
        }
        Ok(record)
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record serializes")
    }

    fn key(&self) -> String {
        self.cluster.clone()
    }
}

/// What one agent says about itself in its cluster's etcd, at
/// `clustermesh/status/agents/<node>` (our extension, leased with the
/// agent's session): what `clustermesh status --from` and `connect`'s
/// headroom check read without reaching the nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentReport {
    pub node: String,
    /// All the agent's sources are synced.
    pub synced: bool,
    /// Entries of each BPF map.
    #[serde(default)]
    pub maps: BTreeMap<String, usize>,
    /// Max entries of each BPF map, as the kernel holds it.
    #[serde(default)]
    pub map_capacity: BTreeMap<String, usize>,
    /// Each remote cluster the agent follows.
    #[serde(default)]
    pub remotes: Vec<AgentRemoteReport>,
}

/// One remote cluster as one agent sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRemoteReport {
    pub name: String,
    pub connected: bool,
    pub ready: bool,
    /// Why it is not ready (`unreachable: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl StoreValue for AgentReport {
    const KIND: &'static str = "agent report";

    fn decode(key: &str, bytes: &[u8]) -> Result<Self, DecodeError> {
        let report: Self = decode_json(Self::KIND, key, bytes)?;
        if key != report.node {
            return Err(DecodeError::new(
                Self::KIND,
                key,
                InvalidReason::KeyMismatch,
                format!("value is for {}", report.node),
            ));
        }
        Ok(report)
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a report serializes")
    }

    fn key(&self) -> String {
        self.node.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> RemoteClusterRecord {
        RemoteClusterRecord {
            cluster: "c2".into(),
            id: 2,
            endpoints: vec!["https://10.0.2.2:32379".into()],
            ca_bundle: "CA".into(),
            cert: "CERT".into(),
            key: "KEY".into(),
            pod_cidr_pools: vec!["10.2.0.0/16".parse().unwrap()],
            service_cache_ttl: None,
        }
    }

    #[test]
    fn a_service_cache_ttl_reaches_the_config_file_and_must_parse() {
        let mut r = record();
        r.service_cache_ttl = Some("2s".into());
        assert_eq!(RemoteClusterRecord::decode("c2", &r.encode()).unwrap(), r);
        let text = r.config_text(
            Path::new("/d/ca.crt"),
            Path::new("/d/c.crt"),
            Path::new("/d/c.key"),
        );
        let c: crate::remote::RemoteClusterConfig = serde_norway::from_str(&text).unwrap();
        assert_eq!(c.service_cache_ttl, Some(std::time::Duration::from_secs(2)));
        assert!(RemoteClusterRecord::is_mirrored(&text));
        assert!(!RemoteClusterRecord::is_mirrored("endpoints: []\n"));
        r.service_cache_ttl = Some("soon".into());
        let e = RemoteClusterRecord::decode("c2", &r.encode()).unwrap_err();
        assert_eq!(e.reason, InvalidReason::Malformed);
        // Without one, the field is not written (older agents read it).
        assert!(
            !String::from_utf8(record().encode())
                .unwrap()
                .contains("serviceCacheTtl")
        );
    }

    #[test]
    fn record_round_trips_and_checks_its_key() {
        let r = record();
        assert_eq!(RemoteClusterRecord::decode("c2", &r.encode()).unwrap(), r);
        let e = RemoteClusterRecord::decode("c3", &r.encode()).unwrap_err();
        assert_eq!(e.reason, InvalidReason::KeyMismatch);
        assert!(!format!("{r:?}").contains("KEY"), "the key is not printed");
    }

    #[test]
    fn config_text_is_what_agents_read() {
        let text = record().config_text(
            Path::new("/d/ca.crt"),
            Path::new("/d/c.crt"),
            Path::new("/d/c.key"),
        );
        let c: crate::remote::RemoteClusterConfig = serde_norway::from_str(&text).unwrap();
        assert_eq!(c.endpoints, ["https://10.0.2.2:32379"]);
        assert_eq!(c.key_file, Path::new("/d/c.key"));
        assert_eq!(
            c.pod_cidr_pools,
            vec!["10.2.0.0/16".parse::<ipnet::IpNet>().unwrap()]
        );
    }
}
