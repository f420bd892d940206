//! The watch hub: etcd's `Watch` API served from one upstream etcd watch
//! per key range, fanned out to every downstream watcher of that range.
//!
//! - [`WatchHub`] (this file) is its face: it registers downstream watches
//!   ([`WatchHub::subscribe`]) and owns the tasks of the upstream watches.
//! - [`SharedWatch`] is one upstream watch and its watchers; [`CatchUp`]
//!   replays older history to one watcher before it joins a shared watch.
//!   Both read etcd through one resumable loop ([`upstream_watch::run`],
//!   each implementing [`UpstreamWatch`](upstream_watch::UpstreamWatch)) and
//!   see the hub only through a [`HubContext`].
//! - [`WatchStream`] serves one downstream gRPC stream; the shared watches
//!   push into its [`Outbox`] as [`WatchMessage`]s.
//! - [`WatchKey`] is what a watch watches, read from the client's request.
//!
//! Not for: watches the apiserver makes for itself (the cluster config
//! publisher uses the kvstore client), or any RPC other than `Watch`.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
};

use etcd_client::proto::PbResponseHeader;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

mod batch;
mod catch_up;
mod context;
mod event_filter;
mod latest_header;
mod outbox;
mod registry;
mod revision;
mod shared_watch;
mod subscriber;
mod upstream_watch;
mod watch_body;
mod watch_key;
mod watch_message;
mod watch_stream;

pub(crate) use outbox::{Outbox, OutboxStream};
pub(crate) use watch_body::WatchBody;
pub(crate) use watch_message::{NoResponse, WatchCodec};
pub(crate) use watch_stream::WatchStream;

use self::{
    catch_up::CatchUp,
    context::HubContext,
    event_filter::EventFilter,
    revision::Revision,
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
    cursor: Revision,
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
    fn cursor(&self) -> Revision {
        Revision::new(self.cursor.load(Ordering::Acquire))
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
    ctx: Arc<HubContext>,
    config: WatchConfig,
    next_subscriber: AtomicU64,
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
        let ctx = HubContext::new(upstream, metrics, &config);
        Arc::new(Self {
            ctx: Arc::new(ctx),
            config,
            next_subscriber: AtomicU64::new(1),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        })
    }

    /// Waits for `shutdown`, then stops every upstream watch and waits for
    /// their tasks.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        shutdown.cancelled().await;
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    pub fn stats(&self) -> WatchHubStats {
        self.ctx.registry.stats()
    }

    pub(crate) fn config(&self) -> &WatchConfig {
        &self.config
    }

    fn upstream(&self) -> &Upstream {
        &self.ctx.upstream
    }

    /// Remembers the newest response header seen from etcd.
    fn observe(&self, header: Option<&PbResponseHeader>) {
        self.ctx.latest.observe(header);
    }

    /// The newest response header seen from etcd (for responses that etcd
    /// would stamp with its current revision, like cancel confirmations).
    fn latest_header(&self) -> PbResponseHeader {
        self.ctx.latest.get()
    }

    /// etcd lost its data (the apiserver's own lease vanished, or a watch's
    /// revision went backwards): every shared watch ends and its watchers
    /// are told to list again (see [`SharedWatch::cancel_for_relist`]).
    pub(crate) fn data_lost(&self) {
        for watch in self.ctx.registry.take_all() {
            watch.cancel_for_relist(&self.ctx);
        }
    }

    /// Registers a downstream watch of `key`; see the type's documentation.
    fn subscribe(
        self: &Arc<Self>,
        key: WatchKey,
        subscription: Subscription,
    ) -> SubscriptionHandle {
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        let cursor = Arc::new(AtomicI64::new(subscription.cursor.get()));
        let start = subscription.cursor.next();
        let mut subscription = subscription;
        let mut registry = self.ctx.registry.lock();
        let (watch, outcome, sent) = loop {
            let watch = match registry.get(&key) {
                Some(watch) => watch,
                None => {
                    let watch = Arc::new(SharedWatch::new(
                        key.clone(),
                        subscription.cursor,
                        &self.config,
                        self.stop.child_token(),
                    ));
                    registry.insert(watch.clone());
                    self.tasks.spawn(watch.clone().run(self.ctx.clone()));
                    watch
                }
            };
            match watch.join(id, subscription, cursor.clone()) {
                (JoinOutcome::Finished(back), _) => {
                    // Its task is ending; replace it.
                    registry.forget(&watch);
                    subscription = back;
                }
                (outcome, sent) => break (watch, outcome, sent),
            }
        };
        drop(registry);
        self.ctx.metrics.downstream_watchers().inc();
        self.ctx.metrics.events_sent(sent);
        if let JoinOutcome::NeedsCatchUp(left) = outcome {
            self.ctx.registry.catch_up_started();
            let catch_up = CatchUp::new(self.ctx.clone(), watch.clone(), id, start, left);
            self.tasks.spawn(catch_up.run());
        }
        SubscriptionHandle { watch, id, cursor }
    }

    /// Removes a downstream watch. Returns whether it was still registered.
    fn unsubscribe(&self, handle: &SubscriptionHandle) -> bool {
        self.ctx.registry.remove(&handle.watch, handle.id)
    }
}
