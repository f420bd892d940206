//! What the debug client and status show: plain, serializable views of the
//! agent's state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityView {
    pub id: u32,
    pub labels: String,
}

/// One ipcache entry as programmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpCacheView {
    pub prefix: String,
    pub identity: u32,
    pub host_ip: Option<String>,
}

/// One policy entry of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyEntryView {
    /// 0 = any identity.
    pub identity: u32,
    pub identity_labels: Option<String>,
    /// `any`, `tcp`, `udp`, `icmp`…
    pub protocol: String,
    /// 0 = any port.
    pub port: u16,
}

/// An endpoint's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyView {
    pub endpoint: u32,
    pub enforced: bool,
    pub policies: Vec<String>,
    pub entries: Vec<PolicyEntryView>,
}

/// A service frontend with its backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    pub name: String,
    pub frontend: String,
    pub protocol: String,
    pub backends: Vec<BackendView>,
    pub active_clusters: Vec<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendView {
    pub address: String,
    pub cluster_id: u16,
}

/// Where the agent's data comes from and whether it is complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceView {
    pub name: String,
    pub synced: BTreeMap<String, bool>,
    pub ipcache_entries: usize,
    pub identities: usize,
}

/// A remote cluster's connection (see the remote cluster manager).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteView {
    pub name: String,
    pub connected: bool,
    pub ready: bool,
    pub config: Option<String>,
    pub synced: BTreeMap<String, bool>,
    pub entries: BTreeMap<String, u64>,
    pub invalid: BTreeMap<String, u64>,
    pub last_error: Option<String>,
    pub last_error_kind: Option<String>,
    pub failures: u64,
}

/// The agent as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    pub cluster: String,
    pub cluster_id: u32,
    pub node: String,
    pub node_ip: String,
    pub pod_cidr: Option<String>,
    /// All sources synced (removals of stale entries are written only then).
    pub synced: bool,
    pub sync_timed_out: bool,
    pub endpoints: usize,
    pub maps: BTreeMap<String, usize>,
    /// Max entries of each map as the kernel holds it (`connect` checks
    /// headroom against these).
    #[serde(default)]
    pub map_capacity: BTreeMap<String, usize>,
    pub sources: Vec<SourceView>,
    pub remotes: Vec<RemoteView>,
}

/// One raw map entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapEntryView {
    pub key: String,
    pub value: String,
}
