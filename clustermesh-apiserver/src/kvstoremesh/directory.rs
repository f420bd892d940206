//! The clustermesh config directory, followed: a [`Mirror`] per file, told
//! when its file changes or goes (notify events, plus a periodic rescan in
//! case an event was missed, as the agent's `remote_clusters` does). Also
//! the periodic refresh of metrics and readiness.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    time::{Duration, Instant},
};

use kvstore::{
    Client, ClusterId, ClusterName, MaxConnectedClusters, RawEntry, SessionHandle, SyncStore,
    keys::StateKind,
    remote::ClusterIds,
    remote::{ConfigFile, ConfigScanner},
};
use notify::{RecursiveMode, Watcher};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    metrics::KvstoremeshMetrics,
    mirror::{Mirror, Spec, Timing},
    status::{MirrorCell, StatusBoard},
};

/// File events buffered before the follower reads them (one is enough to
/// trigger a scan).
const FILE_EVENTS_CAPACITY: usize = 16;
/// A burst of file events (a symlink swap) settles this long before a scan.
const SETTLE_DELAY: Duration = Duration::from_millis(100);

/// Every remote of the config directory.
pub(super) struct Directory {
    pub(super) dir: PathBuf,
    pub(super) local_name: ClusterName,
    pub(super) local_id: ClusterId,
    pub(super) mode: MaxConnectedClusters,
    pub(super) default_service_cache_ttl: Option<Duration>,
    pub(super) local: Client,
    pub(super) session: SessionHandle,
    pub(super) cluster_configs: SyncStore<RawEntry>,
    pub(super) statuses: SyncStore<RawEntry>,
    pub(super) board: StatusBoard,
    pub(super) metrics: KvstoremeshMetrics,
    pub(super) timing: Timing,
    pub(super) rescan_interval: Duration,
}

/// A remote being mirrored (or drained).
struct Running {
    fingerprint: u64,
    config: watch::Sender<Option<ConfigFile>>,
    /// Its file is gone; the mirror drains after the delay unless it comes
    /// back.
    removed: bool,
}

impl Directory {
    /// Follows the directory until `shutdown`, then waits for every mirror
    /// to stop.
    pub(super) async fn run(self, shutdown: CancellationToken) {
        let (tx, mut changed) = mpsc::channel::<()>(FILE_EVENTS_CAPACITY);
        let _ = std::fs::create_dir_all(&self.dir);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Not our own reads of the files (each scan would wake the next).
            if certs::may_change_content(&event) {
                let _ = tx.try_send(());
            }
        });
        // Kept alive for the loop; without it the rescan still finds changes.
        let _watcher = match watcher {
            Ok(mut w) => match w.watch(&self.dir, RecursiveMode::NonRecursive) {
                Ok(()) => Some(w),
                Err(e) => {
                    warn!(dir = %self.dir.display(), error = %e, "cannot watch the clustermesh config directory; rescanning periodically");
                    None
                }
            },
            Err(e) => {
                warn!(error = %e, "cannot watch files; rescanning the clustermesh config directory periodically");
                None
            }
        };
        let ids = ClusterIds::default();
        let mut running: BTreeMap<ClusterName, Running> = BTreeMap::new();
        let mut tasks = JoinSet::new();
        let mut task_names: HashMap<tokio::task::Id, ClusterName> = HashMap::new();
        let mut rescan = tokio::time::interval(self.rescan_interval);
        let mut refresh = tokio::time::interval(self.timing.check_interval);
        let mut first_scan = true;
        let mut scanner = ConfigScanner::default();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = changed.recv() => {
                    tokio::time::sleep(SETTLE_DELAY).await;
                    while changed.try_recv().is_ok() {}
                }
                _ = rescan.tick() => {}
                _ = refresh.tick() => {
                    self.refresh();
                    continue;
                }
                Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let id = match &joined {
                        Ok((id, ())) => *id,
                        Err(e) => e.id(),
                    };
                    if let Err(e) = joined {
                        warn!(error = %e, "a mirror failed");
                    }
                    if let Some(name) = task_names.remove(&id) {
                        running.remove(&name);
                        self.board.remove(&name);
                        self.metrics.forget(name.as_str(), StateKind::ALL.map(StateKind::as_str));
                    }
                    // Its file may be back: scan.
                }
            }
            let wanted = scanner.scan(&self.dir, &self.local_name);
            if first_scan {
                self.board.set_initial(wanted.keys().cloned());
                first_scan = false;
            }
            for (name, r) in running.iter_mut() {
                match wanted.get(name) {
                    Some((file, fingerprint)) if r.removed || *fingerprint != r.fingerprint => {
                        info!(remote = %name, "remote cluster config changed; reconnecting");
                        r.fingerprint = *fingerprint;
                        r.removed = false;
                        r.config.send_replace(Some(file.clone()));
                    }
                    Some(_) => {}
                    None if !r.removed => {
                        r.removed = true;
                        r.config.send_replace(None);
                    }
                    None => {}
                }
            }
            for (name, (file, fingerprint)) in wanted {
                if running.contains_key(&name) {
                    continue;
                }
                info!(remote = %name, "remote cluster configured");
                let cell = MirrorCell::new(&name);
                self.board.insert(&name, cell.clone());
                let (config, config_rx) = watch::channel(Some(file.clone()));
                let mirror = Mirror::new(
                    Spec {
                        name: name.clone(),
                        file,
                        local_id: self.local_id,
                        mode: self.mode,
                        default_service_cache_ttl: self.default_service_cache_ttl,
                        ids: ids.clone(),
                        local: self.local.clone(),
                        session: self.session.clone(),
                        cluster_configs: self.cluster_configs.clone(),
                        statuses: self.statuses.clone(),
                        cell,
                        timing: self.timing,
                    },
                    &shutdown,
                );
                let handle = tasks.spawn(mirror.run(config_rx, shutdown.clone()));
                task_names.insert(handle.id(), name.clone());
                running.insert(
                    name,
                    Running {
                        fingerprint,
                        config,
                        removed: false,
                    },
                );
            }
            self.refresh();
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Metrics and readiness from the remotes' current views.
    fn refresh(&self) {
        let cells = self.board.cells();
        let guards: Vec<_> = cells.iter().map(MirrorCell::lock).collect();
        let states: Vec<_> = guards.iter().map(|g| &**g).collect();
        self.metrics.observe(&states);
        drop(guards);
        if let Some((after, timed_out)) = self.board.observe_readiness(Instant::now()) {
            info!(after = ?after, remotes = cells.len(), ?timed_out, "kvstoremesh is ready");
            self.metrics.bootstrapped(after.as_secs_f64());
        }
    }
}
