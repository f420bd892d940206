pub use kvstore::reason::{REASON_ETCD_UNREACHABLE, REASON_METADATA_KEY};
use tonic::{Code, Status};

/// The errors the apiserver answers with, worded and coded exactly as etcd
/// words and codes them (`rpctypes` in etcd's source), because etcd clients
/// branch on both: `etcdctl` prints the message, Go's clientv3 retries a watch
/// stream after `Unavailable` and gives up after other codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    /// The client's role may not do this (etcd `ErrGRPCPermissionDenied`).
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// The server is shutting down (etcd `ErrGRPCStopped`).
    #[error("etcdserver: server stopped")]
    Stopped,
    /// A watcher did not read its responses fast enough and its stream was
    /// closed rather than buffered without bound (etcd
    /// `ErrGRPCTooManyRequests`, which etcd uses when it is overloaded).
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// The RPC exists in etcd's API but this server does not serve it; worded
    /// as gRPC servers word an unknown method.
    #[error("unknown method {method} for service {service}")]
    Unimplemented {
        service: &'static str,
        method: &'static str,
    },
    /// etcd could not be reached. Its status also carries the metadata
    /// `clustermesh-reason: etcd-unreachable` ([`REASON_METADATA_KEY`],
    /// [`REASON_ETCD_UNREACHABLE`]), so that a client can tell "the
    /// apiserver answers but its etcd does not" from "the apiserver is
    /// unreachable" without matching the message.
    #[error("etcdserver: request timed out, etcd unreachable: {0}")]
    Unavailable(String),
    /// A different etcd cluster answers than the one the watch's history
    /// came from (its data was wiped): the watcher must list again.
    #[error("etcdserver: cluster ID mismatch")]
    ClusterIdMismatch,
    /// etcd answers with a revision below one it already sent (its data was
    /// wiped and it restarted with the same cluster ID): the watcher must
    /// list again.
    #[error("etcdserver: revision went backwards, the data was lost")]
    RevisionWentBackwards,
    /// A watch asked for an ID the stream already uses (etcd's mvcc error).
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateWatchId,
}

impl EtcdError {
    pub fn code(&self) -> Code {
        match self {
            Self::PermissionDenied => Code::PermissionDenied,
            Self::Stopped | Self::Unavailable(_) => Code::Unavailable,
            Self::TooManyRequests => Code::ResourceExhausted,
            Self::Unimplemented { .. } => Code::Unimplemented,
            Self::DuplicateWatchId => Code::InvalidArgument,
            Self::ClusterIdMismatch | Self::RevisionWentBackwards => Code::FailedPrecondition,
        }
    }

    /// The text etcd puts in a watch response's `cancel_reason`: the gRPC
    /// error as Go prints it. Text only: a watch response has no metadata.
    pub fn cancel_reason(&self) -> String {
        match self {
            Self::DuplicateWatchId => self.to_string(),
            _ => format!(
                "rpc error: code = {} desc = {self}",
                go_code_name(self.code())
            ),
        }
    }
}

/// The one conversion to a gRPC status, for unary answers and for the end
/// of a stream alike, so that every answer carries the reason metadata.
impl From<EtcdError> for Status {
    fn from(e: EtcdError) -> Self {
        let status = Status::new(e.code(), e.to_string());
        match e {
            // The contract of `kvstore::reason`: clients tell "its etcd is
            // unreachable" from "the apiserver stops" by this mark.
            EtcdError::Unavailable(_) => kvstore::reason::with_etcd_unreachable(status),
            _ => status,
        }
    }
}

/// gRPC code names as grpc-go prints them.
fn go_code_name(code: Code) -> &'static str {
    match code {
        Code::PermissionDenied => "PermissionDenied",
        Code::Unavailable => "Unavailable",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::Unimplemented => "Unimplemented",
        Code::InvalidArgument => "InvalidArgument",
        Code::FailedPrecondition => "FailedPrecondition",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worded_like_etcd() {
        let status = Status::from(EtcdError::PermissionDenied);
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(status.message(), "etcdserver: permission denied");
        assert_eq!(
            EtcdError::PermissionDenied.cancel_reason(),
            "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
        );
        assert_eq!(
            Status::from(EtcdError::TooManyRequests).code(),
            Code::ResourceExhausted
        );
        assert!(status.metadata().get(REASON_METADATA_KEY).is_none());
    }

    #[test]
    fn etcd_unreachable_keeps_etcds_words_and_adds_the_reason() {
        let status = Status::from(EtcdError::Unavailable("connection refused".into()));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.message(),
            "etcdserver: request timed out, etcd unreachable: connection refused"
        );
        assert_eq!(
            status.metadata().get(REASON_METADATA_KEY).unwrap(),
            REASON_ETCD_UNREACHABLE
        );
    }
}
