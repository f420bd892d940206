//! What `/status` shows (and the CLI reads back): one [`MirrorView`] per
//! remote, updated by its mirror, gathered on a [`StatusBoard`].

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use kvstore::{ClusterName, values::MirrorStatus};
use serde::{Deserialize, Serialize};

use super::readiness::{Progress, Readiness};

/// The body of `/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KvstoremeshStatus {
    /// The local cluster.
    pub cluster: String,
    /// `/readyz` says ready.
    pub ready: bool,
    /// Every configured remote, by name.
    pub remotes: Vec<MirrorView>,
}

/// How kvstoremesh sees one remote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MirrorView {
    pub name: String,
    /// Connected, its cluster config accepted, and it answers.
    pub connected: bool,
    /// Connected, and every kind is mirrored (its cache canary written).
    pub ready: bool,
    /// The remote's cluster ID, once its cluster config was accepted.
    pub cluster_id: Option<u32>,
    /// Entries mirrored, by kind (`nodes`, `services`, `serviceexports`,
    /// `identities`, `ip`).
    pub entries: BTreeMap<String, u64>,
    /// Values refused, by `<kind>/<reason>` (`nodes/invalid-cluster`), as
    /// found by the current connection's lists and watches.
    pub invalid: BTreeMap<String, u64>,
    /// Failed attempts and outages so far.
    pub failures: u64,
    pub last_error: Option<String>,
    /// The class of `last_error`: a [`kvstore::remote::FailureKind`]
    /// (`unreachable`, `tls`, …) or `not-synced`.
    pub last_error_kind: Option<String>,
    /// Since when the remote does not answer (RFC 3339), while it does not.
    pub unreachable_since: Option<String>,
}

impl MirrorView {
    /// What is published for the local agents at
    /// `cilium/kvstoremesh/v1/<remote>`.
    pub fn mirror_status(&self) -> MirrorStatus {
        MirrorStatus {
            cluster: self.name.clone(),
            connected: self.connected,
            ready: self.ready,
            last_error: self.last_error.clone(),
            last_error_kind: self.last_error_kind.clone(),
            failures: self.failures,
            unreachable_since: self.unreachable_since.clone(),
        }
    }
}

/// A remote's view and progress, shared between its mirror (the writer)
/// and the board (the readers).
#[derive(Debug, Clone)]
pub(super) struct MirrorCell(Arc<Mutex<CellState>>);

#[derive(Debug, Default)]
pub(super) struct CellState {
    pub(super) view: MirrorView,
    pub(super) progress: Progress,
    /// Unix seconds of the last failure.
    pub(super) last_failure: Option<u64>,
}

impl MirrorCell {
    pub(super) fn new(name: &ClusterName) -> Self {
        Self(Arc::new(Mutex::new(CellState {
            view: MirrorView {
                name: name.to_string(),
                ..MirrorView::default()
            },
            ..CellState::default()
        })))
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, CellState> {
        self.0.lock().expect("mirror status")
    }
}

/// Every remote's view, and the readiness of the whole: read by `/status`,
/// `/readyz` and in-process callers, written by the directory follower and
/// the mirrors. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StatusBoard(Arc<Board>);

#[derive(Debug)]
struct Board {
    cluster: String,
    remotes: Mutex<BTreeMap<ClusterName, MirrorCell>>,
    readiness: Mutex<Readiness>,
}

impl StatusBoard {
    pub(super) fn new(cluster: &ClusterName, readiness: Readiness) -> Self {
        Self(Arc::new(Board {
            cluster: cluster.to_string(),
            remotes: Mutex::default(),
            readiness: Mutex::new(readiness),
        }))
    }

    /// What `/status` answers.
    pub fn snapshot(&self) -> KvstoremeshStatus {
        KvstoremeshStatus {
            cluster: self.0.cluster.clone(),
            ready: self.is_ready(),
            remotes: self.cells().iter().map(|c| c.lock().view.clone()).collect(),
        }
    }

    /// Whether every remote present at start is mirrored (or timed out).
    pub fn is_ready(&self) -> bool {
        self.readiness().is_ready()
    }

    /// Why it is not ready (empty once ready).
    pub fn pending(&self) -> String {
        self.readiness().pending().to_string()
    }

    pub(super) fn insert(&self, name: &ClusterName, cell: MirrorCell) {
        self.remotes().insert(name.clone(), cell);
    }

    pub(super) fn remove(&self, name: &ClusterName) {
        self.remotes().remove(name);
    }

    pub(super) fn set_initial(&self, names: impl IntoIterator<Item = ClusterName>) {
        self.readiness().set_initial(names);
    }

    /// Re-evaluates readiness; returns how long it took and the remotes
    /// that did not connect in time, once, when it becomes ready.
    pub(super) fn observe_readiness(
        &self,
        now: Instant,
    ) -> Option<(std::time::Duration, Vec<String>)> {
        let progress: BTreeMap<ClusterName, Progress> = self
            .remotes()
            .iter()
            .map(|(name, cell)| (name.clone(), cell.lock().progress))
            .collect();
        let mut readiness = self.readiness();
        let after = readiness.observe(now, &progress)?;
        let timed_out = readiness
            .timed_out()
            .iter()
            .map(|n| n.to_string())
            .collect();
        Some((after, timed_out))
    }

    pub(super) fn cells(&self) -> Vec<MirrorCell> {
        self.remotes().values().cloned().collect()
    }

    fn remotes(&self) -> MutexGuard<'_, BTreeMap<ClusterName, MirrorCell>> {
        self.0.remotes.lock().expect("status board")
    }

    fn readiness(&self) -> MutexGuard<'_, Readiness> {
        self.0.readiness.lock().expect("readiness")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_json_is_the_documented_shape() {
        let status = KvstoremeshStatus {
            cluster: "c1".into(),
            ready: true,
            remotes: vec![MirrorView {
                name: "c2".into(),
                connected: true,
                ready: true,
                cluster_id: Some(2),
                entries: [("nodes".to_string(), 2)].into(),
                invalid: [("nodes/invalid-cluster".to_string(), 1)].into(),
                ..MirrorView::default()
            }],
        };
        let json = serde_json::to_string(&status).unwrap();
        assert_eq!(
            json,
            r#"{"cluster":"c1","ready":true,"remotes":[{"name":"c2","connected":true,"ready":true,"clusterId":2,"entries":{"nodes":2},"invalid":{"nodes/invalid-cluster":1},"failures":0,"lastError":null,"lastErrorKind":null,"unreachableSince":null}]}"#
        );
        assert_eq!(
            serde_json::from_str::<KvstoremeshStatus>(&json).unwrap(),
            status
        );
    }
}
