use std::{
    collections::VecDeque,
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError, atomic::AtomicI64},
    time::Duration,
};

use etcd_client::proto::{PbEvent, PbResponseHeader, PbWatchResponse};
use prost::bytes::BytesMut;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    config::WatchConfig,
    etcd_error::EtcdError,
    watch_hub::{
        Subscription,
        batch::{Batch, REPLAY_EVENTS_PER_RESPONSE},
        context::HubContext,
        revision::Revision,
        subscriber::{Phase, Subscriber},
        upstream_watch::{self, Flow, UpstreamWatch},
        watch_key::WatchKey,
        watch_message::{WatchMessage, encode_shared},
    },
};

/// Whether a watcher joined a shared watch.
#[derive(Debug)]
pub(super) enum JoinOutcome {
    /// It receives the history above its cursor and then live events.
    Joined,
    /// It starts before the shared watch's history: a catch-up must replay
    /// etcd's history first. The token is cancelled when the watcher leaves.
    NeedsCatchUp(CancellationToken),
    /// The shared watch ended; the subscription is handed back.
    Finished(Subscription),
}

/// What a catch-up should do after handing over a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CatchUpStep {
    /// Keep reading; everything up to `cursor` is delivered.
    Continue { cursor: Revision },
    /// The watcher now follows the shared watch.
    Joined,
    /// The watcher left.
    Gone,
}

struct State {
    subscribers: Vec<Subscriber>,
    /// Recent responses, oldest first: together they hold every event with a
    /// revision above `floor` up to `revision`.
    history: VecDeque<Arc<Batch>>,
    history_events: usize,
    floor: Revision,
    /// Every event up to this revision has been received from etcd.
    revision: Revision,
    /// The etcd cluster the history comes from (0 until the first watch).
    cluster_id: u64,
    finished: bool,
}

impl State {
    /// Subscriber `id` if a catch-up serves it.
    fn catching_up(&mut self, id: u64) -> Option<CatchingUp<'_>> {
        let Self {
            subscribers,
            history,
            floor,
            revision,
            ..
        } = self;
        let sub = subscribers
            .iter_mut()
            .find(|s| s.id == id && s.phase == Phase::CatchingUp)?;
        Some(CatchingUp {
            sub,
            history,
            floor: *floor,
            complete_to: *revision,
        })
    }
}

/// A subscriber a catch-up serves, and the shared history it joins.
struct CatchingUp<'a> {
    sub: &'a mut Subscriber,
    history: &'a VecDeque<Arc<Batch>>,
    /// The history holds every event above this revision...
    floor: Revision,
    /// ...up to this one.
    complete_to: Revision,
}

impl CatchingUp<'_> {
    /// The catch-up has delivered everything up to `floor`: the subscriber
    /// takes the history above its cursor and goes live. Returns how many
    /// events it was sent.
    fn join(self) -> u64 {
        self.sub.phase = Phase::Live;
        self.sub.replay(self.history, self.complete_to)
    }
}

/// One upstream etcd watch of a range, shared by every downstream watcher of
/// that range (see [`super::WatchHub`] for how watchers join).
///
/// Its task reads etcd's responses, fans each out to the live watchers
/// (pushing into their outboxes without waiting), and keeps the recent ones
/// as history. When the upstream stream breaks (etcd restarts, the network
/// fails) it re-opens the watch at the next revision it has not seen, so the
/// watchers notice nothing: not a gap, not a duplicate. When etcd compacted
/// that revision meanwhile, watchers that still needed older events get
/// etcd's compaction response, as a direct watch would.
pub(super) struct SharedWatch {
    key: WatchKey,
    /// See [`WatchConfig::fan_out_linger`].
    fan_out_linger: Duration,
    /// See [`WatchConfig::fan_out_responses_per_s`].
    fan_out_responses_per_s: u32,
    /// See [`WatchConfig::history_events`].
    history_events: usize,
    state: Mutex<State>,
    stop: CancellationToken,
}

impl fmt::Debug for SharedWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedWatch")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl SharedWatch {
    /// A shared watch whose first watcher has `cursor`: the upstream watch
    /// starts at `cursor + 1`.
    pub(super) fn new(
        key: WatchKey,
        cursor: Revision,
        config: &WatchConfig,
        stop: CancellationToken,
    ) -> Self {
        Self {
            key,
            fan_out_linger: config.fan_out_linger,
            fan_out_responses_per_s: config.fan_out_responses_per_s,
            history_events: config.history_events,
            state: Mutex::new(State {
                subscribers: Vec::new(),
                history: VecDeque::new(),
                history_events: 0,
                floor: cursor,
                revision: cursor,
                cluster_id: 0,
                finished: false,
            }),
            stop,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn key(&self) -> &WatchKey {
        &self.key
    }

    /// Marks the watch finished and stops its task.
    pub(super) fn finish(&self) {
        self.lock().finished = true;
        self.stop.cancel();
    }

    pub(super) fn subscriber_count(&self) -> usize {
        self.lock().subscribers.len()
    }

    pub(super) fn has_subscriber(&self, id: u64) -> bool {
        self.lock().subscribers.iter().any(|s| s.id == id)
    }

    /// Adds a watcher; see [`JoinOutcome`].
    pub(super) fn join(
        &self,
        id: u64,
        subscription: Subscription,
        shared_cursor: Arc<AtomicI64>,
    ) -> (JoinOutcome, u64) {
        let mut st = self.lock();
        if st.finished {
            return (JoinOutcome::Finished(subscription), 0);
        }
        let mut subscriber = Subscriber {
            id,
            watch_id: subscription.watch_id,
            cursor: subscription.cursor,
            shared_cursor,
            filter: subscription.filter,
            progress_notify: subscription.progress_notify,
            outbox: subscription.outbox,
            phase: Phase::CatchingUp,
            left: self.stop.child_token(),
        };
        let (outcome, sent) = if subscriber.cursor >= st.floor {
            subscriber.phase = Phase::Live;
            let sent = subscriber.replay(&st.history, st.revision);
            (JoinOutcome::Joined, sent)
        } else {
            (JoinOutcome::NeedsCatchUp(subscriber.left.clone()), 0)
        };
        st.subscribers.push(subscriber);
        (outcome, sent)
    }

    /// Removes a watcher. Returns whether it was there and whether the watch
    /// has no watcher left.
    pub(super) fn remove_subscriber(&self, id: u64) -> (bool, bool) {
        let mut st = self.lock();
        let before = st.subscribers.len();
        st.subscribers.retain(|s| {
            if s.id == id {
                s.left.cancel();
                false
            } else {
                true
            }
        });
        (st.subscribers.len() < before, st.subscribers.is_empty())
    }

    /// Finishes the watch if it has no watcher (called with the hub's
    /// registry locked, so no watcher can join meanwhile).
    pub(super) fn finish_if_empty(&self) -> bool {
        let mut st = self.lock();
        if st.subscribers.is_empty() {
            st.finished = true;
            self.stop.cancel();
            true
        } else {
            false
        }
    }

    /// A catch-up's upstream response with events; see [`crate::watch_hub::catch_up::CatchUp`].
    pub(super) fn catch_up_events(
        &self,
        id: u64,
        header: PbResponseHeader,
        mut events: Vec<PbEvent>,
    ) -> (CatchUpStep, u64) {
        let mut st = self.lock();
        let Some(catching_up) = st.catching_up(id) else {
            return (CatchUpStep::Gone, 0);
        };
        // The catch-up delivers what the shared history does not have: the
        // events up to `floor`. The first event above it proves that
        // everything up to `floor` has been delivered (responses are ordered
        // and complete), and the shared history holds everything above.
        let split = events
            .iter()
            .position(|e| Revision::of_event(e) > catching_up.floor)
            .unwrap_or(events.len());
        let beyond_floor = split < events.len();
        events.truncate(split);
        let mut sent = 0;
        let sub = &mut *catching_up.sub;
        if let Some(last) = events.last().map(Revision::of_event) {
            let wanted: Vec<PbEvent> = events
                .into_iter()
                .filter(|e| Revision::of_event(e) > sub.cursor && sub.filter.passes(e))
                .collect();
            if !wanted.is_empty() {
                sent += wanted.len() as u64;
                let message = sub.response(header, wanted);
                sub.push(message);
            }
            sub.advance(last);
        }
        if beyond_floor {
            sent += catching_up.join();
            return (CatchUpStep::Joined, sent);
        }
        (
            CatchUpStep::Continue {
                cursor: catching_up.sub.cursor,
            },
            sent,
        )
    }

    /// A catch-up's progress notification: its own upstream watch has sent
    /// everything up to `header.revision`.
    pub(super) fn catch_up_progress(
        &self,
        id: u64,
        header: PbResponseHeader,
    ) -> (CatchUpStep, u64) {
        let mut st = self.lock();
        let Some(catching_up) = st.catching_up(id) else {
            return (CatchUpStep::Gone, 0);
        };
        let progress = Revision::of_header(&header);
        if progress >= catching_up.floor {
            catching_up.sub.advance(progress);
            return (CatchUpStep::Joined, catching_up.join());
        }
        let sub = catching_up.sub;
        if progress > sub.cursor {
            sub.advance(progress);
            if sub.progress_notify {
                let message = sub.response(header, Vec::new());
                sub.push(message);
            }
        }
        (CatchUpStep::Continue { cursor: sub.cursor }, 0)
    }

    /// A catch-up's start revision was compacted: the watcher gets etcd's
    /// compaction response. Returns whether it was still there.
    pub(super) fn catch_up_compacted(&self, id: u64, response: &PbWatchResponse) -> bool {
        let mut st = self.lock();
        let Some(sub) = st.subscribers.iter_mut().find(|s| s.id == id) else {
            return false;
        };
        sub.push(compaction_response(sub.watch_id, response));
        true
    }

    /// Runs the upstream watch until the last watcher leaves or the hub stops.
    pub(super) async fn run(self: Arc<Self>, ctx: Arc<HubContext>) {
        let mut feed = Feed {
            watch: &self,
            ctx: &ctx,
            pending: Vec::new(),
            last_fan_out: None,
            watchers: 0,
            opened: false,
        };
        upstream_watch::run(&mut feed, &ctx, &self.stop).await;
        ctx.registry.finished(&self);
    }

    /// How long events are collected between two fan-outs to `watchers`;
    /// see [`WatchConfig::fan_out_responses_per_s`].
    fn linger(&self, watchers: usize) -> Duration {
        let spread = Duration::from_secs_f64(
            watchers as f64 / f64::from(self.fan_out_responses_per_s.max(1)),
        );
        spread
            .min(WatchConfig::MAX_FAN_OUT_LINGER)
            .max(self.fan_out_linger)
    }

    /// Sends batches (in revision order) to every live watcher and keeps
    /// them as history. A watcher that takes them all whole gets one
    /// response: the encoded batches back to back, which is one
    /// `WatchResponse` with every event and the last header. Returns the
    /// live watchers (none without batches: nothing was sent).
    fn fan_out(&self, ctx: &HubContext, batches: Vec<Batch>) -> Option<usize> {
        let (Some(first), Some(last)) = (batches.first(), batches.last()) else {
            return None;
        };
        let (min_rev, max_rev) = (first.min_rev, last.max_rev);
        let events: usize = batches.iter().map(|b| b.events.len()).sum();
        let body = if batches.len() == 1 {
            first.body.clone()
        } else {
            let mut body = BytesMut::with_capacity(batches.iter().map(|b| b.body.len()).sum());
            for batch in &batches {
                body.extend_from_slice(&batch.body);
            }
            body.freeze()
        };
        let batches: Vec<Arc<Batch>> = batches.into_iter().map(Arc::new).collect();
        let capacity = self.history_events;
        let mut st = self.lock();
        let (mut sent, mut live) = (0, 0);
        for sub in st.subscribers.iter_mut().filter(|s| s.is_live()) {
            live += 1;
            if max_rev <= sub.cursor {
                continue;
            }
            if min_rev > sub.cursor && sub.filter.is_empty() {
                sub.push(WatchMessage::Shared {
                    watch_id: sub.watch_id,
                    body: body.clone(),
                    events: true,
                });
                sub.advance(max_rev);
                sent += events as u64;
            } else {
                for batch in &batches {
                    sent += sub.send_batch(batch);
                }
            }
        }
        st.revision = st.revision.max(max_rev);
        st.history_events += events;
        st.history.extend(batches);
        while st.history_events > capacity && st.history.len() > 1 {
            if let Some(old) = st.history.pop_front() {
                st.history_events -= old.events.len();
                st.floor = st.floor.max(old.max_rev);
            }
        }
        drop(st);
        ctx.metrics.events_sent(sent);
        Some(live)
    }

    /// A progress notification: etcd has sent everything up to its revision.
    fn progress(&self, header: PbResponseHeader) {
        let progress = Revision::of_header(&header);
        let mut st = self.lock();
        st.revision = st.revision.max(progress);
        let mut body = None;
        for sub in st.subscribers.iter_mut().filter(|s| s.is_live()) {
            if progress < sub.cursor {
                continue;
            }
            sub.advance(progress);
            if sub.progress_notify {
                let body = body
                    .get_or_insert_with(|| {
                        encode_shared(&PbWatchResponse {
                            header: Some(header),
                            ..PbWatchResponse::default()
                        })
                    })
                    .clone();
                sub.push(WatchMessage::Shared {
                    watch_id: sub.watch_id,
                    body,
                    events: false,
                });
            }
        }
    }

    /// Checks that a (re-)created watch continues the history the watchers
    /// have: the same etcd cluster ID, and a revision not below the one
    /// already seen. A different etcd cluster, or the same one whose data
    /// was wiped (it restarts at revision 1 with the same cluster ID, and a
    /// watch resumed at the old revision would silently skip everything
    /// written until then), has another history: every watcher is canceled
    /// and must list again.
    fn same_history(&self, ctx: &HubContext, response: &PbWatchResponse) -> bool {
        let header = response.header.unwrap_or_default();
        let cluster_id = header.cluster_id;
        let mut st = self.lock();
        let other_cluster = cluster_id != 0 && st.cluster_id != 0 && st.cluster_id != cluster_id;
        let revision = Revision::of_header(&header);
        let went_back = revision > Revision::default() && revision < st.revision;
        if !other_cluster && !went_back {
            if cluster_id != 0 {
                st.cluster_id = cluster_id;
            }
            return true;
        }
        ctx.latest.reset(header);
        if !other_cluster {
            warn!(range = %self.key, seen = %st.revision, now = %revision, "etcd's revision went backwards (its data was lost); its watchers must list again");
            drop(st);
            self.cancel_for_relist(ctx);
            return false;
        }
        warn!(range = %self.key, old = st.cluster_id, new = cluster_id, "a different etcd cluster answers; canceling the watchers of this range");
        let reason = EtcdError::ClusterIdMismatch.cancel_reason();
        let removed = st.subscribers.len() as i64;
        for mut sub in st.subscribers.drain(..) {
            sub.left.cancel();
            sub.push(WatchMessage::owned(PbWatchResponse {
                header: response.header,
                watch_id: sub.watch_id,
                canceled: true,
                cancel_reason: reason.clone(),
                ..PbWatchResponse::default()
            }));
        }
        st.finished = true;
        drop(st);
        ctx.metrics.downstream_watchers().dec_by(removed);
        false
    }

    /// etcd lost its data (wiped and restarted): the history the watchers
    /// have is gone, and a resumed watch would skip whatever the new history
    /// wrote up to their revision. Every watcher gets etcd's compaction
    /// response (clients then list again, as after a compaction) and the
    /// watch ends.
    pub(super) fn cancel_for_relist(&self, ctx: &HubContext) {
        let header = ctx.latest.get();
        let mut st = self.lock();
        let removed = st.subscribers.len() as i64;
        for mut sub in st.subscribers.drain(..) {
            sub.left.cancel();
            sub.push(WatchMessage::owned(PbWatchResponse {
                header: Some(header),
                watch_id: sub.watch_id,
                canceled: true,
                compact_revision: sub.cursor.next().get(),
                cancel_reason: EtcdError::RevisionWentBackwards.cancel_reason(),
                ..PbWatchResponse::default()
            }));
        }
        st.finished = true;
        drop(st);
        ctx.metrics.downstream_watchers().dec_by(removed);
        self.stop.cancel();
    }

    /// etcd compacted the revision the watch resumes at. Watchers that still
    /// need older events get etcd's compaction response; the others continue
    /// from the compaction revision.
    fn compacted(&self, ctx: &HubContext, response: &PbWatchResponse) -> Flow {
        let compact = Revision::new(response.compact_revision);
        let mut st = self.lock();
        let before = st.subscribers.len();
        st.subscribers.retain_mut(|sub| {
            if sub.is_live() && sub.cursor.next() < compact {
                sub.left.cancel();
                sub.push(compaction_response(sub.watch_id, response));
                false
            } else {
                true
            }
        });
        let removed = (before - st.subscribers.len()) as i64;
        info!(range = %self.key, %compact, canceled = removed, "upstream watch revision was compacted");
        st.revision = st.revision.max(compact.prev());
        st.floor = st.revision;
        st.history.clear();
        st.history_events = 0;
        let empty = st.subscribers.is_empty();
        drop(st);
        ctx.metrics.downstream_watchers().dec_by(removed);
        if empty && ctx.registry.finish_if_empty(self) {
            Flow::Stop
        } else {
            Flow::Reopen
        }
    }
}

/// etcd's response to a watcher whose start revision was compacted.
fn compaction_response(watch_id: i64, upstream: &PbWatchResponse) -> WatchMessage {
    WatchMessage::owned(PbWatchResponse {
        header: upstream.header,
        watch_id,
        canceled: true,
        compact_revision: upstream.compact_revision,
        cancel_reason: upstream.cancel_reason.clone(),
        ..PbWatchResponse::default()
    })
}

/// A shared watch's upstream side: hands etcd's responses to the watch.
///
/// Events are fanned out at once when the previous fan-out is at least a
/// linger period old; while they arrive faster, they are collected and
/// fanned out together when the period is over (or a batch grows large),
/// one response per watcher for the lot: at high rates that divides the
/// responses, and the CPU spent on each, by the number of events per
/// period, for at most a period of delay. The period is `fan_out_linger`,
/// longer with many watchers ([`SharedWatch::linger`]).
struct Feed<'a> {
    watch: &'a SharedWatch,
    ctx: &'a HubContext,
    /// Events held back, of the current upstream stream.
    pending: Vec<Batch>,
    /// The last fan-out of the current upstream stream.
    last_fan_out: Option<Instant>,
    /// Live watchers at the last fan-out.
    watchers: usize,
    /// Whether the watch was opened before (a re-opening is a restart).
    opened: bool,
}

impl UpstreamWatch for Feed<'_> {
    const KIND: &'static str = "shared";

    fn key(&self) -> &WatchKey {
        &self.watch.key
    }

    fn open_at(&mut self) -> Revision {
        if self.opened {
            self.ctx.metrics.upstream_watch_restarted();
        }
        self.opened = true;
        self.pending.clear();
        self.last_fan_out = None;
        self.watch.lock().revision.next()
    }

    fn created(&mut self, response: &PbWatchResponse) -> Flow {
        if self.watch.same_history(self.ctx, response) {
            Flow::Continue
        } else {
            Flow::Stop
        }
    }

    fn events(&mut self, response: PbWatchResponse) -> Flow {
        let header = response.header.unwrap_or_default();
        self.pending.push(Batch::new(header, response.events));
        let now = Instant::now();
        let events: usize = self.pending.iter().map(|b| b.events.len()).sum();
        if self
            .last_fan_out
            .is_none_or(|at| now >= at + self.watch.linger(self.watchers))
            || events >= REPLAY_EVENTS_PER_RESPONSE
        {
            self.flush();
            self.last_fan_out = Some(now);
        }
        Flow::Continue
    }

    fn progress(&mut self, response: &PbWatchResponse) -> Flow {
        self.watch.progress(response.header.unwrap_or_default());
        Flow::Continue
    }

    fn compacted(&mut self, response: &PbWatchResponse) -> Flow {
        self.watch.compacted(self.ctx, response)
    }

    fn flush(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        if let Some(watchers) = self.watch.fan_out(self.ctx, pending) {
            self.watchers = watchers;
        }
    }

    fn flush_at(&self) -> Option<Instant> {
        self.last_fan_out
            .filter(|_| !self.pending.is_empty())
            .map(|at| at + self.watch.linger(self.watchers))
    }

    fn flush_due(&mut self) {
        self.flush();
        self.last_fan_out = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linger_grows_with_the_watchers_within_bounds() {
        let watch = SharedWatch::new(
            WatchKey::from_request(b"a/", b"a0", false),
            Revision::new(1),
            &WatchConfig::default(),
            CancellationToken::new(),
        );
        let ms = |watchers| watch.linger(watchers).as_secs_f64() * 1000.0;
        assert_eq!(ms(0), 5.0, "a few watchers: the configured linger");
        assert_eq!(ms(100), 5.0);
        assert_eq!(ms(1_000), 10.0);
        assert_eq!(ms(5_000), 50.0);
        assert_eq!(ms(1_000_000), 100.0, "never above the maximum");
    }
}
