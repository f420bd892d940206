use std::fmt;

use etcd_client::proto::{PbWatchRequest, PbWatchRequestUnion};

use super::revision::Revision;
use crate::key_range::KeyRange;

/// What a downstream watch watches: its key range, read from the client's
/// create request as etcd reads it, and whether events carry the previous
/// value. Watches with equal keys share one upstream watch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct WatchKey {
    range: KeyRange,
    prev_kv: bool,
}

impl WatchKey {
    /// From a `WatchCreateRequest`'s `key`, `range_end` and `prev_kv`. As
    /// etcd: an empty key is the smallest key, `"\0"`.
    pub(super) fn from_request(key: &[u8], range_end: &[u8], prev_kv: bool) -> Self {
        let key = if key.is_empty() { &[0][..] } else { key };
        Self {
            range: KeyRange::from_request(key, range_end),
            prev_kv,
        }
    }

    /// The keys watched (what the client must be allowed to read).
    pub(super) fn range(&self) -> &KeyRange {
        &self.range
    }

    /// The upstream create request for this range, starting at `start`.
    /// Upstream watches always ask for progress notifications: they tell the
    /// apiserver how far a quiet range is complete.
    pub(super) fn create_request(&self, start: Revision) -> PbWatchRequest {
        let (key, range_end) = self.range.to_request();
        let mut union = PbWatchRequestUnion::CreateRequest(Default::default());
        if let PbWatchRequestUnion::CreateRequest(create) = &mut union {
            create.key = key.to_vec();
            create.range_end = range_end.to_vec();
            create.start_revision = start.get();
            create.progress_notify = true;
            create.prev_kv = self.prev_kv;
        }
        PbWatchRequest {
            request_union: Some(union),
        }
    }
}

impl fmt::Display for WatchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.range.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create_fields(key: &WatchKey) -> (Vec<u8>, Vec<u8>, bool) {
        match key.create_request(Revision::new(7)).request_union {
            Some(PbWatchRequestUnion::CreateRequest(c)) => {
                assert_eq!(c.start_revision, 7);
                assert!(c.progress_notify);
                (c.key, c.range_end, c.prev_kv)
            }
            other => panic!("not a create request: {other:?}"),
        }
    }

    #[test]
    fn upstream_asks_for_what_the_client_asked_for() {
        for (key, end) in [
            (&b"cilium/state/"[..], &b"cilium/state0"[..]),
            (b"cilium/cluster-config/c1", b""),
            (b"a", b"\0"),
        ] {
            for prev_kv in [false, true] {
                let watch = WatchKey::from_request(key, end, prev_kv);
                assert_eq!(create_fields(&watch), (key.to_vec(), end.to_vec(), prev_kv));
            }
        }
    }

    #[test]
    fn an_empty_key_is_the_smallest_key() {
        let watch = WatchKey::from_request(b"", b"\0", false);
        assert_eq!(watch.range(), &KeyRange::FromKey(vec![0]));
        assert_eq!(create_fields(&watch), (vec![0], vec![0], false));
        assert_eq!(watch, WatchKey::from_request(b"\0", b"\0", false));
    }
}
