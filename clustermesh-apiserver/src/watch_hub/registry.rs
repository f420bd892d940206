use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicI64, Ordering},
    },
};

use super::{WatchHubStats, shared_watch::SharedWatch, watch_key::WatchKey};
use crate::metrics::Metrics;

/// The shared watches by key, and the count of catch-ups.
///
/// The one place that adds and removes shared watches, so that the map, the
/// upstream-watch gauge and the watches' own `finished` flag agree. Joining
/// a watch and ending it both happen with the map locked ([`Registry::lock`]),
/// so a watcher never joins a watch that is ending without noticing.
#[derive(Debug)]
pub(super) struct Registry {
    watches: Mutex<HashMap<WatchKey, Arc<SharedWatch>>>,
    catch_ups: AtomicI64,
    metrics: Metrics,
}

/// The registry, locked.
pub(super) struct Locked<'a> {
    watches: MutexGuard<'a, HashMap<WatchKey, Arc<SharedWatch>>>,
    metrics: &'a Metrics,
}

impl Registry {
    pub(super) fn new(metrics: Metrics) -> Self {
        Self {
            watches: Mutex::default(),
            catch_ups: AtomicI64::new(0),
            metrics,
        }
    }

    pub(super) fn lock(&self) -> Locked<'_> {
        Locked {
            watches: self.watches.lock().unwrap_or_else(PoisonError::into_inner),
            metrics: &self.metrics,
        }
    }

    pub(super) fn stats(&self) -> WatchHubStats {
        let locked = self.lock();
        WatchHubStats {
            shared_watches: locked.watches.len(),
            catch_ups: usize::try_from(self.catch_ups.load(Ordering::Relaxed)).unwrap_or(0),
            subscribers: locked.watches.values().map(|w| w.subscriber_count()).sum(),
        }
    }

    /// Takes every shared watch out (etcd lost its data); the caller ends
    /// them.
    pub(super) fn take_all(&self) -> Vec<Arc<SharedWatch>> {
        let mut locked = self.lock();
        let all: Vec<Arc<SharedWatch>> = locked.watches.drain().map(|(_, w)| w).collect();
        self.metrics.upstream_watches().dec_by(all.len() as i64);
        all
    }

    /// Removes subscriber `id` of `watch`, and the shared watch itself when
    /// that was its last subscriber. Returns whether it was still
    /// registered.
    pub(super) fn remove(&self, watch: &Arc<SharedWatch>, id: u64) -> bool {
        let mut locked = self.lock();
        let (removed, now_empty) = watch.remove_subscriber(id);
        if removed {
            self.metrics.downstream_watchers().dec();
        }
        if now_empty {
            locked.forget(watch);
        }
        removed
    }

    /// Finishes `watch` if it has no subscriber left; returns whether it did.
    pub(super) fn finish_if_empty(&self, watch: &SharedWatch) -> bool {
        let mut locked = self.lock();
        if !watch.finish_if_empty() {
            return false;
        }
        locked.unregister(watch);
        true
    }

    /// Called by a shared watch whose upstream loop ended for good.
    pub(super) fn finished(&self, watch: &Arc<SharedWatch>) {
        self.lock().forget(watch);
    }

    pub(super) fn catch_up_started(&self) {
        self.catch_ups.fetch_add(1, Ordering::Relaxed);
        self.metrics.upstream_watches().inc();
    }

    /// Called when a catch-up ends (joined, canceled or gone).
    pub(super) fn catch_up_ended(&self) {
        self.catch_ups.fetch_sub(1, Ordering::Relaxed);
        self.metrics.upstream_watches().dec();
    }
}

impl Locked<'_> {
    pub(super) fn get(&self, key: &WatchKey) -> Option<Arc<SharedWatch>> {
        self.watches.get(key).cloned()
    }

    pub(super) fn insert(&mut self, watch: Arc<SharedWatch>) {
        self.watches.insert(watch.key().clone(), watch);
        self.metrics.upstream_watches().inc();
    }

    /// Removes `watch` (if it is still the one of its key) and finishes it.
    pub(super) fn forget(&mut self, watch: &Arc<SharedWatch>) {
        self.unregister(watch);
        watch.finish();
    }

    /// Removes `watch` if it is still the one registered for its key (a
    /// replacement may have taken its place).
    fn unregister(&mut self, watch: &SharedWatch) {
        if self
            .watches
            .get(watch.key())
            .is_some_and(|current| std::ptr::eq(Arc::as_ptr(current), watch))
        {
            self.watches.remove(watch.key());
            self.metrics.upstream_watches().dec();
        }
    }
}
