use std::{
    pin::Pin,
    task::{Context, Poll},
};

use futures::Stream;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::Status;

use crate::{etcd_error::EtcdError, metrics::Metrics, watch_message::WatchMessage};

/// The bounded queue of responses of one downstream watch stream. Every
/// producer (shared upstream watches, history catch-ups, the stream's own
/// request handling) pushes without waiting; when the queue is full the
/// client is not reading fast enough, and the stream is ended with etcd's
/// "too many requests" instead of buffering without bound or making the
/// producer, and with it every other watcher, wait.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<WatchMessage>,
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
        let overflowed = CancellationToken::new();
        (
            Self {
                tx,
                overflowed: overflowed.clone(),
                metrics,
            },
            OutboxStream {
                rx,
                overflowed,
                _closed: closed.drop_guard(),
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
                if !self.overflowed.is_cancelled() {
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

/// The response stream tonic sends: the outbox's messages, then the end of
/// the stream with an error if the outbox overflowed or was closed with one.
#[derive(Debug)]
pub(crate) struct OutboxStream {
    rx: mpsc::Receiver<WatchMessage>,
    overflowed: CancellationToken,
    _closed: DropGuard,
    done: bool,
}

impl Stream for OutboxStream {
    type Item = Result<WatchMessage, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.overflowed.is_cancelled() {
            self.done = true;
            self.rx.close();
            return Poll::Ready(Some(Err(EtcdError::TooManyRequests.into())));
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(WatchMessage::Close(status))) => {
                self.done = true;
                self.rx.close();
                Poll::Ready(Some(Err(status)))
            }
            Poll::Ready(Some(message)) => Poll::Ready(Some(Ok(message))),
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
