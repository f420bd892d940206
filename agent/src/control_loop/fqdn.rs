//! Addresses learned from DNS answers (`toFQDNs`): each address that a
//! selector of the policies matches (through one of its names) gets a
//! node-local identity labelled `cidr:<ip>/32` and `fqdn:<selector>` for
//! each matching selector, with an ipcache entry; policies select it by
//! those labels. The DNS proxy hands answers to the loop and releases them
//! to the endpoint only once the loop has written the maps.
//!
//! Learned names and addresses are kept in the state directory, so that a
//! restarted agent allows what the endpoints looked up before.
//!
//! An address that expires while a connection to it is open keeps working:
//! the datapath checks policy when a connection opens, and its conntrack
//! entry carries it from then on.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
    time::{Instant, SystemTime},
};

use fqdn::{CacheConfig, CacheDiff, CacheSnapshot, DnsName, LearnedIp, NameCache};
use ipnet::IpNet;
use kvstore::NumericIdentity;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::ControlLoop;
use crate::{
    endpoint::EndpointId,
    policy_resolver::{self, fqdn_identity_labels},
    tables::{IpEntry, SourceId},
    views::FqdnView,
};

/// FQDN identities are numbered from here (node-local scope; CIDR
/// identities count up from the scope's start).
const FQDN_IDENTITY_BASE: u32 = NumericIdentity::LOCAL_SCOPE | 0x0080_0000;

/// An answer the proxy read: what `endpoint` learned, and where to say
/// that the maps allow it.
pub(crate) struct FqdnLearned {
    pub endpoint: EndpointId,
    pub name: DnsName,
    pub ips: Vec<LearnedIp>,
    /// Told once the maps are written (`None`: the proxy does not wait,
    /// every address was allowed already).
    pub done: Option<oneshot::Sender<()>>,
}

/// The loop's FQDN state.
pub(super) struct FqdnState {
    cache: NameCache<EndpointId>,
    /// The policies' `toFQDNs` selectors (normalized text → selector).
    selectors: BTreeMap<String, fqdn::FqdnSelector>,
    /// Each selected address's identity.
    identities: BTreeMap<IpAddr, NumericIdentity>,
    /// Where the cache is kept across restarts.
    state_file: Option<PathBuf>,
    /// The cache changed since it was last saved.
    dirty: bool,
    /// Answers whose maps are written with the batch: told after it.
    pub(super) waiting: Vec<oneshot::Sender<()>>,
}

impl FqdnState {
    pub(super) fn new(config: CacheConfig, state_file: Option<PathBuf>) -> Self {
        Self {
            cache: NameCache::new(config),
            selectors: BTreeMap::new(),
            identities: BTreeMap::new(),
            state_file,
            dirty: false,
            waiting: Vec::new(),
        }
    }

    /// The policies' `toFQDNs` selectors, for the proxy (an answer for a
    /// name none of them matches need not wait for the maps).
    pub(super) fn selectors(&self) -> Arc<Vec<fqdn::FqdnSelector>> {
        Arc::new(self.selectors.values().cloned().collect())
    }

    /// The selectors matching one of `ip`'s names.
    fn selectors_of(&self, ip: IpAddr) -> Vec<&str> {
        let names = self.cache.lookup_ip(ip);
        self.selectors
            .iter()
            .filter(|(_, s)| names.iter().any(|n| s.matches(n)))
            .map(|(text, _)| text.as_str())
            .collect()
    }
}

impl ControlLoop {
    /// Restores the learned names kept in the state directory (before the
    /// first policy computation, so that restored addresses keep their
    /// entries).
    pub(crate) fn restore_fqdn(&mut self) {
        let Some(path) = self.fqdn.state_file.clone() else {
            return;
        };
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                warn!(file = %path.display(), error = %e, "cannot read the learned DNS names");
                return;
            }
        };
        let snapshot: CacheSnapshot<EndpointId> = match serde_json::from_slice(&text) {
            Ok(s) => s,
            Err(e) => {
                warn!(file = %path.display(), error = %e, "the learned DNS names are unreadable; starting without them");
                self.metrics.count_error("fqdn-restore");
                return;
            }
        };
        let (cache, diff, report) = NameCache::restore(
            *self.fqdn.cache.config(),
            &snapshot,
            Instant::now(),
            SystemTime::now(),
        );
        if report.wrong_version.is_some() || report.bad_names > 0 || report.over_limits > 0 {
            warn!(?report, "some learned DNS names were not restored");
        }
        info!(entries = cache.len(), "restored the learned DNS names");
        self.fqdn.cache = cache;
        self.fqdn_selectors_changed();
        self.apply_fqdn_diff(&diff);
    }

    /// An answer the proxy read.
    pub(super) fn on_fqdn_learned(&mut self, learned: FqdnLearned) {
        let result = self.fqdn.cache.learn(
            learned.endpoint,
            &learned.name,
            &learned.ips,
            Instant::now(),
        );
        if result.over_ip_limit > 0 {
            self.metrics.count_dns("over_ip_limit");
        }
        if result.over_name_limit {
            self.metrics.count_dns("over_name_limit");
        }
        if !result.diff.is_empty() {
            self.fqdn.dirty = true;
        }
        self.apply_fqdn_diff(&result.diff);
        self.fqdn.waiting.extend(learned.done);
    }

    /// Expires what outlived its TTL, and saves the cache if it changed.
    pub(super) fn on_fqdn_tick(&mut self) {
        let diff = self.fqdn.cache.expire(Instant::now());
        if !diff.is_empty() {
            self.fqdn.dirty = true;
            self.apply_fqdn_diff(&diff);
        }
        self.save_fqdn();
    }

    /// An endpoint went: its names go with it.
    pub(super) fn fqdn_endpoint_removed(&mut self, endpoint: EndpointId) {
        let diff = self.fqdn.cache.remove_endpoint(endpoint);
        if !diff.is_empty() {
            self.fqdn.dirty = true;
            self.apply_fqdn_diff(&diff);
        }
    }

    /// The policies changed: the selectors may have, and with them every
    /// learned address's labels.
    pub(super) fn fqdn_selectors_changed(&mut self) {
        let selectors = policy_resolver::fqdn_selectors(self.tables.policies.values());
        if selectors == self.fqdn.selectors {
            return;
        }
        self.fqdn.selectors = selectors;
        let ips: BTreeSet<IpAddr> = self
            .fqdn
            .cache
            .entries()
            .into_iter()
            .map(|e| e.ip)
            .chain(self.fqdn.identities.keys().copied())
            .collect();
        for ip in ips {
            self.relabel(ip);
        }
        self.publish_dns_view();
    }

    fn apply_fqdn_diff(&mut self, diff: &CacheDiff) {
        if let Some(view) = &self.dns_view {
            view.learned(diff);
        }
        let ips: BTreeSet<IpAddr> = diff
            .added()
            .chain(diff.removed())
            .map(|(_, ip)| ip)
            .collect();
        for ip in ips {
            self.relabel(ip);
        }
    }

    /// Gives `ip` the identity its names' selectors say, or withdraws it
    /// when none selects it any more.
    fn relabel(&mut self, ip: IpAddr) {
        let prefix = IpNet::from(ip);
        let selectors = self.fqdn.selectors_of(ip);
        if selectors.is_empty() {
            if let Some(id) = self.fqdn.identities.remove(&ip) {
                let (before, after) = self.tables.delete_ip(SourceId::FQDN, prefix);
                if before != after {
                    self.dp.set_ip(prefix, after);
                }
                if self.tables.delete_identity(SourceId::FQDN, id) {
                    let labels = self.tables.identities.get(&id).cloned();
                    self.identity_changed(id, labels.as_ref());
                }
            }
        } else {
            let labels = fqdn_identity_labels(ip, selectors.iter().copied());
            let id = match self.fqdn.identities.get(&ip) {
                Some(id) => *id,
                None => {
                    let id = self.next_fqdn_identity();
                    self.fqdn.identities.insert(ip, id);
                    id
                }
            };
            if self.tables.identities.get(&id) != Some(&labels) {
                self.tables
                    .upsert_identity(SourceId::FQDN, id, labels.clone());
                self.identity_changed(id, Some(&labels));
            }
            let (before, after) = self.tables.upsert_ip(
                SourceId::FQDN,
                prefix,
                IpEntry {
                    identity: id,
                    host_ip: None,
                },
            );
            if before != after {
                self.dp.set_ip(prefix, after);
            }
        }
        self.metrics
            .fqdn_addresses
            .set(self.fqdn.identities.len() as i64);
    }

    fn next_fqdn_identity(&self) -> NumericIdentity {
        let used: BTreeSet<u32> = self.fqdn.identities.values().map(|i| i.get()).collect();
        let next = (FQDN_IDENTITY_BASE + 1..)
            .find(|n| !used.contains(n))
            .expect("fewer than 2^23 learned addresses");
        NumericIdentity::new(next)
    }

    /// Writes the cache to the state directory if it changed.
    fn save_fqdn(&mut self) {
        if !std::mem::take(&mut self.fqdn.dirty) {
            return;
        }
        let Some(path) = &self.fqdn.state_file else {
            return;
        };
        let snapshot = self.fqdn.cache.snapshot(Instant::now(), SystemTime::now());
        let text = serde_json::to_vec(&snapshot).expect("a snapshot serializes");
        let tmp = path.with_extension("json.tmp");
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
            warn!(file = %path.display(), error = %e, "cannot save the learned DNS names");
            self.metrics.count_error("fqdn-save");
            self.fqdn.dirty = true;
        }
    }

    /// What `debug fqdn` shows.
    pub(super) fn fqdn_view(&self) -> Vec<FqdnView> {
        self.fqdn
            .cache
            .entries()
            .into_iter()
            .map(|e| {
                let identity = self.fqdn.identities.get(&e.ip).map(|i| i.get());
                FqdnView {
                    endpoint: e.endpoint.get(),
                    name: e.name.as_str().to_string(),
                    ip: e.ip.to_string(),
                    ttl_left_s: e
                        .expires
                        .saturating_duration_since(Instant::now())
                        .as_secs(),
                    in_use: e.in_use,
                    identity,
                    selectors: self
                        .fqdn
                        .selectors_of(e.ip)
                        .into_iter()
                        .map(str::to_string)
                        .collect(),
                }
            })
            .collect()
    }
}
