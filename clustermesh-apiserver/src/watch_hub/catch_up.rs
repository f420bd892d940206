use std::sync::Arc;

use etcd_client::proto::PbWatchResponse;
use tokio_util::sync::CancellationToken;

use super::{
    context::HubContext,
    revision::Revision,
    shared_watch::{CatchUpStep, SharedWatch},
    upstream_watch::{self, Flow, UpstreamWatch},
    watch_key::WatchKey,
};

/// Replays etcd's history to one watcher that starts before what its shared
/// watch remembers, then hands it over to the shared watch.
///
/// It opens a private upstream watch at the watcher's start revision and
/// delivers each event up to the shared watch's `floor` (the history holds
/// every event above it). The first event above `floor` proves the private
/// stream has delivered everything up to `floor`, since etcd sends a range's
/// events in revision order and without holes; the watcher then joins the
/// shared watch at the last revision it received, takes the history above
/// it, and the private watch is closed. That event itself and the ones after
/// it come from the shared watch, so none is lost or sent twice. A progress
/// notification at or above `floor` is the same proof when no event comes.
///
/// If the private watch breaks it resumes after the last delivered revision;
/// if etcd compacted the start revision, the watcher gets etcd's compaction
/// response and is removed, as with a direct watch.
pub(super) struct CatchUp {
    ctx: Arc<HubContext>,
    watch: Arc<SharedWatch>,
    id: u64,
    cursor: Revision,
    left: CancellationToken,
}

impl CatchUp {
    /// `start` is the watcher's first wanted revision; `left` is cancelled
    /// when it leaves.
    pub(super) fn new(
        ctx: Arc<HubContext>,
        watch: Arc<SharedWatch>,
        id: u64,
        start: Revision,
        left: CancellationToken,
    ) -> Self {
        Self {
            ctx,
            watch,
            id,
            cursor: start.prev(),
            left,
        }
    }

    pub(super) async fn run(mut self) {
        let (ctx, left) = (self.ctx.clone(), self.left.clone());
        upstream_watch::run(&mut self, &ctx, &left).await;
        ctx.registry.catch_up_ended();
    }

    /// Counts what the shared watch sent for the catch-up; ends it once the
    /// watcher joined or left.
    fn step(&mut self, (step, sent): (CatchUpStep, u64)) -> Flow {
        self.ctx.metrics.events_sent(sent);
        match step {
            CatchUpStep::Continue { cursor } => {
                self.cursor = cursor;
                Flow::Continue
            }
            CatchUpStep::Joined | CatchUpStep::Gone => Flow::Stop,
        }
    }
}

impl UpstreamWatch for CatchUp {
    const KIND: &'static str = "catch-up";

    fn key(&self) -> &WatchKey {
        self.watch.key()
    }

    fn open_at(&mut self) -> Revision {
        self.cursor.next()
    }

    fn created(&mut self, _response: &PbWatchResponse) -> Flow {
        Flow::Continue
    }

    fn events(&mut self, response: PbWatchResponse) -> Flow {
        let header = response.header.unwrap_or_default();
        let step = self.watch.catch_up_events(self.id, header, response.events);
        self.step(step)
    }

    fn progress(&mut self, response: &PbWatchResponse) -> Flow {
        let header = response.header.unwrap_or_default();
        let step = self.watch.catch_up_progress(self.id, header);
        self.step(step)
    }

    fn compacted(&mut self, response: &PbWatchResponse) -> Flow {
        if self.watch.catch_up_compacted(self.id, response) {
            self.ctx.registry.remove(&self.watch, self.id);
        }
        Flow::Stop
    }
}
