use std::sync::{Mutex, PoisonError};

use etcd_client::proto::PbResponseHeader;

/// The newest response header seen from etcd, for the responses that etcd
/// would stamp with its current revision (cancel confirmations, refusals,
/// progress answers).
#[derive(Debug, Default)]
pub(super) struct LatestHeader(Mutex<PbResponseHeader>);

impl LatestHeader {
    /// Remembers `header` if it is not older than the one remembered.
    pub(super) fn observe(&self, header: Option<&PbResponseHeader>) {
        let Some(header) = header else { return };
        let mut latest = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if header.revision >= latest.revision {
            *latest = *header;
        }
    }

    /// etcd lost its data (or another etcd answers): forget the headers of
    /// the old history.
    pub(super) fn reset(&self, header: PbResponseHeader) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = header;
    }

    pub(super) fn get(&self) -> PbResponseHeader {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
