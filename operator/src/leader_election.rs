use std::{sync::Arc, time::Duration};

use etcd_client::{
    Compare, CompareOp, EventType, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions, WatchResponse, WatchStream,
};
use kvstore::{Backoff, Client, LeaseId, SessionHandle, keys};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{error_chain, lease_election::LeaseElection, metrics::OperatorMetrics};

/// Why a step of the election failed (each is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum LeaderElectionError {
    #[error("campaign for {key}")]
    Campaign {
        key: String,
        #[source]
        source: kvstore::Error,
    },
    #[error("watch {key}")]
    Watch {
        key: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("keep-alive of lease {lease}")]
    KeepAlive {
        lease: LeaseId,
        #[source]
        source: etcd_client::Error,
    },
    #[error("{op} {key} did not finish within {timeout:?}")]
    Timeout {
        op: &'static str,
        key: String,
        timeout: Duration,
    },
}

/// The election an operator runs: on the etcd key
/// `cilium/operator/leader` (the default), or on a `coordination.k8s.io/v1`
/// Lease when the operator runs against Kubernetes. Both publish the same
/// [`Leadership`] and [`Term`]s, so the leader's duties do not know which.
#[derive(Debug)]
pub enum Election {
    Etcd(Box<LeaderElection>),
    Lease(Box<LeaseElection>),
}

impl Election {
    /// Campaigns, leads and follows until `shutdown`; a leader gives the
    /// leadership up on the way out, after its duties drained.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), LeaderElectionError> {
        match self {
            Self::Etcd(e) => e.run(shutdown).await,
            Self::Lease(e) => {
                e.run(shutdown).await;
                Ok(())
            }
        }
    }
}

/// How a [`LeaderElection`] runs.
#[derive(Debug, Clone)]
pub struct LeaderElectionConfig {
    /// This instance's ID, the value of the leader key.
    pub id: String,
    /// The leader key. Default: `cilium/operator/leader`.
    pub key: String,
    /// TTL of the session lease the key is attached to; it bounds how long a
    /// leader may go without renewing before it steps down.
    pub ttl: Duration,
    /// How long a leader that steps down waits for its duties to stop before
    /// it deletes the key anyway. Default 10 s.
    pub drain_timeout: Duration,
}

impl LeaderElectionConfig {
    pub fn new(id: impl Into<String>, ttl: Duration) -> Self {
        Self {
            id: id.into(),
            key: keys::OPERATOR_LEADER.to_string(),
            ttl,
            drain_timeout: Duration::from_secs(10),
        }
    }

    /// How often a leader renews and checks its lease: a sixth of the TTL.
    fn check_interval(&self) -> Duration {
        (self.ttl / 6).max(Duration::from_millis(100))
    }

    /// A leader steps down when its lease may expire within this margin
    /// without another renewal: a third of the TTL.
    fn margin(&self) -> Duration {
        self.ttl / 3
    }
}

/// This instance's part in the election.
#[derive(Debug, Clone)]
pub enum Leadership {
    /// Not leading; `leader` is who holds the leader key, when known.
    Follower { leader: Option<String> },
    /// Leading, for the duration of the term.
    Leader(Term),
}

/// One period of leadership. Its token is cancelled the moment leadership
/// ends; duties run with it.
///
/// The election does not give the key up (nor campaign again) until every
/// clone of the term is dropped, or the drain timeout passes, so that the
/// duties of a term end before anyone else's can begin.
#[derive(Debug, Clone)]
pub struct Term {
    number: u64,
    lease: LeaseId,
    token: CancellationToken,
    _alive: mpsc::Sender<()>,
}

impl Term {
    /// 1 for this instance's first term, then 2, …
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The etcd session lease of the term: the heartbeat is written on it,
    /// and in etcd mode the leader key too.
    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    /// Cancelled when the term ends.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    pub fn is_over(&self) -> bool {
        self.token.is_cancelled()
    }
}

/// Read side of a [`LeaderElection`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct LeaderHandle {
    id: Arc<str>,
    state: watch::Receiver<Leadership>,
}

impl LeaderHandle {
    /// This instance's ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether this instance leads right now.
    pub fn is_leader(&self) -> bool {
        matches!(&*self.state.borrow(), Leadership::Leader(t) if !t.is_over())
    }

    /// The leader's ID as far as this instance knows.
    pub fn leader(&self) -> Option<String> {
        match &*self.state.borrow() {
            Leadership::Leader(_) => Some(self.id.to_string()),
            Leadership::Follower { leader } => leader.clone(),
        }
    }

    /// The current term, if leading. Holding it delays the next hand-over.
    pub fn term(&self) -> Option<Term> {
        match &*self.state.borrow() {
            Leadership::Leader(t) if !t.is_over() => Some(t.clone()),
            _ => None,
        }
    }

    /// Waits for the next term of leadership (returns the current one if
    /// leading); `None` once the election has stopped.
    pub async fn next_term(&mut self) -> Option<Term> {
        loop {
            if let Leadership::Leader(t) = &*self.state.borrow_and_update()
                && !t.is_over()
            {
                return Some(t.clone());
            }
            self.state.changed().await.ok()?;
        }
    }

    /// Waits until this instance leads (`true`) or follows (`false`).
    pub async fn wait_until_leader(&self, leader: bool) {
        let mut rx = self.state.clone();
        let _ = rx
            .wait_for(|s| matches!(s, Leadership::Leader(t) if !t.is_over()) == leader)
            .await;
    }
}

/// The side of an election that both implementations (the etcd key,
/// [`LeaderElection`], and the Kubernetes Lease,
/// [`crate::LeaseElection`]) share: what a [`LeaderHandle`] reads, the term
/// numbers, the leader metrics, and the drain of a term's duties before the
/// leadership is given up.
#[derive(Debug)]
pub(crate) struct Terms {
    id: Arc<str>,
    state: watch::Sender<Leadership>,
    metrics: OperatorMetrics,
    drain_timeout: Duration,
    count: u64,
}

/// A term that [`Terms::begin`] started; [`Terms::end`] ends it.
#[derive(Debug)]
pub(crate) struct ActiveTerm {
    number: u64,
    token: CancellationToken,
    alive: mpsc::Receiver<()>,
}

impl ActiveTerm {
    pub(crate) fn number(&self) -> u64 {
        self.number
    }
}

impl Terms {
    pub(crate) fn new(
        id: &str,
        drain_timeout: Duration,
        metrics: OperatorMetrics,
    ) -> (Self, LeaderHandle) {
        let (tx, rx) = watch::channel(Leadership::Follower { leader: None });
        let id: Arc<str> = id.into();
        let handle = LeaderHandle {
            id: id.clone(),
            state: rx,
        };
        (
            Self {
                id,
                state: tx,
                metrics,
                drain_timeout,
                count: 0,
            },
            handle,
        )
    }

    /// Publishes that `leader` (if known) leads, not this instance.
    pub(crate) fn follow(&self, leader: Option<String>) {
        self.state.send_replace(Leadership::Follower { leader });
    }

    /// Starts a term whose duties use the etcd session lease `lease`.
    pub(crate) fn begin(&mut self, lease: LeaseId, shutdown: &CancellationToken) -> ActiveTerm {
        self.count += 1;
        let token = shutdown.child_token();
        let (alive_tx, alive) = mpsc::channel::<()>(1);
        self.state.send_replace(Leadership::Leader(Term {
            number: self.count,
            lease,
            token: token.clone(),
            _alive: alive_tx,
        }));
        self.metrics.leader.set(1);
        self.metrics
            .leader_transitions
            .get_or_create(&[("to", "leader")])
            .inc();
        ActiveTerm {
            number: self.count,
            token,
            alive,
        }
    }

    /// Ends `term`: cancels its duties, publishes `Follower`, and waits until
    /// every clone of the term is dropped (the duties stopped) or the drain
    /// timeout passed. Only then may the caller give the leadership up.
    pub(crate) async fn end(
        &self,
        mut term: ActiveTerm,
        reason: &str,
        shutdown: &CancellationToken,
    ) {
        term.token.cancel();
        self.follow(None);
        self.metrics.leader.set(0);
        self.metrics
            .leader_transitions
            .get_or_create(&[("to", "follower")])
            .inc();
        if shutdown.is_cancelled() {
            info!(id = %self.id, "shutting down; stepping down as leader");
        } else {
            warn!(id = %self.id, reason, "stepped down as leader");
        }
        if tokio::time::timeout(self.drain_timeout, term.alive.recv())
            .await
            .is_err()
        {
            warn!(timeout = ?self.drain_timeout, "the leader's duties did not stop in time; giving the leadership up anyway");
        }
    }
}

/// Leader election on an etcd lease: at most one operator of a cluster runs
/// the duties (identity GC, heartbeat, IPAM) at a time.
///
/// Algorithm:
/// 1. Wait for the session lease `L`.
/// 2. Campaign: one transaction creates the leader key with our ID on `L`
///    if it does not exist, else reads it. A key already on `L` is ours
///    (we are back after a step-down that kept the lease).
/// 3. Lost: follow. Watch the key; when it is deleted (the leader resigned,
///    or its lease expired), or our session lease changes, go to 1.
/// 4. Won: renew `L` every sixth of the TTL (besides the session's own
///    keep-alive) and remember when it could expire at the earliest
///    (send time of the last successful renewal + TTL). Lead until the key
///    is deleted or taken over, the session reports another lease, etcd says
///    the lease is gone, or the earliest expiry is less than a third of the
///    TTL away. Since a follower can only win after the key is gone, which
///    is after the lease's expiry, the old leader has stopped before.
/// 5. Step down: cancel the term, publish `Follower`, wait until the term's
///    duties are drained, then delete the key if it is still on `L` (so a
///    follower takes over at once), and go to 1.
#[derive(Debug)]
pub struct LeaderElection {
    client: Client,
    session: SessionHandle,
    config: LeaderElectionConfig,
    terms: Terms,
}

enum Campaign {
    Won { revision: i64 },
    Lost { leader: String, revision: i64 },
}

/// What woke a leader or follower up.
enum Wake {
    Shutdown,
    Session,
    Key(Result<Option<WatchResponse>, etcd_client::Error>),
    Check,
}

type KeepAlive = Option<(LeaseKeeper, LeaseKeepAliveStream)>;

impl LeaderElection {
    /// An election for `config.id`. Nothing happens until [`LeaderElection::run`].
    pub fn new(
        client: Client,
        session: SessionHandle,
        config: LeaderElectionConfig,
        metrics: OperatorMetrics,
    ) -> (Self, LeaderHandle) {
        let (terms, handle) = Terms::new(&config.id, config.drain_timeout, metrics);
        (
            Self {
                client,
                session,
                config,
                terms,
            },
            handle,
        )
    }

    /// Campaigns, leads and follows until `shutdown`; a leader resigns on the
    /// way out (after its duties drained).
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), LeaderElectionError> {
        let mut backoff = Backoff::for_etcd();
        loop {
            let lease = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                lease = self.session.lease() => lease,
            };
            let campaign = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                c = self.campaign(lease) => c,
            };
            match campaign {
                Ok(Campaign::Won { revision }) => {
                    let started = Instant::now();
                    self.lead(lease, revision, &shutdown).await;
                    if shutdown.is_cancelled() {
                        return Ok(());
                    }
                    // A term that ended quickly (etcd flapping) is not
                    // followed at once by the next campaign.
                    if started.elapsed() >= self.config.ttl {
                        backoff.reset();
                    }
                    if !backoff.wait(&shutdown).await {
                        return Ok(());
                    }
                }
                Ok(Campaign::Lost { leader, revision }) => {
                    backoff.reset();
                    debug!(leader, "another operator leads; following");
                    self.terms.follow(Some(leader));
                    if let Err(e) = self.follow(lease, revision, &shutdown).await {
                        warn!(error = %error_chain(&e), "watching the leader key failed; campaigning again");
                        if !backoff.wait(&shutdown).await {
                            return Ok(());
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %error_chain(&e), "campaign failed; retrying");
                    if !backoff.wait(&shutdown).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Creates the leader key on `lease` unless it exists.
    async fn campaign(&self, lease: LeaseId) -> Result<Campaign, LeaderElectionError> {
        let key = &self.config.key;
        let t = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                self.config.id.as_str(),
                Some(PutOptions::new().with_lease(lease.0)),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let resp = self
            .client
            .txn("campaign", key, t)
            .await
            .map_err(|source| LeaderElectionError::Campaign {
                key: key.clone(),
                source,
            })?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        if resp.succeeded() {
            return Ok(Campaign::Won { revision });
        }
        let holder = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().cloned(),
            _ => None,
        });
        Ok(match holder {
            Some(kv) if kv.lease() == lease.0 => Campaign::Won { revision },
            Some(kv) => Campaign::Lost {
                leader: String::from_utf8_lossy(kv.value()).into_owned(),
                revision,
            },
            // Cannot happen (the comparison saw the key in the same
            // transaction); campaign again.
            None => Campaign::Lost {
                leader: String::new(),
                revision,
            },
        })
    }

    /// Leads until leadership is lost or `shutdown`, then steps down.
    async fn lead(&mut self, lease: LeaseId, revision: i64, shutdown: &CancellationToken) {
        let mut keep_alive: KeepAlive = None;
        // Learn how long the lease is good for before acting as leader.
        let sent = Instant::now();
        let renewal =
            tokio::time::timeout(self.config.margin(), self.renew(lease, &mut keep_alive));
        let mut deadline = match renewal.await.unwrap_or(Err(LeaderElectionError::Timeout {
            op: "keep-alive",
            key: lease.to_string(),
            timeout: self.config.margin(),
        })) {
            Ok(Some(ttl)) => sent + ttl,
            Ok(None) => {
                info!(lease = %lease, "won the election on a lease that just expired; campaigning again");
                return;
            }
            Err(e) => {
                warn!(error = %error_chain(&e), "cannot renew the lease after winning the election; campaigning again");
                self.resign(lease).await;
                return;
            }
        };
        let term = self.terms.begin(lease, shutdown);
        info!(id = %self.config.id, lease = %lease, term = term.number(), "became leader");

        let reason = self
            .hold(lease, revision, &mut deadline, &mut keep_alive, shutdown)
            .await;

        // Step down: stop the duties first, then give the key up.
        self.terms.end(term, reason, shutdown).await;
        self.resign(lease).await;
    }

    /// Watches the key, the session and the lease's deadline; returns why
    /// leadership ended.
    async fn hold(
        &self,
        lease: LeaseId,
        mut revision: i64,
        deadline: &mut Instant,
        keep_alive: &mut KeepAlive,
        shutdown: &CancellationToken,
    ) -> &'static str {
        let mut session = self.session.subscribe();
        let mut stream: Option<WatchStream> = None;
        let check = self.config.check_interval();
        let mut next_check = Instant::now() + check;
        loop {
            // Every wait below ends by `safe_until`, so a hanging etcd cannot
            // keep a leader from noticing that its lease may be gone.
            let safe_until = *deadline - self.config.margin();
            let now = Instant::now();
            if now >= safe_until {
                return "the session lease could not be renewed in time";
            }
            let bound = check.min(safe_until - now);
            if stream.is_none() {
                match self.watch_key(revision, bound).await {
                    Ok(s) => stream = Some(s),
                    Err(e) => {
                        debug!(error = %error_chain(&e), "cannot watch the leader key; retrying")
                    }
                }
            }
            let wake = tokio::select! {
                _ = shutdown.cancelled() => Wake::Shutdown,
                r = session.changed() => match r {
                    Ok(()) => Wake::Session,
                    Err(_) => Wake::Shutdown,
                },
                m = next_message(&mut stream) => Wake::Key(m),
                _ = tokio::time::sleep_until(next_check.min(safe_until)) => Wake::Check,
            };
            match wake {
                Wake::Shutdown => return "shutdown",
                Wake::Session => {
                    if session.borrow_and_update().lease != Some(lease) {
                        return "the session lease was lost";
                    }
                }
                Wake::Key(Ok(Some(resp))) => {
                    if resp.canceled() {
                        stream = None;
                        if resp.compact_revision() > 0 {
                            // History is gone: whether the key is still ours is
                            // settled by a fresh watch from the compacted revision.
                            revision = resp.compact_revision() - 1;
                        }
                        continue;
                    }
                    if let Some(h) = resp.header() {
                        revision = revision.max(h.revision());
                    }
                    for event in resp.events() {
                        let Some(kv) = event.kv() else { continue };
                        revision = revision.max(kv.mod_revision());
                        match event.event_type() {
                            EventType::Delete => return "the leader key was deleted",
                            EventType::Put if kv.lease() != lease.0 => {
                                return "the leader key was taken over";
                            }
                            EventType::Put => {}
                        }
                    }
                }
                Wake::Key(_) => stream = None,
                Wake::Check => {
                    let now = Instant::now();
                    if now < next_check {
                        continue;
                    }
                    let bound = check.min(safe_until.saturating_duration_since(now));
                    match tokio::time::timeout(bound, self.renew(lease, keep_alive)).await {
                        Ok(Ok(Some(ttl))) => *deadline = now + ttl,
                        Ok(Ok(None)) => return "the session lease expired",
                        Ok(Err(e)) => {
                            *keep_alive = None;
                            debug!(error = %error_chain(&e), "lease renewal failed");
                        }
                        Err(_) => {
                            *keep_alive = None;
                            debug!("lease renewal timed out");
                        }
                    }
                    next_check = Instant::now() + check;
                }
            }
        }
    }

    /// Follows the leader until the key is deleted, the session lease
    /// changes or `shutdown`.
    async fn follow(
        &self,
        lease: LeaseId,
        revision: i64,
        shutdown: &CancellationToken,
    ) -> Result<(), LeaderElectionError> {
        let mut session = self.session.subscribe();
        let timeout = self.config.ttl.max(Duration::from_secs(1));
        let mut stream = Some(self.watch_key(revision, timeout).await?);
        loop {
            let wake = tokio::select! {
                _ = shutdown.cancelled() => Wake::Shutdown,
                r = session.changed() => match r {
                    Ok(()) => Wake::Session,
                    Err(_) => Wake::Shutdown,
                },
                m = next_message(&mut stream) => Wake::Key(m),
            };
            match wake {
                Wake::Shutdown => return Ok(()),
                Wake::Session => {
                    if session.borrow_and_update().lease != Some(lease) {
                        return Ok(());
                    }
                }
                Wake::Key(Ok(Some(resp))) => {
                    if resp.canceled() {
                        // Compacted or refused: campaign again, which re-reads.
                        return Ok(());
                    }
                    for event in resp.events() {
                        let Some(kv) = event.kv() else { continue };
                        match event.event_type() {
                            EventType::Delete => {
                                info!("the leader key is gone; campaigning");
                                return Ok(());
                            }
                            EventType::Put => {
                                self.terms
                                    .follow(Some(String::from_utf8_lossy(kv.value()).into_owned()));
                            }
                        }
                    }
                }
                Wake::Key(Ok(None)) => return Ok(()),
                Wake::Key(Err(source)) => {
                    return Err(LeaderElectionError::Watch {
                        key: self.config.key.clone(),
                        source,
                    });
                }
                Wake::Check => {}
            }
        }
    }

    async fn watch_key(
        &self,
        revision: i64,
        timeout: Duration,
    ) -> Result<WatchStream, LeaderElectionError> {
        let key = &self.config.key;
        let opts = WatchOptions::new().with_start_revision(revision + 1);
        let mut watch = self.client.raw().watch_client();
        match tokio::time::timeout(timeout, watch.watch(key.as_str(), Some(opts))).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(source)) => Err(LeaderElectionError::Watch {
                key: key.clone(),
                source,
            }),
            Err(_) => Err(LeaderElectionError::Timeout {
                op: "watch",
                key: key.clone(),
                timeout,
            }),
        }
    }

    /// Renews `lease` once: its TTL, or `None` if etcd no longer knows it.
    async fn renew(
        &self,
        lease: LeaseId,
        keep_alive: &mut KeepAlive,
    ) -> Result<Option<Duration>, LeaderElectionError> {
        let error = |source| LeaderElectionError::KeepAlive { lease, source };
        if keep_alive.is_none() {
            *keep_alive = Some(
                self.client
                    .raw()
                    .lease_client()
                    .keep_alive(lease.0)
                    .await
                    .map_err(error)?,
            );
        }
        let (keeper, responses) = keep_alive.as_mut().expect("set above");
        keeper.keep_alive().await.map_err(error)?;
        match responses.message().await.map_err(error)? {
            Some(resp) if resp.ttl() > 0 => Ok(Some(Duration::from_secs(resp.ttl() as u64))),
            Some(_) => Ok(None),
            None => Err(error(etcd_client::Error::LeaseKeepAliveError(
                "keep-alive stream closed".into(),
            ))),
        }
    }

    /// Deletes the leader key if it is still on `lease` (best effort).
    async fn resign(&self, lease: LeaseId) {
        let key = &self.config.key;
        let t = Txn::new()
            .when([Compare::lease(key.as_str(), CompareOp::Equal, lease.0)])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        let timeout = self
            .config
            .ttl
            .clamp(Duration::from_secs(1), Duration::from_secs(5));
        match tokio::time::timeout(timeout, self.client.txn("resign", key, t)).await {
            Ok(Ok(resp)) if resp.succeeded() => {
                info!(id = %self.config.id, "resigned the leadership")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                debug!(error = %e.full_message(), "resigning failed; the key expires with the lease")
            }
            Err(_) => debug!("resigning timed out; the key expires with the lease"),
        }
    }
}

async fn next_message(
    stream: &mut Option<WatchStream>,
) -> Result<Option<WatchResponse>, etcd_client::Error> {
    match stream {
        Some(s) => s.message().await,
        None => std::future::pending().await,
    }
}
