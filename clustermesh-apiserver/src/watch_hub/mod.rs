use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
};

use etcd_client::proto::PbResponseHeader;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

mod batch;
mod catch_up;
mod event_filter;
mod outbox;
mod shared_watch;
mod subscriber;
mod watch_key;
mod watch_message;
mod watch_stream;

pub(crate) use outbox::{Outbox, OutboxStream};
pub(crate) use watch_message::{WatchCodec, WatchMessage};
pub(crate) use watch_stream::WatchStream;

use self::{
    catch_up::CatchUp,
    event_filter::EventFilter,
    shared_watch::{JoinOutcome, SharedWatch},
    watch_key::WatchKey,
};
use crate::{config::WatchConfig, metrics::Metrics, upstream::Upstream};

/// A downstream watch as the hub sees it.
#[derive(Debug)]
struct Subscription {
    watch_id: i64,
    /// Every event up to this revision has been delivered (or is not
    /// wanted): the watcher receives events with a higher revision.
    cursor: i64,
    filter: EventFilter,
    progress_notify: bool,
    outbox: Outbox,
}

/// A downstream watch's registration, to cancel it.
#[derive(Debug)]
struct SubscriptionHandle {
    watch: Arc<SharedWatch>,
    id: u64,
    cursor: Arc<AtomicI64>,
}

impl SubscriptionHandle {
    /// Every event up to this revision has been queued to the watcher.
    fn cursor(&self) -> i64 {
        self.cursor.load(Ordering::Acquire)
    }

    /// Whether the hub still delivers to it (not canceled by compaction or
    /// an upstream failure).
    fn is_active(&self) -> bool {
        self.watch.has_subscriber(self.id)
    }
}

/// Counts for status and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchHubStats {
    /// Upstream watches shared by downstream watchers.
    pub shared_watches: usize,
    /// Private upstream watches replaying history for a watcher that
    /// started before what the shared watch remembers.
    pub catch_ups: usize,
    /// Downstream watchers.
    pub subscribers: usize,
}

/// The watch fan-out: downstream watches of the same range share one
/// upstream etcd watch ([`SharedWatch`]).
///
/// A new watch with start revision `s` (or "now", resolved to etcd's current
/// revision `R` by the caller, so `s = R + 1`) has a cursor `s - 1`:
/// it must receive exactly the events with a higher revision.
///
/// - No shared watch of its range exists: one is opened upstream at `s`.
/// - One exists and remembers every event above `floor` (its history): if
///   `s - 1 >= floor`, the watcher joins at once; the history above its
///   cursor is queued, then live events follow. Nothing is missed (history
///   plus live is complete above `floor`) and nothing repeats (only events
///   above the cursor are sent).
/// - Otherwise the watcher needs history etcd still has: a [`CatchUp`]
///   opens a private upstream watch at `s` and delivers its events until the
///   first one above the shared watch's `floor`, then joins the shared watch
///   at the last revision it delivered (see [`CatchUp`] for why that is
///   exact), and its upstream watch is closed.
///
/// The hub owns the tasks of the shared watches and catch-ups; they stop
/// when their last watcher leaves, or at shutdown.
pub struct WatchHub {
    upstream: Upstream,
    config: WatchConfig,
    metrics: Metrics,
    watches: Mutex<HashMap<WatchKey, Arc<SharedWatch>>>,
    latest: Mutex<PbResponseHeader>,
    next_subscriber: AtomicU64,
    catch_ups: AtomicI64,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl fmt::Debug for WatchHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchHub")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl WatchHub {
    pub fn new(upstream: Upstream, config: WatchConfig, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            upstream,
            config,
            metrics,
            watches: Mutex::default(),
            latest: Mutex::default(),
            next_subscriber: AtomicU64::new(1),
            catch_ups: AtomicI64::new(0),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        })
    }

    /// Waits for `shutdown`, then stops every upstream watch and waits for
    /// their tasks.
    pub async fn run(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        shutdown.cancelled().await;
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    pub fn stats(&self) -> WatchHubStats {
        let watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        WatchHubStats {
            shared_watches: watches.len(),
            catch_ups: usize::try_from(self.catch_ups.load(Ordering::Relaxed)).unwrap_or(0),
            subscribers: watches.values().map(|w| w.subscriber_count()).sum(),
        }
    }

    fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    pub(crate) fn config(&self) -> &WatchConfig {
        &self.config
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Remembers the newest response header seen from etcd.
    fn observe(&self, header: Option<&PbResponseHeader>) {
        let Some(header) = header else { return };
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        if header.revision >= latest.revision {
            *latest = *header;
        }
    }

    /// etcd lost its data (the apiserver's own lease vanished, or a watch's
    /// revision went backwards): every shared watch ends and its watchers
    /// are told to list again (see [`SharedWatch::cancel_for_relist`]).
    pub(crate) fn data_lost(&self) {
        let all: Vec<Arc<SharedWatch>> = {
            let mut watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
            watches.drain().map(|(_, w)| w).collect()
        };
        for watch in all {
            self.metrics.upstream_watches().dec();
            watch.cancel_for_relist(self);
        }
    }

    /// etcd lost its data (or another etcd answers): forget the headers of
    /// the old history.
    fn reset_latest(&self, header: PbResponseHeader) {
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = header;
    }

    /// The newest response header seen from etcd (for responses that etcd
    /// would stamp with its current revision, like cancel confirmations).
    fn latest_header(&self) -> PbResponseHeader {
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a downstream watch of `key`; see the type's documentation.
    fn subscribe(
        self: &Arc<Self>,
        key: WatchKey,
        subscription: Subscription,
    ) -> SubscriptionHandle {
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        let cursor = Arc::new(AtomicI64::new(subscription.cursor));
        let start = subscription.cursor + 1;
        let mut subscription = subscription;
        let mut watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        let (watch, outcome, sent) = loop {
            let watch = match watches.get(&key) {
                Some(watch) => watch.clone(),
                None => {
                    let watch = Arc::new(SharedWatch::new(
                        key.clone(),
                        subscription.cursor,
                        self.stop.child_token(),
                    ));
                    watches.insert(key.clone(), watch.clone());
                    self.metrics.upstream_watches().inc();
                    self.tasks.spawn(watch.clone().run(self.clone()));
                    watch
                }
            };
            match watch.join(id, subscription, cursor.clone()) {
                (JoinOutcome::Finished(back), _) => {
                    // Its task is ending; replace it.
                    self.forget(&mut watches, &watch);
                    subscription = back;
                }
                (outcome, sent) => break (watch, outcome, sent),
            }
        };
        drop(watches);
        self.metrics.downstream_watchers().inc();
        self.metrics.events_sent(sent);
        if let JoinOutcome::NeedsCatchUp(left) = outcome {
            self.catch_ups.fetch_add(1, Ordering::Relaxed);
            self.metrics.upstream_watches().inc();
            let catch_up = CatchUp::new(self.clone(), watch.clone(), id, start, left);
            self.tasks.spawn(catch_up.run());
        }
        SubscriptionHandle { watch, id, cursor }
    }

    /// Removes a downstream watch. Returns whether it was still registered.
    fn unsubscribe(&self, handle: &SubscriptionHandle) -> bool {
        self.remove(&handle.watch, handle.id)
    }

    /// Removes subscriber `id` of `watch`, and the shared watch itself when
    /// that was its last subscriber.
    fn remove(&self, watch: &Arc<SharedWatch>, id: u64) -> bool {
        let mut watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        let (removed, now_empty) = watch.remove_subscriber(id);
        if removed {
            self.metrics.downstream_watchers().dec();
        }
        if now_empty {
            self.forget(&mut watches, watch);
        }
        removed
    }

    /// Finishes `watch` if it has no subscriber left; returns whether it did.
    fn finish_if_empty(&self, watch: &SharedWatch) -> bool {
        let mut watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        if !watch.finish_if_empty() {
            return false;
        }
        if watches
            .get(watch.key())
            .is_some_and(|current| std::ptr::eq(Arc::as_ptr(current), watch))
        {
            watches.remove(watch.key());
            self.metrics.upstream_watches().dec();
        }
        true
    }

    /// Called by a shared watch whose upstream loop ended for good.
    fn finished(&self, watch: &Arc<SharedWatch>) {
        let mut watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        self.forget(&mut watches, watch);
    }

    fn forget(&self, watches: &mut HashMap<WatchKey, Arc<SharedWatch>>, watch: &Arc<SharedWatch>) {
        if watches
            .get(watch.key())
            .is_some_and(|current| Arc::ptr_eq(current, watch))
        {
            watches.remove(watch.key());
            self.metrics.upstream_watches().dec();
        }
        watch.finish();
    }

    /// Called when a catch-up ends (joined, canceled or gone).
    fn catch_up_ended(&self) {
        self.catch_ups.fetch_sub(1, Ordering::Relaxed);
        self.metrics.upstream_watches().dec();
    }
}
