use std::{sync::Arc, time::Duration};

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    backoff::Backoff,
    client::{Client, LeaseId},
    error::Error,
};

/// Default TTL of a process's session lease, as Cilium's agents use: long
/// enough that an agent restart or a short etcd outage keeps the keys the
/// process published, short enough that a dead node's keys go away.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(15 * 60);

/// The current lease of a session. `generation` grows every time a new lease
/// replaces a lost one, so writers know to re-create their keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionState {
    pub lease: Option<LeaseId>,
    pub generation: u64,
}

/// A process's session with etcd: one lease kept alive for as long as the
/// process runs. When the lease is lost (it expired while etcd was
/// unreachable, was revoked, or etcd lost its data), the loss is logged and
/// published and a new lease is granted at once; [`crate::SyncStore`]s then
/// re-create their keys on it.
///
/// A loss is found quickly, not after a TTL: when the keep-alive stream
/// breaks (etcd restarted), or after a failed keep-alive, the next one follows
/// within [`SESSION_RETRY_INTERVAL`] (so a restarted etcd that forgot the
/// lease is asked as soon as it answers), and a writer that etcd tells
/// "requested lease not found" reports it ([`SessionHandle::report_lost`]),
/// which checks the lease at once.
#[derive(Debug)]
pub struct Session {
    client: Client,
    ttl: Duration,
    revoke_on_shutdown: bool,
    state: watch::Sender<SessionState>,
    check_now: Arc<Notify>,
}

/// Longest wait between keep-alive attempts once one failed.
pub const SESSION_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// What etcd-client says when etcd answers a keep-alive with TTL 0.
const LEASE_NOT_FOUND: &str = "lease not found";

/// Pause before checking the lease after the keep-alive stream ended.
const STREAM_END_PAUSE: Duration = Duration::from_millis(200);

/// Longest wait for one keep-alive answer.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Shortest wait for one keep-alive answer, however short the TTL: a round
/// trip takes milliseconds, but a busy etcd may take longer than a third of
/// a test's TTL.
const MIN_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(1);

/// Shortest time between keep-alives, however short the TTL (tests use TTLs
/// of a second or two), so a session does not flood etcd.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(300);

/// First delay before retrying a failed keep-alive: soon, since the lease
/// may have little time left.
const REFRESH_RETRY_MIN: Duration = Duration::from_millis(100);

/// Read side of a [`Session`]: cheap to clone.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    state: watch::Receiver<SessionState>,
    check_now: Arc<Notify>,
}

impl Session {
    /// A session with leases of `ttl`. Nothing happens until [`Session::run`].
    pub fn new(client: Client, ttl: Duration) -> (Self, SessionHandle) {
        let (tx, rx) = watch::channel(SessionState::default());
        let check_now = Arc::new(Notify::new());
        (
            Self {
                client,
                ttl,
                revoke_on_shutdown: false,
                state: tx,
                check_now: check_now.clone(),
            },
            SessionHandle {
                state: rx,
                check_now,
            },
        )
    }

    /// Revoke the lease on shutdown, so the process's keys vanish at once
    /// (default: keep them until the TTL runs out, so a restart keeps state).
    pub fn revoke_on_shutdown(mut self, revoke: bool) -> Self {
        self.revoke_on_shutdown = revoke;
        self
    }

    /// Grants the lease and keeps it alive until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let mut backoff = Backoff::for_etcd();
        let mut generation = 0;
        loop {
            let lease = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = self.client.grant_lease(self.ttl) => r,
            };
            let lease = match lease {
                Ok(lease) => lease,
                Err(e) => {
                    warn!(error = %e.full_message(), "cannot grant the session lease; retrying");
                    if !backoff.wait(&shutdown).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            backoff.reset();
            generation += 1;
            info!(lease = %lease, ttl = ?self.ttl, generation, "session lease granted");
            self.state.send_replace(SessionState {
                lease: Some(lease),
                generation,
            });
            match self.keep_alive(lease, &shutdown).await {
                Ok(()) => {
                    if self.revoke_on_shutdown {
                        let _ = self.client.revoke_lease(lease).await;
                    }
                    return Ok(());
                }
                Err(e) => {
                    warn!(lease = %lease, error = %e.full_message(), "session lease lost; keys will be re-created on a new lease");
                    self.state.send_replace(SessionState {
                        lease: None,
                        generation,
                    });
                }
            }
        }
    }

    /// Refreshes `lease` every third of its TTL, and within
    /// [`SESSION_RETRY_INTERVAL`] after a failure or at once when a writer
    /// reports the lease lost. Returns `Ok` on shutdown and an error once the
    /// lease is gone: etcd says so, or no refresh succeeded for a whole TTL.
    async fn keep_alive(&self, lease: LeaseId, shutdown: &CancellationToken) -> Result<(), Error> {
        let interval = (self.ttl / 3).max(MIN_REFRESH_INTERVAL);
        let mut retry = Backoff::new(
            REFRESH_RETRY_MIN.min(interval),
            SESSION_RETRY_INTERVAL.min(interval),
        );
        // The first keep-alive at once: it opens the stream whose end tells
        // of an etcd restart.
        let mut wait = Duration::ZERO;
        let mut last_refresh = tokio::time::Instant::now();
        let mut stream: Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)> =
            None;
        loop {
            let (mut reopen, mut ended) = (false, false);
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
                _ = self.check_now.notified() => {
                    debug!(lease = %lease, "a writer reports the session lease lost; checking now");
                    // The stream may be from before an etcd restart.
                    reopen = true;
                }
                _ = stream_ended(&mut stream) => {
                    // etcd restarted (or the connection broke): it may have
                    // come back without our lease, so ask at once.
                    debug!(lease = %lease, "the keep-alive stream ended; checking the lease now");
                    reopen = true;
                    ended = true;
                }
            }
            if reopen {
                stream = None;
            }
            if ended {
                // Give a restarting etcd a moment, and bound the rate if a
                // server ends every stream at once.
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(STREAM_END_PAUSE) => {}
                }
            }
            match self.refresh(lease, &mut stream).await {
                Ok(true) => {
                    last_refresh = tokio::time::Instant::now();
                    retry.reset();
                    wait = interval;
                }
                Ok(false) => return Err(Error::LeaseExpired(lease.0)),
                Err(e) => {
                    stream = None;
                    if last_refresh.elapsed() >= self.ttl {
                        return Err(e);
                    }
                    wait = retry.next_delay();
                    warn!(lease = %lease, error = %e.full_message(), retry_in = ?wait, "session keep-alive failed; retrying");
                }
            }
        }
    }

    /// One keep-alive round trip: `Ok(false)` if etcd no longer knows the lease.
    async fn refresh(
        &self,
        lease: LeaseId,
        stream: &mut Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)>,
    ) -> Result<bool, Error> {
        // A round trip takes milliseconds; a stream that outlived its etcd
        // (restarted) may never answer, and must not hold the check up.
        let timeout = (self.ttl / 3).clamp(MIN_KEEP_ALIVE_TIMEOUT, KEEP_ALIVE_TIMEOUT);
        let round_trip = async {
            if stream.is_none() {
                match self.client.raw().lease_client().keep_alive(lease.0).await {
                    Ok(opened) => *stream = Some(opened),
                    // Opening a stream asks once; etcd-client turns etcd's
                    // "TTL 0" answer for an unknown lease into this error.
                    Err(etcd_client::Error::LeaseKeepAliveError(m)) if m == LEASE_NOT_FOUND => {
                        return Ok(false);
                    }
                    Err(e) => return Err(e),
                }
            }
            let (keeper, responses) = stream.as_mut().expect("set above");
            keeper.keep_alive().await?;
            match responses.message().await? {
                Some(resp) => Ok(resp.ttl() > 0),
                None => Err(etcd_client::Error::LeaseKeepAliveError(
                    "keep-alive stream closed".into(),
                )),
            }
        };
        match tokio::time::timeout(timeout, round_trip).await {
            Ok(Ok(alive)) => Ok(alive),
            Ok(Err(source)) => Err(Error::Request {
                op: "keep-alive lease",
                key: lease.to_string(),
                source,
            }),
            Err(_) => Err(Error::RequestTimeout {
                op: "keep-alive lease",
                key: lease.to_string(),
                timeout,
            }),
        }
    }
}

/// Returns when the open keep-alive stream ends (or says anything unasked:
/// its answers are read by [`Session::refresh`]); never without a stream.
async fn stream_ended(
    stream: &mut Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)>,
) {
    match stream {
        Some((_, responses)) => {
            let _ = responses.message().await;
        }
        None => std::future::pending().await,
    }
}

impl SessionHandle {
    /// The current lease, waiting until there is one.
    pub async fn lease(&self) -> LeaseId {
        let mut rx = self.state.clone();
        loop {
            if let Some(lease) = rx.borrow_and_update().lease {
                return lease;
            }
            if rx.changed().await.is_err() {
                // The session stopped; keep waiting forever is wrong, but a
                // stopped session only happens at shutdown.
                std::future::pending::<()>().await;
            }
        }
    }

    /// The current state without waiting.
    pub fn current(&self) -> SessionState {
        *self.state.borrow()
    }

    /// A receiver that is notified on every lease change.
    pub fn subscribe(&self) -> watch::Receiver<SessionState> {
        self.state.clone()
    }

    /// etcd refused a write on `lease` as unknown: if it is still the
    /// current lease, the session checks it at once (and replaces it when
    /// etcd confirms it is gone) instead of at its next keep-alive.
    pub fn report_lost(&self, lease: LeaseId) {
        if self.current().lease == Some(lease) {
            self.check_now.notify_one();
        }
    }
}
