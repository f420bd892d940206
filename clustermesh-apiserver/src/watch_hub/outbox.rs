use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use futures::Stream;
use prost::bytes::Bytes;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::Status;

use super::watch_message::WatchMessage;
use crate::{etcd_error::EtcdError, metrics::Metrics};

/// The bounded queue of responses of one downstream watch stream. Every
/// producer (shared upstream watches, history catch-ups, the stream's own
/// request handling) pushes without waiting; when the queue is full the
/// client is not reading fast enough, and the stream is ended with etcd's
/// "too many requests" instead of buffering without bound or making the
/// producer, and with it every other watcher, wait.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<WatchMessage>,
    /// Set on overflow; read on every poll of the response stream (a token's
    /// `is_cancelled` takes a lock).
    overflow_flag: Arc<AtomicBool>,
    /// Cancelled on overflow, to wake the stream's task.
    overflowed: CancellationToken,
    metrics: Metrics,
}

impl Outbox {
    /// An outbox of `capacity` responses and the response stream that
    /// drains it. `closed` is cancelled when the response stream is dropped
    /// (the client went away).
    pub(crate) fn new(
        capacity: usize,
        closed: CancellationToken,
        metrics: Metrics,
    ) -> (Self, OutboxStream) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let overflow_flag = Arc::new(AtomicBool::new(false));
        (
            Self {
                tx,
                overflow_flag: overflow_flag.clone(),
                overflowed: CancellationToken::new(),
                metrics,
            },
            OutboxStream {
                rx,
                overflowed: overflow_flag,
                _closed: closed.drop_guard(),
                pending: None,
                done: false,
            },
        )
    }

    /// Queues `message`. Returns `false` if the stream is gone or overflowed
    /// (the message is dropped; the stream ends anyway).
    pub(crate) fn push(&self, message: WatchMessage) -> bool {
        match self.tx.try_send(message) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                if !self.overflow_flag.swap(true, Ordering::AcqRel) {
                    self.metrics.slow_watcher_disconnected();
                    self.overflowed.cancel();
                }
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    /// Cancelled once the queue overflowed.
    pub(crate) fn overflowed(&self) -> &CancellationToken {
        &self.overflowed
    }
}

/// Largest response built by merging queued event responses.
const MAX_MERGED_BYTES: usize = 256 << 10;

/// The response stream tonic sends: the outbox's messages, then the end of
/// the stream with an error if the outbox overflowed or was closed with one.
///
/// When the client is behind and several event responses of one watcher are
/// queued back to back, they go out as one response
/// ([`WatchMessage::Merged`]): fewer messages for a client that already
/// struggles, and no delay for one that keeps up (nothing waits to be
/// merged).
#[derive(Debug)]
pub(crate) struct OutboxStream {
    rx: mpsc::Receiver<WatchMessage>,
    overflowed: Arc<AtomicBool>,
    _closed: DropGuard,
    /// A message taken from the queue while merging, sent next.
    pending: Option<WatchMessage>,
    done: bool,
}

impl OutboxStream {
    /// Appends the event responses of `watch_id` queued right behind the
    /// first one.
    fn merge(&mut self, watch_id: i64, first: Bytes) -> WatchMessage {
        let mut size = first.len();
        let mut bodies: Option<Vec<Bytes>> = None;
        while size < MAX_MERGED_BYTES {
            match self.rx.try_recv() {
                Ok(WatchMessage::Shared {
                    watch_id: next_id,
                    body,
                    events: true,
                }) if next_id == watch_id => {
                    size += body.len();
                    bodies.get_or_insert_with(|| vec![first.clone()]).push(body);
                }
                Ok(other) => {
                    self.pending = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        match bodies {
            Some(bodies) => WatchMessage::Merged { watch_id, bodies },
            None => WatchMessage::Shared {
                watch_id,
                body: first,
                events: true,
            },
        }
    }
}

impl Stream for OutboxStream {
    type Item = Result<WatchMessage, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.overflowed.load(Ordering::Acquire) {
            self.done = true;
            self.rx.close();
            return Poll::Ready(Some(Err(EtcdError::TooManyRequests.into())));
        }
        let next = match self.pending.take() {
            Some(message) => Poll::Ready(Some(message)),
            None => self.rx.poll_recv(cx),
        };
        match next {
            Poll::Ready(Some(WatchMessage::Close(status))) => {
                self.done = true;
                self.rx.close();
                Poll::Ready(Some(Err(status)))
            }
            Poll::Ready(Some(WatchMessage::Shared {
                watch_id,
                body,
                events: true,
            })) => Poll::Ready(Some(Ok(self.merge(watch_id, body)))),
            Poll::Ready(Some(message)) => Poll::Ready(Some(Ok(message))),
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
