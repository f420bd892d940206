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
    /// etcd could not be reached.
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
    /// error as Go prints it.
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

impl From<EtcdError> for Status {
    fn from(e: EtcdError) -> Self {
        Status::new(e.code(), e.to_string())
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
    }
}
