//! What the Hubble server knows about the two ends of a flow, kept current
//! by the agent's writers and read by the flow reader once per batch:
//! identity → labels, namespace and cluster; IP → pod (local endpoints,
//! and remote ones whose ipcache entry names a pod).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, RwLock, RwLockReadGuard},
};

use hubble_api::flow::Policy;
use kvstore::{CLUSTER_LABEL, Labels, NAMESPACE_LABEL, NumericIdentity, values::CLUSTERWIDE};

use crate::policy_resolver::RuleRef;

/// An identity as flows show it (shared by every flow of the identity),
/// kept in one string: there is one per identity of the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdentityInfo {
    /// `source:key=value` (`source:key` when the value is empty), sorted,
    /// one per line.
    text: Box<str>,
    /// Where the namespace and the cluster (from the cluster label, empty
    /// for reserved identities) are in `text`.
    namespace: (u32, u32),
    cluster: (u32, u32),
}

impl IdentityInfo {
    pub(crate) fn from_labels(labels: &Labels) -> Self {
        let mut lines: Vec<(String, bool, bool)> = labels
            .iter()
            .map(|l| {
                let text = if l.value.is_empty() {
                    format!("{}:{}", l.source, l.key)
                } else {
                    format!("{}:{}={}", l.source, l.key, l.value)
                };
                (text, l.key == NAMESPACE_LABEL, l.key == CLUSTER_LABEL)
            })
            .collect();
        lines.sort();
        let (mut text, mut namespace, mut cluster) = (String::new(), (0, 0), (0, 0));
        for (line, is_namespace, is_cluster) in lines {
            if !text.is_empty() {
                text.push('\n');
            }
            let end = text.len() + line.len();
            let value_start = end - line.rsplit_once('=').map_or(0, |(_, v)| v.len());
            let range = (
                u32::try_from(value_start).unwrap_or(0),
                u32::try_from(end).unwrap_or(0),
            );
            if is_namespace {
                namespace = range;
            }
            if is_cluster {
                cluster = range;
            }
            text.push_str(&line);
        }
        Self {
            text: text.into(),
            namespace,
            cluster,
        }
    }

    /// The labels, sorted.
    pub(crate) fn labels(&self) -> impl Iterator<Item = &str> {
        self.text.split('\n').filter(|l| !l.is_empty())
    }

    pub(crate) fn namespace(&self) -> &str {
        self.slice(self.namespace)
    }

    pub(crate) fn cluster(&self) -> &str {
        self.slice(self.cluster)
    }

    fn slice(&self, (start, end): (u32, u32)) -> &str {
        self.text
            .get(start as usize..end as usize)
            .unwrap_or_default()
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

/// The pods ipcache entries name (of this cluster's other nodes and of
/// remote clusters: as many as there are entries), kept compact: names in
/// one string, namespaces interned, about 40 bytes per entry.
#[derive(Debug, Default)]
struct PodNames {
    index: Map<IpAddr, PodSlot>,
    names: String,
    namespaces: Vec<Box<str>>,
    namespace_ids: Map<Box<str>, u16>,
    /// Bytes of `names` no slot refers to any more.
    dead: usize,
}

#[derive(Debug, Clone, Copy)]
struct PodSlot {
    offset: u32,
    len: u16,
    namespace: u16,
}

/// Garbage in `PodNames::names` is collected once it is this large and
/// at least half of the string.
const PODS_COMPACT_MIN: usize = 64 * 1024;

impl PodNames {
    fn get(&self, ip: &IpAddr) -> Option<(&str, &str)> {
        let slot = self.index.get(ip)?;
        let start = slot.offset as usize;
        let name = self.names.get(start..start + usize::from(slot.len))?;
        let namespace = self.namespaces.get(usize::from(slot.namespace))?;
        Some((namespace, name))
    }

    fn set(&mut self, ip: IpAddr, namespace: &str, name: &str) {
        if self.get(&ip) == Some((namespace, name)) {
            return;
        }
        let (Ok(len), Ok(offset)) = (u16::try_from(name.len()), u32::try_from(self.names.len()))
        else {
            return; // an absurd name or 4 GiB of names: the pod stays unnamed
        };
        let namespace = match self.namespace_ids.get(namespace) {
            Some(id) => *id,
            None => {
                let Ok(id) = u16::try_from(self.namespaces.len()) else {
                    return;
                };
                self.namespaces.push(namespace.into());
                self.namespace_ids.insert(namespace.into(), id);
                id
            }
        };
        self.names.push_str(name);
        if let Some(old) = self.index.insert(
            ip,
            PodSlot {
                offset,
                len,
                namespace,
            },
        ) {
            self.dead += usize::from(old.len);
        }
    }

    fn remove(&mut self, ip: &IpAddr) {
        if let Some(old) = self.index.remove(ip) {
            self.dead += usize::from(old.len);
            self.compact();
        }
    }

    fn compact(&mut self) {
        if self.dead < PODS_COMPACT_MIN || self.dead * 2 < self.names.len() {
            return;
        }
        let mut names = String::with_capacity(self.names.len() - self.dead);
        for slot in self.index.values_mut() {
            let start = slot.offset as usize;
            let name = &self.names[start..start + usize::from(slot.len)];
            slot.offset = u32::try_from(names.len()).unwrap_or(u32::MAX);
            names.push_str(name);
        }
        self.names = names;
        self.dead = 0;
        self.index.shrink_to_fit();
    }
}

#[derive(Debug, Default)]
pub(crate) struct Entries {
    identities: Map<NumericIdentity, Arc<IdentityInfo>>,
    /// This node's endpoints: few, resolved when a flow is read in.
    local: Map<IpAddr, Arc<PodInfo>>,
    /// Pods named by ipcache entries: resolved when a flow is served.
    pods: PodNames,
    /// Policy rules by the cookie their map entries carry.
    rules: Map<u32, Arc<Policy>>,
}

impl Entries {
    pub(crate) fn identity(&self, id: u32) -> Option<Arc<IdentityInfo>> {
        self.identities.get(&NumericIdentity::new(id)).cloned()
    }

    /// One of this node's endpoints.
    pub(crate) fn local_endpoint(&self, ip: &IpAddr) -> Option<Arc<PodInfo>> {
        self.local.get(ip).cloned()
    }

    /// (namespace, name) of the pod an ipcache entry names.
    pub(crate) fn pod(&self, ip: &IpAddr) -> Option<(&str, &str)> {
        self.pods.get(ip)
    }

    /// The policy rule of a policy map entry's cookie.
    pub(crate) fn rule(&self, cookie: u32) -> Option<Arc<Policy>> {
        self.rules.get(&cookie).cloned()
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

    /// The pod an ipcache entry names (a remote one, or one of this
    /// cluster's, this node's own included).
    pub(crate) fn set_pod(&self, ip: IpAddr, namespace: &str, name: &str) {
        if !name.is_empty() {
            self.write().pods.set(ip, namespace, name);
        }
    }

    /// The ipcache entry of a pod went.
    pub(crate) fn remove_pod(&self, ip: &IpAddr) {
        self.write().pods.remove(ip);
    }

    /// An endpoint of this node.
    pub(crate) fn set_local_endpoint(&self, ip: IpAddr, id: u32, namespace: &str, name: &str) {
        self.write().local.insert(
            ip,
            Arc::new(PodInfo {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                endpoint_id: Some(id),
            }),
        );
    }

    pub(crate) fn remove_local_endpoint(&self, ip: &IpAddr) {
        self.write().local.remove(ip);
    }

    /// Names the rule of `cookie` as Hubble's `Policy`: the policy's name,
    /// namespace (empty for clusterwide ones) and kind, with Cilium's
    /// derived labels and the rule's path in the policy.
    pub(crate) fn set_rule(&self, cookie: u32, rule: &RuleRef) {
        let (namespace, name) = rule
            .policy
            .split_once('/')
            .unwrap_or(("", rule.policy.as_str()));
        let (namespace, kind) = if namespace == CLUSTERWIDE {
            ("", "CiliumClusterwideNetworkPolicy")
        } else {
            (namespace, "CiliumNetworkPolicy")
        };
        let mut labels = vec![
            format!("k8s:io.cilium.k8s.policy.derived-from={kind}"),
            format!("k8s:io.cilium.k8s.policy.name={name}"),
        ];
        if !namespace.is_empty() {
            labels.push(format!("k8s:io.cilium.k8s.policy.namespace={namespace}"));
        }
        labels.push(format!("clustermesh:rule={}", rule.path));
        let policy = Policy {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            labels,
            revision: 0,
            kind: kind.to_owned(),
        };
        self.write().rules.insert(cookie, Arc::new(policy));
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
        assert_eq!(info.cluster(), "c2");
        assert_eq!(info.namespace(), "shop");
        assert_eq!(
            info.labels().collect::<Vec<_>>(),
            [
                "k8s:app=web",
                "k8s:io.cilium.k8s.policy.cluster=c2",
                "k8s:io.kubernetes.pod.namespace=shop"
            ]
        );
        let world: Labels = [Label::new("reserved", "world", "")].into_iter().collect();
        let world = IdentityInfo::from_labels(&world);
        assert_eq!(world.labels().collect::<Vec<_>>(), ["reserved:world"]);
        assert_eq!((world.namespace(), world.cluster()), ("", ""));
    }

    #[test]
    fn local_endpoints_and_named_pods_are_kept_apart() {
        let d = FlowDirectory::new();
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        d.set_local_endpoint(ip, 7, "default", "web");
        d.set_pod(ip, "default", "web");
        d.remove_pod(&ip);
        assert_eq!(d.read().local_endpoint(&ip).unwrap().endpoint_id, Some(7));
        assert!(d.read().pod(&ip).is_none());
        d.remove_local_endpoint(&ip);
        assert!(d.read().local_endpoint(&ip).is_none());
    }

    #[test]
    fn pod_names_are_replaced_removed_and_compacted() {
        let mut pods = PodNames::default();
        let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        for i in 0..20_000 {
            pods.set(
                ip(i),
                if i % 2 == 0 { "a" } else { "b" },
                &format!("pod-{i}"),
            );
        }
        pods.set(ip(1), "c", "renamed");
        assert_eq!(pods.get(&ip(1)), Some(("c", "renamed")));
        assert_eq!(pods.get(&ip(2)), Some(("a", "pod-2")));
        for i in 10..20_000 {
            pods.remove(&ip(i));
        }
        // 20,000 names of about 9 bytes were written; the garbage went
        assert!(
            pods.names.len() < 100_000,
            "compacted: {} bytes",
            pods.names.len()
        );
        assert_eq!(pods.get(&ip(3)), Some(("b", "pod-3")));
        assert_eq!(pods.get(&ip(1)), Some(("c", "renamed")));
        assert_eq!(pods.get(&ip(10)), None);
        assert_eq!(pods.namespaces.len(), 3, "namespaces are interned");
    }
}
