//! The agent's global tables: what every source (the node's own endpoints,
//! the local cluster's etcd, each remote cluster) says about identities,
//! IPs, nodes and services, merged. One writer (the agent's main loop).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

use ipnet::IpNet;
use kvstore::{
    Label, Labels, NumericIdentity,
    values::{ClusterService, IpIdentityPair, Node, PolicyDocument, ServiceDef},
};

use self::claims::{PrefixClaims, Stored};
use crate::{hubble::FlowDirectory, policy_resolver::NamedPorts};

mod claims;

/// Ports an ipcache entry's endpoint declares by name.
pub(crate) type PortNames = Box<[(Box<str>, bpf::Protocol, u16)]>;

/// The ports the mesh's endpoints declare by name, from their ipcache
/// entries: an egress rule naming a port allows every port of that name,
/// as Cilium resolves it (against every endpoint's named ports, not only
/// the selected peers').
#[derive(Debug, Default)]
struct NamedPortIndex {
    by_entry: HashMap<(SourceId, IpNet), PortNames>,
    /// How many entries declare each (name, protocol, port).
    counts: BTreeMap<(Box<str>, bpf::Protocol, u16), usize>,
    /// A (name, protocol, port) appeared or went since the last look.
    changed: bool,
}

impl NamedPortIndex {
    fn set(&mut self, source: SourceId, prefix: IpNet, ports: PortNames) {
        if self.by_entry.get(&(source, prefix)) == Some(&ports) {
            return;
        }
        self.remove(source, prefix);
        if ports.is_empty() {
            return;
        }
        for p in &ports {
            let n = self.counts.entry(p.clone()).or_default();
            *n += 1;
            self.changed |= *n == 1;
        }
        self.by_entry.insert((source, prefix), ports);
    }

    fn remove(&mut self, source: SourceId, prefix: IpNet) {
        let Some(ports) = self.by_entry.remove(&(source, prefix)) else {
            return;
        };
        for p in ports {
            if let Some(n) = self.counts.get_mut(&p) {
                *n -= 1;
                if *n == 0 {
                    self.counts.remove(&p);
                    self.changed = true;
                }
            }
        }
    }
}

/// Where data comes from. Lower wins when two sources claim the same IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SourceId(pub(crate) u16);

impl SourceId {
    /// This node's endpoints, known before etcd echoes them back.
    pub(crate) const LOCAL_ENDPOINTS: Self = Self(0);
    /// The local cluster's etcd.
    pub(crate) const LOCAL_CLUSTER: Self = Self(1);
    /// The node-local identities of CIDR prefixes that policies name:
    /// every other source's entry for the same prefix wins.
    pub(crate) const POLICY_CIDRS: Self = Self(u16::MAX);
    /// The node-local identities of addresses learned from DNS answers:
    /// they win over a policy's CIDR identity of the same prefix (their
    /// labels include its), and lose to every cluster's entry.
    pub(crate) const FQDN: Self = Self(u16::MAX - 1);

    pub(crate) fn is_local(self) -> bool {
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

/// What [`Tables::upsert_identity`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdentityUpsert {
    /// New, or its labels changed.
    Changed,
    /// Already known with these labels.
    Unchanged,
    /// A remote tried to set a reserved or local identity; nothing changed.
    Refused,
}

/// Everything the agent knows, by source.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    /// Identity → labels (IDs are unique mesh-wide; reserved ones are fixed).
    pub identities: HashMap<NumericIdentity, Labels>,
    /// Which source delivered each identity (to drain a source).
    identity_sources: HashMap<SourceId, HashSet<NumericIdentity>>,
    /// Prefix → what each source says about it.
    ipcache: PrefixClaims,
    /// Prefixes per source (counts only; listing scans, as only draining
    /// and re-syncing a source need it).
    ip_counts: HashMap<SourceId, usize>,
    /// Prefixes the local cluster claims (service backends are chosen there).
    local_ips: HashSet<IpNet>,
    /// Host IPs of ipcache entries, interned (a mesh has few nodes and
    /// many entries): index + 1 in [`Stored::host`], 0 = none.
    hosts: Vec<IpAddr>,
    host_index: HashMap<IpAddr, u32>,
    /// Cluster → node name → node.
    pub nodes: BTreeMap<String, BTreeMap<String, Node>>,
    /// `<ns>/<name>` → cluster → service.
    pub services: BTreeMap<String, BTreeMap<String, ClusterService>>,
    /// Local policies by key.
    pub policies: BTreeMap<String, PolicyDocument>,
    /// Local service definitions by `<ns>/<name>`.
    pub service_defs: BTreeMap<String, ServiceDef>,
    /// Where the Hubble server looks up identities and pods (kept in step
    /// with the identities and the pods of ipcache entries).
    flow_directory: Option<Arc<FlowDirectory>>,
    named_ports: NamedPortIndex,
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
    ///
    /// A remote source never replaces a reserved identity or one that a
    /// local source holds: those are the local agent's own, and a remote
    /// that could relabel them could make a local policy admit anything.
    /// (The remote's validators refuse such values first, counted; this is
    /// the table's own invariant, so no path around them can break it.)
    pub(crate) fn upsert_identity(
        &mut self,
        source: SourceId,
        id: NumericIdentity,
        labels: Labels,
    ) -> IdentityUpsert {
        if !source.is_local() && (id.is_reserved() || self.held_locally(id)) {
            return IdentityUpsert::Refused;
        }
        self.identity_sources.entry(source).or_default().insert(id);
        if let Some(dir) = &self.flow_directory
            && self.identities.get(&id) != Some(&labels)
        {
            dir.set_identity(id, &labels);
        }
        if self.identities.insert(id, labels.clone()) != Some(labels) {
            IdentityUpsert::Changed
        } else {
            IdentityUpsert::Unchanged
        }
    }

    /// Whether a local source (this node's endpoints, the local etcd)
    /// delivered `id`.
    fn held_locally(&self, id: NumericIdentity) -> bool {
        [SourceId::LOCAL_ENDPOINTS, SourceId::LOCAL_CLUSTER]
            .iter()
            .any(|s| {
                self.identity_sources
                    .get(s)
                    .is_some_and(|ids| ids.contains(&id))
            })
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
        if let Some(dir) = &self.flow_directory {
            dir.remove_identity(id);
        }
        self.identities.remove(&id).is_some()
    }

    /// Keeps `dir` in step with the identities from now on (starting with
    /// those known).
    pub(crate) fn set_flow_directory(&mut self, dir: Arc<FlowDirectory>) {
        for (id, labels) in &self.identities {
            dir.set_identity(*id, labels);
        }
        self.flow_directory = Some(dir);
    }

    /// The Hubble server's directory, if there is one.
    pub(crate) fn flow_directory(&self) -> Option<&FlowDirectory> {
        self.flow_directory.as_deref()
    }

    /// Identities a source delivered (to drain it).
    /// How many identities `source` delivered.
    pub(crate) fn identity_count(&self, source: SourceId) -> usize {
        self.identity_sources.get(&source).map_or(0, |s| s.len())
    }

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
        let stored = self.store(entry);
        let set = self.ipcache.set(prefix, source, stored);
        if set.added {
            *self.ip_counts.entry(source).or_default() += 1;
            if source.is_local() {
                self.local_ips.insert(prefix);
            }
        }
        (set.before.map(|s| self.load(s)), Some(self.load(set.after)))
    }

    /// Sets the ports `source`'s entry for `prefix` declares by name (the
    /// entry's deletion withdraws them).
    pub(crate) fn set_named_ports(&mut self, source: SourceId, prefix: IpNet, ports: PortNames) {
        self.named_ports.set(source, prefix, ports);
    }

    /// Every port the mesh's endpoints declare, by name.
    pub(crate) fn named_ports(&self) -> NamedPorts {
        let mut out = NamedPorts::new();
        for (name, protocol, port) in self.named_ports.counts.keys() {
            out.entry(name.to_string())
                .or_default()
                .push((*protocol, *port));
        }
        out
    }

    /// Whether a name gained or lost a port since the last call.
    pub(crate) fn take_named_ports_changed(&mut self) -> bool {
        std::mem::take(&mut self.named_ports.changed)
    }

    /// Removes what `source` says about `prefix`; returns the winner before
    /// and after.
    pub(crate) fn delete_ip(
        &mut self,
        source: SourceId,
        prefix: IpNet,
    ) -> (Option<IpEntry>, Option<IpEntry>) {
        self.named_ports.remove(source, prefix);
        let before = self.ip_winner(&prefix);
        if self.ipcache.remove(&prefix, source).is_some() {
            if let Some(n) = self.ip_counts.get_mut(&source) {
                *n = n.saturating_sub(1);
            }
            if source.is_local() && !self.ipcache.claimed_by(&prefix, SourceId::is_local) {
                self.local_ips.remove(&prefix);
            }
        }
        (before, self.ip_winner(&prefix))
    }

    /// The entry the datapath uses for `prefix`: the lowest source's.
    pub(crate) fn ip_winner(&self, prefix: &IpNet) -> Option<IpEntry> {
        self.ipcache.winner(prefix).map(|s| self.load(s))
    }

    fn store(&mut self, entry: IpEntry) -> Stored {
        let host = match entry.host_ip {
            None => 0,
            Some(ip) => match self.host_index.get(&ip) {
                Some(i) => *i,
                None => {
                    self.hosts.push(ip);
                    let i = self.hosts.len() as u32;
                    self.host_index.insert(ip, i);
                    i
                }
            },
        };
        Stored {
            identity: entry.identity.get(),
            host,
        }
    }

    fn load(&self, s: Stored) -> IpEntry {
        IpEntry {
            identity: NumericIdentity::new(s.identity),
            host_ip: s.host.checked_sub(1).map(|i| self.hosts[i as usize]),
        }
    }

    /// Prefixes a source delivered (a scan: for draining and re-syncing).
    pub(crate) fn ips_of(&self, source: SourceId) -> Vec<IpNet> {
        self.ipcache.prefixes_of(source)
    }

    /// Number of prefixes with an entry.
    pub(crate) fn ip_prefixes(&self) -> usize {
        self.ipcache.len()
    }

    /// Number of prefixes a source delivered.
    pub(crate) fn ip_count(&self, source: SourceId) -> usize {
        self.ip_counts.get(&source).copied().unwrap_or(0)
    }

    /// Addresses of the local cluster (endpoints of every node) with their
    /// identity, for selecting service backends.
    pub(crate) fn local_cluster_ips(&self) -> Vec<(IpAddr, NumericIdentity)> {
        self.local_ips
            .iter()
            .filter(|p| p.prefix_len() == p.max_prefix_len())
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
    fn three_claims_and_local_addresses() {
        let mut t = Tables::new();
        let p: IpNet = "10.0.0.1/32".parse().unwrap();
        t.upsert_ip(SourceId(3), p, entry(3));
        t.upsert_ip(SourceId(2), p, entry(2));
        t.upsert_ip(SourceId::LOCAL_CLUSTER, p, entry(1));
        assert_eq!(t.ip_winner(&p), Some(entry(1)));
        assert_eq!(
            t.local_cluster_ips(),
            vec![(p.addr(), NumericIdentity::new(1))]
        );
        assert_eq!(
            t.delete_ip(SourceId(2), p),
            (Some(entry(1)), Some(entry(1)))
        );
        assert_eq!(t.delete_ip(SourceId::LOCAL_CLUSTER, p).1, Some(entry(3)));
        assert!(t.local_cluster_ips().is_empty());
        assert_eq!(t.ips_of(SourceId(3)), vec![p]);
        assert_eq!((t.ip_count(SourceId(2)), t.ip_count(SourceId(3))), (0, 1));
        assert_eq!(
            t.delete_ip(SourceId(9), p),
            (Some(entry(3)), Some(entry(3))),
            "unknown source changes nothing"
        );
    }

    #[test]
    fn reserved_identities_are_fixed() {
        let mut t = Tables::new();
        assert!(t.identities.contains_key(&NumericIdentity::WORLD));
        assert!(!t.delete_identity(SourceId(2), NumericIdentity::WORLD));
        assert!(t.identities.contains_key(&NumericIdentity::WORLD));
        let labels: Labels = [Label::k8s("app", "x")].into_iter().collect();
        assert_eq!(
            t.upsert_identity(SourceId(2), NumericIdentity::new(70000), labels.clone()),
            IdentityUpsert::Changed
        );
        assert_eq!(
            t.upsert_identity(SourceId(2), NumericIdentity::new(70000), labels),
            IdentityUpsert::Unchanged
        );
        assert_eq!(t.identities_of(SourceId(2)).len(), 1);
        assert_eq!(t.identity_count(SourceId(2)), 1);
        assert!(t.delete_identity(SourceId(2), NumericIdentity::new(70000)));
    }

    #[test]
    fn a_remote_never_replaces_a_reserved_or_local_identity() {
        let mut t = Tables::new();
        let world = t.identities[&NumericIdentity::WORLD].clone();
        let local_workload: Labels = [Label::k8s("app", "db")].into_iter().collect();
        let mine = NumericIdentity::new(1 << 16 | 300);
        t.upsert_identity(SourceId::LOCAL_CLUSTER, mine, local_workload.clone());
        let remote = SourceId(2);
        for id in [NumericIdentity::WORLD, NumericIdentity::new(200), mine] {
            assert_eq!(
                t.upsert_identity(remote, id, local_workload.clone()),
                IdentityUpsert::Refused,
                "{id}"
            );
            assert!(!t.delete_identity(remote, id), "{id}");
        }
        assert_eq!(t.identities[&NumericIdentity::WORLD], world);
        assert!(!t.identities.contains_key(&NumericIdentity::new(200)));
        assert_eq!(t.identities[&mine], local_workload);
        assert!(t.identities_of(remote).is_empty());
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
