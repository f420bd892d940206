use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, api::PostParams};
use kvstore::{Backoff, LeaseId, SessionHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    error_chain,
    leader_election::{LeaderHandle, Terms},
    metrics::OperatorMetrics,
};

/// How a [`LeaseElection`] runs.
#[derive(Debug, Clone)]
pub struct LeaseElectionConfig {
    /// This instance's ID, the Lease's `holderIdentity` while it leads.
    pub id: String,
    /// Where the Lease lives. Default `kube-system`.
    pub namespace: String,
    /// The Lease's name. Default `clustermesh-operator-<cluster>`.
    pub name: String,
    /// `leaseDurationSeconds`: how long after its last renewal a silent
    /// leader's Lease is taken over (the operator's session TTL).
    pub duration: Duration,
    /// How long a leader that steps down waits for its duties to stop before
    /// it releases the Lease anyway. Default 10 s.
    pub drain_timeout: Duration,
}

impl LeaseElectionConfig {
    pub fn new(
        id: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
        duration: Duration,
    ) -> Self {
        Self {
            id: id.into(),
            namespace: namespace.into(),
            name: name.into(),
            duration,
            drain_timeout: Duration::from_secs(10),
        }
    }

    /// A leader renews every third of the duration.
    fn renew_interval(&self) -> Duration {
        (self.duration / 3).max(Duration::from_millis(100))
    }

    /// Followers read the Lease, and a leader retries a failed renewal,
    /// every sixth of the duration.
    fn retry_interval(&self) -> Duration {
        (self.duration / 6).max(Duration::from_millis(100))
    }

    /// A leader whose renewals failed for this long steps down: two thirds
    /// of the duration (client-go's 10 s renew deadline of a 15 s lease), so
    /// that it has stopped before any follower can find the Lease expired.
    fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// When a follower last saw the Lease change, by its own clock: a Lease
/// is expired once it has not changed for its `leaseDurationSeconds` since
/// this instance first saw its current version. Comparing the holder's
/// `renewTime` with the local clock would trust two clocks to agree;
/// observing a change never needs that (client-go does the same).
#[derive(Debug, Clone, Default)]
struct Observed {
    version: Option<(String, Instant)>,
}

impl Observed {
    /// Records `lease` as seen at `now`; whether it has expired.
    fn expired(&mut self, lease: &Lease, default: Duration, now: Instant) -> bool {
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let since = match &self.version {
            Some((v, at)) if *v == version => *at,
            _ => {
                self.version = Some((version, now));
                now
            }
        };
        let duration = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .map_or(default, Duration::from_secs);
        now.saturating_duration_since(since) >= duration
    }
}

/// What a follower decides on reading the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    /// Nobody holds it (released or never held), it is ours already, or
    /// its holder stopped renewing: take it.
    Acquire,
    /// `holder` leads.
    Follow { holder: String },
}

/// The sans-IO core of a campaign.
fn decide(lease: &Lease, id: &str, expired: bool) -> Decision {
    match holder(lease) {
        None => Decision::Acquire,
        Some(h) if h == id || expired => Decision::Acquire,
        Some(h) => Decision::Follow { holder: h },
    }
}

fn holder(lease: &Lease) -> Option<String> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty())
}

/// `lease` (or a new one) as this instance takes it: holder, times, and a
/// transition more when the holder changes.
fn acquired(lease: Option<&Lease>, config: &LeaseElectionConfig, now: Timestamp) -> Lease {
    let mut out = lease.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(config.name.clone()),
            namespace: Some(config.namespace.clone()),
            ..Default::default()
        },
        spec: None,
    });
    let before = out.spec.take().unwrap_or_default();
    let ours = before.holder_identity.as_deref() == Some(config.id.as_str());
    let transitions = before.lease_transitions.unwrap_or(0);
    out.spec = Some(LeaseSpec {
        holder_identity: Some(config.id.clone()),
        lease_duration_seconds: Some(config.duration_seconds()),
        acquire_time: if ours && before.acquire_time.is_some() {
            before.acquire_time.clone()
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(match (lease, ours) {
            (None, _) => 0,
            (Some(_), true) => transitions,
            (Some(_), false) => transitions + 1,
        }),
        ..before
    });
    out
}

/// How one renewal went.
enum Renewal {
    Renewed(Lease),
    /// Someone else changed the Lease but it is still ours: retry with it.
    Changed(Lease),
    /// Someone else holds it, or it is gone.
    Lost,
}

/// What a campaign found.
enum Attempt {
    /// Acquired; `sent` is when the winning request left.
    Acquired {
        lease: Box<Lease>,
        sent: Instant,
    },
    Held {
        holder: String,
    },
    /// Another instance wrote first: read again.
    Raced,
}

/// Leader election on a `coordination.k8s.io/v1` Lease, the Kubernetes
/// counterpart of [`crate::LeaderElection`] (and of client-go's
/// `leaderelection`):
///
/// 1. Wait for the etcd session lease `L` (the duties need it).
/// 2. Read the Lease. Take it (`holderIdentity` = our ID, `acquireTime`,
///    `renewTime`, `leaseDurationSeconds`, `leaseTransitions` + 1) when
///    nobody holds it, it is ours, or it has not changed for its duration
///    since this instance first saw that version (see [`Observed`]). Every
///    write carries the `resourceVersion` it was based on, so of two
///    candidates only one wins; the other gets 409 Conflict and reads again.
/// 3. Lost: follow, and read again every sixth of the duration.
/// 4. Won: renew (`renewTime`) every third of the duration. A 409 means
///    someone changed the Lease: re-read; if it is still ours, renew that
///    version, else the leadership is lost. Step down when the session
///    reports another etcd lease than `L`, or when no renewal succeeded for
///    two thirds of the duration — before any follower can see the Lease
///    expire, since a follower's clock starts no earlier than the write.
/// 5. Step down: cancel the term, wait until its duties are drained, then
///    release the Lease (clear `holderIdentity`, on the version last
///    written) so that a follower takes over at its next read; go to 1.
#[derive(Debug)]
pub struct LeaseElection {
    api: Api<Lease>,
    session: SessionHandle,
    config: LeaseElectionConfig,
    terms: Terms,
}

impl LeaseElection {
    /// An election for `config.id`. Nothing happens until
    /// [`LeaseElection::run`].
    pub fn new(
        client: kube::Client,
        session: SessionHandle,
        config: LeaseElectionConfig,
        metrics: OperatorMetrics,
    ) -> (Self, LeaderHandle) {
        let (terms, handle) = Terms::new(&config.id, config.drain_timeout, metrics);
        let api = Api::namespaced(client, &config.namespace);
        (
            Self {
                api,
                session,
                config,
                terms,
            },
            handle,
        )
    }

    fn lease_name(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    /// Campaigns, leads and follows until `shutdown`; a leader releases the
    /// Lease on the way out, after its duties drained. Every failure is
    /// retried; the first one of a kind is logged, then each change.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let retry = self.config.retry_interval();
        let mut backoff = Backoff::new(retry, Duration::from_secs(5));
        let mut observed = Observed::default();
        let mut failing: Option<String> = None;
        loop {
            let session_lease = tokio::select! {
                _ = shutdown.cancelled() => return,
                lease = self.session.lease() => lease,
            };
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = tokio::time::timeout(retry.max(Duration::from_secs(1)), self.campaign(&mut observed)) => a,
            };
            let error = match attempt {
                Ok(Ok(attempt)) => {
                    if failing.take().is_some() {
                        info!(lease = %self.lease_name(), "the leader Lease is readable again");
                    }
                    backoff.reset();
                    match attempt {
                        Attempt::Acquired { lease, sent } => {
                            self.lead(*lease, sent, session_lease, &shutdown).await;
                            if shutdown.is_cancelled() {
                                return;
                            }
                            observed = Observed::default();
                        }
                        Attempt::Held { holder } => {
                            debug!(leader = %holder, "another operator holds the Lease; following");
                            self.terms.follow(Some(holder));
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                _ = tokio::time::sleep(retry) => {}
                            }
                        }
                        Attempt::Raced => {}
                    }
                    continue;
                }
                Ok(Err(e)) => error_chain(&e),
                Err(_) => format!("no answer within {:?}", retry.max(Duration::from_secs(1))),
            };
            if failing.as_deref() != Some(error.as_str()) {
                warn!(lease = %self.lease_name(), %error, "cannot read or take the leader Lease; retrying");
                failing = Some(error);
            }
            if !backoff.wait(&shutdown).await {
                return;
            }
        }
    }

    /// Reads the Lease and takes it if it is free.
    async fn campaign(&self, observed: &mut Observed) -> Result<Attempt, kube::Error> {
        let current = self.api.get_opt(&self.config.name).await?;
        let now = Instant::now();
        let decision = match &current {
            None => Decision::Acquire,
            Some(l) => decide(
                l,
                &self.config.id,
                observed.expired(l, self.config.duration, now),
            ),
        };
        if let Decision::Follow { holder } = decision {
            return Ok(Attempt::Held { holder });
        }
        let next = acquired(current.as_ref(), &self.config, Timestamp::now());
        let sent = Instant::now();
        let params = PostParams::default();
        let result = match &current {
            None => self.api.create(&params, &next).await,
            Some(_) => self.api.replace(&self.config.name, &params, &next).await,
        };
        match result {
            Ok(lease) => Ok(Attempt::Acquired {
                lease: Box::new(lease),
                sent,
            }),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Raced),
            Err(e) => Err(e),
        }
    }

    /// Leads until leadership is lost or `shutdown`, then steps down and
    /// releases the Lease.
    async fn lead(
        &mut self,
        lease: Lease,
        sent: Instant,
        session_lease: LeaseId,
        shutdown: &CancellationToken,
    ) {
        let term = self.terms.begin(session_lease, shutdown);
        info!(
            id = %self.config.id,
            lease = %self.lease_name(),
            session_lease = %session_lease,
            term = term.number(),
            "became leader"
        );
        let (reason, last) = self.hold(lease, sent, session_lease, shutdown).await;
        self.terms.end(term, reason, shutdown).await;
        self.release(last).await;
    }

    /// Renews the Lease; returns why leadership ended and the Lease as last
    /// written.
    async fn hold(
        &self,
        mut lease: Lease,
        mut renewed: Instant,
        session_lease: LeaseId,
        shutdown: &CancellationToken,
    ) -> (&'static str, Lease) {
        let mut session = self.session.subscribe();
        let mut next = renewed + self.config.renew_interval();
        loop {
            // Every wait ends by the deadline, so a hanging API server
            // cannot keep a leader from stepping down in time.
            let deadline = renewed + self.config.renew_deadline();
            if Instant::now() >= deadline {
                return ("the Lease could not be renewed in time", lease);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return ("shutdown", lease),
                r = session.changed() => {
                    if r.is_err() {
                        return ("shutdown", lease);
                    }
                    if session.borrow_and_update().lease != Some(session_lease) {
                        return ("the etcd session lease was lost", lease);
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(next.min(deadline)) => {}
            }
            let sent = Instant::now();
            if sent >= deadline {
                continue;
            }
            let bound = self
                .config
                .retry_interval()
                .max(Duration::from_secs(1))
                .min(deadline - sent);
            match tokio::time::timeout(bound, self.renew(&lease)).await {
                Ok(Ok(Renewal::Renewed(l))) => {
                    lease = l;
                    renewed = sent;
                    next = sent + self.config.renew_interval();
                }
                Ok(Ok(Renewal::Changed(l))) => {
                    debug!("the Lease changed under us and is still ours; renewing that version");
                    lease = l;
                    next = Instant::now();
                }
                Ok(Ok(Renewal::Lost)) => return ("the Lease was taken over", lease),
                Ok(Err(e)) => {
                    debug!(error = %error_chain(&e), "renewing the Lease failed; retrying");
                    next = Instant::now() + self.config.retry_interval();
                }
                Err(_) => {
                    debug!(timeout = ?bound, "renewing the Lease timed out; retrying");
                    next = Instant::now() + self.config.retry_interval();
                }
            }
        }
    }

    async fn renew(&self, lease: &Lease) -> Result<Renewal, kube::Error> {
        let mut next = lease.clone();
        let spec = next.spec.get_or_insert_with(Default::default);
        spec.holder_identity = Some(self.config.id.clone());
        spec.lease_duration_seconds = Some(self.config.duration_seconds());
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &next)
            .await
        {
            Ok(l) => Ok(Renewal::Renewed(l)),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                match self.api.get_opt(&self.config.name).await? {
                    Some(l) if holder(&l).as_deref() == Some(self.config.id.as_str()) => {
                        Ok(Renewal::Changed(l))
                    }
                    _ => Ok(Renewal::Lost),
                }
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Renewal::Lost),
            Err(e) => Err(e),
        }
    }

    /// Clears `holderIdentity` if the Lease is still the version we wrote
    /// last (best effort: otherwise it expires by itself).
    async fn release(&self, lease: Lease) {
        let mut next = lease;
        if let Some(spec) = next.spec.as_mut() {
            spec.holder_identity = None;
        }
        let timeout = self
            .config
            .duration
            .clamp(Duration::from_secs(1), Duration::from_secs(5));
        let params = PostParams::default();
        let write = self.api.replace(&self.config.name, &params, &next);
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(_)) => {
                info!(id = %self.config.id, lease = %self.lease_name(), "released the leader Lease")
            }
            Ok(Err(kube::Error::Api(s))) if s.code == 409 || s.code == 404 => {
                debug!("the Lease changed meanwhile; nothing to release")
            }
            Ok(Err(e)) => {
                debug!(error = %error_chain(&e), "releasing the Lease failed; it expires by itself")
            }
            Err(_) => debug!("releasing the Lease timed out; it expires by itself"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LeaseElectionConfig {
        LeaseElectionConfig::new("op-a", "kube-system", "l", Duration::from_secs(15))
    }

    fn lease(holder: Option<&str>, version: &str, transitions: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("l".into()),
                namespace: Some("kube-system".into()),
                resource_version: Some(version.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(Into::into),
                lease_duration_seconds: Some(15),
                lease_transitions: Some(transitions),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_lease_is_taken_when_free_ours_or_expired() {
        let id = "op-a";
        assert_eq!(decide(&lease(None, "1", 0), id, false), Decision::Acquire);
        assert_eq!(
            decide(&lease(Some(""), "1", 0), id, false),
            Decision::Acquire
        );
        assert_eq!(
            decide(&lease(Some(id), "1", 0), id, false),
            Decision::Acquire
        );
        assert_eq!(
            decide(&lease(Some("op-b"), "1", 0), id, false),
            Decision::Follow {
                holder: "op-b".into()
            }
        );
        assert_eq!(
            decide(&lease(Some("op-b"), "1", 0), id, true),
            Decision::Acquire
        );
    }

    #[test]
    fn expiry_counts_from_when_this_instance_saw_the_version() {
        let mut observed = Observed::default();
        let t0 = Instant::now();
        let d = Duration::from_secs(15);
        let l1 = lease(Some("op-b"), "1", 0);
        assert!(!observed.expired(&l1, d, t0));
        assert!(!observed.expired(&l1, d, t0 + Duration::from_secs(14)));
        // A renewal (new version) restarts the clock.
        let l2 = lease(Some("op-b"), "2", 0);
        assert!(!observed.expired(&l2, d, t0 + Duration::from_secs(14)));
        assert!(!observed.expired(&l2, d, t0 + Duration::from_secs(28)));
        assert!(observed.expired(&l2, d, t0 + Duration::from_secs(29)));
        // The Lease's own duration wins over the default.
        let mut short = lease(Some("op-b"), "3", 0);
        short.spec.as_mut().unwrap().lease_duration_seconds = Some(2);
        let t1 = t0 + Duration::from_secs(30);
        assert!(!observed.expired(&short, d, t1));
        assert!(observed.expired(&short, d, t1 + Duration::from_secs(2)));
    }

    #[test]
    fn acquiring_counts_transitions_and_keeps_the_version() {
        let c = config();
        let now = Timestamp::now();
        let fresh = acquired(None, &c, now);
        let spec = fresh.spec.as_ref().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("op-a"));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.acquire_time, Some(MicroTime(now)));
        assert_eq!(fresh.metadata.namespace.as_deref(), Some("kube-system"));

        let taken = acquired(Some(&lease(Some("op-b"), "7", 2)), &c, now);
        assert_eq!(taken.spec.as_ref().unwrap().lease_transitions, Some(3));
        assert_eq!(taken.metadata.resource_version.as_deref(), Some("7"));
        let released = acquired(Some(&lease(None, "8", 3)), &c, now);
        assert_eq!(released.spec.as_ref().unwrap().lease_transitions, Some(4));
        let ours = acquired(Some(&lease(Some("op-a"), "9", 4)), &c, now);
        assert_eq!(ours.spec.as_ref().unwrap().lease_transitions, Some(4));
    }

    #[test]
    fn timing_follows_the_duration() {
        let c = config();
        assert_eq!(c.renew_interval(), Duration::from_secs(5));
        assert_eq!(c.renew_deadline(), Duration::from_secs(10));
        assert!(c.renew_deadline() < c.duration);
        assert_eq!(c.duration_seconds(), 15);
    }
}
