//! The datapath as the control loop writes it: the kernel's pinned maps and
//! attached programs ([`bpf::Datapath`]), or plain memory
//! ([`MemoryDatapath`], for unit tests of the loop without root or a kernel).
//!
//! Not for: deciding what to write (that is [`crate::datapath_sync`]) or
//! reading flow events.

use std::collections::BTreeMap;

use bpf::{
    BackendKey, BackendValue, CtKey, CtValue, Datapath, DatapathError, EndpointAttach,
    EndpointDetach, EndpointInfo, EndpointKey, IpCacheKey, IpCacheValue, MapError, PolicyKey,
    PolicyValue, Record, ServiceKey, ServiceValue, TypedMap,
};

/// One map's operations, as the agent uses them.
pub(crate) trait MapOps<K, V>: Send + Sync {
    fn upsert(&self, key: &K, value: &V) -> Result<(), MapError>;
    fn delete(&self, key: &K) -> Result<bool, MapError>;
    fn batch_upsert(&self, entries: &[(K, V)]) -> Result<(), MapError>;
    fn batch_delete(&self, keys: &[K]) -> Result<(), MapError>;
    fn dump(&self) -> Result<BTreeMap<K, V>, MapError>;
}

impl<K, V> MapOps<K, V> for TypedMap<K, V>
where
    K: Record + Ord,
    V: Record + PartialEq,
{
    fn upsert(&self, key: &K, value: &V) -> Result<(), MapError> {
        TypedMap::upsert(self, key, value)
    }
    fn delete(&self, key: &K) -> Result<bool, MapError> {
        TypedMap::delete(self, key)
    }
    fn batch_upsert(&self, entries: &[(K, V)]) -> Result<(), MapError> {
        TypedMap::batch_upsert(self, entries)
    }
    fn batch_delete(&self, keys: &[K]) -> Result<(), MapError> {
        TypedMap::batch_delete(self, keys)
    }
    fn dump(&self) -> Result<BTreeMap<K, V>, MapError> {
        TypedMap::dump(self)
    }
}

/// The maps and endpoint attachment the control loop writes through.
pub(crate) trait DatapathMaps: Send {
    fn ipcache(&self) -> &dyn MapOps<IpCacheKey, IpCacheValue>;
    fn policy(&self) -> &dyn MapOps<PolicyKey, PolicyValue>;
    fn endpoints(&self) -> &dyn MapOps<EndpointKey, EndpointInfo>;
    fn services(&self) -> &dyn MapOps<ServiceKey, ServiceValue>;
    fn backends(&self) -> &dyn MapOps<BackendKey, BackendValue>;
    fn conntrack(&self) -> &dyn MapOps<CtKey, CtValue>;
    /// `(map, max entries)`.
    fn capacities(&self) -> Vec<(&'static str, u32)>;
    /// Writes the endpoint's entry and attaches the programs to its veth;
    /// returns the interface index.
    fn attach_endpoint(&mut self, endpoint: &EndpointAttach) -> Result<u32, DatapathError>;
    /// Detaches the programs and removes the endpoint's entry.
    fn detach_endpoint(&mut self, endpoint: &EndpointDetach) -> Result<(), DatapathError>;
}

impl DatapathMaps for Datapath {
    fn ipcache(&self) -> &dyn MapOps<IpCacheKey, IpCacheValue> {
        Datapath::ipcache(self)
    }
    fn policy(&self) -> &dyn MapOps<PolicyKey, PolicyValue> {
        Datapath::policy(self)
    }
    fn endpoints(&self) -> &dyn MapOps<EndpointKey, EndpointInfo> {
        Datapath::endpoints(self)
    }
    fn services(&self) -> &dyn MapOps<ServiceKey, ServiceValue> {
        Datapath::services(self)
    }
    fn backends(&self) -> &dyn MapOps<BackendKey, BackendValue> {
        Datapath::backends(self)
    }
    fn conntrack(&self) -> &dyn MapOps<CtKey, CtValue> {
        Datapath::conntrack(self)
    }
    fn capacities(&self) -> Vec<(&'static str, u32)> {
        Datapath::capacities(self).to_vec()
    }
    fn attach_endpoint(&mut self, endpoint: &EndpointAttach) -> Result<u32, DatapathError> {
        Datapath::attach_endpoint(self, endpoint)
    }
    fn detach_endpoint(&mut self, endpoint: &EndpointDetach) -> Result<(), DatapathError> {
        Datapath::detach_endpoint(self, endpoint)
    }
}

#[cfg(test)]
pub(crate) use memory::MemoryDatapath;

#[cfg(test)]
mod memory {
    use std::{
        collections::BTreeMap,
        sync::{Arc, Mutex},
    };

    use bpf::{
        BackendKey, BackendValue, CtKey, CtValue, DatapathError, EndpointAttach, EndpointDetach,
        EndpointInfo, EndpointKey, IpCacheKey, IpCacheValue, MapError, PolicyKey, PolicyValue,
        ServiceKey, ServiceValue,
    };

    use super::{DatapathMaps, MapOps};

    /// A map in memory; clones share the content (the test keeps one to
    /// look at what the loop wrote).
    #[derive(Debug)]
    pub(crate) struct MemoryMap<K, V>(Arc<Mutex<BTreeMap<K, V>>>, Arc<Mutex<Option<usize>>>);

    impl<K, V> Clone for MemoryMap<K, V> {
        fn clone(&self) -> Self {
            Self(self.0.clone(), self.1.clone())
        }
    }

    impl<K, V> Default for MemoryMap<K, V> {
        fn default() -> Self {
            Self(Arc::default(), Arc::default())
        }
    }

    impl<K: Ord + Clone, V: Clone> MemoryMap<K, V> {
        pub(crate) fn content(&self) -> BTreeMap<K, V> {
            self.0.lock().expect("map").clone()
        }

        /// The next batch update stops with an error after `applied`
        /// entries, as the kernel's does when it runs out of memory.
        pub(crate) fn fail_next_batch(&self, applied: usize) {
            *self.1.lock().expect("fault") = Some(applied);
        }
    }

    impl<K, V> MapOps<K, V> for MemoryMap<K, V>
    where
        K: Ord + Copy + Send,
        V: Copy + Send,
    {
        fn upsert(&self, key: &K, value: &V) -> Result<(), MapError> {
            self.0.lock().expect("map").insert(*key, *value);
            Ok(())
        }
        fn delete(&self, key: &K) -> Result<bool, MapError> {
            Ok(self.0.lock().expect("map").remove(key).is_some())
        }
        fn batch_upsert(&self, entries: &[(K, V)]) -> Result<(), MapError> {
            if let Some(applied) = self.1.lock().expect("fault").take() {
                let applied = applied.min(entries.len());
                self.0
                    .lock()
                    .expect("map")
                    .extend(entries[..applied].iter().copied());
                return Err(MapError::BatchUpdate {
                    map: "memory",
                    applied,
                    total: entries.len(),
                    source: std::io::Error::from_raw_os_error(libc::ENOMEM),
                });
            }
            self.0.lock().expect("map").extend(entries.iter().copied());
            Ok(())
        }
        fn batch_delete(&self, keys: &[K]) -> Result<(), MapError> {
            let mut map = self.0.lock().expect("map");
            for key in keys {
                map.remove(key);
            }
            Ok(())
        }
        fn dump(&self) -> Result<BTreeMap<K, V>, MapError> {
            Ok(self.0.lock().expect("map").clone())
        }
    }

    /// The datapath's maps in memory; attaching gives each interface name
    /// an index of its own.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct MemoryDatapath {
        pub ipcache: MemoryMap<IpCacheKey, IpCacheValue>,
        pub policy: MemoryMap<PolicyKey, PolicyValue>,
        pub endpoints: MemoryMap<EndpointKey, EndpointInfo>,
        pub services: MemoryMap<ServiceKey, ServiceValue>,
        pub backends: MemoryMap<BackendKey, BackendValue>,
        pub conntrack: MemoryMap<CtKey, CtValue>,
        pub interfaces: Arc<Mutex<BTreeMap<String, u32>>>,
    }

    impl DatapathMaps for MemoryDatapath {
        fn ipcache(&self) -> &dyn MapOps<IpCacheKey, IpCacheValue> {
            &self.ipcache
        }
        fn policy(&self) -> &dyn MapOps<PolicyKey, PolicyValue> {
            &self.policy
        }
        fn endpoints(&self) -> &dyn MapOps<EndpointKey, EndpointInfo> {
            &self.endpoints
        }
        fn services(&self) -> &dyn MapOps<ServiceKey, ServiceValue> {
            &self.services
        }
        fn backends(&self) -> &dyn MapOps<BackendKey, BackendValue> {
            &self.backends
        }
        fn conntrack(&self) -> &dyn MapOps<CtKey, CtValue> {
            &self.conntrack
        }
        fn capacities(&self) -> Vec<(&'static str, u32)> {
            Vec::new()
        }
        fn attach_endpoint(&mut self, endpoint: &EndpointAttach) -> Result<u32, DatapathError> {
            let ifindex = {
                let mut interfaces = self.interfaces.lock().expect("interfaces");
                let next = interfaces.values().max().map_or(10, |i| i + 1);
                *interfaces.entry(endpoint.ifname.clone()).or_insert(next)
            };
            self.endpoints
                .upsert(&EndpointKey { ifindex }, &endpoint.info())?;
            Ok(ifindex)
        }
        fn detach_endpoint(&mut self, endpoint: &EndpointDetach) -> Result<(), DatapathError> {
            let ifindex = self
                .interfaces
                .lock()
                .expect("interfaces")
                .remove(&endpoint.ifname);
            if let Some(ifindex) = ifindex {
                self.endpoints.delete(&EndpointKey { ifindex })?;
            }
            Ok(())
        }
    }
}
