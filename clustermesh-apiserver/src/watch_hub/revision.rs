use std::fmt;

use etcd_client::proto::{PbEvent, PbResponseHeader};

/// An etcd revision as the hub's parts pass it around: a watcher's cursor
/// (every event up to it delivered), a shared watch's floor and how far its
/// history is complete, the revision an upstream watch starts at.
///
/// etcd's messages carry revisions as bare `i64`s; they are wrapped where
/// the hub reads them from a message and unwrapped where it writes one, so
/// that inside the hub a revision is never confused with a watch ID or a
/// count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Revision(i64);

impl Revision {
    pub(super) const fn new(revision: i64) -> Self {
        Self(revision)
    }

    pub(super) const fn get(self) -> i64 {
        self.0
    }

    /// The revision after this one: where a watch that has everything up to
    /// `self` goes on.
    pub(super) const fn next(self) -> Self {
        Self(self.0 + 1)
    }

    /// The revision before this one: the cursor of a watch that starts at
    /// `self`.
    pub(super) const fn prev(self) -> Self {
        Self(self.0 - 1)
    }

    /// The revision of the write that made `event` (0 without a key-value,
    /// which etcd never sends).
    pub(super) fn of_event(event: &PbEvent) -> Self {
        Self(event.kv.as_ref().map_or(0, |kv| kv.mod_revision))
    }

    /// The revision a response header is stamped with.
    pub(super) const fn of_header(header: &PbResponseHeader) -> Self {
        Self(header.revision)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
