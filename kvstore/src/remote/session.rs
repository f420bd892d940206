//! One remote's sessions (connections), as agents and kvstoremesh both
//! run them: how a session ends, what a periodic check of a connected
//! remote finds, and how long the remote has been unreachable.

use std::{
    fmt,
    time::{Duration, Instant, SystemTime},
};

use super::failure::{Failure, FailureKind};
use crate::{client::Client, values::Timestamp};

/// Why a connection must start over at once, keeping what the remote
/// delivered until the new list replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resync {
    /// The config file changed (endpoints, certificates…).
    ConfigChanged,
    /// The TLS files the config names changed while connected, and the
    /// remote stopped answering: a new connection reads them.
    TlsFilesChanged,
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
            Self::TlsFilesChanged => f.write_str(
                "the remote does not answer and its TLS files changed since it connected; reconnecting with them",
            ),
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
pub enum SessionEnd {
    /// The process stops: what the remote delivered stays.
    Shutdown,
    /// Its config file was removed: what it delivered goes.
    Removed,
    /// Connect again at once.
    Resync(Resync),
    /// Wait (with backoff), then connect again.
    Failed(Failure),
}

/// What a periodic check of a connected remote found ([`probe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// It answers.
    Answers,
    /// It does not answer right now (the connection stays).
    Unreachable(Failure),
    /// The session must end: another etcd answers, or the remote's etcd
    /// lost its data.
    End(SessionEnd),
}

/// Asks a connected remote's etcd who it is: a cluster ID other than
/// `pinned` is another etcd (the session fails, and the next one lists
/// everything); a revision below `highest` (the highest seen in this
/// session, updated) means it lost its data (wiped, same cluster ID), and
/// the session starts over with a full list, whatever its watches noticed.
pub async fn probe(client: &Client, pinned: Option<u64>, highest: &mut i64) -> Probe {
    match client.status().await {
        Ok(s) if Some(s.cluster_id) != pinned => Probe::End(SessionEnd::Failed(Failure::new(
            FailureKind::EtcdChanged,
            format!(
                "etcd cluster ID changed from {pinned:?} to {}",
                s.cluster_id
            ),
        ))),
        Ok(s) if s.revision > 0 && s.revision < *highest => {
            Probe::End(SessionEnd::Resync(Resync::RevisionWentBackwards {
                seen: *highest,
                now: s.revision,
            }))
        }
        Ok(s) => {
            *highest = (*highest).max(s.revision);
            Probe::Answers
        }
        Err(e) => Probe::Unreachable(Failure::from_session(&e)),
    }
}

/// How long a remote has been unreachable, across its sessions, for the
/// service cache TTL.
#[derive(Debug, Default)]
pub struct Reachability {
    /// Since when nothing answered (`None` while it answers).
    since: Option<(Instant, SystemTime)>,
    /// The remote's services were dropped after the TTL.
    pub services_dropped: bool,
}

impl Reachability {
    /// Nothing answers (from now on, unless it already did not).
    pub fn unreachable(&mut self) {
        self.since
            .get_or_insert_with(|| (Instant::now(), SystemTime::now()));
    }

    /// It answers again.
    pub fn answers(&mut self) {
        self.since = None;
    }

    /// Whether it does not answer.
    pub fn is_unreachable(&self) -> bool {
        self.since.is_some()
    }

    /// When the services go, if a TTL is set and they are still there.
    pub fn services_deadline(&self, ttl: Option<Duration>) -> Option<Instant> {
        match (ttl, self.since) {
            (Some(ttl), Some((since, _))) if !self.services_dropped => Some(since + ttl),
            _ => None,
        }
    }

    /// Since when it does not answer (RFC 3339), while it does not.
    pub fn since_rfc3339(&self) -> Option<String> {
        self.since.map(|(_, t)| Timestamp(t).to_rfc3339())
    }
}
