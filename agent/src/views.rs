//! What the debug client and status show: plain, serializable views of the
//! agent's state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One address an endpoint learned for a name from a DNS answer
/// (`clustermesh-agent debug fqdn`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FqdnView {
    /// The endpoint that looked the name up.
    pub endpoint: u32,
    pub name: String,
    pub ip: String,
    /// Seconds until the entry expires (0: expired, kept while in use).
    pub ttl_left_s: u64,
    pub in_use: bool,
    /// The address's node-local identity, while a `toFQDNs` selector
    /// matches one of its names.
    pub identity: Option<u32>,
    /// The `toFQDNs` selectors that match it.
    pub selectors: Vec<String>,
}

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
    /// 0 = any port (the first port of a range; ICMP: the type << 8).
    pub port: u16,
    /// The last port of a range (= `port` for one port).
    #[serde(default)]
    pub port_end: u16,
    /// `ingress` (peer = source) or `egress` (peer = destination).
    #[serde(default)]
    pub direction: String,
    /// `allow` or `deny`.
    #[serde(default)]
    pub action: String,
    /// The rule that made it: `<policy> <path>` (e.g. `demo/web spec.ingress[0]`).
    #[serde(default)]
    pub rule: String,
}

/// An endpoint's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyView {
    pub endpoint: crate::EndpointId,
    /// Some direction is enforced.
    pub enforced: bool,
    #[serde(default)]
    pub ingress_enforced: bool,
    #[serde(default)]
    pub egress_enforced: bool,
    /// The policy (shared by endpoints whose rules resolve the same).
    #[serde(default)]
    pub policy_id: u32,
    pub policies: Vec<String>,
    /// Named ports of rules that the endpoint does not declare.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved_ports: Vec<String>,
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
    /// Which rule chose the backends: `local-service`, `all`, `local`,
    /// `remote` or `failover` (empty from an agent before it was reported).
    #[serde(default)]
    pub mode: String,
    /// Every backend the frontend could use, chosen or not.
    #[serde(default)]
    pub candidates: Vec<CandidateView>,
    /// Remote backends left out, with the reason (a mixed-family service:
    /// a backend of a family the service has no frontend for).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedBackendView>,
}

/// A remote backend a service frontend does not use, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedBackendView {
    pub cluster: String,
    pub address: String,
    /// `mixed-family`.
    pub reason: String,
    /// The reason in words.
    pub detail: String,
}

/// A backend a service frontend could use, and whether it is in rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateView {
    pub cluster: String,
    pub address: String,
    pub weight: u32,
    pub active: bool,
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
    /// Deletions delivered to the control loop since the agent started, by
    /// kind (a restart of kvstoremesh or of the remote must add none for
    /// entries that still exist).
    #[serde(default)]
    pub deletes: BTreeMap<String, u64>,
    pub invalid: BTreeMap<String, u64>,
    pub last_error: Option<String>,
    pub last_error_kind: Option<String>,
    pub failures: u64,
    /// Sessions established since the agent started: 1 while the first
    /// connection holds, one more per reconnect (after a failure, a changed
    /// config file or a resync).
    #[serde(default)]
    pub connects: u64,
    /// `kvstoremesh` when the remote is read through the local
    /// kvstoremesh cache (its cluster config says `cached`); absent when
    /// read from the remote's own apiserver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Pod CIDRs of the remote's nodes that are not routed, and why.
    #[serde(default)]
    pub refused_routes: Vec<RefusedRouteView>,
}

/// A remote node's pod CIDR that the agent refuses to route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedRouteView {
    pub node: String,
    pub cidr: String,
    /// `route-too-wide`, `route-overlaps-local-pods`, …
    pub reason: String,
}

/// The agent as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    pub cluster: String,
    pub cluster_id: u32,
    pub node: String,
    pub node_ip: String,
    pub pod_cidr: Option<String>,
    /// The node's IPv6 pod CIDR (dual-stack nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr_v6: Option<String>,
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
    /// The conntrack map as its last garbage collection pass found it
    /// (absent before the first pass, or with the collector off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conntrack: Option<ConntrackView>,
    /// Kubernetes mode: the API server connection and what it delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesView>,
}

/// The conntrack map after the last garbage collection pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackView {
    /// Entries left.
    pub entries: usize,
    /// Expired entries the pass deleted.
    pub last_gc_deleted: usize,
    /// How long the pass took, in milliseconds.
    pub last_gc_ms: u64,
}

/// The Kubernetes API as the agent sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesView {
    /// How the agent reaches it (a kubeconfig path, or in-cluster).
    pub access: String,
    /// The last probe (`GET /version`, every 5 s) answered.
    pub connected: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Milliseconds since the last successful probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_contact_ms: Option<u64>,
    pub disconnects: u64,
    /// Per watched resource.
    pub resources: BTreeMap<String, KubernetesResourceView>,
    /// Objects refused now, with the reason (`CiliumNetworkPolicy
    /// demo/p1` → why); they change nothing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, String>,
}

/// One watched resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesResourceView {
    pub synced: bool,
    pub objects: usize,
    pub events: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One raw map entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapEntryView {
    /// The key in words (`prefix=10.1.0.0/24 cluster_id=0`).
    pub key: String,
    /// The value in words, identities followed by their labels.
    pub value: String,
    /// The key's fields (`-o json`): numbers as numbers.
    pub key_fields: serde_json::Map<String, serde_json::Value>,
    /// The value's fields.
    pub value_fields: serde_json::Map<String, serde_json::Value>,
    /// Labels of every identity in the entry, by identity.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A map entry from its decoded key and value; `labels` names identities.
pub(crate) fn map_entry(
    key: bpf::Fields,
    value: bpf::Fields,
    labels: &dyn Fn(u64) -> Option<String>,
) -> MapEntryView {
    let mut found = BTreeMap::new();
    let mut json = |fields: &bpf::Fields| {
        fields
            .iter()
            .map(|(name, v)| {
                let v = match v {
                    bpf::FieldValue::Number(n) => {
                        if (*name == "identity" || name.ends_with("_identity"))
                            && let Some(l) = labels(*n)
                        {
                            found.insert(n.to_string(), l);
                        }
                        serde_json::Value::from(*n)
                    }
                    bpf::FieldValue::Text(t) => serde_json::Value::from(t.clone()),
                    bpf::FieldValue::Bool(b) => serde_json::Value::from(*b),
                };
                (name.to_string(), v)
            })
            .collect::<serde_json::Map<_, _>>()
    };
    let key_fields = json(&key);
    let value_fields = json(&value);
    let words = |fields: &bpf::Fields| {
        fields
            .iter()
            .map(|(name, v)| match v {
                bpf::FieldValue::Number(n) if found.contains_key(&n.to_string()) => {
                    format!("{name}={n} ({})", found[&n.to_string()])
                }
                v => format!("{name}={v}"),
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    MapEntryView {
        key: words(&key),
        value: words(&value),
        key_fields,
        value_fields,
        labels: found.clone(),
    }
}
