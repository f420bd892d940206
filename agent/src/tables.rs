//! The agent's global tables: what every source (the node's own endpoints,
//! the local cluster's etcd, each remote cluster) says about identities,
//! IPs, nodes and services, merged. One writer (the agent's main loop).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
};

use ipnet::IpNet;
use kvstore::{
    Label, Labels, NumericIdentity,
    values::{ClusterService, IpIdentityPair, Node, PolicyDocument, ServiceDef},
};

/// Where data comes from. Lower wins when two sources claim the same IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceId(pub u16);

impl SourceId {
    /// This node's endpoints, known before etcd echoes them back.
    pub const LOCAL_ENDPOINTS: Self = Self(0);
    /// The local cluster's etcd.
    pub const LOCAL_CLUSTER: Self = Self(1);

    pub fn is_local(self) -> bool {
        self <= Self::LOCAL_CLUSTER
    }
}

/// An ipcache entry reduced to what the datapath needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpEntry {
    pub identity: NumericIdentity,
    pub host_ip: Option<IpAddr>,
}

impl IpEntry {
    pub(crate) fn from_pair(pair: &IpIdentityPair, remote: bool) -> Self {
        // Cilium rewrites a remote cluster's host identity to remote-node.
        let identity = if remote && pair.id == NumericIdentity::HOST {
            NumericIdentity::REMOTE_NODE
        } else {
            pair.id
        };
        Self {
            identity,
            host_ip: pair.host_ip,
        }
    }
}

/// Everything the agent knows, by source.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    /// Identity → labels (IDs are unique mesh-wide; reserved ones are fixed).
    pub identities: HashMap<NumericIdentity, Labels>,
    /// Which source delivered each identity (to drain a source).
    identity_sources: HashMap<SourceId, HashSet<NumericIdentity>>,
    /// Prefix → what each source says about it.
    ipcache: HashMap<IpNet, BTreeMap<SourceId, IpEntry>>,
    ipcache_by_source: HashMap<SourceId, HashSet<IpNet>>,
    /// Cluster → node name → node.
    pub nodes: BTreeMap<String, BTreeMap<String, Node>>,
    /// `<ns>/<name>` → cluster → service.
    pub services: BTreeMap<String, BTreeMap<String, ClusterService>>,
    /// Local policies by key.
    pub policies: BTreeMap<String, PolicyDocument>,
    /// Local service definitions by `<ns>/<name>`.
    pub service_defs: BTreeMap<String, ServiceDef>,
}

impl Tables {
    pub(crate) fn new() -> Self {
        let mut t = Self::default();
        for id in [
            NumericIdentity::HOST,
            NumericIdentity::WORLD,
            NumericIdentity::UNMANAGED,
            NumericIdentity::HEALTH,
            NumericIdentity::INIT,
            NumericIdentity::REMOTE_NODE,
            NumericIdentity::KUBE_APISERVER,
            NumericIdentity::INGRESS,
            NumericIdentity::WORLD_IPV4,
            NumericIdentity::WORLD_IPV6,
        ] {
            let name = id.reserved_name().expect("reserved");
            t.identities
                .insert(id, [Label::new("reserved", name, "")].into_iter().collect());
        }
        t
    }

    /// Sets an identity; returns whether its labels changed.
    pub(crate) fn upsert_identity(
        &mut self,
        source: SourceId,
        id: NumericIdentity,
        labels: Labels,
    ) -> bool {
        self.identity_sources.entry(source).or_default().insert(id);
        self.identities.insert(id, labels.clone()) != Some(labels)
    }

    /// Removes an identity a source withdrew; returns whether it is gone
    /// (no other source still delivers it).
    pub(crate) fn delete_identity(&mut self, source: SourceId, id: NumericIdentity) -> bool {
        let owned = self
            .identity_sources
            .get_mut(&source)
            .is_some_and(|s| s.remove(&id));
        if !owned || id.is_reserved() {
            return false;
        }
        if self.identity_sources.values().any(|s| s.contains(&id)) {
            return false;
        }
        self.identities.remove(&id).is_some()
    }

    /// Identities a source delivered (to drain it).
    pub(crate) fn identities_of(&self, source: SourceId) -> Vec<NumericIdentity> {
        self.identity_sources
            .get(&source)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Sets what `source` says about `prefix`; returns the winning entry
    /// before and after.
    pub(crate) fn upsert_ip(
        &mut self,
        source: SourceId,
        prefix: IpNet,
        entry: IpEntry,
    ) -> (Option<IpEntry>, Option<IpEntry>) {
        let before = self.ip_winner(&prefix);
        self.ipcache
            .entry(prefix)
            .or_default()
            .insert(source, entry);
        self.ipcache_by_source
            .entry(source)
            .or_default()
            .insert(prefix);
        (before, self.ip_winner(&prefix))
    }

    /// Removes what `source` says about `prefix`; returns the winner before
    /// and after.
    pub(crate) fn delete_ip(
        &mut self,
        source: SourceId,
        prefix: IpNet,
    ) -> (Option<IpEntry>, Option<IpEntry>) {
        let before = self.ip_winner(&prefix);
        if let Some(by_source) = self.ipcache.get_mut(&prefix) {
            by_source.remove(&source);
            if by_source.is_empty() {
                self.ipcache.remove(&prefix);
            }
        }
        if let Some(set) = self.ipcache_by_source.get_mut(&source) {
            set.remove(&prefix);
        }
        (before, self.ip_winner(&prefix))
    }

    /// The entry the datapath uses for `prefix`: the lowest source's.
    pub(crate) fn ip_winner(&self, prefix: &IpNet) -> Option<IpEntry> {
        self.ipcache
            .get(prefix)
            .and_then(|m| m.values().next().copied())
    }

    /// Prefixes a source delivered.
    pub(crate) fn ips_of(&self, source: SourceId) -> Vec<IpNet> {
        self.ipcache_by_source
            .get(&source)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Number of prefixes a source delivered.
    pub(crate) fn ip_count(&self, source: SourceId) -> usize {
        self.ipcache_by_source.get(&source).map_or(0, HashSet::len)
    }

    /// Addresses of the local cluster (endpoints of every node) with their
    /// identity, for selecting service backends.
    pub(crate) fn local_cluster_ips(&self) -> Vec<(IpAddr, NumericIdentity)> {
        let mut seen = HashSet::new();
        [SourceId::LOCAL_ENDPOINTS, SourceId::LOCAL_CLUSTER]
            .iter()
            .flat_map(|s| self.ipcache_by_source.get(s).into_iter().flatten())
            .filter(|p| p.prefix_len() == p.max_prefix_len() && seen.insert(**p))
            .filter_map(|p| Some((p.addr(), self.ip_winner(p)?.identity)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u32) -> IpEntry {
        IpEntry {
            identity: NumericIdentity::new(id),
            host_ip: None,
        }
    }

    #[test]
    fn lowest_source_wins_and_deletes_fall_back() {
        let mut t = Tables::new();
        let p: IpNet = "10.0.0.1/32".parse().unwrap();
        let remote = SourceId(2);
        assert_eq!(t.upsert_ip(remote, p, entry(700)), (None, Some(entry(700))));
        assert_eq!(
            t.upsert_ip(SourceId::LOCAL_CLUSTER, p, entry(300)).1,
            Some(entry(300))
        );
        assert_eq!(
            t.delete_ip(SourceId::LOCAL_CLUSTER, p),
            (Some(entry(300)), Some(entry(700)))
        );
        assert_eq!(t.delete_ip(remote, p), (Some(entry(700)), None));
        assert_eq!(t.ip_count(remote), 0);
    }

    #[test]
    fn reserved_identities_are_fixed() {
        let mut t = Tables::new();
        assert!(t.identities.contains_key(&NumericIdentity::WORLD));
        assert!(!t.delete_identity(SourceId(2), NumericIdentity::WORLD));
        assert!(t.identities.contains_key(&NumericIdentity::WORLD));
        let labels: Labels = [Label::k8s("app", "x")].into_iter().collect();
        assert!(t.upsert_identity(SourceId(2), NumericIdentity::new(70000), labels.clone()));
        assert!(!t.upsert_identity(SourceId(2), NumericIdentity::new(70000), labels));
        assert_eq!(t.identities_of(SourceId(2)).len(), 1);
        assert!(t.delete_identity(SourceId(2), NumericIdentity::new(70000)));
    }

    #[test]
    fn an_identity_stays_while_another_source_delivers_it() {
        let mut t = Tables::new();
        let id = NumericIdentity::new(70000);
        let labels: Labels = [Label::k8s("app", "x")].into_iter().collect();
        t.upsert_identity(SourceId::LOCAL_ENDPOINTS, id, labels.clone());
        t.upsert_identity(SourceId::LOCAL_CLUSTER, id, labels);
        assert!(
            !t.delete_identity(SourceId::LOCAL_ENDPOINTS, id),
            "etcd still has it"
        );
        assert!(t.identities.contains_key(&id));
        assert!(t.delete_identity(SourceId::LOCAL_CLUSTER, id));
        assert!(!t.identities.contains_key(&id));
    }

    #[test]
    fn remote_host_becomes_remote_node() {
        let pair = IpIdentityPair::host("10.0.0.1".parse().unwrap(), NumericIdentity::HOST, None);
        assert_eq!(
            IpEntry::from_pair(&pair, true).identity,
            NumericIdentity::REMOTE_NODE
        );
        assert_eq!(
            IpEntry::from_pair(&pair, false).identity,
            NumericIdentity::HOST
        );
    }
}
