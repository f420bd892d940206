use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, btree_map::Entry},
    fmt,
    hash::Hash,
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::{DnsName, FqdnSelector, LearnedIp};

/// Bounds and TTL policy of a [`NameCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// The shortest time a learned address is kept (Cilium's
    /// `--tofqdns-min-ttl`); a shorter DNS TTL is raised to it. Default 0,
    /// Cilium's: the server's TTLs are used as they are.
    pub min_ttl: Duration,
    /// The most addresses one endpoint keeps for one name (Cilium's
    /// `--tofqdns-endpoint-max-ip-per-hostname`, default 50). Past it the
    /// addresses that expire first go, except those in use.
    pub max_ips_per_name: usize,
    /// The most names one endpoint keeps (so that an endpoint allowed to
    /// look up `*` cannot grow the table without bound). Past it the name
    /// whose addresses all expire first goes, unless one is in use; when
    /// every name has an address in use, the new name is not learned.
    /// Default 4096.
    pub max_names_per_endpoint: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            min_ttl: Duration::ZERO,
            max_ips_per_name: 50,
            max_names_per_endpoint: 4096,
        }
    }
}

/// The addresses a name gained and lost, mesh-wide on this node: an
/// address is added when a first endpoint learns it for the name, removed
/// when the last endpoint's entry goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameChange {
    /// Addresses to allow for the name's selectors.
    pub added: BTreeSet<IpAddr>,
    /// Addresses to withdraw.
    pub removed: BTreeSet<IpAddr>,
}

/// What changed in a [`NameCache`], per name: what the caller writes to
/// the ipcache and the policy maps of the endpoints whose `toFQDNs` select
/// the name. An address added and removed in one call is in neither set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheDiff {
    changes: BTreeMap<DnsName, NameChange>,
}

impl CacheDiff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Each changed name.
    pub fn iter(&self) -> impl Iterator<Item = (&DnsName, &NameChange)> {
        self.changes.iter()
    }

    /// The change of one name.
    pub fn get(&self, name: &DnsName) -> Option<&NameChange> {
        self.changes.get(name)
    }

    /// Every (name, address) added.
    pub fn added(&self) -> impl Iterator<Item = (&DnsName, IpAddr)> {
        self.changes
            .iter()
            .flat_map(|(n, c)| c.added.iter().map(move |ip| (n, *ip)))
    }

    /// Every (name, address) removed.
    pub fn removed(&self) -> impl Iterator<Item = (&DnsName, IpAddr)> {
        self.changes
            .iter()
            .flat_map(|(n, c)| c.removed.iter().map(move |ip| (n, *ip)))
    }

    /// Adds the changes of a later call.
    pub fn merge(&mut self, later: CacheDiff) {
        for (name, change) in later.changes {
            for ip in change.added {
                self.add(&name, ip);
            }
            for ip in change.removed {
                self.remove(&name, ip);
            }
        }
    }

    fn add(&mut self, name: &DnsName, ip: IpAddr) {
        let change = self.changes.entry(name.clone()).or_default();
        if !change.removed.remove(&ip) {
            change.added.insert(ip);
        }
        self.prune(name);
    }

    fn remove(&mut self, name: &DnsName, ip: IpAddr) {
        let change = self.changes.entry(name.clone()).or_default();
        if !change.added.remove(&ip) {
            change.removed.insert(ip);
        }
        self.prune(name);
    }

    fn prune(&mut self, name: &DnsName) {
        if let Some(c) = self.changes.get(name)
            && c.added.is_empty()
            && c.removed.is_empty()
        {
            self.changes.remove(name);
        }
    }
}

/// What [`NameCache::learn`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Learned {
    /// The addresses the name gained (and those that made room for them).
    pub diff: CacheDiff,
    /// Addresses not kept (or pushed out) by
    /// [`CacheConfig::max_ips_per_name`], for a counter.
    pub over_ip_limit: usize,
    /// The name was not learned: the endpoint is at
    /// [`CacheConfig::max_names_per_endpoint`] with every name in use.
    pub over_name_limit: bool,
}

/// One endpoint's entry, for `clustermesh-agent debug fqdn` and tests.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CacheEntry<E> {
    /// The endpoint that looked the name up.
    pub endpoint: E,
    /// The name.
    pub name: DnsName,
    /// One of its addresses.
    pub ip: IpAddr,
    /// When the entry expires (it is kept past this while in use).
    pub expires: Instant,
    /// Whether an open connection of the endpoint uses the address.
    pub in_use: bool,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    expires: Instant,
    /// Learning order, to keep the newest of equal expiries.
    seq: u64,
}

type Names = HashMap<DnsName, HashMap<IpAddr, Slot>>;

/// The names endpoints looked up through the DNS proxy and the addresses
/// the answers gave, each expiring with its TTL; the source of the
/// addresses `toFQDNs` allows. Sans-IO: the caller passes the time, writes
/// the returned [`CacheDiff`]s to the maps, and persists
/// [`NameCache::snapshot`]s.
///
/// Entries are per endpoint (as Cilium's per-endpoint DNS history), so that
/// each endpoint's limits and open connections are its own; the diffs and
/// look-ups are the union over endpoints (as Cilium's global cache), since
/// a name's addresses are allowed for every endpoint whose policy selects
/// the name.
///
/// An entry is valid while `now < expires`; [`NameCache::expire`] removes
/// the others, except those whose address the endpoint has in use
/// ([`NameCache::mark_in_use`]): those stay until released, so an open
/// connection outlives its DNS TTL (Cilium's "zombies").
///
/// Cost: `expire` and `next_expiry` walk every entry; the table is bounded
/// by endpoints × [`CacheConfig::max_names_per_endpoint`] ×
/// [`CacheConfig::max_ips_per_name`].
pub struct NameCache<E> {
    config: CacheConfig,
    endpoints: HashMap<E, Names>,
    /// The union: name → address → how many endpoints hold it.
    names: BTreeMap<DnsName, BTreeMap<IpAddr, u32>>,
    /// The union by address.
    ips: HashMap<IpAddr, BTreeSet<DnsName>>,
    in_use: HashMap<E, HashSet<IpAddr>>,
    seq: u64,
}

impl<E: fmt::Debug> fmt::Debug for NameCache<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NameCache")
            .field("config", &self.config)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl<E: Copy + Eq + Hash + Ord> NameCache<E> {
    /// An empty cache.
    pub fn new(config: CacheConfig) -> Self {
        Self {
            config,
            endpoints: HashMap::new(),
            names: BTreeMap::new(),
            ips: HashMap::new(),
            in_use: HashMap::new(),
            seq: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// Records that `endpoint` looked up `name` at `now` and got `ips`
    /// (an answer's [`DnsResponse::addresses`](crate::DnsResponse)). Each
    /// address is kept for `max(ttl, min_ttl)`; one already known is kept
    /// until the later of its two expiries. At most `max_ips_per_name`
    /// stay: the first of the answer, then the latest-expiring.
    ///
    /// The diff's additions must be in the maps before the answer is
    /// released to the endpoint.
    pub fn learn(
        &mut self,
        endpoint: E,
        name: &DnsName,
        ips: &[LearnedIp],
        now: Instant,
    ) -> Learned {
        let mut learned = Learned::default();
        if ips.is_empty() {
            return learned;
        }
        let at_limit = self.endpoints.get(&endpoint).is_some_and(|names| {
            !names.contains_key(name) && names.len() >= self.config.max_names_per_endpoint
        }) || self.config.max_names_per_endpoint == 0;
        if at_limit {
            match self.name_to_evict(endpoint) {
                Some(victim) => {
                    let slots = self
                        .endpoints
                        .get_mut(&endpoint)
                        .and_then(|names| names.remove(&victim))
                        .unwrap_or_default();
                    for ip in slots.keys() {
                        self.union_remove(&victim, *ip, &mut learned.diff);
                    }
                }
                None => {
                    learned.over_name_limit = true;
                    return learned;
                }
            }
        }
        let max = self.config.max_ips_per_name;
        learned.over_ip_limit = ips.len().saturating_sub(max);
        for learned_ip in ips.iter().take(max) {
            let ttl = Duration::from_secs(learned_ip.ttl.into()).max(self.config.min_ttl);
            let expires = later(now, ttl);
            self.seq += 1;
            let seq = self.seq;
            self.insert(
                endpoint,
                name,
                learned_ip.ip,
                Slot { expires, seq },
                &mut learned.diff,
            );
        }
        learned.over_ip_limit += self.enforce_ip_limit(endpoint, name, &mut learned.diff);
        learned
    }

    /// The name of `endpoint` whose addresses all expire first, none in use.
    fn name_to_evict(&self, endpoint: E) -> Option<DnsName> {
        let held = self.in_use.get(&endpoint);
        self.endpoints
            .get(&endpoint)?
            .iter()
            .filter(|(_, slots)| !slots.keys().any(|ip| held.is_some_and(|h| h.contains(ip))))
            .min_by_key(|(name, slots)| (slots.values().map(|s| s.expires).max(), *name))
            .map(|(name, _)| name.clone())
    }

    /// Removes the entries expired at `now` whose address is not in use by
    /// their endpoint, and returns what the names lost.
    pub fn expire(&mut self, now: Instant) -> CacheDiff {
        let mut diff = CacheDiff::default();
        let mut gone = Vec::new();
        for (endpoint, names) in &self.endpoints {
            let held = self.in_use.get(endpoint);
            for (name, slots) in names {
                for (ip, slot) in slots {
                    if slot.expires <= now && !held.is_some_and(|h| h.contains(ip)) {
                        gone.push((*endpoint, name.clone(), *ip));
                    }
                }
            }
        }
        for (endpoint, name, ip) in gone {
            self.remove_entry(endpoint, &name, ip, &mut diff);
        }
        diff
    }

    /// The earliest expiry of an entry not in use: when `expire` has work.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.endpoints
            .iter()
            .flat_map(|(endpoint, names)| {
                let held = self.in_use.get(endpoint);
                names.values().flat_map(move |slots| {
                    slots
                        .iter()
                        .filter(move |(ip, _)| !held.is_some_and(|h| h.contains(*ip)))
                        .map(|(_, s)| s.expires)
                })
            })
            .min()
    }

    /// Marks `ip` as used by an open connection of `endpoint`: its entries
    /// of that endpoint outlive their TTL until [`NameCache::release`]. A
    /// mark, not a count: call it once per address, however many
    /// connections.
    pub fn mark_in_use(&mut self, endpoint: E, ip: IpAddr) {
        self.in_use.entry(endpoint).or_default().insert(ip);
    }

    /// `endpoint` has no open connection to `ip` any more: its entries of
    /// that address that expired by `now` go.
    pub fn release(&mut self, endpoint: E, ip: IpAddr, now: Instant) -> CacheDiff {
        let mut diff = CacheDiff::default();
        if let Some(held) = self.in_use.get_mut(&endpoint) {
            held.remove(&ip);
            if held.is_empty() {
                self.in_use.remove(&endpoint);
            }
        }
        self.expire_ip(endpoint, ip, now, &mut diff);
        diff
    }

    /// Replaces the addresses `endpoint` has in use (from a conntrack walk,
    /// say); those no longer in use and expired by `now` go.
    pub fn set_in_use(
        &mut self,
        endpoint: E,
        ips: impl IntoIterator<Item = IpAddr>,
        now: Instant,
    ) -> CacheDiff {
        let new: HashSet<IpAddr> = ips.into_iter().collect();
        let old = self.in_use.remove(&endpoint).unwrap_or_default();
        if !new.is_empty() {
            self.in_use.insert(endpoint, new.clone());
        }
        let mut diff = CacheDiff::default();
        for ip in old.difference(&new) {
            self.expire_ip(endpoint, *ip, now, &mut diff);
        }
        diff
    }

    /// Whether `endpoint` has `ip` marked in use.
    pub fn is_in_use(&self, endpoint: E, ip: IpAddr) -> bool {
        self.in_use.get(&endpoint).is_some_and(|h| h.contains(&ip))
    }

    /// Forgets an endpoint that is gone: all its entries and marks.
    pub fn remove_endpoint(&mut self, endpoint: E) -> CacheDiff {
        let mut diff = CacheDiff::default();
        self.in_use.remove(&endpoint);
        for (name, slots) in self.endpoints.remove(&endpoint).unwrap_or_default() {
            for ip in slots.keys() {
                self.union_remove(&name, *ip, &mut diff);
            }
        }
        diff
    }

    /// The addresses of `name`, of every endpoint, in order.
    pub fn lookup_name(&self, name: &DnsName) -> Vec<IpAddr> {
        self.names
            .get(name)
            .map(|ips| ips.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The names that gave `ip`, in order.
    pub fn lookup_ip(&self, ip: IpAddr) -> Vec<DnsName> {
        self.ips
            .get(&ip)
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The known names `selector` selects, with their addresses: what a
    /// new or changed `toFQDNs` selector allows at once.
    pub fn select(&self, selector: &FqdnSelector) -> BTreeMap<DnsName, Vec<IpAddr>> {
        self.names
            .iter()
            .filter(|(name, _)| selector.matches(name))
            .map(|(name, ips)| (name.clone(), ips.keys().copied().collect()))
            .collect()
    }

    /// Every entry of `endpoint`, in order.
    pub fn endpoint_entries(&self, endpoint: E) -> Vec<CacheEntry<E>> {
        let mut out = Vec::new();
        self.push_entries(endpoint, &mut out);
        out.sort();
        out
    }

    /// Every entry, in order.
    pub fn entries(&self) -> Vec<CacheEntry<E>> {
        let mut out = Vec::new();
        for endpoint in self.endpoints.keys() {
            self.push_entries(*endpoint, &mut out);
        }
        out.sort();
        out
    }

    /// How many (endpoint, name, address) entries there are.
    pub fn len(&self) -> usize {
        self.endpoints
            .values()
            .flat_map(HashMap::values)
            .map(HashMap::len)
            .sum()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    fn push_entries(&self, endpoint: E, out: &mut Vec<CacheEntry<E>>) {
        let held = self.in_use.get(&endpoint);
        for (name, slots) in self.endpoints.get(&endpoint).into_iter().flatten() {
            for (ip, slot) in slots {
                out.push(CacheEntry {
                    endpoint,
                    name: name.clone(),
                    ip: *ip,
                    expires: slot.expires,
                    in_use: held.is_some_and(|h| h.contains(ip)),
                });
            }
        }
    }

    /// Adds or extends one entry (no limits).
    fn insert(
        &mut self,
        endpoint: E,
        name: &DnsName,
        ip: IpAddr,
        slot: Slot,
        diff: &mut CacheDiff,
    ) {
        let slots = self
            .endpoints
            .entry(endpoint)
            .or_default()
            .entry(name.clone())
            .or_default();
        match slots.get_mut(&ip) {
            Some(old) => {
                if slot.expires >= old.expires {
                    *old = slot;
                }
            }
            None => {
                slots.insert(ip, slot);
                self.union_add(name, ip, diff);
            }
        }
    }

    /// Pushes out the entries of `name` past `max_ips_per_name`, those
    /// expiring first (then learned first), never those in use. Returns
    /// how many went.
    pub(crate) fn enforce_ip_limit(
        &mut self,
        endpoint: E,
        name: &DnsName,
        diff: &mut CacheDiff,
    ) -> usize {
        let max = self.config.max_ips_per_name;
        let held = self.in_use.get(&endpoint);
        let Some(slots) = self.endpoints.get(&endpoint).and_then(|n| n.get(name)) else {
            return 0;
        };
        if slots.len() <= max {
            return 0;
        }
        let mut candidates: Vec<(Instant, u64, IpAddr)> = slots
            .iter()
            .filter(|(ip, _)| !held.is_some_and(|h| h.contains(*ip)))
            .map(|(ip, s)| (s.expires, s.seq, *ip))
            .collect();
        candidates.sort();
        let excess = slots.len() - max;
        let victims: Vec<IpAddr> = candidates.iter().take(excess).map(|c| c.2).collect();
        for ip in &victims {
            self.remove_entry(endpoint, name, *ip, diff);
        }
        victims.len()
    }

    fn expire_ip(&mut self, endpoint: E, ip: IpAddr, now: Instant, diff: &mut CacheDiff) {
        if self.is_in_use(endpoint, ip) {
            return;
        }
        let names: Vec<DnsName> = self
            .endpoints
            .get(&endpoint)
            .into_iter()
            .flatten()
            .filter(|(_, slots)| slots.get(&ip).is_some_and(|s| s.expires <= now))
            .map(|(name, _)| name.clone())
            .collect();
        for name in names {
            self.remove_entry(endpoint, &name, ip, diff);
        }
    }

    fn remove_entry(&mut self, endpoint: E, name: &DnsName, ip: IpAddr, diff: &mut CacheDiff) {
        let Some(names) = self.endpoints.get_mut(&endpoint) else {
            return;
        };
        let Some(slots) = names.get_mut(name) else {
            return;
        };
        if slots.remove(&ip).is_none() {
            return;
        }
        if slots.is_empty() {
            names.remove(name);
            if names.is_empty() {
                self.endpoints.remove(&endpoint);
            }
        }
        self.union_remove(name, ip, diff);
    }

    fn union_add(&mut self, name: &DnsName, ip: IpAddr, diff: &mut CacheDiff) {
        let count = self
            .names
            .entry(name.clone())
            .or_default()
            .entry(ip)
            .or_insert(0);
        *count += 1;
        if *count == 1 {
            self.ips.entry(ip).or_default().insert(name.clone());
            diff.add(name, ip);
        }
    }

    fn union_remove(&mut self, name: &DnsName, ip: IpAddr, diff: &mut CacheDiff) {
        let Entry::Occupied(mut ips) = self.names.entry(name.clone()) else {
            return;
        };
        let Some(count) = ips.get_mut().get_mut(&ip) else {
            return;
        };
        *count -= 1;
        if *count > 0 {
            return;
        }
        ips.get_mut().remove(&ip);
        if ips.get().is_empty() {
            ips.remove();
        }
        if let Some(names) = self.ips.get_mut(&ip) {
            names.remove(name);
            if names.is_empty() {
                self.ips.remove(&ip);
            }
        }
        diff.remove(name, ip);
    }

    /// Restores one entry of a snapshot (no TTL policy: its expiry is
    /// given), then applies the per-name limit.
    pub(crate) fn restore_entry(
        &mut self,
        endpoint: E,
        name: &DnsName,
        ip: IpAddr,
        expires: Instant,
        diff: &mut CacheDiff,
    ) {
        self.seq += 1;
        let seq = self.seq;
        self.insert(endpoint, name, ip, Slot { expires, seq }, diff);
    }

    /// The names of an endpoint, for the snapshot's limit checks.
    pub(crate) fn endpoint_names(&self, endpoint: E) -> usize {
        self.endpoints.get(&endpoint).map_or(0, HashMap::len)
    }

    pub(crate) fn has_name(&self, endpoint: E, name: &DnsName) -> bool {
        self.endpoints
            .get(&endpoint)
            .is_some_and(|n| n.contains_key(name))
    }
}

/// `now + ttl`, or as late as `Instant` allows.
fn later(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl)
        .or_else(|| now.checked_add(Duration::from_secs(i32::MAX as u64)))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests;
