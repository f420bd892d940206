//! What the Hubble server knows about the two ends of a flow, kept current
//! by the agent's writers and read by the flow reader once per batch:
//! identity → labels, namespace and cluster; IP → pod (local endpoints,
//! and remote ones whose ipcache entry names a pod).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, RwLock, RwLockReadGuard},
};

use kvstore::{CLUSTER_LABEL, Labels, NAMESPACE_LABEL, NumericIdentity};

/// An identity as flows show it (shared by every flow of the identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdentityInfo {
    /// `source:key=value` (`source:key` when the value is empty), sorted.
    pub labels: Vec<String>,
    pub namespace: String,
    /// From the cluster label; empty for reserved identities.
    pub cluster: String,
}

impl IdentityInfo {
    pub(crate) fn from_labels(labels: &Labels) -> Self {
        let mut strings: Vec<String> = labels
            .iter()
            .map(|l| {
                if l.value.is_empty() {
                    format!("{}:{}", l.source, l.key)
                } else {
                    format!("{}:{}={}", l.source, l.key, l.value)
                }
            })
            .collect();
        strings.sort();
        Self {
            labels: strings,
            namespace: labels.value(NAMESPACE_LABEL).unwrap_or_default().to_owned(),
            cluster: labels.value(CLUSTER_LABEL).unwrap_or_default().to_owned(),
        }
    }
}

/// A pod behind an IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodInfo {
    pub namespace: String,
    pub name: String,
    /// The endpoint's ID when it is on this node.
    pub endpoint_id: Option<u32>,
}

/// The flow reader looks up both ends of every flow: a fast seeded hasher
/// (foldhash) rather than SipHash, whose cost showed in the ingest benchmark.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
pub(crate) struct Entries {
    identities: Map<NumericIdentity, Arc<IdentityInfo>>,
    pods: Map<IpAddr, Arc<PodInfo>>,
}

impl Entries {
    pub(crate) fn identity(&self, id: u32) -> Option<Arc<IdentityInfo>> {
        self.identities.get(&NumericIdentity::new(id)).cloned()
    }

    pub(crate) fn pod(&self, ip: &IpAddr) -> Option<Arc<PodInfo>> {
        self.pods.get(ip).cloned()
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct FlowDirectory {
    entries: RwLock<Entries>,
}

impl FlowDirectory {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// For a batch of lookups.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Entries> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Entries> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_identity(&self, id: NumericIdentity, labels: &Labels) {
        let info = Arc::new(IdentityInfo::from_labels(labels));
        self.write().identities.insert(id, info);
    }

    pub(crate) fn remove_identity(&self, id: NumericIdentity) {
        self.write().identities.remove(&id);
    }

    /// A pod from an ipcache entry (a remote one, or the local cluster's
    /// echo of a local endpoint: a local endpoint's ID is kept).
    pub(crate) fn set_pod(&self, ip: IpAddr, namespace: &str, name: &str) {
        if name.is_empty() {
            return;
        }
        let mut entries = self.write();
        let endpoint_id = entries.pods.get(&ip).and_then(|p| p.endpoint_id);
        let pod = PodInfo {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            endpoint_id,
        };
        if entries.pods.get(&ip).is_none_or(|p| **p != pod) {
            entries.pods.insert(ip, Arc::new(pod));
        }
    }

    /// A pod whose ipcache entry went; a local endpoint stays until it is
    /// detached.
    pub(crate) fn remove_pod(&self, ip: &IpAddr) {
        let mut entries = self.write();
        if entries
            .pods
            .get(ip)
            .is_some_and(|p| p.endpoint_id.is_none())
        {
            entries.pods.remove(ip);
        }
    }

    /// An endpoint of this node.
    pub(crate) fn set_local_endpoint(&self, ip: IpAddr, id: u32, namespace: &str, name: &str) {
        self.write().pods.insert(
            ip,
            Arc::new(PodInfo {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                endpoint_id: Some(id),
            }),
        );
    }

    pub(crate) fn remove_local_endpoint(&self, ip: &IpAddr) {
        self.write().pods.remove(ip);
    }
}

#[cfg(test)]
mod tests {
    use kvstore::Label;

    use super::*;

    #[test]
    fn identities_show_labels_namespace_and_cluster() {
        let labels: Labels = [
            Label::new("k8s", "app", "web"),
            Label::new("k8s", CLUSTER_LABEL, "c2"),
            Label::new("k8s", NAMESPACE_LABEL, "shop"),
        ]
        .into_iter()
        .collect();
        let info = IdentityInfo::from_labels(&labels);
        assert_eq!(info.cluster, "c2");
        assert_eq!(info.namespace, "shop");
        assert_eq!(info.labels[0], "k8s:app=web");
        let world: Labels = [Label::new("reserved", "world", "")].into_iter().collect();
        assert_eq!(IdentityInfo::from_labels(&world).labels, ["reserved:world"]);
    }

    #[test]
    fn a_local_endpoint_keeps_its_id_when_etcd_echoes_it() {
        let d = FlowDirectory::new();
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        d.set_local_endpoint(ip, 7, "default", "web");
        d.set_pod(ip, "default", "web");
        d.remove_pod(&ip);
        assert_eq!(d.read().pod(&ip).unwrap().endpoint_id, Some(7));
        d.remove_local_endpoint(&ip);
        assert!(d.read().pod(&ip).is_none());
    }
}
