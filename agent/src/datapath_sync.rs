//! Keeps the eBPF maps equal to what the agent computed, with as few and as
//! batched writes as possible.
//!
//! The agent hands over desired content incrementally (one prefix, one
//! endpoint's policy, the services); this keeps a copy of what it wrote,
//! queues only the differences and writes them in batches on
//! [`DatapathSync::flush`]. Until every source has synced after a start,
//! policy and endpoint deletions are held back and what the pinned maps held
//! before the restart stays ([`DatapathSync::finish_sync`] then removes what
//! is stale), so a restart never withdraws an entry that the new, still
//! partial view simply has not seen yet. This holds past the sync timeout
//! too: availability first, and removals catch up once the view is complete.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    path::PathBuf,
};

use bpf::{
    BackendKey, BackendValue, DatapathError, Direction, EndpointAttach, EndpointDetach,
    EndpointInfo, EndpointKey, EndpointPolicy, IpCacheKey, IpCacheValue, MapError, PolicyKey,
    PolicyValue, ServiceKey, ServiceValue, plan, service_entries,
};
use ipnet::IpNet;
use tracing::debug;

use crate::{
    datapath_maps::{DatapathMaps, MapOps},
    endpoint::EndpointId,
    service_merger::MergedFrontend,
    tables::IpEntry,
};

/// What a flush wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FlushStats {
    pub upserts: usize,
    pub deletes: usize,
}

/// Pending writes of one map.
struct Pending<K, V> {
    upserts: BTreeMap<K, V>,
    deletes: BTreeSet<K>,
}

impl<K: Ord + Copy, V: Copy> Default for Pending<K, V> {
    fn default() -> Self {
        Self {
            upserts: BTreeMap::new(),
            deletes: BTreeSet::new(),
        }
    }
}

/// Writes what is pending in a map without a copy of its content.
fn flush_pending<K: Ord + Copy, V: Copy>(
    pending: &mut Pending<K, V>,
    map: &dyn MapOps<K, V>,
    hold_deletes: bool,
) -> Result<FlushStats, MapError> {
    let mut stats = FlushStats::default();
    if !pending.upserts.is_empty() {
        let batch: Vec<(K, V)> = pending.upserts.iter().map(|(k, v)| (*k, *v)).collect();
        if let Err(e) = map.batch_upsert(&batch) {
            // What the kernel did not apply stays queued for the retry.
            for (k, _) in &batch[..e.applied().min(batch.len())] {
                pending.upserts.remove(k);
            }
            return Err(e);
        }
        pending.upserts.clear();
        stats.upserts = batch.len();
    }
    if !hold_deletes && !pending.deletes.is_empty() {
        let batch: Vec<K> = pending.deletes.iter().copied().collect();
        if let Err(e) = map.batch_delete(&batch) {
            for k in &batch[..e.applied().min(batch.len())] {
                pending.deletes.remove(k);
            }
            return Err(e);
        }
        pending.deletes.clear();
        stats.deletes = batch.len();
    }
    Ok(stats)
}

/// The agent's view of one map: what it last wrote, and what is queued.
struct MapState<K, V> {
    written: BTreeMap<K, V>,
    pending: Pending<K, V>,
}

impl<K: Ord + Copy, V: Copy + PartialEq> MapState<K, V> {
    fn new(written: BTreeMap<K, V>) -> Self {
        Self {
            written,
            pending: Pending::default(),
        }
    }

    /// The desired value of `key` (`None`: absent).
    fn set(&mut self, key: K, value: Option<V>) {
        match value {
            Some(v) => {
                self.pending.deletes.remove(&key);
                if self.written.get(&key) == Some(&v) {
                    self.pending.upserts.remove(&key);
                } else {
                    self.pending.upserts.insert(key, v);
                }
            }
            None => {
                self.pending.upserts.remove(&key);
                if self.written.contains_key(&key) {
                    self.pending.deletes.insert(key);
                }
            }
        }
    }

    /// The desired value after pending writes.
    fn desired(&self, key: &K) -> Option<V> {
        if self.pending.deletes.contains(key) {
            return None;
        }
        self.pending
            .upserts
            .get(key)
            .or_else(|| self.written.get(key))
            .copied()
    }

    /// The desired content of `lo..=hi` becomes `entries` (sorted by key,
    /// all inside the range): one ordered pass over what is written there,
    /// so a policy of tens of thousands of entries costs no look-up per
    /// entry.
    fn replace_range(&mut self, lo: K, hi: K, entries: &[(K, V)]) {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        let Self { written, pending } = self;
        // What is there now (written, or queued if anything is) and no
        // longer wanted.
        let queued = pending.upserts.range(lo..=hi).next().is_some();
        let mut present: Vec<K> = written.range(lo..=hi).map(|(k, _)| *k).collect();
        if queued {
            present.extend(pending.upserts.range(lo..=hi).map(|(k, _)| *k));
            present.sort_unstable();
            present.dedup();
        }
        let mut deletes: Vec<K> = Vec::new();
        let mut wanted = entries.iter().map(|(k, _)| k).peekable();
        for key in present {
            while wanted.next_if(|k| **k < key).is_some() {}
            if wanted.peek() != Some(&&key) {
                if queued {
                    pending.upserts.remove(&key);
                }
                if !queued || written.contains_key(&key) {
                    deletes.push(key);
                }
            }
        }
        // What is wanted, unless written exactly so.
        let mut upserts: Vec<(K, V)> = Vec::new();
        let mut current = written.range(lo..=hi).peekable();
        for (key, value) in entries {
            while current.next_if(|(k, _)| *k < key).is_some() {}
            if !pending.deletes.is_empty() {
                pending.deletes.remove(key);
            }
            if current
                .peek()
                .is_some_and(|(k, v)| *k == key && *v == value)
            {
                if queued {
                    pending.upserts.remove(key);
                }
            } else {
                upserts.push((*key, *value));
            }
        }
        // Sorted runs: built in bulk rather than inserted one by one.
        pending.upserts.append(&mut upserts.into_iter().collect());
        pending.deletes.append(&mut deletes.into_iter().collect());
    }

    /// Writes what is pending. With `hold_deletes`, deletions stay queued.
    fn flush(
        &mut self,
        map: &dyn MapOps<K, V>,
        hold_deletes: bool,
    ) -> Result<FlushStats, MapError> {
        let mut stats = FlushStats::default();
        if !self.pending.upserts.is_empty() {
            let batch: Vec<(K, V)> = self.pending.upserts.iter().map(|(k, v)| (*k, *v)).collect();
            if let Err(e) = map.batch_upsert(&batch) {
                // What the kernel applied is written; the rest stays
                // queued for the retry.
                for (k, v) in &batch[..e.applied().min(batch.len())] {
                    self.pending.upserts.remove(k);
                    self.written.insert(*k, *v);
                }
                return Err(e);
            }
            self.pending.upserts.clear();
            stats.upserts = batch.len();
            // A sorted run: merged in one pass.
            self.written.append(&mut batch.into_iter().collect());
        }
        if !hold_deletes && !self.pending.deletes.is_empty() {
            let batch: Vec<K> = self.pending.deletes.iter().copied().collect();
            if let Err(e) = map.batch_delete(&batch) {
                for k in &batch[..e.applied().min(batch.len())] {
                    self.pending.deletes.remove(k);
                    self.written.remove(k);
                }
                return Err(e);
            }
            let deletes = std::mem::take(&mut self.pending.deletes);
            stats.deletes = batch.len();
            if batch.len() > self.written.len() / 8 {
                // Many: one pass over both, as a merge.
                let mut gone = deletes.into_iter().peekable();
                self.written = std::mem::take(&mut self.written)
                    .into_iter()
                    .filter(|(k, _)| {
                        while gone.next_if(|g| g < k).is_some() {}
                        gone.peek() != Some(k)
                    })
                    .collect();
            } else {
                for k in &batch {
                    self.written.remove(k);
                }
            }
        }
        Ok(stats)
    }
}

/// The agent's handle on the datapath: endpoints and maps.
pub(crate) struct DatapathSync {
    dp: Box<dyn DatapathMaps>,
    node_netns: Option<PathBuf>,
    /// The ipcache is the big map (every IP of the mesh): no copy of it is
    /// kept here, the tables know what it should hold; only writes queue.
    ipcache: Pending<IpCacheKey, IpCacheValue>,
    policy: MapState<PolicyKey, PolicyValue>,
    endpoints: MapState<EndpointKey, EndpointInfo>,
    services: BTreeMap<ServiceKey, ServiceValue>,
    backends: BTreeMap<BackendKey, BackendValue>,
    backend_ids: HashMap<(SocketAddr, u8, u32), u32>,
    next_backend_id: u32,
    hold_deletes: bool,
    /// Endpoints whose enforcement the partial view would switch off before
    /// the sync: written enforced, with the configuration to write after.
    held_enforcement: BTreeMap<EndpointKey, EndpointInfo>,
    written_total: FlushStats,
}

impl std::fmt::Debug for DatapathSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatapathSync")
            .field("hold_deletes", &self.hold_deletes)
            .finish()
    }
}

impl DatapathSync {
    /// Takes over an opened datapath; what its pinned maps hold is the
    /// starting point (kept until [`DatapathSync::finish_sync`]).
    pub(crate) fn new(
        dp: Box<dyn DatapathMaps>,
        node_netns: Option<PathBuf>,
    ) -> Result<Self, MapError> {
        let services = dp.services().dump()?;
        let backends = dp.backends().dump()?;
        let mut backend_ids = HashMap::new();
        let mut next_backend_id = 1;
        for (k, v) in &backends {
            if let Some(addr) = v.addr() {
                backend_ids.insert(
                    (addr, v.protocol().number(), v.cluster_id as u32),
                    k.backend_id,
                );
                next_backend_id = next_backend_id.max(k.backend_id + 1);
            }
        }
        Ok(Self {
            ipcache: Pending::default(),
            policy: MapState::new(dp.policy().dump()?),
            endpoints: MapState::new(dp.endpoints().dump()?),
            services,
            backends,
            backend_ids,
            next_backend_id,
            dp,
            node_netns,
            hold_deletes: true,
            held_enforcement: BTreeMap::new(),
            written_total: FlushStats::default(),
        })
    }

    /// Whether deletions wait for the sync (entries from before a restart
    /// are still in place).
    pub(crate) fn holding(&self) -> bool {
        self.hold_deletes
    }

    /// The maps as written (for dumps).
    pub(crate) fn datapath(&self) -> &dyn DatapathMaps {
        self.dp.as_ref()
    }

    /// The ipcache entry for `prefix` (`None`: remove it).
    pub(crate) fn set_ip(&mut self, prefix: IpNet, entry: Option<IpEntry>) {
        let value = entry.map(|e| {
            let v = IpCacheValue::new(e.identity.get());
            match e.host_ip {
                Some(host) => v.with_tunnel_endpoint(host),
                None => v,
            }
        });
        let key = IpCacheKey::new(prefix);
        match value {
            Some(v) => {
                self.ipcache.deletes.remove(&key);
                self.ipcache.upserts.insert(key, v);
            }
            None => {
                self.ipcache.upserts.remove(&key);
                self.ipcache.deletes.insert(key);
            }
        }
    }

    /// Replaces the entries of policy `policy_id` with `entries` (empty:
    /// the policy goes).
    pub(crate) fn set_policy(&mut self, policy_id: u32, entries: &[(PolicyKey, PolicyValue)]) {
        let (lo, hi) = PolicyKey::bounds(policy_id);
        self.policy.replace_range(lo, hi, entries);
    }

    /// Replaces the entries of policy `policy_id` that name `identity`.
    pub(crate) fn set_policy_identity(
        &mut self,
        policy_id: u32,
        identity: u32,
        entries: Vec<(PolicyKey, PolicyValue)>,
    ) {
        for direction in Direction::ALL {
            let (lo, hi) = PolicyKey::identity_bounds(policy_id, direction, identity);
            for old in self.policy_keys_in(lo, hi) {
                if !entries.iter().any(|(k, _)| *k == old) {
                    self.policy.set(old, None);
                }
            }
        }
        for (key, value) in entries {
            self.policy.set(key, Some(value));
        }
    }

    /// The desired entries of a policy.
    pub(crate) fn policy_entries(&self, policy_id: u32) -> Vec<(PolicyKey, PolicyValue)> {
        let (lo, hi) = PolicyKey::bounds(policy_id);
        self.policy_keys_in(lo, hi)
            .into_iter()
            .filter_map(|k| self.policy.desired(&k).map(|v| (k, v)))
            .collect()
    }

    /// Desired keys in `lo..=hi`.
    fn policy_keys_in(&self, lo: PolicyKey, hi: PolicyKey) -> Vec<PolicyKey> {
        let written = self.policy.written.range(lo..=hi).map(|(k, _)| *k);
        let pending = self.policy.pending.upserts.range(lo..=hi).map(|(k, _)| *k);
        let mut all: BTreeSet<PolicyKey> = written.chain(pending).collect();
        all.retain(|k| self.policy.desired(k).is_some());
        all.into_iter().collect()
    }

    /// Policy ids that entries or endpoints use (written or queued), e.g.
    /// what the pinned maps held before a restart.
    pub(crate) fn policy_ids_in_use(&self) -> BTreeSet<u32> {
        let mut ids: BTreeSet<u32> = self.policy.written.keys().map(|k| k.policy_id).collect();
        ids.extend(self.policy.pending.upserts.keys().map(|k| k.policy_id));
        ids.extend(
            self.endpoints
                .written
                .values()
                .map(|i| i.policy().policy_id),
        );
        ids.extend(
            self.endpoints
                .pending
                .upserts
                .values()
                .map(|i| i.policy().policy_id),
        );
        ids.remove(&0);
        ids
    }

    /// The policy endpoint `endpoint_id` followed as written (before a
    /// restart: what the pinned map held).
    pub(crate) fn written_policy(&self, endpoint_id: EndpointId) -> Option<EndpointPolicy> {
        self.endpoints
            .written
            .values()
            .find(|i| i.endpoint_id == endpoint_id.get())
            .map(EndpointInfo::policy)
    }

    /// Sets an endpoint's configuration (its identity, policy). Before the
    /// sync, enforcement is never switched off: a rule the partial view
    /// lacks would otherwise open the endpoint to everything.
    pub(crate) fn set_endpoint_info(&mut self, ifindex: u32, info: Option<EndpointInfo>) {
        let key = EndpointKey { ifindex };
        self.held_enforcement.remove(&key);
        let info = info.map(|info| {
            let was = self.endpoints.desired(&key).map(|i| i.policy());
            match self.held(info.policy(), was) {
                Some(held) => {
                    self.held_enforcement.insert(key, info);
                    info.with_policy(held)
                }
                None => info,
            }
        });
        self.endpoints.set(key, info);
    }

    /// What to write instead of `policy` before the sync when it would
    /// switch off enforcement `was` had (`None`: write it as it is).
    fn held(&self, policy: EndpointPolicy, was: Option<EndpointPolicy>) -> Option<EndpointPolicy> {
        let was = was.filter(|_| self.hold_deletes)?;
        let held = EndpointPolicy {
            ingress: policy.ingress || was.ingress,
            egress: policy.egress || was.egress,
            ..policy
        };
        (held != policy).then_some(held)
    }

    /// Programs the services: every frontend with its slots; frontends not
    /// listed are removed, and backends no slot uses.
    pub(crate) fn set_services(
        &mut self,
        frontends: &[MergedFrontend],
    ) -> Result<FlushStats, MapError> {
        let mut desired_services = BTreeMap::new();
        let mut desired_backends = BTreeMap::new();
        for fe in frontends {
            let mut ids = Vec::with_capacity(fe.slots.len());
            for slot in &fe.slots {
                let key = (slot.backend, fe.protocol.number(), slot.cluster_id);
                let id = match self.backend_ids.get(&key) {
                    Some(id) => *id,
                    None => {
                        let id = self.next_backend_id;
                        self.next_backend_id += 1;
                        self.backend_ids.insert(key, id);
                        id
                    }
                };
                desired_backends.insert(
                    BackendKey { backend_id: id },
                    BackendValue::new(slot.backend, fe.protocol, slot.cluster_id as u16),
                );
                ids.push(id);
            }
            desired_services.extend(service_entries(fe.frontend, fe.protocol, &ids));
        }
        self.backend_ids
            .retain(|_, id| desired_backends.contains_key(&BackendKey { backend_id: *id }));
        let mut stats = FlushStats::default();
        // New backends first, then slots (the plan orders slots before
        // masters when growing and masters before slots when shrinking),
        // then backends nothing points to any more.
        let backends_plan = plan(&self.backends, &desired_backends);
        if !backends_plan.upserts.is_empty() {
            self.dp.backends().batch_upsert(&backends_plan.upserts)?;
            stats.upserts += backends_plan.upserts.len();
        }
        let services_plan = plan(&self.services, &desired_services);
        for (k, v) in &services_plan.upserts {
            self.dp.services().upsert(k, v)?;
        }
        stats.upserts += services_plan.upserts.len();
        for k in &services_plan.deletes {
            self.dp.services().delete(k)?;
        }
        stats.deletes += services_plan.deletes.len();
        if !backends_plan.deletes.is_empty() {
            self.dp.backends().batch_delete(&backends_plan.deletes)?;
            stats.deletes += backends_plan.deletes.len();
        }
        self.services = desired_services;
        self.backends = desired_backends;
        Ok(stats)
    }

    /// Writes everything queued.
    pub(crate) fn flush(&mut self) -> Result<FlushStats, MapError> {
        let mut stats = FlushStats::default();
        for s in [
            // An ipcache removal is a source saying an IP is gone: always
            // true, so it is written at once. Only the sweep of what the
            // pinned map held before the restart waits for the sync.
            flush_pending(&mut self.ipcache, self.dp.ipcache(), false)?,
            // New entries, then endpoints that switch to them, then the
            // entries no policy or endpoint uses any more.
            self.policy.flush(self.dp.policy(), true)?,
            self.endpoints
                .flush(self.dp.endpoints(), self.hold_deletes)?,
            self.policy.flush(self.dp.policy(), self.hold_deletes)?,
        ] {
            stats.upserts += s.upserts;
            stats.deletes += s.deletes;
        }
        self.written_total.upserts += stats.upserts;
        self.written_total.deletes += stats.deletes;
        Ok(stats)
    }

    /// Everything flushed so far (for benchmarks).
    pub(crate) fn written_total(&self) -> FlushStats {
        self.written_total
    }

    /// The sources are synced: from now on deletions are written, starting
    /// with every entry that is no longer desired (`wanted` says which
    /// ipcache prefixes are).
    pub(crate) fn finish_sync(
        &mut self,
        wanted: impl Fn(&IpNet) -> bool,
    ) -> Result<FlushStats, MapError> {
        self.hold_deletes = false;
        for (key, info) in std::mem::take(&mut self.held_enforcement) {
            self.endpoints.set(key, Some(info));
        }
        let mut stats = self.flush()?;
        let stale: Vec<IpCacheKey> = self
            .dp
            .ipcache()
            .dump()?
            .into_keys()
            .filter(|k| !k.net().is_some_and(|n| wanted(&n)))
            .collect();
        if !stale.is_empty() {
            self.dp.ipcache().batch_delete(&stale)?;
            stats.deletes += stale.len();
        }
        debug!(deleted = stats.deletes, "datapath reconciled after sync");
        Ok(stats)
    }

    /// Attaches the programs to an endpoint's host-side veth with its
    /// configuration; returns the interface index.
    pub(crate) fn attach(
        &mut self,
        host_ifname: &str,
        endpoint_id: EndpointId,
        identity: u32,
        policy: EndpointPolicy,
    ) -> Result<u32, DatapathError> {
        // Before the sync, an endpoint that was enforced before the restart
        // stays enforced (its old policy entries are still in place).
        let held = self.held(policy, self.written_policy(endpoint_id));
        let written = held.unwrap_or(policy);
        let ifindex = self.dp.attach_endpoint(&EndpointAttach {
            ifname: host_ifname.to_string(),
            netns: self.node_netns.clone(),
            endpoint_id: endpoint_id.get(),
            identity,
            policy: written,
        })?;
        let key = EndpointKey { ifindex };
        let info = EndpointInfo::new(endpoint_id.get(), identity, policy);
        if held.is_some() {
            self.held_enforcement.insert(key, info);
        } else {
            self.held_enforcement.remove(&key);
        }
        // attach wrote the endpoint entry itself.
        self.endpoints
            .written
            .insert(key, info.with_policy(written));
        self.endpoints.pending.deletes.remove(&key);
        self.endpoints.pending.upserts.remove(&key);
        Ok(ifindex)
    }

    /// Detaches the programs and removes the endpoint's entry (its policy
    /// is the caller's: other endpoints may share it).
    pub(crate) fn detach(
        &mut self,
        host_ifname: &str,
        ifindex: Option<u32>,
    ) -> Result<(), DatapathError> {
        let result = self.dp.detach_endpoint(&EndpointDetach {
            ifname: host_ifname.to_string(),
            netns: self.node_netns.clone(),
        });
        if let Some(ifindex) = ifindex {
            self.held_enforcement.remove(&EndpointKey { ifindex });
            self.endpoints.written.remove(&EndpointKey { ifindex });
            self.endpoints
                .pending
                .upserts
                .remove(&EndpointKey { ifindex });
        }
        match result {
            // The veth is already gone: nothing is attached any more.
            Err(DatapathError::NoInterface { .. }) => Ok(()),
            other => other,
        }
    }

    /// Entry counts of the maps as written (for metrics and status); the
    /// ipcache's comes from the tables.
    pub(crate) fn sizes(&self) -> [(&'static str, usize); 4] {
        [
            ("policy", self.policy.written.len()),
            ("endpoints", self.endpoints.written.len()),
            ("services", self.services.len()),
            ("backends", self.backends.len()),
        ]
    }
}
