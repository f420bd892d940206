//! The ipcache's claims: prefix → what each source says about it. An agent
//! holds one per IP of the whole mesh, so the common case (one source, an
//! IPv4 prefix) takes 20 bytes in the table: the prefix (5) and the winning
//! claim (12) inline, with the family's tables apart (an IPv6 key would
//! make every IPv4 slot 18 bytes). The rare prefixes that several sources
//! claim keep every claim in a side table.

use std::collections::HashMap;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::SourceId;

/// An ipcache entry as the tables keep it (8 bytes): the identity and the
/// interned host IP (index + 1, 0 = none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stored {
    pub identity: u32,
    pub host: u32,
}

/// The winning claim of a prefix (12 bytes).
#[derive(Debug, Clone, Copy)]
struct Top {
    source: SourceId,
    /// Other sources claim the prefix too: all claims are in
    /// [`PrefixClaims::shared`].
    shared: bool,
    stored: Stored,
}

/// What [`PrefixClaims::set`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Set {
    /// The winning claim before and after.
    pub before: Option<Stored>,
    pub after: Stored,
    /// The source had no claim on the prefix before.
    pub added: bool,
}

/// Prefix → every claim, sorted by source (prefixes with more than one).
type SharedClaims = HashMap<IpNet, Vec<(SourceId, Stored)>>;

/// Prefix → the claims of the sources, the lowest source winning.
#[derive(Debug, Default)]
pub(super) struct PrefixClaims {
    v4: HashMap<Ipv4Net, Top>,
    v6: HashMap<Ipv6Net, Top>,
    /// Every claim of a prefix more than one source claims, sorted by source.
    shared: SharedClaims,
}

impl PrefixClaims {
    fn top(&self, prefix: &IpNet) -> Option<&Top> {
        match prefix {
            IpNet::V4(p) => self.v4.get(p),
            IpNet::V6(p) => self.v6.get(p),
        }
    }

    /// The winning claim, and the side table of shared prefixes.
    fn top_mut(&mut self, prefix: &IpNet) -> (Option<&mut Top>, &mut SharedClaims) {
        let top = match prefix {
            IpNet::V4(p) => self.v4.get_mut(p),
            IpNet::V6(p) => self.v6.get_mut(p),
        };
        (top, &mut self.shared)
    }

    fn insert_top(&mut self, prefix: IpNet, top: Top) {
        match prefix {
            IpNet::V4(p) => self.v4.insert(p, top),
            IpNet::V6(p) => self.v6.insert(p, top),
        };
    }

    fn remove_top(&mut self, prefix: &IpNet) {
        match prefix {
            IpNet::V4(p) => self.v4.remove(p),
            IpNet::V6(p) => self.v6.remove(p),
        };
    }

    /// The winning claim.
    pub(super) fn winner(&self, prefix: &IpNet) -> Option<Stored> {
        self.top(prefix).map(|t| t.stored)
    }

    /// Whether a source that `pick` accepts claims `prefix`.
    pub(super) fn claimed_by(&self, prefix: &IpNet, pick: impl Fn(SourceId) -> bool) -> bool {
        match self.top(prefix) {
            None => false,
            Some(t) if !t.shared => pick(t.source),
            Some(_) => self
                .shared
                .get(prefix)
                .is_some_and(|v| v.iter().any(|(s, _)| pick(*s))),
        }
    }

    /// Sets a source's claim.
    pub(super) fn set(&mut self, prefix: IpNet, source: SourceId, stored: Stored) -> Set {
        let (top, shared) = self.top_mut(&prefix);
        let Some(top) = top else {
            self.insert_top(
                prefix,
                Top {
                    source,
                    shared: false,
                    stored,
                },
            );
            return Set {
                before: None,
                after: stored,
                added: true,
            };
        };
        let before = Some(top.stored);
        if !top.shared && top.source == source {
            top.stored = stored;
            return Set {
                before,
                after: stored,
                added: false,
            };
        }
        // A second source: every claim moves to the side table.
        let all = shared
            .entry(prefix)
            .or_insert_with(|| vec![(top.source, top.stored)]);
        top.shared = true;
        let added = match all.binary_search_by_key(&source, |(s, _)| *s) {
            Ok(i) => {
                all[i].1 = stored;
                false
            }
            Err(i) => {
                all.insert(i, (source, stored));
                true
            }
        };
        (top.source, top.stored) = all[0];
        Set {
            before,
            after: top.stored,
            added,
        }
    }

    /// Removes a source's claim: `None` if it had none, else whether no
    /// claim is left.
    pub(super) fn remove(&mut self, prefix: &IpNet, source: SourceId) -> Option<bool> {
        let (top, shared) = self.top_mut(prefix);
        let top = top?;
        if !top.shared {
            if top.source != source {
                return None;
            }
            self.remove_top(prefix);
            return Some(true);
        }
        let all = shared.get_mut(prefix).expect("shared claims kept");
        let i = all.binary_search_by_key(&source, |(s, _)| *s).ok()?;
        all.remove(i);
        (top.source, top.stored) = all[0];
        if all.len() == 1 {
            top.shared = false;
            shared.remove(prefix);
        }
        Some(false)
    }

    /// Prefixes a source claims (a scan: for draining and re-syncing).
    pub(super) fn prefixes_of(&self, source: SourceId) -> Vec<IpNet> {
        let v4 = self.v4.iter().map(|(p, t)| (IpNet::V4(*p), t));
        let v6 = self.v6.iter().map(|(p, t)| (IpNet::V6(*p), t));
        v4.chain(v6)
            .filter(|(p, t)| match t.shared {
                false => t.source == source,
                true => self.claimed_by(p, |s| s == source),
            })
            .map(|(p, _)| p)
            .collect()
    }

    /// Number of prefixes with a claim.
    pub(super) fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(identity: u32) -> Stored {
        Stored { identity, host: 0 }
    }

    #[test]
    fn an_ipv4_slot_is_20_bytes() {
        assert_eq!(std::mem::size_of::<(Ipv4Net, Top)>(), 20);
    }

    #[test]
    fn shared_prefixes_keep_every_claim_and_the_lowest_wins() {
        let mut c = PrefixClaims::default();
        for p in ["10.0.0.1/32", "fd00::1/128"] {
            let p: IpNet = p.parse().unwrap();
            assert!(c.set(p, SourceId(5), stored(5)).added);
            let set = c.set(p, SourceId(3), stored(3));
            assert_eq!((set.before, set.after), (Some(stored(5)), stored(3)));
            assert!(c.set(p, SourceId(4), stored(4)).added);
            assert!(!c.set(p, SourceId(4), stored(44)).added, "not new");
            assert_eq!(c.winner(&p), Some(stored(3)));
            assert_eq!(c.remove(&p, SourceId(9)), None);
            assert_eq!(c.remove(&p, SourceId(3)), Some(false));
            assert_eq!(c.winner(&p), Some(stored(44)));
            assert_eq!(c.prefixes_of(SourceId(5)), vec![p]);
            assert_eq!(c.remove(&p, SourceId(4)), Some(false));
            assert!(c.shared.is_empty(), "a single claim is inline again");
            assert_eq!(c.winner(&p), Some(stored(5)));
            assert!(c.claimed_by(&p, |s| s == SourceId(5)));
            assert_eq!(c.remove(&p, SourceId(4)), None);
            assert_eq!(c.remove(&p, SourceId(5)), Some(true));
            assert_eq!(c.winner(&p), None);
            assert_eq!(c.len(), 0);
        }
    }
}
