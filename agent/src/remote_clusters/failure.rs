//! Why a remote's connection ended: a typed end reason for every session,
//! and for failures a kind that `status` and the logs name.

use std::fmt;

pub(super) use kvstore::remote::{Failure, FailureKind};

/// Why a connection must start over at once, keeping what the remote
/// delivered until the new list replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resync {
    /// The config file changed (endpoints, certificates…).
    ConfigChanged,
    /// The remote etcd's revision went below one already seen: it lost its
    /// data (wiped, same cluster ID).
    RevisionWentBackwards { seen: i64, now: i64 },
    /// The remote answers again after its services were dropped for
    /// being unreachable longer than the service cache TTL.
    ReachableAgain,
}

impl fmt::Display for Resync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConfigChanged => f.write_str("the remote cluster's config changed; reconnecting"),
            Self::RevisionWentBackwards { seen, now } => write!(
                f,
                "the remote etcd's revision went backwards ({seen} → {now}); re-listing"
            ),
            Self::ReachableAgain => {
                f.write_str("reachable again after its services were dropped; re-listing")
            }
        }
    }
}

/// How a session (one connection) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SessionEnd {
    /// The agent stops: what the remote delivered stays in the datapath.
    Shutdown,
    /// Its config file was removed: what it delivered goes.
    Removed,
    /// Connect again at once.
    Resync(Resync),
    /// Wait (with backoff), then connect again.
    Failed(Failure),
}
