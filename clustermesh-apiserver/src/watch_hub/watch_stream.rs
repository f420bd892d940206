use std::{collections::HashMap, sync::Arc, time::Duration};

use etcd_client::proto::{PbResponseHeader, PbWatchRequest, PbWatchRequestUnion, PbWatchResponse};
use kvstore::Backoff;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tracing::debug;

use certs::PeerInfo;

use crate::{
    authorizer::{Access, Authorizer},
    etcd_error::EtcdError,
    key_range::KeyRange,
    metrics::Metrics,
    role::Role,
    watch_hub::{
        Subscription, SubscriptionHandle, WatchHub, event_filter::EventFilter, outbox::Outbox,
        revision::Revision, watch_key::WatchKey, watch_message::WatchMessage,
    },
};

/// Delays between attempts to read etcd's current header for a watch being
/// created (etcd is down): from 100 ms, doubling up to 2 s, so that the
/// client's `created` follows within about 2 s of etcd's return without
/// asking a down etcd more than twice a second per waiting watch.
const HEADER_RETRY_MIN: Duration = Duration::from_millis(100);
const HEADER_RETRY_MAX: Duration = Duration::from_secs(2);

/// A watch create request, read out of etcd's `WatchCreateRequest`.
#[derive(Debug)]
struct CreateRequest {
    key: Vec<u8>,
    range_end: Vec<u8>,
    start_revision: i64,
    progress_notify: bool,
    filters: Vec<i32>,
    prev_kv: bool,
    watch_id: i64,
}

/// One downstream `Watch` stream: it reads the client's requests (create,
/// cancel, progress) and answers them as etcd's watch server does, while the
/// shared watches push events into its [`Outbox`].
///
/// Requests are handled one at a time, so `created` responses come in the
/// order of the create requests (clients match them by order when they let
/// the server pick watch IDs). A `created` response is queued before the
/// watch subscribes, so it precedes the watch's first event.
pub(crate) struct WatchStream {
    hub: Arc<WatchHub>,
    authorizer: Arc<Authorizer>,
    metrics: Metrics,
    peer: PeerInfo,
    role: Role,
    outbox: Outbox,
    watchers: HashMap<i64, SubscriptionHandle>,
    next_id: i64,
}

impl WatchStream {
    pub(crate) fn new(
        hub: Arc<WatchHub>,
        authorizer: Arc<Authorizer>,
        metrics: Metrics,
        peer: PeerInfo,
        outbox: Outbox,
    ) -> Self {
        let role = authorizer.role(&peer.common_name);
        Self {
            hub,
            authorizer,
            metrics,
            peer,
            role,
            outbox,
            watchers: HashMap::new(),
            next_id: 0,
        }
    }

    /// Serves the stream until the client goes away (`closed`), its outbox
    /// overflows, or `shutdown` (then the stream ends with etcd's "server
    /// stopped", which clients answer by reconnecting).
    pub(crate) async fn run(
        mut self,
        mut requests: Streaming<PbWatchRequest>,
        closed: CancellationToken,
        shutdown: CancellationToken,
    ) {
        let overflowed = self.outbox.overflowed().clone();
        let mut reading = true;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    self.outbox.push(WatchMessage::Close(EtcdError::Stopped.into()));
                    break;
                }
                () = closed.cancelled() => break,
                () = overflowed.cancelled() => {
                    debug!(client = %self.peer.common_name, addr = %self.peer.remote_addr, "watch stream closed: the client reads too slowly");
                    break;
                }
                request = requests.message(), if reading => match request {
                    Ok(Some(request)) => {
                        if !self.handle(request, &closed, &shutdown).await {
                            break;
                        }
                    }
                    // The client half-closed: like etcd, keep its watches.
                    Ok(None) => reading = false,
                    Err(_) => break,
                },
            }
        }
        for (_, handle) in self.watchers.drain() {
            self.hub.unsubscribe(&handle);
        }
    }

    /// Handles one request; `false` once the stream is going away.
    async fn handle(
        &mut self,
        request: PbWatchRequest,
        closed: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> bool {
        match request.request_union {
            Some(PbWatchRequestUnion::CreateRequest(c)) => {
                let create = CreateRequest {
                    key: c.key,
                    range_end: c.range_end,
                    start_revision: c.start_revision,
                    progress_notify: c.progress_notify,
                    filters: c.filters,
                    prev_kv: c.prev_kv,
                    watch_id: c.watch_id,
                };
                self.create(create, closed, shutdown).await
            }
            Some(PbWatchRequestUnion::CancelRequest(c)) => {
                self.cancel(c.watch_id);
                true
            }
            Some(PbWatchRequestUnion::ProgressRequest(_)) => {
                self.progress();
                true
            }
            // etcd ignores requests it does not know.
            None => true,
        }
    }

    async fn create(
        &mut self,
        create: CreateRequest,
        closed: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> bool {
        let key = WatchKey::from_request(&create.key, &create.range_end, create.prev_kv);
        let access = Access::Read(key.range().clone());
        let verdict = self.authorizer.decide(&self.role, &access);
        self.metrics
            .request(&self.role, &self.peer.common_name, "Watch", verdict);
        if !verdict.is_allowed() {
            debug!(client = %self.peer.common_name, range = %key, "watch refused");
            self.outbox.push(WatchMessage::owned(PbWatchResponse {
                header: Some(self.hub.latest_header()),
                watch_id: create.watch_id,
                created: true,
                canceled: true,
                cancel_reason: EtcdError::PermissionDenied.cancel_reason(),
                ..PbWatchResponse::default()
            }));
            return true;
        }
        let watch_id = if create.watch_id != 0 {
            if self
                .watchers
                .get(&create.watch_id)
                .is_some_and(SubscriptionHandle::is_active)
            {
                self.outbox.push(WatchMessage::owned(PbWatchResponse {
                    header: Some(self.hub.latest_header()),
                    watch_id: -1,
                    created: true,
                    canceled: true,
                    cancel_reason: EtcdError::DuplicateWatchId.cancel_reason(),
                    ..PbWatchResponse::default()
                }));
                return true;
            }
            create.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            let id = self.next_id;
            self.next_id += 1;
            id
        };
        // etcd stamps `created` with its current revision, and clients check
        // it (a revision lower than one they saw means etcd lost its data),
        // so ask etcd rather than trusting what the shared watches know.
        let Some(header) = self.current_header(key.range(), closed, shutdown).await else {
            return false;
        };
        let cursor = if create.start_revision > 0 {
            Revision::new(create.start_revision).prev()
        } else {
            Revision::of_header(&header)
        };
        self.outbox.push(WatchMessage::owned(PbWatchResponse {
            header: Some(header),
            watch_id,
            created: true,
            ..PbWatchResponse::default()
        }));
        let handle = self.hub.subscribe(
            key,
            Subscription {
                watch_id,
                cursor,
                filter: EventFilter::from_request(&create.filters),
                progress_notify: create.progress_notify,
                outbox: self.outbox.clone(),
            },
        );
        if let Some(old) = self.watchers.insert(watch_id, handle) {
            // A client-chosen ID of a watch that compaction had canceled.
            self.hub.unsubscribe(&old);
        }
        true
    }

    fn cancel(&mut self, watch_id: i64) {
        let Some(handle) = self.watchers.remove(&watch_id) else {
            return;
        };
        // Unknown (already canceled) watches get no answer, as from etcd.
        if self.hub.unsubscribe(&handle) {
            self.outbox.push(WatchMessage::owned(PbWatchResponse {
                header: Some(self.hub.latest_header()),
                watch_id,
                canceled: true,
                ..PbWatchResponse::default()
            }));
        }
    }

    /// Answers a progress request with a revision up to which every watcher
    /// of this stream has been sent every event (the lowest cursor); queued
    /// behind those events, so the claim holds when the client reads it.
    fn progress(&self) {
        let latest = self.hub.latest_header();
        let revision = self
            .watchers
            .values()
            .filter(|h| h.is_active())
            .map(SubscriptionHandle::cursor)
            .min()
            .map_or(latest.revision, Revision::get);
        self.outbox.push(WatchMessage::owned(PbWatchResponse {
            header: Some(PbResponseHeader { revision, ..latest }),
            watch_id: -1,
            ..PbWatchResponse::default()
        }));
    }

    /// etcd's current header, retried until etcd answers or the stream ends.
    async fn current_header(
        &self,
        range: &KeyRange,
        closed: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Option<PbResponseHeader> {
        let mut backoff = Backoff::new(HEADER_RETRY_MIN, HEADER_RETRY_MAX);
        loop {
            let result = tokio::select! {
                () = closed.cancelled() => return None,
                () = shutdown.cancelled() => return None,
                result = self.hub.upstream().current_header(range.to_request().0) => result,
            };
            match result {
                Ok(header) => {
                    self.hub.observe(Some(&header));
                    return Some(header);
                }
                Err(status) => {
                    debug!(error = %status, "etcd did not answer a watch creation; retrying");
                    tokio::select! {
                        () = closed.cancelled() => return None,
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
    }
}
