use std::sync::Arc;

use tokio::sync::watch;

use crate::{TlsFiles, TlsMaterial, reloader::Reloader};

/// A cheap, cloneable view of a reloadable TLS identity
/// ([`ServerTls`](crate::ServerTls) or [`ClientTls`](crate::ClientTls)) that
/// stays valid after its watcher has been moved into `run`: the material in
/// use, and how often reloading succeeded or failed.
#[derive(Clone)]
pub struct TlsHandle {
    reloader: Arc<Reloader>,
}

/// Counts of reload attempts of one TLS identity. Reads of unchanged files are
/// not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadStats {
    /// New material taken into use.
    pub reloads: u64,
    /// Changed files rejected (the old material stayed in use). A file that
    /// stays broken is counted once.
    pub failures: u64,
}

impl TlsHandle {
    pub(crate) fn new(reloader: Arc<Reloader>) -> Self {
        Self { reloader }
    }

    /// The material new handshakes use.
    pub fn material(&self) -> Arc<TlsMaterial> {
        self.reloader.current()
    }

    /// The watched files.
    pub fn files(&self) -> &TlsFiles {
        self.reloader.files()
    }

    /// Reload counts so far.
    pub fn stats(&self) -> ReloadStats {
        *self.reloader.stats().borrow()
    }

    /// A receiver that is notified on every counted reload or failure, to wait
    /// for one without polling (`receiver.wait_for(|s| s.reloads > n)`).
    pub fn subscribe(&self) -> watch::Receiver<ReloadStats> {
        self.reloader.stats().subscribe()
    }

    pub(crate) fn reloader(&self) -> &Arc<Reloader> {
        &self.reloader
    }
}

impl std::fmt::Debug for TlsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsHandle")
            .field("files", self.files())
            .field("stats", &self.stats())
            .finish()
    }
}
