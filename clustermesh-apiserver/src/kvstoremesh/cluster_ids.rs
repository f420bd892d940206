//! Which remote holds which cluster ID: two remotes may not claim the same
//! one (as Cilium's `pkg/clustermesh/common/idsmgr.go`; the agent keeps the
//! same registry for its direct connections). A mirror keeps its remote's ID
//! while it is disconnected, since the cache still holds the remote's data
//! under it; it is released on removal or refusal.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use kvstore::{ClusterId, ClusterName};

/// The registry, shared by every remote's connection.
#[derive(Debug, Clone, Default)]
pub(super) struct ClusterIds {
    holders: Arc<Mutex<HashMap<ClusterId, ClusterName>>>,
}

impl ClusterIds {
    /// Gives `id` to `remote`, unless another remote holds it (returned).
    /// A remote holds one ID: what it held before is released.
    pub(super) fn reserve(&self, id: ClusterId, remote: &ClusterName) -> Result<(), ClusterName> {
        let mut holders = self.holders.lock().expect("cluster IDs");
        match holders.get(&id) {
            Some(holder) if holder != remote => Err(holder.clone()),
            _ => {
                holders.retain(|_, holder| holder != remote);
                holders.insert(id, remote.clone());
                Ok(())
            }
        }
    }

    /// `remote` no longer holds an ID (disconnected, refused or removed).
    pub(super) fn release(&self, remote: &ClusterName) {
        self.holders
            .lock()
            .expect("cluster IDs")
            .retain(|_, holder| holder != remote);
    }
}

#[cfg(test)]
mod tests {
    use kvstore::MaxConnectedClusters;

    use super::*;

    #[test]
    fn one_holder_per_id() {
        let ids = ClusterIds::default();
        let name = |n: &str| ClusterName::new(n).unwrap();
        let id = |n: u32| ClusterId::new(n, MaxConnectedClusters::C255).unwrap();
        assert_eq!(ids.reserve(id(2), &name("c2")), Ok(()));
        assert_eq!(
            ids.reserve(id(2), &name("c2")),
            Ok(()),
            "again by its holder"
        );
        assert_eq!(ids.reserve(id(2), &name("c3")), Err(name("c2")));
        // c2 moves to another ID: its old one is free.
        assert_eq!(ids.reserve(id(4), &name("c2")), Ok(()));
        assert_eq!(ids.reserve(id(2), &name("c3")), Ok(()));
        ids.release(&name("c2"));
        assert_eq!(ids.reserve(id(4), &name("c5")), Ok(()));
    }
}
