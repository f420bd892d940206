//! Why a server that speaks etcd's API failed a request, when the gRPC code
//! alone cannot say it: the contract between `clustermesh-apiserver` and its
//! clients.
//!
//! The apiserver answers `Unavailable` both when it is shutting down and when
//! the etcd behind it does not answer. Clients treat the two differently (the
//! first is the apiserver's problem, the second its etcd's), so the second
//! carries the gRPC metadata entry
//! [`REASON_METADATA_KEY`]`: `[`REASON_ETCD_UNREACHABLE`], which
//! [`crate::Error::kind`] reports as [`crate::ErrorKind::UpstreamUnavailable`].
//! etcd's own clients ignore unknown metadata, so the answer stays etcd's.

use tonic::{Code, Status, metadata::MetadataValue};

/// The gRPC metadata key (header or trailer) that says why a request failed.
pub const REASON_METADATA_KEY: &str = "clustermesh-reason";

/// [`REASON_METADATA_KEY`]'s value on an `Unavailable` answer: the server
/// answered, but the etcd behind it is unreachable.
pub const REASON_ETCD_UNREACHABLE: &str = "etcd-unreachable";

/// Marks `status` as "the etcd behind this server is unreachable" (for the
/// server; the status should have code `Unavailable`).
pub fn with_etcd_unreachable(mut status: Status) -> Status {
    status.metadata_mut().insert(
        REASON_METADATA_KEY,
        MetadataValue::from_static(REASON_ETCD_UNREACHABLE),
    );
    status
}

/// Whether `status` says the server answered but the etcd behind it is
/// unreachable: code `Unavailable` and the [`REASON_ETCD_UNREACHABLE`] mark.
pub fn is_etcd_unreachable(status: &Status) -> bool {
    status.code() == Code::Unavailable
        && status
            .metadata()
            .get(REASON_METADATA_KEY)
            .is_some_and(|v| v.as_bytes() == REASON_ETCD_UNREACHABLE.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_only_unavailable_answers() {
        let marked = with_etcd_unreachable(Status::unavailable("etcd down"));
        assert!(is_etcd_unreachable(&marked));
        assert_eq!(
            marked.metadata().get(REASON_METADATA_KEY).unwrap(),
            REASON_ETCD_UNREACHABLE
        );
        assert!(!is_etcd_unreachable(&Status::unavailable("etcd down")));
        assert!(!is_etcd_unreachable(&with_etcd_unreachable(
            Status::internal("x")
        )));
    }
}
