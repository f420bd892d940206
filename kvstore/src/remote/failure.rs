//! Why a remote cluster is not ready: a kind that `status`, metrics and
//! the logs name, and what happened in words.

use std::fmt;

use crate::error::{Error, ErrorKind};

/// Why a remote is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Its config file does not parse, or names TLS files that do not load.
    ConfigFileInvalid,
    /// The remote has no `cilium/cluster-config/<name>`.
    ClusterConfigMissing,
    /// The remote's cluster config is invalid (or in another
    /// max-connected-clusters mode): refused.
    ClusterConfigInvalid,
    /// The remote's cluster ID is ours or another remote's: refused.
    IdConflict,
    /// Nothing answered.
    Unreachable,
    /// The remote's certificate is signed by a CA we do not trust.
    UnknownCa,
    /// TLS failed otherwise, or the remote closed the connection during
    /// setup (under TLS 1.3 that is how a refused client certificate looks).
    Tls,
    PermissionDenied,
    Timeout,
    /// The remote's apiserver answers but its etcd does not.
    RemoteEtcdUnreachable,
    /// A different etcd cluster answers than before.
    EtcdChanged,
    Other,
}

impl FailureKind {
    /// As `status` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConfigFileInvalid | Self::ClusterConfigInvalid => "config-invalid",
            Self::ClusterConfigMissing => "config-missing",
            Self::IdConflict => "id-conflict",
            Self::Unreachable => "unreachable",
            Self::UnknownCa => "unknown-ca",
            Self::Tls => "tls",
            Self::PermissionDenied => "permission-denied",
            Self::Timeout => "timeout",
            Self::RemoteEtcdUnreachable => "remote-etcd-unreachable",
            Self::EtcdChanged => "etcd-changed",
            Self::Other => "error",
        }
    }

    /// The remote's own claims are refused: nothing it delivered may stay
    /// in effect.
    pub fn refuses(self) -> bool {
        matches!(self, Self::ClusterConfigInvalid | Self::IdConflict)
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed attempt: its kind and what happened, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// Classifies an etcd client error by its kind (from its types and gRPC
    /// code), never by its text.
    pub fn from_etcd(e: &Error) -> Self {
        let message = e.full_message();
        match e.kind() {
            ErrorKind::UpstreamUnavailable => Self::new(
                FailureKind::RemoteEtcdUnreachable,
                format!("the remote apiserver answers but its etcd does not: {message}"),
            ),
            ErrorKind::ConnectionClosed => Self::new(
                FailureKind::Tls,
                format!(
                    "the remote apiserver closed the connection during TLS setup (does it trust our client certificate's CA?): {message}"
                ),
            ),
            ErrorKind::Unreachable => Self::new(FailureKind::Unreachable, message),
            ErrorKind::UnknownCa => Self::new(FailureKind::UnknownCa, message),
            ErrorKind::Tls => Self::new(FailureKind::Tls, message),
            ErrorKind::PermissionDenied => Self::new(FailureKind::PermissionDenied, message),
            ErrorKind::Timeout => Self::new(FailureKind::Timeout, message),
            _ => Self::new(FailureKind::Other, message),
        }
    }

    /// Classifies the failure of a check on a session that was set up and
    /// answered before. A closed connection there is the remote going away
    /// (an apiserver stopping closes its connections, and the request in
    /// flight fails before the next connect is refused), not a refused
    /// client certificate: unreachable. A failure to set up the next
    /// session is classified by [`Failure::from_etcd`].
    pub fn from_session(e: &Error) -> Self {
        match e.kind() {
            ErrorKind::ConnectionClosed => Self::new(
                FailureKind::Unreachable,
                format!(
                    "the remote apiserver closed the connection: {}",
                    e.full_message()
                ),
            ),
            _ => Self::from_etcd(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[test]
    fn a_closed_connection_is_tls_at_setup_and_unreachable_in_a_session() {
        let closed = Error::Connect {
            endpoints: "https://127.0.0.1:1".into(),
            source: etcd_client::Error::IoError(io::Error::from(io::ErrorKind::ConnectionReset)),
        };
        assert_eq!(closed.kind(), ErrorKind::ConnectionClosed);
        let setup = Failure::from_etcd(&closed);
        assert_eq!(setup.kind, FailureKind::Tls);
        assert!(setup.message.contains("client certificate"), "{setup:?}");
        let session = Failure::from_session(&closed);
        assert_eq!(session.kind, FailureKind::Unreachable);
        assert!(
            session
                .message
                .starts_with("the remote apiserver closed the connection: "),
            "{session:?}"
        );
        // Everything else is classified the same in both.
        let refused = Error::Connect {
            endpoints: "https://127.0.0.1:1".into(),
            source: etcd_client::Error::IoError(io::Error::from(io::ErrorKind::ConnectionRefused)),
        };
        assert_eq!(
            Failure::from_session(&refused),
            Failure::from_etcd(&refused)
        );
        assert_eq!(
            Failure::from_session(&refused).kind,
            FailureKind::Unreachable
        );
    }

    #[test]
    fn refusals_are_the_remotes_own_claims() {
        let refusing: Vec<FailureKind> = [
            FailureKind::ConfigFileInvalid,
            FailureKind::ClusterConfigMissing,
            FailureKind::ClusterConfigInvalid,
            FailureKind::IdConflict,
            FailureKind::Unreachable,
            FailureKind::RemoteEtcdUnreachable,
            FailureKind::EtcdChanged,
        ]
        .into_iter()
        .filter(|k| k.refuses())
        .collect();
        assert_eq!(
            refusing,
            [FailureKind::ClusterConfigInvalid, FailureKind::IdConflict]
        );
        // Both config failures read the same in status.
        assert_eq!(
            FailureKind::ConfigFileInvalid.as_str(),
            FailureKind::ClusterConfigInvalid.as_str()
        );
    }
}
