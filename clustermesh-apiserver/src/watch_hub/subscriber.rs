use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
};

use etcd_client::proto::{PbEvent, PbResponseHeader, PbWatchResponse};
use tokio_util::sync::CancellationToken;

use super::{
    batch::{Batch, REPLAY_EVENTS_PER_RESPONSE},
    event_filter::EventFilter,
    outbox::Outbox,
    revision::Revision,
    watch_message::WatchMessage,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Its history comes from a catch-up; live events are not sent yet.
    CatchingUp,
    Live,
    /// Its outbox overflowed or closed; its stream is going away.
    Dead,
}

/// A downstream watcher of a shared watch.
pub(super) struct Subscriber {
    pub(super) id: u64,
    pub(super) watch_id: i64,
    pub(super) cursor: Revision,
    pub(super) shared_cursor: Arc<AtomicI64>,
    pub(super) filter: EventFilter,
    pub(super) progress_notify: bool,
    pub(super) outbox: Outbox,
    pub(super) phase: Phase,
    pub(super) left: CancellationToken,
}

impl Subscriber {
    pub(super) fn advance(&mut self, revision: Revision) {
        if revision > self.cursor {
            self.cursor = revision;
            self.shared_cursor.store(revision.get(), Ordering::Release);
        }
    }

    pub(super) fn push(&mut self, message: WatchMessage) {
        if !self.outbox.push(message) {
            self.phase = Phase::Dead;
        }
    }

    /// Queues the events of `batch` above the cursor that pass the filter;
    /// returns how many.
    pub(super) fn send_batch(&mut self, batch: &Batch) -> u64 {
        if batch.max_rev <= self.cursor {
            return 0;
        }
        let sent = if batch.min_rev > self.cursor && self.filter.is_empty() {
            self.push(WatchMessage::Shared {
                watch_id: self.watch_id,
                body: batch.body.clone(),
                events: true,
            });
            batch.events.len()
        } else {
            let events: Vec<PbEvent> = batch
                .events
                .iter()
                .filter(|e| Revision::of_event(e) > self.cursor && self.filter.passes(e))
                .cloned()
                .collect();
            let n = events.len();
            if n > 0 {
                self.push(self.response(batch.header, events));
            }
            n
        };
        self.advance(batch.max_rev);
        sent as u64
    }

    /// Queues the history above the cursor in responses of up to
    /// [`REPLAY_EVENTS_PER_RESPONSE`] events, then takes the cursor to
    /// `complete_to` (everything up to it was in the history).
    pub(super) fn replay(&mut self, history: &VecDeque<Arc<Batch>>, complete_to: Revision) -> u64 {
        let mut sent = 0;
        let mut pending: Vec<PbEvent> = Vec::new();
        let mut header = PbResponseHeader::default();
        let (cursor, filter) = (self.cursor, self.filter);
        for batch in history.iter().filter(|b| b.max_rev > cursor) {
            pending.extend(
                batch
                    .events
                    .iter()
                    .filter(|e| Revision::of_event(e) > cursor && filter.passes(e))
                    .cloned(),
            );
            header = batch.header;
            if pending.len() >= REPLAY_EVENTS_PER_RESPONSE {
                sent += pending.len();
                let events = std::mem::take(&mut pending);
                self.push(self.response(header, events));
            }
        }
        if !pending.is_empty() {
            sent += pending.len();
            self.push(self.response(header, pending));
        }
        self.advance(complete_to);
        sent as u64
    }

    pub(super) fn response(&self, header: PbResponseHeader, events: Vec<PbEvent>) -> WatchMessage {
        WatchMessage::owned(PbWatchResponse {
            header: Some(header),
            watch_id: self.watch_id,
            events,
            ..PbWatchResponse::default()
        })
    }

    pub(super) fn is_live(&self) -> bool {
        self.phase == Phase::Live
    }
}
