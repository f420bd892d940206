use std::{error::Error as _, path::PathBuf, time::Duration};

/// Errors of the etcd client and the stores built on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid etcd client configuration: {0}")]
    Config(String),
    #[error("read {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connect to etcd at {endpoints}")]
    Connect {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd at {endpoints} did not answer within {timeout:?}")]
    ConnectTimeout {
        endpoints: String,
        timeout: Duration,
    },
    #[error("etcd {op}{}", key_suffix(key))]
    Request {
        op: &'static str,
        key: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd {op}{} did not finish within {timeout:?}", key_suffix(key))]
    RequestTimeout {
        op: &'static str,
        key: String,
        timeout: Duration,
    },
    #[error("lease {0:x} has expired or was revoked")]
    LeaseExpired(i64),
    #[error("watch of {prefix} broke: {reason}")]
    WatchBroken { prefix: String, reason: String },
    #[error("lock {name:?} was not acquired within {timeout:?}")]
    LockTimeout { name: String, timeout: Duration },
}

fn key_suffix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!(" {key:?}")
    }
}

/// The class of a failure, for status output and metrics: what an operator
/// needs to know first about why etcd is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Nothing answered (refused, no route, DNS, timeout while connecting).
    Unreachable,
    /// The server's certificate is signed by a CA we do not trust.
    UnknownCa,
    /// TLS failed for another reason (bad certificate, handshake refused, SAN mismatch).
    Tls,
    /// The server refused the request for our identity.
    PermissionDenied,
    /// The request took too long.
    Timeout,
    /// A key or revision is gone (compaction).
    Compacted,
    /// A lease expired.
    LeaseExpired,
    /// The peer closed an established connection.
    ConnectionClosed,
    /// The server answered, but the etcd behind it is unreachable.
    UpstreamUnavailable,
    /// Configuration or anything else.
    Other,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::UnknownCa => "unknown-ca",
            Self::Tls => "tls",
            Self::PermissionDenied => "permission-denied",
            Self::Timeout => "timeout",
            Self::Compacted => "compacted",
            Self::LeaseExpired => "lease-expired",
            Self::ConnectionClosed => "connection-closed",
            Self::UpstreamUnavailable => "upstream-unavailable",
            Self::Other => "other",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// Classifies the failure by walking the source chain (gRPC status codes
    /// first, then the TLS and I/O errors beneath the transport).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::ConnectTimeout { .. } => return ErrorKind::Unreachable,
            Self::RequestTimeout { .. } | Self::LockTimeout { .. } => return ErrorKind::Timeout,
            Self::LeaseExpired(_) => return ErrorKind::LeaseExpired,
            Self::Config(_) | Self::ReadFile { .. } => return ErrorKind::Other,
            _ => {}
        }
        classify(self.full_message().as_str(), self.grpc_code())
    }

    /// The gRPC status code, if the server answered with one.
    pub fn grpc_code(&self) -> Option<tonic::Code> {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = source {
            if let Some(etcd_client::Error::GRpcStatus(status)) =
                e.downcast_ref::<etcd_client::Error>()
            {
                return Some(status.code());
            }
            source = e.source();
        }
        None
    }

    /// This error and all its sources, joined with `: ` and in words: the
    /// gRPC status by its message, no debug dumps of transport errors, no
    /// part said twice (`connect to etcd at URL: tcp connect error:
    /// Connection refused (os error 111)`).
    pub fn full_message(&self) -> String {
        let mut parts: Vec<String> = vec![self.to_string()];
        let mut source = self.source();
        while let Some(e) = source {
            let status = match e.downcast_ref::<etcd_client::Error>() {
                Some(etcd_client::Error::GRpcStatus(status)) => Some(status),
                _ => e.downcast_ref::<tonic::Status>(),
            };
            let text = match status {
                Some(status) => status.message().to_string(),
                None => e.to_string(),
            };
            // tonic's wrappers say nothing their sources do not.
            let noise = text.is_empty() || text == "transport error";
            if !noise && !parts.iter().any(|p| p.ends_with(&text)) {
                parts.push(text);
            }
            source = match status {
                Some(status) => std::error::Error::source(status),
                None => e.source(),
            };
        }
        parts.join(": ")
    }

    /// Whether the revision asked for has been compacted away.
    pub fn is_compacted(&self) -> bool {
        self.kind() == ErrorKind::Compacted
    }
}

fn classify(message: &str, code: Option<tonic::Code>) -> ErrorKind {
    use tonic::Code;
    let m = message.to_ascii_lowercase();
    if m.contains("compacted") {
        return ErrorKind::Compacted;
    }
    if m.contains("etcd unreachable") {
        return ErrorKind::UpstreamUnavailable;
    }
    // etcd's `ErrGRPCLeaseNotFound`: the lease expired, was revoked, or the
    // etcd lost its data; a write on it can only fail until a new lease.
    if code == Some(tonic::Code::NotFound) && m.contains("requested lease not found") {
        return ErrorKind::LeaseExpired;
    }
    if m.contains("unknownissuer")
        || m.contains("unknown issuer")
        || m.contains("unknown ca")
        || m.contains("unknown_ca")
    {
        return ErrorKind::UnknownCa;
    }
    if m.contains("certificate")
        || m.contains("tls")
        || m.contains("handshake")
        || m.contains("alert")
    {
        return ErrorKind::Tls;
    }
    match code {
        Some(Code::PermissionDenied | Code::Unauthenticated) => return ErrorKind::PermissionDenied,
        Some(Code::DeadlineExceeded) => return ErrorKind::Timeout,
        Some(Code::Unavailable | Code::Cancelled) => return ErrorKind::Unreachable,
        _ => {}
    }
    if m.contains("permission denied") {
        return ErrorKind::PermissionDenied;
    }
    if m.contains("connection refused")
        || m.contains("connect error")
        || m.contains("transport error")
        || m.contains("dns error")
        || m.contains("no route")
        || m.contains("broken pipe")
        || m.contains("connection reset")
    {
        return ErrorKind::Unreachable;
    }
    if m.contains("connection closed") {
        return ErrorKind::ConnectionClosed;
    }
    ErrorKind::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_messages() {
        use tonic::Code;
        assert_eq!(
            classify("invalid peer certificate: UnknownIssuer", None),
            ErrorKind::UnknownCa
        );
        assert_eq!(
            classify("received fatal alert: BadCertificate", None),
            ErrorKind::Tls
        );
        assert_eq!(
            classify(
                "etcdserver: permission denied",
                Some(Code::PermissionDenied)
            ),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            classify("tcp connect error: Connection refused (os error 111)", None),
            ErrorKind::Unreachable
        );
        assert_eq!(
            classify(
                "mvcc: required revision has been compacted",
                Some(Code::OutOfRange)
            ),
            ErrorKind::Compacted
        );
        assert_eq!(
            classify("something", Some(Code::Unavailable)),
            ErrorKind::Unreachable
        );
        assert_eq!(classify("something", None), ErrorKind::Other);
        assert_eq!(
            classify(
                "etcd put: etcdserver: requested lease not found",
                Some(Code::NotFound)
            ),
            ErrorKind::LeaseExpired
        );
    }
}
