use std::{error::Error as StdError, io, path::PathBuf, time::Duration};

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
    /// Nothing answered: connection refused, no route, DNS, a timeout while
    /// connecting, keep-alive PINGs unanswered.
    Unreachable,
    /// The peer closed an established connection (reset, aborted, end of
    /// stream, or the connection ended before the request was sent). Under
    /// TLS 1.3 a server that refuses our client certificate closes right
    /// after the handshake, and the client sees only this.
    ConnectionClosed,
    /// The server answered, but says the etcd behind it is unreachable (a
    /// `clustermesh-apiserver`; see [`crate::reason`]).
    UpstreamUnavailable,
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
    /// Configuration or anything else.
    Other,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::ConnectionClosed => "connection-closed",
            Self::UpstreamUnavailable => "upstream-unavailable",
            Self::UnknownCa => "unknown-ca",
            Self::Tls => "tls",
            Self::PermissionDenied => "permission-denied",
            Self::Timeout => "timeout",
            Self::Compacted => "compacted",
            Self::LeaseExpired => "lease-expired",
            Self::Other => "other",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// etcd's answer to a read or watch below the compacted revision
/// (`ErrGRPCCompacted` in etcd's `rpctypes`), with code `OutOfRange`, which
/// etcd also uses for a revision in the future.
const ETCD_COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

/// etcd's answer to a write on a lease it does not know
/// (`ErrGRPCLeaseNotFound`), with code `NotFound`: the lease expired, was
/// revoked, or the etcd lost its data.
const ETCD_LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";

impl Error {
    /// Classifies the failure by the types in its source chain: the gRPC
    /// status, and beneath a status tonic made up for a transport failure,
    /// the hyper, h2, TLS and I/O errors that say what happened (see
    /// [`classify_chain`]). Never by message text, except etcd's exact
    /// messages for statuses whose code alone is ambiguous.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::ConnectTimeout { .. } => ErrorKind::Unreachable,
            Self::RequestTimeout { .. } | Self::LockTimeout { .. } => ErrorKind::Timeout,
            Self::LeaseExpired(_) => ErrorKind::LeaseExpired,
            Self::Config(_) | Self::ReadFile { .. } | Self::WatchBroken { .. } => ErrorKind::Other,
            Self::Connect { source, .. } | Self::Request { source, .. } => classify_chain(source),
        }
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

/// The kind told by the innermost cause that tells one. A status the server
/// sent has no source, so it decides; a status tonic made up for a failure
/// on our side (`Unavailable` for a failed connect, `Cancelled` for a request
/// whose connection died, `Unknown` for an I/O error) wraps the error that
/// says what really happened, as tonic's own `find_status_in_source_chain`
/// finds a status beneath transport errors.
fn classify_chain(err: &(dyn StdError + 'static)) -> ErrorKind {
    std::iter::successors(Some(err), |e| next_cause(*e))
        .filter_map(classify_cause)
        .last()
        .unwrap_or(ErrorKind::Other)
}

/// The cause of `e`, including those that `source()` does not return.
fn next_cause<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    if let Some(e) = e.downcast_ref::<etcd_client::Error>() {
        return match e {
            etcd_client::Error::GRpcStatus(status) => Some(status),
            etcd_client::Error::TransportError(transport) => Some(transport),
            etcd_client::Error::IoError(io) => Some(io),
            _ => None,
        };
    }
    // A custom I/O error's `source()` is the *source of* the error it wraps
    // (a rustls error, under TLS), not that error.
    if let Some(io) = e.downcast_ref::<io::Error>() {
        return io.get_ref().map(|inner| inner as &(dyn StdError + 'static));
    }
    if let Some(h2) = e.downcast_ref::<h2::Error>() {
        return h2.get_io().map(|io| io as &(dyn StdError + 'static));
    }
    e.source()
}

/// What one error of a chain says on its own, if anything.
fn classify_cause(e: &(dyn StdError + 'static)) -> Option<ErrorKind> {
    if let Some(status) = e.downcast_ref::<tonic::Status>() {
        return classify_status(status);
    }
    if e.is::<tonic::TimeoutExpired>() {
        return Some(ErrorKind::Timeout);
    }
    // tonic's wrapper for anything that failed while connecting (TCP, DNS,
    // the TLS handshake): the errors beneath it may say more.
    if e.is::<tonic::ConnectError>() {
        return Some(ErrorKind::Unreachable);
    }
    if let Some(e) = e.downcast_ref::<hyper::Error>() {
        return classify_hyper(e);
    }
    if let Some(e) = e.downcast_ref::<h2::Error>() {
        return (e.is_go_away() && e.is_remote()).then_some(ErrorKind::ConnectionClosed);
    }
    if let Some(e) = e.downcast_ref::<io::Error>() {
        return classify_io(e.kind());
    }
    if let Some(e) = e.downcast_ref::<rustls::Error>() {
        return Some(classify_tls(e));
    }
    None
}

fn classify_status(status: &tonic::Status) -> Option<ErrorKind> {
    use tonic::Code;
    if crate::reason::is_etcd_unreachable(status) {
        return Some(ErrorKind::UpstreamUnavailable);
    }
    match status.code() {
        Code::PermissionDenied | Code::Unauthenticated => Some(ErrorKind::PermissionDenied),
        Code::DeadlineExceeded => Some(ErrorKind::Timeout),
        Code::Unavailable | Code::Cancelled => Some(ErrorKind::Unreachable),
        Code::OutOfRange if status.message() == ETCD_COMPACTED => Some(ErrorKind::Compacted),
        Code::NotFound if status.message() == ETCD_LEASE_NOT_FOUND => Some(ErrorKind::LeaseExpired),
        _ => None,
    }
}

fn classify_hyper(e: &hyper::Error) -> Option<ErrorKind> {
    if e.is_timeout() {
        // HTTP/2 keep-alive PINGs went unanswered: the peer is gone silent.
        Some(ErrorKind::Unreachable)
    } else if e.is_canceled() || e.is_closed() || e.is_incomplete_message() {
        // The connection ended before the request was sent or answered.
        Some(ErrorKind::ConnectionClosed)
    } else {
        None
    }
}

fn classify_io(kind: io::ErrorKind) -> Option<ErrorKind> {
    use io::ErrorKind as Io;
    match kind {
        Io::ConnectionRefused
        | Io::HostUnreachable
        | Io::NetworkUnreachable
        | Io::NetworkDown
        | Io::TimedOut => Some(ErrorKind::Unreachable),
        Io::ConnectionReset | Io::ConnectionAborted | Io::UnexpectedEof | Io::BrokenPipe => {
            Some(ErrorKind::ConnectionClosed)
        }
        // Only the TLS layer fails a read or write with `InvalidData`
        // (rustls wraps every TLS failure so; a socket never does). The
        // rustls error inside, when there is one, says more; h2 keeps only
        // the kind and text of an I/O error, so an alert the server sends
        // after the handshake (our certificate refused) arrives as this.
        Io::InvalidData => Some(ErrorKind::Tls),
        _ => None,
    }
}

fn classify_tls(e: &rustls::Error) -> ErrorKind {
    match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
            ErrorKind::UnknownCa
        }
        _ => ErrorKind::Tls,
    }
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind as Io;

    use tonic::{Code, Status};

    use super::*;

    /// A request that failed with `source`, as the client wraps it.
    fn request(source: etcd_client::Error) -> Error {
        Error::Request {
            op: "get",
            key: "k".into(),
            source,
        }
    }

    /// A status the server sent.
    fn answered(code: Code, message: &str) -> Error {
        request(etcd_client::Error::GRpcStatus(Status::new(code, message)))
    }

    /// A status tonic made up for a transport failure, with the failure
    /// beneath it (tonic's `Status::from_error`).
    fn failed(code: Code, cause: impl Into<Box<dyn StdError + Send + Sync>>) -> Error {
        let mut status = Status::new(code, "transport error");
        status.set_source(std::sync::Arc::from(cause.into()));
        request(etcd_client::Error::GRpcStatus(status))
    }

    /// An I/O error while connecting, as tonic's connector wraps it.
    fn connect_io(e: io::Error) -> Error {
        failed(Code::Unavailable, tonic::ConnectError(Box::new(e)))
    }

    #[test]
    fn server_answers_by_code() {
        let kind = |code, message| answered(code, message).kind();
        assert_eq!(
            kind(Code::PermissionDenied, "etcdserver: permission denied"),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            kind(Code::Unauthenticated, "x"),
            ErrorKind::PermissionDenied
        );
        assert_eq!(kind(Code::DeadlineExceeded, "x"), ErrorKind::Timeout);
        assert_eq!(
            kind(Code::Unavailable, "etcdserver: server stopped"),
            ErrorKind::Unreachable
        );
        assert_eq!(kind(Code::Cancelled, "x"), ErrorKind::Unreachable);
        assert_eq!(kind(Code::Unimplemented, "x"), ErrorKind::Other);
        assert_eq!(kind(Code::Internal, "compacted"), ErrorKind::Other);
    }

    #[test]
    fn etcd_messages_count_only_with_their_code() {
        let kind = |code, message| answered(code, message).kind();
        assert_eq!(kind(Code::OutOfRange, ETCD_COMPACTED), ErrorKind::Compacted);
        assert!(answered(Code::OutOfRange, ETCD_COMPACTED).is_compacted());
        assert_eq!(
            kind(
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision"
            ),
            ErrorKind::Other
        );
        assert_eq!(kind(Code::Unknown, ETCD_COMPACTED), ErrorKind::Other);
        assert_eq!(
            kind(Code::NotFound, ETCD_LEASE_NOT_FOUND),
            ErrorKind::LeaseExpired
        );
        assert_eq!(
            kind(Code::NotFound, "etcdserver: key not found"),
            ErrorKind::Other
        );
        assert_eq!(kind(Code::Internal, ETCD_LEASE_NOT_FOUND), ErrorKind::Other);
    }

    #[test]
    fn upstream_unavailable_is_a_marked_unavailable_answer() {
        let marked = crate::reason::with_etcd_unreachable(Status::unavailable(
            "etcdserver: request timed out, etcd unreachable",
        ));
        let e = request(etcd_client::Error::GRpcStatus(marked));
        assert_eq!(e.kind(), ErrorKind::UpstreamUnavailable);
        assert_eq!(e.grpc_code(), Some(Code::Unavailable));
        // The same words without the mark: the server itself is unavailable.
        assert_eq!(
            answered(
                Code::Unavailable,
                "etcdserver: request timed out, etcd unreachable"
            )
            .kind(),
            ErrorKind::Unreachable
        );
    }

    #[test]
    fn nothing_answering_is_unreachable() {
        for io_kind in [
            Io::ConnectionRefused,
            Io::HostUnreachable,
            Io::NetworkUnreachable,
            Io::TimedOut,
        ] {
            let e = connect_io(io::Error::from(io_kind));
            assert_eq!(e.kind(), ErrorKind::Unreachable, "{io_kind:?}");
        }
        // DNS: an uncategorized I/O error; that it happened while
        // connecting is what counts.
        let dns = connect_io(io::Error::other("failed to lookup address information"));
        assert_eq!(dns.kind(), ErrorKind::Unreachable);
        // A failed connect as `Client::connect` reports it.
        let e = Error::Connect {
            endpoints: "http://127.0.0.1:1".into(),
            source: etcd_client::Error::IoError(io::Error::from(Io::ConnectionRefused)),
        };
        assert_eq!(e.kind(), ErrorKind::Unreachable);
        let e = Error::ConnectTimeout {
            endpoints: "http://127.0.0.1:1".into(),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(e.kind(), ErrorKind::Unreachable);
    }

    #[test]
    fn a_closed_connection_is_connection_closed() {
        for io_kind in [
            Io::ConnectionReset,
            Io::ConnectionAborted,
            Io::UnexpectedEof,
            Io::BrokenPipe,
        ] {
            // tonic reports an I/O error on an established connection as
            // `Unknown` ("transport error") over hyper's error.
            let e = failed(Code::Unknown, io::Error::from(io_kind));
            assert_eq!(e.kind(), ErrorKind::ConnectionClosed, "{io_kind:?}");
        }
        // The TLS handshake ended by the peer (a plain server, or one that
        // refuses the client before the handshake completes).
        let eof = connect_io(io::Error::new(Io::UnexpectedEof, "tls handshake eof"));
        assert_eq!(eof.kind(), ErrorKind::ConnectionClosed);
        // Neither a status nor an I/O error beneath: an unknown transport
        // failure.
        assert_eq!(
            failed(Code::Unknown, "something else").kind(),
            ErrorKind::Other
        );
    }

    #[test]
    fn tls_failures_by_rustls_error() {
        let tls = |e: rustls::Error| connect_io(io::Error::new(Io::InvalidData, e)).kind();
        assert_eq!(
            tls(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            )),
            ErrorKind::UnknownCa
        );
        assert_eq!(
            tls(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
            )),
            ErrorKind::Tls
        );
        assert_eq!(
            tls(rustls::Error::AlertReceived(
                rustls::AlertDescription::BadCertificate
            )),
            ErrorKind::Tls
        );
        // An alert read after the handshake, its type lost in h2.
        let alert = io::Error::new(Io::InvalidData, "received fatal alert: BadCertificate");
        assert_eq!(failed(Code::Unknown, alert).kind(), ErrorKind::Tls);
        // The server does not trust our client certificate's CA (TLS 1.2).
        assert_eq!(
            tls(rustls::Error::AlertReceived(
                rustls::AlertDescription::UnknownCA
            )),
            ErrorKind::Tls
        );
    }

    #[test]
    fn deadlines() {
        assert_eq!(
            failed(Code::Cancelled, tonic::TimeoutExpired(())).kind(),
            ErrorKind::Timeout
        );
        let e = Error::RequestTimeout {
            op: "get",
            key: "k".into(),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert_eq!(Error::LeaseExpired(7).kind(), ErrorKind::LeaseExpired);
    }

    #[test]
    fn local_failures_are_other() {
        assert_eq!(Error::Config("x".into()).kind(), ErrorKind::Other);
        // A refused file read is not a refused connection.
        let e = Error::ReadFile {
            path: "/ca.crt".into(),
            source: io::Error::from(Io::ConnectionRefused),
        };
        assert_eq!(e.kind(), ErrorKind::Other);
        let e = Error::WatchBroken {
            prefix: "p/".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(e.kind(), ErrorKind::Other);
    }
}
