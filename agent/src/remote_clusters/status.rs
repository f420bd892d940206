//! A remote's status as `status` shows it, updated by its connection and
//! read by the directory follower.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use kvstore::{ClusterName, WatchStoreStats, values::MirrorStatus};

use super::failure::Failure;
use crate::{control_loop::StoreKind, views::RemoteView};

/// Shared between a remote's connection and the directory follower.
#[derive(Debug, Clone)]
pub(super) struct RemoteStatus(Arc<Mutex<RemoteView>>);

impl RemoteStatus {
    pub(super) fn new(name: &ClusterName) -> Self {
        Self(Arc::new(Mutex::new(RemoteView {
            name: name.to_string(),
            ..RemoteView::default()
        })))
    }

    fn lock(&self) -> MutexGuard<'_, RemoteView> {
        self.0.lock().expect("remote status")
    }

    pub(super) fn view(&self) -> RemoteView {
        self.lock().clone()
    }

    /// Connected, with the remote's cluster config as accepted, reading
    /// from `via` (`None`: the remote itself).
    pub(super) fn connected(&self, config: String, via: Option<&str>) {
        let mut s = self.lock();
        s.connected = true;
        s.connects += 1;
        s.config = Some(config);
        s.via = via.map(str::to_string);
    }

    /// An attempt failed (counted).
    pub(super) fn failed(&self, failure: &Failure) {
        self.lock().failures += 1;
        self.unreachable(failure);
    }

    /// Not answering right now (the connection stays).
    pub(super) fn unreachable(&self, failure: &Failure) {
        let mut s = self.lock();
        s.connected = false;
        s.ready = false;
        s.last_error = Some(failure.message.clone());
        s.last_error_kind = Some(failure.kind.as_str().to_string());
    }

    /// The remote's data was withdrawn: no entries to show.
    pub(super) fn withdrawn(&self) {
        let mut s = self.lock();
        s.synced.clear();
        s.entries.clear();
        s.invalid.clear();
    }

    /// The state of the connection's stores; through kvstoremesh
    /// (`cached`), also how kvstoremesh sees the remote, if it says
    /// (`cilium/kvstoremesh/v1/<remote>`, our extension: a kvstoremesh that
    /// does not publish it leaves the cache's own state).
    pub(super) fn update(
        &self,
        name: &ClusterName,
        reachable: bool,
        stats: &[(StoreKind, Arc<WatchStoreStats>)],
        cached: bool,
        mirror: Option<&MirrorStatus>,
    ) {
        let mut s = self.lock();
        s.connected = reachable;
        s.synced = stats
            .iter()
            .map(|(k, st)| (k.as_str().to_string(), st.is_synced()))
            .collect();
        s.entries = stats
            .iter()
            .map(|(k, st)| (k.as_str().to_string(), st.entries()))
            .collect();
        s.deletes = stats
            .iter()
            .map(|(k, st)| (k.as_str().to_string(), st.deletes()))
            .collect();
        let mut invalid = BTreeMap::new();
        for (_, st) in stats {
            for (reason, n) in st.invalid_by_reason() {
                *invalid.entry(reason.as_str().to_string()).or_insert(0) += n;
            }
        }
        s.invalid = invalid;
        s.ready = reachable
            && stats
                .iter()
                .all(|(_, st)| st.is_synced() && st.is_watching());
        if let Some((kind, message)) = stats
            .iter()
            .find_map(|(_, st)| st.last_error().filter(|_| !st.is_watching()))
        {
            s.last_error_kind = Some(kind.as_str().to_string());
            s.last_error = Some(message);
        } else if s.ready {
            s.last_error = None;
            s.last_error_kind = None;
        }
        if let Some((kind, _)) = stats.iter().find(|(_, st)| st.is_waiting_for_canary()) {
            s.last_error_kind = Some("not-synced".into());
            s.last_error = Some(if cached {
                format!(
                    "waiting for kvstoremesh to mirror the {} of {name}",
                    kind.as_str()
                )
            } else {
                format!("waiting for the {} canary of {name}", kind.as_str())
            });
        }
        // Through kvstoremesh, the remote is as far as kvstoremesh gets.
        if let Some(m) = mirror.filter(|m| reachable && !m.ready) {
            s.ready = false;
            s.connected = m.connected;
            s.last_error_kind = Some(
                m.last_error_kind
                    .clone()
                    .unwrap_or_else(|| "not-synced".into()),
            );
            s.last_error = Some(format!(
                "as seen by kvstoremesh: {}",
                m.last_error.as_deref().unwrap_or("not mirrored yet")
            ));
        }
    }
}
