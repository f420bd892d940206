//! The key layout, compatible with Cilium's (DESIGN §3): the functions that
//! build keys, and the `parse_*` functions that read them back. Nothing else
//! splits a key.
//!
//! As in [`crate::StoreValue::decode`], a key is parsed relative to its
//! store's prefix (what a [`crate::WatchStore`] reports;
//! [`KeyPrefix::strip`] makes a listed key so).

use crate::{cluster::ClusterName, identity::NumericIdentity, prefix::KeyPrefix};

/// Root of everything clustermesh stores.
pub const BASE: &str = "cilium";
/// Root of the state that remote clusters may read.
pub const STATE: &str = "cilium/state";
/// Root of the kvstoremesh mirror of remote clusters.
pub const CACHE: &str = "cilium/cache";
/// Rewritten every minute by the operator; remote readers use it to detect a
/// dead cluster.
pub const HEARTBEAT: &str = "cilium/.heartbeat";
/// `cilium/cluster-config/<cluster>`.
pub const CLUSTER_CONFIG: &str = "cilium/cluster-config";
/// `cilium/synced/<cluster>/<store>`: canaries.
pub const SYNCED: &str = "cilium/synced";

/// Name of the identities store (also its canary name).
pub const IDENTITIES_STORE: &str = "cilium/state/identities/v1";
/// Name of the ipcache store.
pub const IPCACHE_STORE: &str = "cilium/state/ip/v1";
/// Name of the nodes store.
pub const NODES_STORE: &str = "cilium/state/nodes/v1";
/// Name of the services store.
pub const SERVICES_STORE: &str = "cilium/state/services/v1";
/// Name of the MCS-API service exports store (mirrored by kvstoremesh, not
/// read by agents).
pub const SERVICE_EXPORTS_STORE: &str = "cilium/state/serviceexports/v1";
/// kvstoremesh's view of each remote it mirrors, for the local agents (our
/// extension, local): `cilium/kvstoremesh/v1/<remote>` →
/// [`crate::values::MirrorStatus`].
pub const KVSTOREMESH: &str = "cilium/kvstoremesh/v1";
/// Policies (our extension; local to a cluster, outside `cilium/state/`).
pub const POLICIES: &str = "cilium/policies/v1";
/// Service definitions for clusters without Kubernetes (our extension, local).
pub const SERVICE_DEFS: &str = "cilium/servicedefs/v1";
/// Pod CIDR assignments by the operator's IPAM (our extension, local).
pub const IPAM: &str = "cilium/ipam/v1";
/// Remote clusters the administrator connected this cluster to (our
/// extension, local, outside `cilium/` so that no other cluster's role reads
/// it): `clustermesh/admin/remote-clusters/<remote>` →
/// [`crate::values::RemoteClusterRecord`], mirrored by every agent into its
/// clustermesh config directory.
pub const REMOTE_CLUSTER_RECORDS: &str = "clustermesh/admin/remote-clusters";
/// Present once a remote-cluster record was ever stored (the mirrors write
/// it; a disconnect never deletes it): an etcd without it that a node's
/// mirror remembers records of lost its data (our extension, local).
pub const REMOTE_CLUSTER_RECORDS_MARK: &str = "clustermesh/admin/remote-clusters-stored";
/// What each agent reports of itself (our extension, local, leased):
/// `clustermesh/status/agents/<node>` → [`crate::values::AgentReport`].
pub const AGENT_REPORTS: &str = "clustermesh/status/agents";
/// Operator leader election (our extension, local).
pub const OPERATOR_LEADER: &str = "cilium/operator/leader";

/// `cilium/state/identities/v1/`.
pub fn identities() -> KeyPrefix {
    KeyPrefix::new(IDENTITIES_STORE)
}

/// `cilium/state/identities/v1/id/`: master keys, `<ID>` → canonical labels.
pub fn identity_masters() -> KeyPrefix {
    identities().child("id")
}

/// `cilium/state/identities/v1/id/<ID>`.
pub fn identity_master(id: NumericIdentity) -> String {
    identity_masters().key(&id.to_string())
}

/// The ID of a master key, relative to [`identity_masters`] (`199472`): the
/// inverse of [`identity_master`].
pub fn parse_identity_master(key: &str) -> Option<NumericIdentity> {
    key.parse().ok()
}

/// `cilium/state/identities/v1/value/`: slave keys,
/// `<labels>/<node-ip>` → ID.
pub fn identity_slaves() -> KeyPrefix {
    identities().child("value")
}

/// `cilium/state/identities/v1/value/<labels>/`: every node's slave key for
/// one label set. The canonical label string ends in `;`, and the `/` that
/// follows makes the match exact (`a;` never matches `a;b;`).
pub fn identity_slaves_of(canonical_labels: &str) -> KeyPrefix {
    identity_slaves().child(canonical_labels)
}

/// The canonical labels and the node of a slave key, relative to
/// [`identity_slaves`] (`k8s:a=b;/172.18.0.2`): the inverse of
/// `identity_slaves_of(labels).key(node)`. The node is the last segment
/// (label keys such as `app.kubernetes.io/name` contain `/`, node names do
/// not).
pub fn parse_identity_slave(key: &str) -> Option<(&str, &str)> {
    key.rsplit_once('/')
}

/// `cilium/state/identities/v1/locks/`.
pub fn identity_locks() -> KeyPrefix {
    identities().child("locks")
}

/// `cilium/state/ip/v1/default/`: ipcache entries, `<IP>` → `IPIdentityPair`.
pub fn ipcache() -> KeyPrefix {
    KeyPrefix::new(IPCACHE_STORE).child("default")
}

/// `cilium/state/nodes/v1/`.
pub fn nodes() -> KeyPrefix {
    KeyPrefix::new(NODES_STORE)
}

/// The cluster and the rest of a key relative to a store whose keys start
/// with the cluster ([`nodes`], [`services`]): `c1/n1` → (`c1`, `n1`),
/// `c1/ns/name` → (`c1`, `ns/name`).
pub fn split_cluster(key: &str) -> Option<(&str, &str)> {
    key.split_once('/')
}

/// The node name of a key relative to [`nodes`] (`<cluster>/<name>`) or to
/// [`nodes_of`] (`<name>`): its last segment, since a node name contains no
/// `/`.
pub fn parse_node_name(key: &str) -> &str {
    key.rsplit_once('/').map_or(key, |(_, name)| name)
}

/// `cilium/state/nodes/v1/<cluster>/`.
pub fn nodes_of(cluster: &ClusterName) -> KeyPrefix {
    nodes().child(cluster.as_str())
}

/// `cilium/state/services/v1/`.
pub fn services() -> KeyPrefix {
    KeyPrefix::new(SERVICES_STORE)
}

/// `cilium/state/services/v1/<cluster>/`: `<ns>/<name>` → `ClusterService`.
pub fn services_of(cluster: &ClusterName) -> KeyPrefix {
    services().child(cluster.as_str())
}

/// `cilium/cluster-config/<cluster>`.
pub fn cluster_config(cluster: &ClusterName) -> String {
    format!("{CLUSTER_CONFIG}/{cluster}")
}

/// The cluster a `cilium/cluster-config/<cluster>` key is for: the inverse
/// of [`cluster_config`].
pub fn parse_cluster_config(key: &str) -> Option<ClusterName> {
    let name = key.strip_prefix(CLUSTER_CONFIG)?.strip_prefix('/')?;
    ClusterName::new(name).ok()
}

/// `cilium/synced/<cluster>/`.
pub fn canaries_of(cluster: &ClusterName) -> KeyPrefix {
    KeyPrefix::new(SYNCED).child(cluster.as_str())
}

/// `cilium/synced/<cluster>/<store>`, e.g.
/// `cilium/synced/c1/cilium/state/ip/v1`.
pub fn canary(cluster: &ClusterName, store: &str) -> String {
    canaries_of(cluster).key(store.trim_end_matches('/'))
}

/// `cilium/policies/v1/`.
pub fn policies() -> KeyPrefix {
    KeyPrefix::new(POLICIES)
}

/// `cilium/servicedefs/v1/`.
pub fn service_defs() -> KeyPrefix {
    KeyPrefix::new(SERVICE_DEFS)
}

/// `cilium/ipam/v1/nodes/`: node name → its pod CIDRs
/// ([`crate::values::IpamAssignment`]).
pub fn ipam_nodes() -> KeyPrefix {
    KeyPrefix::new(IPAM).child("nodes")
}

/// `cilium/ipam/v1/cidrs/`: one key per assigned CIDR (`10.1.3.0_24` → node
/// name), created only if absent so that no CIDR is handed out twice.
pub fn ipam_cidrs() -> KeyPrefix {
    KeyPrefix::new(IPAM).child("cidrs")
}

/// The key of an assigned CIDR under [`ipam_cidrs`] (`/` replaced by `_`).
pub fn ipam_cidr(cidr: &ipnet::IpNet) -> String {
    ipam_cidrs().key(&cidr.to_string().replace('/', "_"))
}

/// The address or prefix of a key relative to [`ipcache`] (`10.1.0.5`,
/// `10.0.0.0/8`): an address is its host prefix.
pub fn parse_ipcache(key: &str) -> Option<ipnet::IpNet> {
    key.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| key.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// The CIDR of a key relative to [`ipam_cidrs`] (`10.1.3.0_24`): the inverse
/// of [`ipam_cidr`].
pub fn parse_ipam_cidr(key: &str) -> Option<ipnet::IpNet> {
    let (addr, len) = key.rsplit_once('_')?;
    format!("{addr}/{len}").parse().ok()
}

/// The kind of a `cilium/state/<kind>/v1` store name ([`NODES_STORE`] →
/// `nodes`), as [`cache_of`] takes it: the segment before the version; the
/// name itself if it has a single segment.
pub fn store_kind(store: &str) -> &str {
    let mut segments = store.trim_end_matches('/').rsplit('/');
    segments.next();
    segments.next().unwrap_or(store)
}

/// `cilium/cache/<kind>/v1/<remote>/`: where kvstoremesh mirrors a remote's
/// `cilium/state/<kind>/v1/…`.
pub fn cache_of(kind: &str, remote: &ClusterName) -> KeyPrefix {
    KeyPrefix::new(format!("{CACHE}/{kind}/v1/{remote}"))
}

/// `cilium/cache/…` for a `cilium/state/…` store name (Cilium's
/// `StateToCachePrefix`); other names unchanged.
pub fn state_to_cache(store: &str) -> String {
    match store.strip_prefix(STATE) {
        Some(rest) => format!("{CACHE}{rest}"),
        None => store.to_string(),
    }
}

/// Where a remote cluster's state is read: its own etcd (`cilium/state/…`,
/// through its apiserver) or the local kvstoremesh cache (`cilium/cache/…`),
/// as the remote's `cilium/cluster-config/<name>` says (`cached`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    State,
    Cache,
}

/// The state a cluster publishes for the others, kind by kind, and where
/// each is found directly and in kvstoremesh's cache (DESIGN §3, Cilium's
/// `kvstoremesh/reflector/cell.go`). Keys relative to
/// [`StateKind::relative_to`] are the same in both places.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StateKind {
    Nodes,
    Services,
    ServiceExports,
    Identities,
    Ip,
}

impl StateKind {
    /// Every kind kvstoremesh mirrors.
    pub const ALL: [Self; 5] = [
        Self::Nodes,
        Self::Services,
        Self::ServiceExports,
        Self::Identities,
        Self::Ip,
    ];

    /// `nodes`, `services`, `serviceexports`, `identities`, `ip`.
    pub fn as_str(self) -> &'static str {
        store_kind(self.store())
    }

    /// The store name (`cilium/state/nodes/v1`), which canaries are named after.
    pub fn store(self) -> &'static str {
        match self {
            Self::Nodes => NODES_STORE,
            Self::Services => SERVICES_STORE,
            Self::ServiceExports => SERVICE_EXPORTS_STORE,
            Self::Identities => IDENTITIES_STORE,
            Self::Ip => IPCACHE_STORE,
        }
    }

    /// What `cluster`'s entries of this kind are under:
    /// - nodes, services, service exports: `…/<kind>/v1/<cluster>/`;
    /// - identities: `cilium/state/identities/v1/id/` in the cluster's own
    ///   etcd, `cilium/cache/identities/v1/<cluster>/id/` in the cache;
    /// - ipcache: `cilium/state/ip/v1/default/` in the cluster's own etcd,
    ///   `cilium/cache/ip/v1/<cluster>/` in the cache.
    pub fn prefix(self, cluster: &ClusterName, source: Source) -> KeyPrefix {
        match (self, source) {
            (Self::Identities, Source::State) => identity_masters(),
            (Self::Identities, Source::Cache) => cache_of(self.as_str(), cluster).child("id"),
            (Self::Ip, Source::State) => ipcache(),
            (Self::Ip, Source::Cache) => cache_of(self.as_str(), cluster),
            (_, Source::State) => KeyPrefix::new(self.store()).child(cluster.as_str()),
            (_, Source::Cache) => cache_of(self.as_str(), cluster),
        }
    }

    /// What keys read from [`StateKind::prefix`] are reported relative to,
    /// so that they are the same from either source: the store itself for
    /// nodes, services and service exports (`<cluster>/<name>`, as their
    /// values' `key()` says), the prefix itself for identities (`<ID>`) and
    /// ipcache (`<IP>`).
    pub fn relative_to(self, cluster: &ClusterName, source: Source) -> KeyPrefix {
        match (self, source) {
            (Self::Identities | Self::Ip, _) => self.prefix(cluster, source),
            (_, Source::State) => KeyPrefix::new(self.store()),
            (_, Source::Cache) => KeyPrefix::new(state_to_cache(self.store())),
        }
    }

    /// The canary `cluster`'s writer sets once this kind is complete:
    /// `cilium/synced/<cluster>/cilium/state/<kind>/v1` in its own etcd,
    /// `cilium/synced/<cluster>/cilium/cache/<kind>/v1` in the cache.
    pub fn canary(self, cluster: &ClusterName, source: Source) -> String {
        match source {
            Source::State => canary(cluster, self.store()),
            Source::Cache => canary(cluster, &state_to_cache(self.store())),
        }
    }
}

/// `cilium/kvstoremesh/v1/<remote>`: how kvstoremesh sees `remote`.
pub fn mirror_status(remote: &ClusterName) -> String {
    KeyPrefix::new(KVSTOREMESH).key(remote.as_str())
}

/// `clustermesh/admin/remote-clusters/`.
pub fn remote_cluster_records() -> KeyPrefix {
    KeyPrefix::new(REMOTE_CLUSTER_RECORDS)
}

/// `clustermesh/admin/remote-clusters/<remote>`.
pub fn remote_cluster_record(remote: &ClusterName) -> String {
    remote_cluster_records().key(remote.as_str())
}

/// `clustermesh/status/agents/`.
pub fn agent_reports() -> KeyPrefix {
    KeyPrefix::new(AGENT_REPORTS)
}

/// `clustermesh/status/agents/<node>`.
pub fn agent_report(node: &str) -> String {
    agent_reports().key(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_cilium() {
        let c3 = ClusterName::new("cluster3").unwrap();
        assert_eq!(
            identity_master(NumericIdentity::new(199472)),
            "cilium/state/identities/v1/id/199472"
        );
        assert_eq!(
            identity_slaves_of("k8s:a=b;").key("172.18.0.2"),
            "cilium/state/identities/v1/value/k8s:a=b;/172.18.0.2"
        );
        assert_eq!(
            ipcache().key("10.244.1.79"),
            "cilium/state/ip/v1/default/10.244.1.79"
        );
        assert_eq!(nodes_of(&c3).key("n1"), "cilium/state/nodes/v1/cluster3/n1");
        assert_eq!(
            services_of(&c3).key("ns-alpha/echo-service"),
            "cilium/state/services/v1/cluster3/ns-alpha/echo-service"
        );
        assert_eq!(cluster_config(&c3), "cilium/cluster-config/cluster3");
        assert_eq!(
            canary(&c3, IPCACHE_STORE),
            "cilium/synced/cluster3/cilium/state/ip/v1"
        );
        assert_eq!(
            canary(&c3, "cilium/state/nodes/v1/"),
            "cilium/synced/cluster3/cilium/state/nodes/v1"
        );
        assert_eq!(cache_of("ip", &c3).as_str(), "cilium/cache/ip/v1/cluster3/");
    }

    #[test]
    fn state_and_cache_layouts_match_cilium() {
        let c3 = ClusterName::new("cluster3").unwrap();
        let (state, cache) = (Source::State, Source::Cache);
        let p = |k: StateKind, s| k.prefix(&c3, s).to_string();
        assert_eq!(
            p(StateKind::Nodes, state),
            "cilium/state/nodes/v1/cluster3/"
        );
        assert_eq!(
            p(StateKind::Nodes, cache),
            "cilium/cache/nodes/v1/cluster3/"
        );
        assert_eq!(
            p(StateKind::ServiceExports, cache),
            "cilium/cache/serviceexports/v1/cluster3/"
        );
        assert_eq!(
            p(StateKind::Identities, state),
            "cilium/state/identities/v1/id/"
        );
        assert_eq!(
            p(StateKind::Identities, cache),
            "cilium/cache/identities/v1/cluster3/id/"
        );
        assert_eq!(p(StateKind::Ip, state), "cilium/state/ip/v1/default/");
        assert_eq!(p(StateKind::Ip, cache), "cilium/cache/ip/v1/cluster3/");
        assert_eq!(
            StateKind::Services.canary(&c3, cache),
            "cilium/synced/cluster3/cilium/cache/services/v1"
        );
        assert_eq!(
            StateKind::Ip.canary(&c3, state),
            "cilium/synced/cluster3/cilium/state/ip/v1"
        );
        // The same entry has the same relative key in both places.
        for kind in StateKind::ALL {
            for source in [state, cache] {
                let full = kind.prefix(&c3, source).key("x");
                let rel = kind
                    .relative_to(&c3, source)
                    .strip(&full)
                    .unwrap()
                    .to_string();
                let expected = match kind {
                    StateKind::Identities | StateKind::Ip => "x".to_string(),
                    _ => "cluster3/x".to_string(),
                };
                assert_eq!(rel, expected, "{kind:?} {source:?}");
            }
        }
        assert_eq!(state_to_cache("cilium/state/ip/v1"), "cilium/cache/ip/v1");
        assert_eq!(state_to_cache("other"), "other");
        assert_eq!(StateKind::ServiceExports.as_str(), "serviceexports");
        assert_eq!(mirror_status(&c3), "cilium/kvstoremesh/v1/cluster3");
    }

    #[test]
    fn parses_what_it_builds() {
        let id = NumericIdentity::new(199472);
        let master = identity_master(id);
        assert_eq!(
            parse_identity_master(identity_masters().strip(&master).unwrap()),
            Some(id)
        );
        assert_eq!(parse_identity_master("x"), None);
        assert_eq!(parse_identity_master("1/2"), None);

        let labels = "k8s:app.kubernetes.io/name=echo;k8s:io.kubernetes.pod.namespace=demo;";
        let slave = identity_slaves_of(labels).key("172.18.0.2");
        assert_eq!(
            parse_identity_slave(identity_slaves().strip(&slave).unwrap()),
            Some((labels, "172.18.0.2"))
        );
        assert_eq!(parse_identity_slave("no-node"), None);

        let c3 = ClusterName::new("cluster3").unwrap();
        assert_eq!(parse_cluster_config(&cluster_config(&c3)), Some(c3.clone()));
        assert_eq!(parse_cluster_config("cilium/cluster-config"), None);
        assert_eq!(parse_cluster_config("cilium/cluster-configx/c1"), None);
        assert_eq!(parse_cluster_config("cilium/cluster-config/C_1"), None);

        let node = nodes().strip(&nodes_of(&c3).key("n1")).unwrap().to_string();
        assert_eq!(split_cluster(&node), Some(("cluster3", "n1")));
        assert_eq!(parse_node_name(&node), "n1");
        assert_eq!(parse_node_name("n1"), "n1");
        let svc = services()
            .strip(&services_of(&c3).key("demo/echo"))
            .unwrap()
            .to_string();
        assert_eq!(split_cluster(&svc), Some(("cluster3", "demo/echo")));
        assert_eq!(split_cluster("no-cluster"), None);

        for s in ["10.1.3.0/24", "fd00:1:0:5::/64"] {
            let net: ipnet::IpNet = s.parse().unwrap();
            let key = ipam_cidr(&net);
            assert_eq!(
                parse_ipam_cidr(ipam_cidrs().strip(&key).unwrap()),
                Some(net)
            );
        }
        assert_eq!(parse_ipam_cidr("garbage"), None);
        assert_eq!(
            parse_ipcache("10.1.0.5"),
            Some("10.1.0.5/32".parse().unwrap())
        );
        assert_eq!(
            parse_ipcache("fd00::/64"),
            Some("fd00::/64".parse().unwrap())
        );
        assert_eq!(parse_ipcache("default/10.1.0.5"), None);
        assert_eq!(parse_ipam_cidr("10.1.3.0_x"), None);

        assert_eq!(store_kind(NODES_STORE), "nodes");
        assert_eq!(store_kind(IPCACHE_STORE), "ip");
        assert_eq!(store_kind("cilium/state/services/v1/"), "services");
        assert_eq!(store_kind("plain"), "plain");
    }
}
