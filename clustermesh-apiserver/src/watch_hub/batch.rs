use etcd_client::proto::{PbEvent, PbResponseHeader, PbWatchResponse};
use prost::bytes::Bytes;

use super::{revision::Revision, watch_message::encode_shared};

/// Events per response when history is replayed to a joining watcher (etcd
/// sends catch-up batches of this order too), so a long replay is a few
/// messages rather than one per revision.
pub(super) const REPLAY_EVENTS_PER_RESPONSE: usize = 1_000;

/// One upstream response, decoded for filtering and replay and encoded once
/// (without a watch ID) for the watchers that take it whole.
#[derive(Debug)]
pub(super) struct Batch {
    pub(super) header: PbResponseHeader,
    pub(super) events: Vec<PbEvent>,
    pub(super) min_rev: Revision,
    pub(super) max_rev: Revision,
    pub(super) body: Bytes,
}

impl Batch {
    pub(super) fn new(header: PbResponseHeader, events: Vec<PbEvent>) -> Self {
        let revisions = events.iter().map(Revision::of_event);
        let min_rev = revisions
            .clone()
            .min()
            .unwrap_or(Revision::of_header(&header));
        let max_rev = revisions.max().unwrap_or(Revision::of_header(&header));
        let response = PbWatchResponse {
            header: Some(header),
            events,
            ..PbWatchResponse::default()
        };
        let body = encode_shared(&response);
        Self {
            header,
            events: response.events,
            min_rev,
            max_rev,
            body,
        }
    }
}
