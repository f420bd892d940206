use std::{
    error::Error,
    fmt::Write as _,
    future,
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::SystemTime,
};

use tokio::{
    sync::watch,
    time::{Instant, Interval, MissedTickBehavior},
};
use tokio_util::sync::CancellationToken;

use crate::{
    Config, LoadError, ReloadStats, TlsFiles, TlsMaterial, WatchError, dir_watcher::DirWatcher,
    tls_material::PemBytes,
};

/// Owns one identity's files and the material currently in use, shared by the
/// rustls callbacks (readers, once per handshake) and the watcher task (the one
/// writer).
///
/// Readers hold the read lock only to clone an `Arc`, so a reload never waits
/// for a handshake and a handshake never sees half an update. Connections
/// already established keep their keys: rustls does not consult the material
/// after the handshake.
pub(crate) struct Reloader {
    files: TlsFiles,
    current: RwLock<Arc<TlsMaterial>>,
    /// The input that failed last, so that a file that stays broken is logged
    /// and counted once, yet retried (a not-yet-valid certificate becomes
    /// valid with time).
    last_failure: Mutex<Option<FailedInput>>,
    stats: watch::Sender<ReloadStats>,
}

#[derive(PartialEq, Eq)]
enum FailedInput {
    Unreadable(String),
    Invalid(PemBytes),
}

impl Reloader {
    /// Loads the files; fails if they are not usable now.
    pub(crate) fn load(files: TlsFiles) -> Result<Arc<Self>, LoadError> {
        let material = TlsMaterial::load(&files)?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(Arc::new(material)),
            last_failure: Mutex::new(None),
            stats: watch::Sender::new(ReloadStats::default()),
        }))
    }

    pub(crate) fn files(&self) -> &TlsFiles {
        &self.files
    }

    pub(crate) fn current(&self) -> Arc<TlsMaterial> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn stats(&self) -> &watch::Sender<ReloadStats> {
        &self.stats
    }

    /// Re-reads the files and takes them into use if they changed and are
    /// valid; otherwise keeps the current material.
    pub(crate) fn reload(&self) {
        let pem = match PemBytes::read(&self.files) {
            Ok(pem) => pem,
            Err(err) => {
                let input = FailedInput::Unreadable(err.to_string());
                return self.reject(err, input);
            }
        };
        if self.current().pem() == &pem {
            *self.last_failure() = None;
            return;
        }
        match TlsMaterial::from_pem(&self.files, pem.clone(), SystemTime::now()) {
            Ok(material) => {
                let cert = material.certificate();
                tracing::info!(
                    cert = %self.files.cert.display(),
                    subject = %cert.subject,
                    not_after = %cert.not_after_rfc3339(),
                    cas = material.ca_certificates().len(),
                    "reloaded TLS certificate, key and CA bundle"
                );
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(material);
                *self.last_failure() = None;
                self.stats.send_modify(|stats| stats.reloads += 1);
            }
            Err(err) => self.reject(err, FailedInput::Invalid(pem)),
        }
    }

    fn reject(&self, err: LoadError, input: FailedInput) {
        let mut last = self.last_failure();
        if last.as_ref() == Some(&input) {
            tracing::debug!(cert = %self.files.cert.display(), error = %error_chain(&err), "TLS files still invalid");
            return;
        }
        tracing::error!(
            cert = %self.files.cert.display(),
            error = %error_chain(&err),
            "rejected changed TLS files, keeping the previous certificate in use"
        );
        *last = Some(input);
        drop(last);
        self.stats.send_modify(|stats| stats.failures += 1);
    }

    fn last_failure(&self) -> std::sync::MutexGuard<'_, Option<FailedInput>> {
        self.last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Watches the reloader's files until `shutdown`, reloading after each burst of
/// changes (see [`Config::debounce`]) and every [`Config::resync_interval`].
pub(crate) async fn watch(
    reloader: Arc<Reloader>,
    config: &Config,
    shutdown: CancellationToken,
) -> Result<(), WatchError> {
    let mut watcher = DirWatcher::new()?;
    watcher.watch_dirs_of(&reloader.files().paths());
    // The files may have changed between loading and watching.
    reloader.reload();
    let mut resync = config.resync_interval.map(|period| {
        let mut interval = tokio::time::interval_at(Instant::now() + period, period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        interval
    });
    tracing::debug!(cert = %reloader.files().cert.display(), "watching TLS files");
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = watcher.changed() => {}
            () = tick(resync.as_mut()) => {}
        }
        // Debounce: wait for a quiet period, but no longer than max_delay.
        let deadline = Instant::now() + config.max_delay;
        loop {
            let quiet_until = (Instant::now() + config.debounce).min(deadline);
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = watcher.changed() => {}
                () = tokio::time::sleep_until(quiet_until) => break,
            }
        }
        reloader.reload();
        watcher.watch_dirs_of(&reloader.files().paths());
    }
    Ok(())
}

async fn tick(interval: Option<&mut Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => future::pending().await,
    }
}

fn error_chain(err: &dyn Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        let _ = write!(out, ": {err}");
        source = err.source();
    }
    out
}
