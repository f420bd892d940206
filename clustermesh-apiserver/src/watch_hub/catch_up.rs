use std::sync::Arc;

use etcd_client::proto::PbWatchResponse;
use kvstore::Backoff;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tracing::debug;

use crate::{
    upstream::path,
    watch_hub::{
        context::HubContext,
        shared_watch::{CatchUpStep, SharedWatch},
    },
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
    cursor: i64,
    left: CancellationToken,
}

/// How a pass over the private stream ended.
enum Ended {
    /// The watcher joined, left or was canceled.
    Done,
    Error(String),
}

impl CatchUp {
    /// `start` is the watcher's first wanted revision; `left` is cancelled
    /// when it leaves.
    pub(super) fn new(
        ctx: Arc<HubContext>,
        watch: Arc<SharedWatch>,
        id: u64,
        start: i64,
        left: CancellationToken,
    ) -> Self {
        Self {
            ctx,
            watch,
            id,
            cursor: start - 1,
            left,
        }
    }

    pub(super) async fn run(mut self) {
        let mut backoff = self.ctx.backoff();
        loop {
            let request = self.watch.key().create_request(self.cursor + 1);
            let opened = tokio::select! {
                () = self.left.cancelled() => break,
                opened = self.ctx.upstream.streaming(path::WATCH, futures::stream::iter([request])) => opened,
            };
            let ended = match opened {
                Ok(stream) => self.pump(stream, &mut backoff).await,
                Err(status) => Ended::Error(format!("opening the watch failed: {status}")),
            };
            match ended {
                Ended::Done => break,
                Ended::Error(reason) => {
                    debug!(range = %self.watch.key(), from = self.cursor + 1, %reason, "history catch-up interrupted; resuming");
                    if !backoff.wait(&self.left).await {
                        break;
                    }
                }
            }
        }
        self.ctx.registry.catch_up_ended();
    }

    async fn pump(
        &mut self,
        mut stream: Streaming<PbWatchResponse>,
        backoff: &mut Backoff,
    ) -> Ended {
        loop {
            let message = tokio::select! {
                () = self.left.cancelled() => return Ended::Done,
                message = stream.message() => message,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => return Ended::Error("etcd closed the stream".into()),
                Err(status) => return Ended::Error(status.to_string()),
            };
            self.ctx.latest.observe(response.header.as_ref());
            if response.created {
                if response.canceled {
                    return Ended::Error(format!(
                        "etcd refused the watch: {}",
                        response.cancel_reason
                    ));
                }
                backoff.reset();
                continue;
            }
            if response.canceled {
                if response.compact_revision > 0 {
                    if self.watch.catch_up_compacted(self.id, &response) {
                        self.ctx.registry.remove(&self.watch, self.id);
                    }
                    return Ended::Done;
                }
                return Ended::Error(format!(
                    "etcd canceled the watch: {}",
                    response.cancel_reason
                ));
            }
            let header = response.header.unwrap_or_default();
            let (step, sent) = if response.events.is_empty() {
                self.watch.catch_up_progress(self.id, header)
            } else {
                self.watch.catch_up_events(self.id, header, response.events)
            };
            self.ctx.metrics.events_sent(sent);
            match step {
                CatchUpStep::Continue { cursor } => self.cursor = cursor,
                CatchUpStep::Joined | CatchUpStep::Gone => return Ended::Done,
            }
        }
    }
}
