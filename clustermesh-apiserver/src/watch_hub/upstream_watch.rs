use etcd_client::proto::{PbWatchRequest, PbWatchRequestUnion, PbWatchResponse};
use kvstore::Backoff;
use tokio::{sync::mpsc, time::Instant};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tracing::debug;

use super::{context::HubContext, revision::Revision, watch_key::WatchKey};
use crate::upstream::path;

/// The `watch_id` of etcd's answers to a progress request: they are for
/// the whole stream.
const STREAM_WATCH_ID: i64 = -1;

/// gRPC metadata that makes etcd cancel the watch once its member has no
/// leader (cut off from the others), as etcd's own client asks: the
/// watch then resumes on a member that still follows the cluster.
const REQUIRE_LEADER: (&str, &str) = ("hasleader", "true");

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
        // The request side stays open for progress requests.
        let (requests, requests_rx) = mpsc::channel(2);
        let _ = requests.try_send(request);
        let opened = tokio::select! {
            () = stop.cancelled() => break,
            opened = ctx.upstream.streaming_with_metadata(
                path::WATCH,
                ReceiverStream::new(requests_rx),
                &[REQUIRE_LEADER],
            ) => opened,
        };
        let ended = match opened {
            Ok(stream) => read(watch, ctx, stream, &requests, &mut backoff, stop).await,
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

/// Reads one upstream stream until it ends. After `progress_after` without
/// a response it asks etcd for progress, and ends if no answer comes within
/// `progress_timeout`: a member that hangs without closing the stream
/// would otherwise hold the watch for ever.
async fn read<W: UpstreamWatch>(
    watch: &mut W,
    ctx: &HubContext,
    mut stream: Streaming<PbWatchResponse>,
    requests: &mpsc::Sender<PbWatchRequest>,
    backoff: &mut Backoff,
    stop: &CancellationToken,
) -> Ended {
    let mut quiet_until = Instant::now() + ctx.progress_after;
    let mut answer_due: Option<Instant> = None;
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return Ended::Stopped,
            () = sleep_until(watch.flush_at()) => {
                watch.flush_due();
                continue;
            }
            () = tokio::time::sleep_until(answer_due.unwrap_or(quiet_until)) => {
                if answer_due.is_some() {
                    watch.flush();
                    return Ended::Error(format!(
                        "no answer to a progress request within {:?}",
                        ctx.progress_timeout
                    ));
                }
                let progress = PbWatchRequest {
                    request_union: Some(PbWatchRequestUnion::ProgressRequest(Default::default())),
                };
                // Full only if etcd reads no requests: then no answer comes.
                let _ = requests.try_send(progress);
                answer_due = Some(Instant::now() + ctx.progress_timeout);
                continue;
            }
            message = stream.message() => message,
        };
        quiet_until = Instant::now() + ctx.progress_after;
        answer_due = None;
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
        if response.watch_id == STREAM_WATCH_ID
            && response.events.is_empty()
            && !response.created
            && !response.canceled
        {
            // An answer to a progress request: the stream lives. Not a
            // progress claim for this watch: etcd 3.4 answers with its
            // current revision even while the watch still catches up.
            continue;
        }
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
