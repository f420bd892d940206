use etcd_client::proto::PbWatchResponse;
use kvstore::Backoff;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tracing::debug;

use super::{context::HubContext, revision::Revision, watch_key::WatchKey};
use crate::upstream::path;

/// What an upstream watch does after a response from etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    /// Keep reading.
    Continue,
    /// Re-open the watch at once, without a backoff (after a compaction that
    /// left watchers to serve from the compaction revision).
    Reopen,
    /// The watch is done: its watchers left or joined elsewhere, or etcd's
    /// history is no longer the one being followed.
    Stop,
}

/// The part of an upstream etcd watch that differs between a shared watch
/// and a catch-up: where it starts and what it does with etcd's responses.
/// [`run`] does the rest, the same for both.
pub(super) trait UpstreamWatch {
    /// Which kind of upstream watch, for logs.
    const KIND: &'static str;

    fn key(&self) -> &WatchKey;

    /// Called before each (re-)opening: the first revision not received
    /// yet, where the watch starts.
    fn open_at(&mut self) -> Revision;

    /// etcd confirmed the watch.
    fn created(&mut self, response: &PbWatchResponse) -> Flow;

    /// A response with events.
    fn events(&mut self, response: PbWatchResponse) -> Flow;

    /// A progress notification: etcd has sent everything up to the
    /// header's revision.
    fn progress(&mut self, response: &PbWatchResponse) -> Flow;

    /// etcd compacted the revision the watch started at.
    fn compacted(&mut self, response: &PbWatchResponse) -> Flow;

    /// Delivers the events held back for batching, if any: called before
    /// every response that is not events (it is ordered after them) and
    /// when the stream breaks.
    fn flush(&mut self) {}

    /// When the events held back are due, if any are.
    fn flush_at(&self) -> Option<Instant> {
        None
    }

    /// [`UpstreamWatch::flush_at`] has come.
    fn flush_due(&mut self) {}
}

/// How a pass over one upstream stream ended.
enum Ended {
    /// `stop`, or the watch is done.
    Stopped,
    /// Re-open at once.
    Reopen,
    /// A failure; re-open after a backoff.
    Error(String),
}

/// Runs `watch` until it is done or `stop` is cancelled: opens it upstream,
/// hands it etcd's responses, and when the stream breaks (etcd restarts, the
/// network fails, etcd refuses or cancels the watch) re-opens it where it
/// left off ([`UpstreamWatch::open_at`]) after a backoff, which a confirmed
/// watch resets.
pub(super) async fn run<W: UpstreamWatch>(
    watch: &mut W,
    ctx: &HubContext,
    stop: &CancellationToken,
) {
    let mut backoff = ctx.backoff();
    while !stop.is_cancelled() {
        let start = watch.open_at();
        let request = watch.key().create_request(start);
        let opened = tokio::select! {
            () = stop.cancelled() => break,
            opened = ctx.upstream.streaming(path::WATCH, futures::stream::iter([request])) => opened,
        };
        let ended = match opened {
            Ok(stream) => read(watch, ctx, stream, &mut backoff, stop).await,
            Err(status) => Ended::Error(format!("opening the watch failed: {status}")),
        };
        match ended {
            Ended::Stopped => break,
            Ended::Reopen => {}
            Ended::Error(reason) => {
                debug!(watch = W::KIND, range = %watch.key(), %start, %reason, "upstream watch interrupted; resuming");
                if !backoff.wait(stop).await {
                    break;
                }
            }
        }
    }
}

/// Reads one upstream stream until it ends.
async fn read<W: UpstreamWatch>(
    watch: &mut W,
    ctx: &HubContext,
    mut stream: Streaming<PbWatchResponse>,
    backoff: &mut Backoff,
    stop: &CancellationToken,
) -> Ended {
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return Ended::Stopped,
            () = sleep_until(watch.flush_at()) => {
                watch.flush_due();
                continue;
            }
            message = stream.message() => message,
        };
        let response = match message {
            Ok(Some(response)) => response,
            Ok(None) => {
                watch.flush();
                return Ended::Error("etcd closed the stream".into());
            }
            Err(status) => {
                watch.flush();
                return Ended::Error(status.to_string());
            }
        };
        ctx.latest.observe(response.header.as_ref());
        let flow = if !response.created && !response.canceled && !response.events.is_empty() {
            watch.events(response)
        } else {
            // Anything else is ordered after the events before it.
            watch.flush();
            if response.created {
                if response.canceled {
                    return Ended::Error(format!(
                        "etcd refused the watch: {}",
                        response.cancel_reason
                    ));
                }
                backoff.reset();
                watch.created(&response)
            } else if response.canceled {
                if response.compact_revision > 0 {
                    watch.compacted(&response)
                } else {
                    return Ended::Error(format!(
                        "etcd canceled the watch: {}",
                        response.cancel_reason
                    ));
                }
            } else {
                watch.progress(&response)
            }
        };
        match flow {
            Flow::Continue => {}
            Flow::Reopen => return Ended::Reopen,
            Flow::Stop => return Ended::Stopped,
        }
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
