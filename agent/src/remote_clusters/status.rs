//! A remote's status as `status` shows it: set by its connection at the
//! moments that change it (connected, probed, failed…), and completed from
//! the live counters of its stores when read, so a quiet connection costs
//! nothing between reads.

use std::{
    collections::BTreeMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
};

use kvstore::{ClusterName, WatchStoreStats, values::MirrorStatus};

use super::failure::Failure;
use crate::{control_loop::StoreKind, views::RemoteView};

/// Shared between a remote's connection and the directory follower.
#[derive(Debug, Clone)]
pub(super) struct RemoteStatus(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Bumped on every change the connection makes (see
    /// [`RemoteStatus::fingerprint`]).
    version: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// What the last read (or the connection) left.
    view: RemoteView,
    /// The connection's stores (they outlive its sessions).
    stats: Vec<(StoreKind, Arc<WatchStoreStats>)>,
    /// While a session watches: what read completes the view from.
    live: Option<Live>,
}

/// A watching session's inputs to the view.
#[derive(Debug)]
struct Live {
    /// The last probe's answer.
    reachable: bool,
    /// Read through kvstoremesh.
    cached: bool,
    /// How kvstoremesh sees the remote, if it says.
    mirror: Option<MirrorStatus>,
}

impl RemoteStatus {
    pub(super) fn new(name: &ClusterName) -> Self {
        Self(Arc::new(Shared {
            state: Mutex::new(State {
                view: RemoteView {
                    name: name.to_string(),
                    ..RemoteView::default()
                },
                stats: Vec::new(),
                live: None,
            }),
            version: AtomicU64::new(0),
        }))
    }

    /// The state, to change (counted as a change).
    fn change(&self) -> MutexGuard<'_, State> {
        let state = self.0.state.lock().expect("remote status");
        self.0.version.fetch_add(1, Ordering::Relaxed);
        state
    }

    /// The view as of now: while a session watches, brought up to date
    /// from its stores first.
    pub(super) fn view(&self) -> RemoteView {
        let mut guard = self.0.state.lock().expect("remote status");
        let State { view, stats, live } = &mut *guard;
        if let Some(live) = live {
            refresh(view, stats, live);
        }
        view.clone()
    }

    /// Changes whenever [`view`](Self::view) may: a change the connection
    /// made, or, while a session watches, its stores' counters and flags.
    /// Cheap (atomic reads), so a quiet remote is recognised without
    /// building its view.
    pub(super) fn fingerprint(&self) -> u64 {
        let state = self.0.state.lock().expect("remote status");
        let mut h = DefaultHasher::new();
        self.0.version.load(Ordering::Relaxed).hash(&mut h);
        if state.live.is_some() {
            for (_, st) in &state.stats {
                (
                    st.upserts(),
                    st.deletes(),
                    st.invalid(),
                    st.errors(),
                    st.lists(),
                    st.watch_starts(),
                    st.is_synced(),
                    st.is_watching(),
                    st.is_waiting_for_canary(),
                )
                    .hash(&mut h);
            }
        }
        h.finish()
    }

    /// Connected, with the remote's cluster config as accepted, reading
    /// from `via` (`None`: the remote itself).
    pub(super) fn connected(&self, config: String, via: Option<&str>) {
        let mut s = self.change();
        s.view.connected = true;
        s.view.connects += 1;
        s.view.config = Some(config);
        s.view.via = via.map(str::to_string);
    }

    /// A session watches with `stats`' stores, read through kvstoremesh
    /// if `cached`; until [`ended`](Self::ended), reads complete the view
    /// from them.
    pub(super) fn watching(&self, stats: &[(StoreKind, Arc<WatchStoreStats>)], cached: bool) {
        let mut s = self.change();
        s.stats = stats.to_vec();
        s.live = Some(Live {
            reachable: true,
            cached,
            mirror: None,
        });
    }

    /// Changes what a watching session reads, if `set` says it changed
    /// (counted only then: a probe a second that finds the same is no
    /// change).
    fn change_live(&self, set: impl FnOnce(&mut Live) -> bool) {
        let mut s = self.0.state.lock().expect("remote status");
        if let Some(live) = &mut s.live
            && set(live)
        {
            self.0.version.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The last probe's answer.
    pub(super) fn probed(&self, reachable: bool) {
        self.change_live(|live| std::mem::replace(&mut live.reachable, reachable) != reachable);
    }

    /// How kvstoremesh sees the remote (`None`: it does not say).
    pub(super) fn mirror(&self, mirror: Option<MirrorStatus>) {
        self.change_live(|live| {
            let changed = live.mirror != mirror;
            live.mirror = mirror;
            changed
        });
    }

    /// The session stopped watching: the view keeps what it showed last.
    pub(super) fn ended(&self) {
        let mut guard = self.change();
        let State { view, stats, live } = &mut *guard;
        if let Some(live) = live.take() {
            refresh(view, stats, &live);
        }
    }

    /// An attempt failed (counted).
    pub(super) fn failed(&self, failure: &Failure) {
        self.change().view.failures += 1;
        self.unreachable(failure);
    }

    /// Not answering right now (the connection stays).
    pub(super) fn unreachable(&self, failure: &Failure) {
        let mut guard = self.change();
        let State { view, stats, live } = &mut *guard;
        view.connected = false;
        view.ready = false;
        view.last_error = Some(failure.message.clone());
        view.last_error_kind = Some(failure.kind.as_str().to_string());
        if let Some(live) = live {
            live.reachable = false;
            refresh(view, stats, live);
        }
    }

    /// The remote's data was withdrawn: no entries to show.
    pub(super) fn withdrawn(&self) {
        let mut s = self.change();
        s.live = None;
        s.view.synced.clear();
        s.view.entries.clear();
        s.view.invalid.clear();
    }
}

/// Brings `s` up to date with a watching session's stores; through
/// kvstoremesh (`cached`), also with how kvstoremesh sees the remote, if it
/// says (`cilium/kvstoremesh/v1/<remote>`, our extension: a kvstoremesh
/// that does not publish it leaves the cache's own state).
fn refresh(s: &mut RemoteView, stats: &[(StoreKind, Arc<WatchStoreStats>)], live: &Live) {
    let Live {
        reachable,
        cached,
        ref mirror,
    } = *live;
    s.connected = reachable;
    s.synced = stats
        .iter()
        .map(|(k, st)| (k.as_str().to_string(), st.is_synced()))
        .collect();
    s.entries = stats
        .iter()
        .map(|(k, st)| (k.as_str().to_string(), st.entries()))
        .collect();
    s.deletes = stats
        .iter()
        .map(|(k, st)| (k.as_str().to_string(), st.deletes()))
        .collect();
    let mut invalid = BTreeMap::new();
    for (_, st) in stats {
        for (reason, n) in st.invalid_by_reason() {
            *invalid.entry(reason.as_str().to_string()).or_insert(0) += n;
        }
    }
    s.invalid = invalid;
    s.ready = reachable
        && stats
            .iter()
            .all(|(_, st)| st.is_synced() && st.is_watching());
    if let Some((kind, message)) = stats
        .iter()
        .find_map(|(_, st)| st.last_error().filter(|_| !st.is_watching()))
    {
        s.last_error_kind = Some(kind.as_str().to_string());
        s.last_error = Some(message);
    } else if s.ready {
        s.last_error = None;
        s.last_error_kind = None;
    }
    if let Some((kind, _)) = stats.iter().find(|(_, st)| st.is_waiting_for_canary()) {
        s.last_error_kind = Some("not-synced".into());
        s.last_error = Some(if cached {
            format!(
                "waiting for kvstoremesh to mirror the {} of {}",
                kind.as_str(),
                s.name
            )
        } else {
            format!("waiting for the {} canary of {}", kind.as_str(), s.name)
        });
    }
    // Through kvstoremesh, the remote is as far as kvstoremesh gets.
    if let Some(m) = mirror.as_ref().filter(|m| reachable && !m.ready) {
        s.ready = false;
        s.connected = m.connected;
        s.last_error_kind = Some(
            m.last_error_kind
                .clone()
                .unwrap_or_else(|| "not-synced".into()),
        );
        s.last_error = Some(format!(
            "as seen by kvstoremesh: {}",
            m.last_error.as_deref().unwrap_or("not mirrored yet")
        ));
    }
}

#[cfg(test)]
mod tests {
    use kvstore::remote::FailureKind;

    use super::*;

    fn status() -> RemoteStatus {
        RemoteStatus::new(&ClusterName::new("c2").unwrap())
    }

    #[test]
    fn a_quiet_remote_keeps_its_fingerprint() {
        let s = status();
        let stats = [(StoreKind::IpCache, Arc::new(WatchStoreStats::default()))];
        s.connected("id=2".into(), None);
        s.watching(&stats, false);
        let quiet = s.fingerprint();
        let view = s.view();
        assert_eq!(s.fingerprint(), quiet, "reading the view changes nothing");
        assert_eq!(s.view(), view);

        s.probed(true);
        assert_eq!(s.fingerprint(), quiet, "a probe that finds the same");
        s.probed(false);
        assert_ne!(s.fingerprint(), quiet, "a probe that finds it gone");
    }

    #[test]
    fn the_view_is_completed_from_the_stores_while_watching() {
        let s = status();
        let stats = [(StoreKind::IpCache, Arc::new(WatchStoreStats::default()))];
        s.connected("id=2".into(), None);
        s.watching(&stats, false);
        let v = s.view();
        assert!(v.connected);
        assert!(!v.ready, "the store has not listed yet");
        assert_eq!(v.synced.get("ipcache"), Some(&false));
        assert_eq!(v.entries.get("ipcache"), Some(&0));

        let failure = Failure::new(FailureKind::Unreachable, "connection refused");
        s.unreachable(&failure);
        let v = s.view();
        assert!(!v.connected);
        assert_eq!(v.last_error.as_deref(), Some("connection refused"));
        assert_eq!(
            v.last_error_kind.as_deref(),
            Some(FailureKind::Unreachable.as_str())
        );

        s.ended();
        s.failed(&failure);
        let v = s.view();
        assert_eq!(v.failures, 1);
        assert_eq!(
            v.synced.get("ipcache"),
            Some(&false),
            "kept from the session"
        );
        s.withdrawn();
        assert!(s.view().entries.is_empty());
    }
}
