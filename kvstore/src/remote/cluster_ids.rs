//! Which remote holds which cluster ID: two remotes may not claim the same
//! one (as Cilium's `pkg/clustermesh/common/idsmgr.go`). Agents release a
//! remote's ID when its connection ends; kvstoremesh keeps it while the
//! remote is disconnected (its cache still holds the remote's data under
//! it) and releases it on removal or refusal.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use super::{
    accept::accept_cluster_config,
    failure::{Failure, FailureKind},
};
use crate::{
    cluster::{ClusterId, ClusterName, MaxConnectedClusters},
    values::ClusterConfig,
};

/// The registry, shared by every remote's connection.
#[derive(Debug, Clone, Default)]
pub struct ClusterIds {
    holders: Arc<Mutex<HashMap<ClusterId, ClusterName>>>,
}

impl ClusterIds {
    /// Gives `id` to `remote`, unless another remote holds it (returned).
    /// A remote holds one ID: what it held before is released.
    pub fn reserve(&self, id: ClusterId, remote: &ClusterName) -> Result<(), ClusterName> {
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

    /// Checks `remote`'s published cluster config against this cluster
    /// ([`accept_cluster_config`]) and reserves its ID: an ID another
    /// remote holds is an [`FailureKind::IdConflict`].
    pub fn admit(
        &self,
        remote: &ClusterName,
        config: &ClusterConfig,
        local_id: ClusterId,
        mode: MaxConnectedClusters,
    ) -> Result<ClusterId, Failure> {
        let id = accept_cluster_config(config, local_id, mode)?;
        self.reserve(id, remote).map_err(|holder| {
            Failure::new(
                FailureKind::IdConflict,
                format!("cluster ID {id} is already used by remote cluster {holder}"),
            )
        })?;
        Ok(id)
    }

    /// `remote` no longer holds an ID (disconnected, refused or removed).
    pub fn release(&self, remote: &ClusterName) {
        self.holders
            .lock()
            .expect("cluster IDs")
            .retain(|_, holder| holder != remote);
    }

    /// How many remotes hold an ID (are connected).
    pub fn len(&self) -> usize {
        self.holders.lock().expect("cluster IDs").len()
    }

    /// Whether no remote holds an ID.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
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
