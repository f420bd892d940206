//! Which sources feed the loop and whether each has delivered its initial
//! view: until every one has (or the sync timeout passed), deletions wait.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use crate::{tables::SourceId, views::SourceView};

/// The kinds of data a source delivers; a source is synced when each kind
/// it registered is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum StoreKind {
    Identities,
    IpCache,
    Nodes,
    Services,
    Policies,
    ServiceDefs,
}

impl StoreKind {
    /// What a remote cluster delivers.
    pub(crate) const REMOTE: [Self; 4] =
        [Self::Identities, Self::IpCache, Self::Nodes, Self::Services];
    /// What the local cluster's etcd delivers.
    pub(crate) const LOCAL: [Self; 5] = [
        Self::Identities,
        Self::IpCache,
        Self::Nodes,
        Self::Policies,
        Self::ServiceDefs,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Identities => "identities",
            Self::IpCache => "ipcache",
            Self::Nodes => "nodes",
            Self::Services => "services",
            Self::Policies => "policies",
            Self::ServiceDefs => "servicedefs",
        }
    }
}

/// One source: a cluster.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub name: String,
    pub cluster_id: u32,
    /// Its pod pools, where known: its nodes' routes must lie inside.
    pub pod_cidr_pools: Vec<IpNet>,
    expected: BTreeSet<StoreKind>,
    synced: BTreeSet<StoreKind>,
}

impl Source {
    pub(crate) fn new(
        name: impl Into<String>,
        cluster_id: u32,
        kinds: impl IntoIterator<Item = StoreKind>,
        pod_cidr_pools: Vec<IpNet>,
    ) -> Self {
        Self {
            name: name.into(),
            cluster_id,
            pod_cidr_pools,
            expected: kinds.into_iter().collect(),
            synced: BTreeSet::new(),
        }
    }

    fn is_synced(&self) -> bool {
        self.expected.is_subset(&self.synced)
    }
}

/// The sources and their sync.
#[derive(Debug)]
pub(crate) struct Sources {
    by_id: BTreeMap<SourceId, Source>,
    /// Every source delivered its initial view once.
    synced: bool,
    /// The sync timeout passed before that: routes and services are
    /// programmed, deletions still wait.
    timed_out: bool,
}

impl Sources {
    /// The local cluster as the first source.
    pub(crate) fn new(local: Source) -> Self {
        Self {
            by_id: BTreeMap::from([(SourceId::LOCAL_CLUSTER, local)]),
            synced: false,
            timed_out: false,
        }
    }

    /// Every source delivered its initial view once.
    pub(crate) fn is_synced(&self) -> bool {
        self.synced
    }

    /// The sync timeout passed before every source synced.
    pub(crate) fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// Synced, or past the timeout: routes and services are programmed.
    pub(crate) fn is_settled(&self) -> bool {
        self.synced || self.timed_out
    }

    pub(crate) fn name(&self, id: SourceId) -> Option<&str> {
        self.by_id.get(&id).map(|s| s.name.as_str())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (SourceId, &Source)> {
        self.by_id.iter().map(|(id, s)| (*id, s))
    }

    pub(crate) fn remotes(&self) -> impl Iterator<Item = (SourceId, &Source)> {
        self.iter().filter(|(id, _)| !id.is_local())
    }

    /// A source appears, or comes back with new facts; what it had synced
    /// stays synced.
    pub(crate) fn register(&mut self, id: SourceId, mut source: Source) {
        if let Some(old) = self.by_id.get(&id) {
            source.synced = old.synced.clone();
        }
        self.by_id.insert(id, source);
    }

    /// A source is gone. True if that completes the sync.
    pub(crate) fn remove(&mut self, id: SourceId) -> (Option<Source>, bool) {
        let removed = self.by_id.remove(&id);
        (removed, self.check_complete())
    }

    /// A kind of a source delivered its initial view. True if that
    /// completes the sync.
    pub(crate) fn mark_synced(&mut self, id: SourceId, kind: StoreKind) -> bool {
        if let Some(s) = self.by_id.get_mut(&id) {
            s.synced.insert(kind);
        }
        self.check_complete()
    }

    /// The sync timeout passed; true if that changes anything.
    pub(crate) fn time_out(&mut self) -> bool {
        if self.is_settled() {
            return false;
        }
        self.timed_out = true;
        true
    }

    fn check_complete(&mut self) -> bool {
        if !self.synced && self.by_id.values().all(Source::is_synced) {
            self.synced = true;
            return true;
        }
        false
    }

    /// The sources still waited for, with the kinds missing.
    pub(crate) fn unsynced(&self) -> Vec<String> {
        self.by_id
            .values()
            .filter(|s| !s.is_synced())
            .map(|s| {
                let missing: Vec<&str> = s
                    .expected
                    .difference(&s.synced)
                    .map(|k| k.as_str())
                    .collect();
                format!("{} ({})", s.name, missing.join(", "))
            })
            .collect()
    }

    /// The cluster ID a source registered under the cluster name `name`.
    pub(crate) fn cluster_id_of(&self, name: &str) -> Option<u32> {
        self.by_id
            .values()
            .find(|s| s.name == name)
            .map(|s| s.cluster_id)
    }

    /// The source named `name`.
    pub(crate) fn id_of(&self, name: &str) -> Option<SourceId> {
        self.by_id
            .iter()
            .find(|(_, s)| s.name == name)
            .map(|(id, _)| *id)
    }

    /// Sync per kind, for `status`; `counts` gives (ipcache entries,
    /// identities) of a source.
    pub(crate) fn views(&self, counts: impl Fn(SourceId) -> (usize, usize)) -> Vec<SourceView> {
        self.by_id
            .iter()
            .map(|(id, s)| {
                let (ipcache_entries, identities) = counts(*id);
                SourceView {
                    name: s.name.clone(),
                    synced: s
                        .expected
                        .iter()
                        .map(|k| (k.as_str().to_string(), s.synced.contains(k)))
                        .collect(),
                    ipcache_entries,
                    identities,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_once_every_kind_of_every_source_synced() {
        let mut sources = Sources::new(Source::new("c1", 1, [StoreKind::Identities], vec![]));
        sources.register(SourceId(2), Source::new("c2", 2, StoreKind::REMOTE, vec![]));
        assert!(!sources.mark_synced(SourceId::LOCAL_CLUSTER, StoreKind::Identities));
        for kind in &StoreKind::REMOTE[..3] {
            assert!(!sources.mark_synced(SourceId(2), *kind));
        }
        assert_eq!(sources.unsynced(), ["c2 (services)"]);
        assert!(sources.mark_synced(SourceId(2), StoreKind::Services));
        assert!(sources.is_synced());
        // Once: a later source does not take the sync back.
        sources.register(SourceId(3), Source::new("c3", 3, StoreKind::REMOTE, vec![]));
        assert!(sources.is_synced());
    }

    #[test]
    fn removing_the_last_unsynced_source_completes_the_sync() {
        let mut sources = Sources::new(Source::new("c1", 1, [], vec![]));
        sources.register(SourceId(2), Source::new("c2", 2, StoreKind::REMOTE, vec![]));
        assert!(sources.time_out());
        assert!(!sources.time_out());
        assert!(sources.timed_out() && !sources.is_synced());
        let (removed, complete) = sources.remove(SourceId(2));
        assert_eq!(removed.map(|s| s.name), Some("c2".to_string()));
        assert!(complete);
    }
}
