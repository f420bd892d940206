use etcd_client::proto::{PbEvent, PbResponseHeader, PbWatchResponse};
use prost::bytes::Bytes;

use super::watch_message::encode_shared;

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
    pub(super) min_rev: i64,
    pub(super) max_rev: i64,
    pub(super) body: Bytes,
}

impl Batch {
    pub(super) fn new(header: PbResponseHeader, events: Vec<PbEvent>) -> Self {
        let revisions = events.iter().map(revision);
        let min_rev = revisions.clone().min().unwrap_or(header.revision);
        let max_rev = revisions.max().unwrap_or(header.revision);
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

/// The revision of an event: that of the write that made it.
pub(super) fn revision(event: &PbEvent) -> i64 {
    event.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}
