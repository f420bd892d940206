use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::Arc,
};

use notify::{
    EventKind, RecommendedWatcher, RecursiveMode, Watcher,
    event::{AccessKind, AccessMode},
};
use tokio::sync::Notify;

/// Whether a file event may mean that a file's content changed: not a
/// read (the watcher's owner opening and closing files to re-read them
/// would otherwise wake itself up again, forever). A lost-events error
/// counts: look again.
pub fn may_change_content(event: &notify::Result<notify::Event>) -> bool {
    !matches!(event, Ok(event) if matches!(event.kind, EventKind::Access(kind)
        if kind != AccessKind::Close(AccessMode::Write)))
}

/// Why watching TLS files could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("failed to start the file watcher")]
    Start(#[source] notify::Error),
}

/// Watches the directories that hold a set of files and says "something may
/// have changed"; the caller re-reads and compares.
///
/// Directories, not files: an atomic rename replaces the inode a file watch
/// would follow, and a Kubernetes secret volume changes by swapping its
/// `..data` symlink, an event on the directory and on no file name we know.
/// For a path that is itself a symlink, the directory of its target is watched
/// too, and the set is recomputed after every reload because the target moves.
pub(crate) struct DirWatcher {
    watcher: RecommendedWatcher,
    watched: BTreeSet<PathBuf>,
    events: Arc<Notify>,
}

impl DirWatcher {
    pub(crate) fn new() -> Result<Self, WatchError> {
        let events = Arc::new(Notify::new());
        let sender = events.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if may_change_content(&event) {
                sender.notify_one();
            }
        })
        .map_err(WatchError::Start)?;
        Ok(Self {
            watcher,
            watched: BTreeSet::new(),
            events,
        })
    }

    /// Watches exactly the directories of `paths` and of their symlink targets.
    /// A directory that cannot be watched is skipped: the periodic resync still
    /// covers it.
    pub(crate) fn watch_dirs_of(&mut self, paths: &[&Path]) {
        let wanted: BTreeSet<PathBuf> = paths.iter().flat_map(|p| dirs_of(p)).collect();
        for gone in self.watched.difference(&wanted) {
            // Fails when the directory is already gone, which is fine.
            let _ = self.watcher.unwatch(gone);
        }
        self.watched.retain(|dir| wanted.contains(dir));
        for dir in wanted {
            if self.watched.contains(&dir) {
                continue;
            }
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(dir);
                }
                Err(err) => {
                    tracing::warn!(dir = %dir.display(), error = %err, "cannot watch directory of TLS files");
                }
            }
        }
    }

    /// Resolves after at least one event since the last call.
    pub(crate) async fn changed(&self) {
        self.events.notified().await;
    }
}

fn dirs_of(path: &Path) -> Vec<PathBuf> {
    let parent = |p: &Path| match p.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut dirs = vec![parent(path)];
    if let Ok(target) = path.canonicalize() {
        dirs.push(parent(&target));
    }
    dirs
}

#[cfg(test)]
mod tests {
    use notify::{
        Event, EventKind,
        event::{AccessKind, AccessMode, CreateKind, ModifyKind},
    };

    use super::may_change_content;

    #[test]
    fn reads_are_not_changes() {
        let event = |kind| Ok(Event::new(kind));
        for read in [
            AccessKind::Open(AccessMode::Any),
            AccessKind::Close(AccessMode::Read),
            AccessKind::Read,
        ] {
            assert!(!may_change_content(&event(EventKind::Access(read))));
        }
        for change in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Any),
            EventKind::Remove(notify::event::RemoveKind::File),
        ] {
            assert!(may_change_content(&event(change)), "{change:?}");
        }
        assert!(may_change_content(&Err(notify::Error::generic("lost"))));
    }
}
