//! When kvstoremesh is ready (Cilium's `kvstoremesh.go` sync state): once
//! every remote present at start has been mirrored completely, so that the
//! local agents routed to this replica find full caches. A remote that has
//! not connected within the per-cluster timeout stops counting (it may be
//! down for good); after the global timeout kvstoremesh is ready whatever
//! the remotes do. Once ready, it stays ready. Pure: the caller supplies
//! the time and what each remote has achieved.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use kvstore::ClusterName;

/// What a remote has achieved since kvstoremesh started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Progress {
    /// Connected with an accepted cluster config at least once.
    pub(super) connected: bool,
    /// Every kind mirrored (its cache canaries written) at least once.
    pub(super) synced: bool,
}

/// The readiness of one kvstoremesh process.
#[derive(Debug)]
pub(super) struct Readiness {
    started: Instant,
    per_cluster: Duration,
    global: Duration,
    /// The remotes of the first scan of the config directory.
    initial: Option<BTreeSet<ClusterName>>,
    /// Remotes dropped from accounting: not connected within the
    /// per-cluster timeout.
    timed_out: BTreeSet<ClusterName>,
    ready_after: Option<Duration>,
    pending: String,
}

impl Readiness {
    pub(super) fn new(started: Instant, per_cluster: Duration, global: Duration) -> Self {
        Self {
            started,
            per_cluster,
            global,
            initial: None,
            timed_out: BTreeSet::new(),
            ready_after: None,
            pending: "the clustermesh config directory was not read yet".into(),
        }
    }

    /// The remotes present at start (only the first call counts).
    pub(super) fn set_initial(&mut self, remotes: impl IntoIterator<Item = ClusterName>) {
        if self.initial.is_none() {
            self.initial = Some(remotes.into_iter().collect());
        }
    }

    /// Re-evaluates at `now` with what the remotes still configured have
    /// achieved. Returns how long it took to become ready, once, when it
    /// does.
    pub(super) fn observe(
        &mut self,
        now: Instant,
        remotes: &BTreeMap<ClusterName, Progress>,
    ) -> Option<Duration> {
        if self.ready_after.is_some() {
            return None;
        }
        let Some(initial) = &self.initial else {
            return None;
        };
        let elapsed = now.saturating_duration_since(self.started);
        let mut waiting = Vec::new();
        for name in initial {
            // A remote removed since stops counting.
            let Some(progress) = remotes.get(name) else {
                continue;
            };
            if progress.synced || self.timed_out.contains(name) {
                continue;
            }
            if !progress.connected && elapsed >= self.per_cluster {
                self.timed_out.insert(name.clone());
                continue;
            }
            waiting.push(format!(
                "{name} ({})",
                if progress.connected {
                    "not mirrored yet"
                } else {
                    "not connected"
                }
            ));
        }
        if waiting.is_empty() || elapsed >= self.global {
            self.ready_after = Some(elapsed);
            self.pending.clear();
            return Some(elapsed);
        }
        self.pending = format!("waiting for {}", waiting.join(", "));
        None
    }

    pub(super) fn is_ready(&self) -> bool {
        self.ready_after.is_some()
    }

    /// Why it is not ready (empty once ready).
    pub(super) fn pending(&self) -> &str {
        &self.pending
    }

    /// Remotes that stopped counting because they did not connect in time.
    pub(super) fn timed_out(&self) -> &BTreeSet<ClusterName> {
        &self.timed_out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> ClusterName {
        ClusterName::new(n).unwrap()
    }

    fn progress(list: &[(&str, bool, bool)]) -> BTreeMap<ClusterName, Progress> {
        list.iter()
            .map(|(n, connected, synced)| {
                (
                    name(n),
                    Progress {
                        connected: *connected,
                        synced: *synced,
                    },
                )
            })
            .collect()
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn waits_for_every_initial_remote() {
        let t0 = Instant::now();
        let mut r = Readiness::new(t0, 15 * S, 600 * S);
        assert_eq!(r.observe(t0, &BTreeMap::new()), None, "directory not read");
        r.set_initial([name("c2"), name("c3")]);
        r.set_initial([name("c9")]);
        let p = progress(&[("c2", true, true), ("c3", true, false)]);
        assert_eq!(r.observe(t0 + S, &p), None);
        assert_eq!(r.pending(), "waiting for c3 (not mirrored yet)");
        // A remote added later does not count.
        let p = progress(&[("c2", true, true), ("c3", true, true), ("c4", false, false)]);
        assert_eq!(r.observe(t0 + 2 * S, &p), Some(2 * S));
        assert!(r.is_ready());
        // Ready stays ready.
        assert_eq!(
            r.observe(t0 + 3 * S, &progress(&[("c2", false, false)])),
            None
        );
        assert!(r.is_ready());
    }

    #[test]
    fn no_remotes_is_ready_at_once() {
        let t0 = Instant::now();
        let mut r = Readiness::new(t0, 15 * S, 600 * S);
        r.set_initial([]);
        assert_eq!(r.observe(t0, &BTreeMap::new()), Some(Duration::ZERO));
    }

    #[test]
    fn a_remote_that_never_connects_stops_counting() {
        let t0 = Instant::now();
        let mut r = Readiness::new(t0, 15 * S, 600 * S);
        r.set_initial([name("c2"), name("c3")]);
        let p = progress(&[("c2", true, true), ("c3", false, false)]);
        assert_eq!(r.observe(t0 + 14 * S, &p), None);
        assert_eq!(r.pending(), "waiting for c3 (not connected)");
        assert_eq!(r.observe(t0 + 15 * S, &p), Some(15 * S));
        assert!(r.timed_out().contains(&name("c3")));
    }

    #[test]
    fn a_connected_remote_counts_until_the_global_timeout() {
        let t0 = Instant::now();
        let mut r = Readiness::new(t0, 15 * S, 600 * S);
        r.set_initial([name("c2")]);
        let p = progress(&[("c2", true, false)]);
        assert_eq!(r.observe(t0 + 20 * S, &p), None);
        assert_eq!(r.observe(t0 + 600 * S, &p), Some(600 * S));
    }

    #[test]
    fn a_removed_remote_stops_counting() {
        let t0 = Instant::now();
        let mut r = Readiness::new(t0, 15 * S, 600 * S);
        r.set_initial([name("c2")]);
        assert_eq!(r.observe(t0, &progress(&[("c2", true, false)])), None);
        assert_eq!(r.observe(t0 + S, &BTreeMap::new()), Some(S));
    }
}
