use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::{
    backoff::Backoff,
    client::{Client, LeaseId},
    cluster::{ClusterId, MaxConnectedClusters},
    error::Error,
    identity::{IdentityRange, NumericIdentity},
    identity_cache::IdentityCache,
    keys,
    labels::Labels,
    prefix::KeyPrefix,
    session::SessionHandle,
};

/// Why an allocation failed.
#[derive(Debug, thiserror::Error)]
pub enum AllocatorError {
    #[error("identity range {range} of cluster {cluster} is exhausted ({used} identities in use)")]
    Exhausted {
        range: IdentityRange,
        cluster: ClusterId,
        used: usize,
    },
    #[error(
        "allocating an identity for {labels} kept conflicting; gave up after {attempts} attempts"
    )]
    TooManyAttempts { labels: String, attempts: u32 },
    #[error("cannot allocate an identity for an empty label set")]
    EmptyLabels,
    #[error("identity {id} is not held by this node for {labels}")]
    NotHeld { labels: String, id: NumericIdentity },
    #[error(transparent)]
    Etcd(#[from] Error),
}

/// Attempts before an allocation gives up, as Cilium: enough to outlast a
/// burst of nodes racing for the same labels.
const DEFAULT_MAX_ATTEMPTS: u32 = 16;

/// First delay after a lost race, as Cilium: about one etcd round trip, so
/// the winner's writes have settled.
const DEFAULT_MIN_BACKOFF: Duration = Duration::from_millis(20);

/// How often the keys of held identities are checked (master-key
/// protection): a deleted key is rare, and the check reads every one.
const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(300);

/// How often failed releases, and a re-creation of the identity keys after
/// a new session lease that did not complete, are retried: soon, since
/// writers of keys that name identities wait for the re-creation.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// How an [`Allocator`] runs.
#[derive(Debug, Clone)]
pub struct AllocatorConfig {
    pub cluster_id: ClusterId,
    pub mode: MaxConnectedClusters,
    /// This node's name in slave keys (`value/<labels>/<node>`); Cilium uses
    /// the node IP.
    pub node: String,
    /// Attempts before an allocation gives up. Default 16 (as Cilium).
    pub max_attempts: u32,
    /// First delay after a lost race; doubles. Default 20 ms (as Cilium).
    pub min_backoff: Duration,
    /// How often the allocator checks that the master and slave keys of every
    /// identity it holds exist (and re-creates them). Default 5 min.
    pub resync_interval: Duration,
    /// Allocate only in this part of the cluster's range (tests, or splitting
    /// a range). Default: the whole range.
    pub range: Option<IdentityRange>,
}

impl AllocatorConfig {
    pub fn new(cluster_id: ClusterId, mode: MaxConnectedClusters, node: impl Into<String>) -> Self {
        Self {
            cluster_id,
            mode,
            node: node.into(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            min_backoff: DEFAULT_MIN_BACKOFF,
            resync_interval: DEFAULT_RESYNC_INTERVAL,
            range: None,
        }
    }
}

/// The result of [`Allocator::allocate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    pub id: NumericIdentity,
    /// This call created the identity in etcd (no node had it).
    pub created: bool,
    /// This node already held it; no etcd round trip was made.
    pub cached: bool,
}

/// Counters of an [`Allocator`].
#[derive(Debug, Default)]
pub struct AllocatorStats {
    pub created: AtomicU64,
    pub attached: AtomicU64,
    pub cached: AtomicU64,
    pub released: AtomicU64,
    pub conflicts: AtomicU64,
    pub restored: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    id: NumericIdentity,
    refs: u64,
}

/// Allocates cluster-wide numeric identities for label sets, lock-free.
///
/// Keys (DESIGN §3): master `identities/v1/id/<ID>` → canonical labels (no
/// lease); slave `identities/v1/value/<labels>/<node>` → ID (on this node's
/// session lease). A label set is *in use* while it has slave keys.
///
/// Instead of Cilium's per-label-set etcd lock (several round trips per
/// allocation), every step is one etcd transaction whose comparisons keep the
/// invariants, so a new identity costs one round trip when nobody races
/// (each through [`Client::txn`], under the client's request deadline):
///
/// - **Create** with a free candidate `C` (random in the cluster's range,
///   avoiding IDs the watch-fed cache knows): *if* `id/C` does not exist *and*
///   no slave key exists under `value/<labels>/`, *then* put `id/C = labels`
///   and our slave `= C`; *else* read the first slave of `<labels>`.
/// - **Attach** to an existing `X` (from the cache or that read): *if*
///   `id/X == labels` *and* every slave of `<labels>` says `X`, put our slave.
/// - **Revive** `X` (a master with these labels but no slaves, waiting for
///   GC): *if* `id/X == labels` *and* no slave exists, put our slave.
///
/// Invariants: slaves of one label set always agree (a slave is only written
/// when all others say the same ID, or when there are none); a master maps to
/// one label set forever (created only if absent, and [`crate::IdentityGc`]
/// deletes it only in a transaction that checks no slave exists). Hence the
/// same labels get the same ID on every node and different labels different
/// IDs, under any interleaving. A transaction that loses a race retries with
/// the new facts it returned; attempts are bounded and back off.
///
/// Local references are counted: only the first `allocate` and the last
/// `release` of a label set on this node touch etcd.
pub struct Allocator {
    client: Client,
    session: SessionHandle,
    cache: IdentityCache,
    config: AllocatorConfig,
    range: IdentityRange,
    held: Mutex<HashMap<String, Held>>,
    /// Per-label-set serialization inside this process.
    label_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Candidates being tried by this process, and IDs found taken that the
    /// cache may not know yet.
    reserved: Mutex<HashSet<NumericIdentity>>,
    /// Label sets whose slave key deletion failed; retried by the runner.
    pending_release: Mutex<HashSet<String>>,
    /// The session generation whose lease holds every held identity's keys.
    restored: tokio::sync::watch::Sender<u64>,
    stats: AllocatorStats,
}

impl std::fmt::Debug for Allocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Allocator")
            .field("config", &self.config)
            .field("range", &self.range)
            .finish()
    }
}

/// Keeps an [`Allocator`]'s keys in etcd; see [`AllocatorRunner::run`].
#[derive(Debug)]
pub struct AllocatorRunner {
    allocator: Arc<Allocator>,
}

/// What a transaction told us about a label set.
enum Outcome {
    Done(NumericIdentity),
    /// Slaves exist and say this ID.
    HeldElsewhere(NumericIdentity),
    /// No slave exists.
    Unheld,
    /// The candidate ID is taken by another label set.
    CandidateTaken,
}

impl Allocator {
    /// An allocator for `config`'s cluster. `cache` must be the local
    /// cluster's [`IdentityCache`] (running); it steers ID choice away from
    /// IDs in use.
    pub fn new(
        client: Client,
        session: SessionHandle,
        cache: IdentityCache,
        config: AllocatorConfig,
    ) -> (Arc<Self>, AllocatorRunner) {
        let full = IdentityRange::allocation(config.cluster_id, config.mode);
        let range = match config.range {
            Some(r) => IdentityRange {
                min: r.min.clamp(full.min, full.max),
                max: r
                    .max
                    .clamp(full.min, full.max)
                    .max(r.min.clamp(full.min, full.max)),
            },
            None => full,
        };
        let allocator = Arc::new(Self {
            client,
            session,
            cache,
            config,
            range,
            held: Mutex::default(),
            label_locks: Mutex::default(),
            reserved: Mutex::default(),
            pending_release: Mutex::default(),
            restored: tokio::sync::watch::channel(0).0,
            stats: AllocatorStats::default(),
        });
        (allocator.clone(), AllocatorRunner { allocator })
    }

    /// Where this allocator hands out IDs.
    pub fn range(&self) -> IdentityRange {
        self.range
    }

    pub fn stats(&self) -> &AllocatorStats {
        &self.stats
    }

    /// The session generation up to which the keys of every identity this
    /// node holds have been (re-)created: after a lost lease or a wiped
    /// etcd, it reaches the new generation only once the identities exist
    /// again. Gate writers of keys that name identities on it
    /// ([`crate::SyncStoreConfig::after`]).
    pub fn restored(&self) -> tokio::sync::watch::Receiver<u64> {
        self.restored.subscribe()
    }

    /// The identity this node holds for `labels`, without touching etcd.
    pub fn held(&self, labels: &Labels) -> Option<NumericIdentity> {
        self.held
            .lock()
            .expect("allocator lock")
            .get(&labels.canonical())
            .map(|h| h.id)
    }

    /// Every identity this node holds, with its reference count.
    pub fn held_all(&self) -> Vec<(String, NumericIdentity, u64)> {
        let held = self.held.lock().expect("allocator lock");
        let mut all: Vec<_> = held
            .iter()
            .map(|(l, h)| (l.clone(), h.id, h.refs))
            .collect();
        all.sort_by_key(|(_, id, _)| *id);
        all
    }

    /// The identity of `labels`: the one the cluster already uses, or a new
    /// one. Takes a local reference; pair with [`Allocator::release`].
    pub async fn allocate(&self, labels: &Labels) -> Result<Allocation, AllocatorError> {
        if labels.is_empty() {
            return Err(AllocatorError::EmptyLabels);
        }
        let canonical = labels.canonical();
        if let Some(id) = self.take_ref(&canonical) {
            return Ok(Allocation {
                id,
                created: false,
                cached: true,
            });
        }
        let lock = self.label_lock(&canonical);
        let guard = lock.lock().await;
        // Another task may have allocated it while we waited.
        let result = match self.take_ref(&canonical) {
            Some(id) => Ok(Allocation {
                id,
                created: false,
                cached: true,
            }),
            None => {
                let lease = self.session.lease().await;
                self.acquire(&canonical, lease, None)
                    .await
                    .map(|(id, created)| {
                        self.held
                            .lock()
                            .expect("allocator lock")
                            .insert(canonical.clone(), Held { id, refs: 1 });
                        Allocation {
                            id,
                            created,
                            cached: false,
                        }
                    })
            }
        };
        drop(guard);
        self.drop_label_lock(&canonical, lock);
        result
    }

    /// Drops a local reference; the last one deletes this node's slave key.
    /// Returns whether it was the last reference.
    pub async fn release(&self, labels: &Labels) -> Result<bool, AllocatorError> {
        let canonical = labels.canonical();
        let lock = self.label_lock(&canonical);
        let guard = lock.lock().await;
        let last = {
            let mut held = self.held.lock().expect("allocator lock");
            match held.get_mut(&canonical) {
                Some(h) if h.refs > 1 => {
                    h.refs -= 1;
                    false
                }
                Some(_) => {
                    held.remove(&canonical);
                    true
                }
                None => {
                    drop(held);
                    drop(guard);
                    self.drop_label_lock(&canonical, lock);
                    return Ok(false);
                }
            }
        };
        let mut result = Ok(last);
        if last {
            self.stats.released.fetch_add(1, Ordering::Relaxed);
            let slave = self.slave_key(&canonical);
            if let Err(e) = self.client.delete(&slave).await {
                warn!(slave, error = %e.full_message(), "releasing an identity failed; will retry");
                self.pending_release
                    .lock()
                    .expect("allocator lock")
                    .insert(canonical.clone());
                result = Err(e.into());
            }
        }
        drop(guard);
        self.drop_label_lock(&canonical, lock);
        result
    }

    fn take_ref(&self, canonical: &str) -> Option<NumericIdentity> {
        let mut held = self.held.lock().expect("allocator lock");
        let h = held.get_mut(canonical)?;
        h.refs += 1;
        self.stats.cached.fetch_add(1, Ordering::Relaxed);
        Some(h.id)
    }

    fn label_lock(&self, canonical: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.label_locks
            .lock()
            .expect("allocator lock")
            .entry(canonical.to_string())
            .or_default()
            .clone()
    }

    fn drop_label_lock(&self, canonical: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self.label_locks.lock().expect("allocator lock");
        drop(lock);
        if locks
            .get(canonical)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(canonical);
        }
    }

    fn slave_key(&self, canonical: &str) -> String {
        keys::identity_slaves_of(canonical).key(&self.config.node)
    }

    /// Makes this node hold an identity for `canonical` in etcd; `prefer` is
    /// the ID it held before (resync). Returns the ID and whether it was created.
    async fn acquire(
        &self,
        canonical: &str,
        lease: LeaseId,
        prefer: Option<NumericIdentity>,
    ) -> Result<(NumericIdentity, bool), AllocatorError> {
        let mut backoff = Backoff::new(self.config.min_backoff, self.config.min_backoff * 64);
        // Start from what we know: our previous ID, or the cache's.
        let mut target = prefer.or_else(|| self.cache.lookup_canonical(canonical));
        // When nobody holds it any more (the etcd lost its data), re-create
        // our previous ID rather than a random one: the ipcache entries and
        // policies that name it stay right.
        let mut recreate = prefer;
        for attempt in 1..=self.config.max_attempts {
            let outcome = match target.take() {
                Some(id) => self.attach(canonical, id, lease).await?,
                None => {
                    let candidate = match recreate.take() {
                        Some(id) => {
                            self.reserved.lock().expect("allocator lock").insert(id);
                            id
                        }
                        None => self.pick_candidate()?,
                    };
                    let outcome = self.create(canonical, candidate, lease).await;
                    self.reserved
                        .lock()
                        .expect("allocator lock")
                        .remove(&candidate);
                    match outcome? {
                        Outcome::Done(id) => {
                            self.stats.created.fetch_add(1, Ordering::Relaxed);
                            debug!(labels = canonical, %id, attempt, "created identity");
                            return Ok((id, true));
                        }
                        Outcome::CandidateTaken => {
                            // The cache lagged; avoid the ID until it catches up.
                            self.reserved
                                .lock()
                                .expect("allocator lock")
                                .insert(candidate);
                            self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        other => other,
                    }
                }
            };
            match outcome {
                Outcome::Done(id) => {
                    self.stats.attached.fetch_add(1, Ordering::Relaxed);
                    return Ok((id, false));
                }
                Outcome::HeldElsewhere(id) => target = Some(id),
                Outcome::Unheld => target = None,
                Outcome::CandidateTaken => {}
            }
            // Lost a race: let the winner's writes settle before retrying.
            self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
            if attempt > 1 {
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        Err(AllocatorError::TooManyAttempts {
            labels: canonical.to_string(),
            attempts: self.config.max_attempts,
        })
    }

    /// One transaction: create master `candidate` and our slave, if neither
    /// the ID nor the labels are taken.
    async fn create(
        &self,
        canonical: &str,
        candidate: NumericIdentity,
        lease: LeaseId,
    ) -> Result<Outcome, Error> {
        let master = keys::identity_master(candidate);
        let slaves = keys::identity_slaves_of(canonical);
        let txn = Txn::new()
            .when([
                Compare::create_revision(master.clone(), CompareOp::Equal, 0),
                no_slaves(&slaves),
            ])
            .and_then([
                TxnOp::put(master, canonical, None),
                TxnOp::put(
                    slaves.key(&self.config.node),
                    candidate.to_string(),
                    Some(PutOptions::new().with_lease(lease.0)),
                ),
            ])
            .or_else([first_slave(&slaves)]);
        self.step(
            "create identity",
            canonical,
            txn,
            candidate,
            Outcome::CandidateTaken,
        )
        .await
    }

    /// One or two transactions: put our slave for `id` if master `id` holds
    /// these labels and every slave agrees (or, failing that, none exists).
    async fn attach(
        &self,
        canonical: &str,
        id: NumericIdentity,
        lease: LeaseId,
    ) -> Result<Outcome, Error> {
        let master = keys::identity_master(id);
        let slaves = keys::identity_slaves_of(canonical);
        let put_slave = || {
            TxnOp::put(
                slaves.key(&self.config.node),
                id.to_string(),
                Some(PutOptions::new().with_lease(lease.0)),
            )
        };
        let agree = Txn::new()
            .when([
                Compare::value(master.clone(), CompareOp::Equal, canonical),
                Compare::value(slaves.as_str(), CompareOp::Equal, id.to_string())
                    .with_range(slaves.range_end()),
            ])
            .and_then([put_slave()])
            .or_else([first_slave(&slaves)]);
        let resp = self.client.txn("attach identity", canonical, agree).await?;
        if resp.succeeded() {
            return Ok(Outcome::Done(id));
        }
        match first_slave_id(&resp) {
            Some(other) if other != id => return Ok(Outcome::HeldElsewhere(other)),
            Some(_) => {
                // Slaves agree on `id` but its master is gone (deleted behind
                // our back): master-key protection re-creates it, then retry.
                let txn = Txn::new()
                    .when([Compare::create_revision(
                        master.clone(),
                        CompareOp::Equal,
                        0,
                    )])
                    .and_then([TxnOp::put(master, canonical, None)]);
                if self
                    .client
                    .txn("restore identity", canonical, txn)
                    .await?
                    .succeeded()
                {
                    info!(labels = canonical, %id, "re-created a deleted identity master key");
                    self.stats.restored.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(Outcome::HeldElsewhere(id));
            }
            None => {}
        }
        // No slave exists: revive the master if it still holds these labels.
        let revive = Txn::new()
            .when([
                Compare::value(master, CompareOp::Equal, canonical),
                no_slaves(&slaves),
            ])
            .and_then([put_slave()])
            .or_else([first_slave(&slaves)]);
        self.step("revive identity", canonical, revive, id, Outcome::Unheld)
            .await
    }

    /// Runs a transaction whose success makes this node hold `id` and whose
    /// failure reads the first slave: `Done(id)`, else the ID that slave
    /// holds, else `no_slave`.
    async fn step(
        &self,
        op: &'static str,
        canonical: &str,
        txn: Txn,
        id: NumericIdentity,
        no_slave: Outcome,
    ) -> Result<Outcome, Error> {
        let resp = self.client.txn(op, canonical, txn).await?;
        if resp.succeeded() {
            return Ok(Outcome::Done(id));
        }
        Ok(first_slave_id(&resp).map_or(no_slave, Outcome::HeldElsewhere))
    }

    /// A random ID of the range that neither the cache nor this process
    /// knows to be in use.
    fn pick_candidate(&self) -> Result<NumericIdentity, AllocatorError> {
        let mut reserved = self.reserved.lock().expect("allocator lock");
        let free = |id: NumericIdentity| !reserved.contains(&id) && !self.cache.contains(id);
        let mut rng = rand::rng();
        for _ in 0..32 {
            let id = NumericIdentity::new(rng.random_range(self.range.min..=self.range.max));
            if free(id) {
                reserved.insert(id);
                return Ok(id);
            }
        }
        // Dense range: scan from a random start.
        let start = rng.random_range(self.range.min..=self.range.max);
        let found = (start..=self.range.max)
            .chain(self.range.min..start)
            .map(NumericIdentity::new)
            .find(|id| free(*id));
        match found {
            Some(id) => {
                reserved.insert(id);
                Ok(id)
            }
            None => Err(AllocatorError::Exhausted {
                range: self.range,
                cluster: self.config.cluster_id,
                used: self.cache.count_in(self.range),
            }),
        }
    }

    /// Re-creates the keys of every held identity (after a new session lease,
    /// and periodically: master-key protection). An identity whose master now
    /// belongs to other labels is re-allocated and reported. Returns whether
    /// every held identity's keys exist now.
    async fn resync(&self) -> bool {
        let lease = self.session.lease().await;
        let held: Vec<(String, NumericIdentity)> = self
            .held
            .lock()
            .expect("allocator lock")
            .iter()
            .map(|(l, h)| (l.clone(), h.id))
            .collect();
        let mut complete = true;
        for (canonical, id) in held {
            let lock = self.label_lock(&canonical);
            let guard = lock.lock().await;
            let still_held = self
                .held
                .lock()
                .expect("allocator lock")
                .get(&canonical)
                .map(|h| h.id)
                == Some(id);
            if still_held {
                match self.restore(&canonical, id, lease).await {
                    Ok(new_id) if new_id != id => {
                        error!(labels = canonical, old = %id, new = %new_id, "identity changed while the node held it; endpoints must be updated");
                        if let Some(h) = self
                            .held
                            .lock()
                            .expect("allocator lock")
                            .get_mut(&canonical)
                        {
                            h.id = new_id;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        complete = false;
                        warn!(labels = canonical, error = %e, "re-creating identity keys failed; will retry")
                    }
                }
            }
            drop(guard);
            self.drop_label_lock(&canonical, lock);
        }
        complete
    }

    /// Makes sure master and slave of a held identity exist (attaching
    /// re-creates a missing master).
    async fn restore(
        &self,
        canonical: &str,
        id: NumericIdentity,
        lease: LeaseId,
    ) -> Result<NumericIdentity, AllocatorError> {
        let (new_id, _) = self.acquire(canonical, lease, Some(id)).await?;
        Ok(new_id)
    }

    async fn retry_releases(&self) {
        let pending: Vec<String> = self
            .pending_release
            .lock()
            .expect("allocator lock")
            .iter()
            .cloned()
            .collect();
        for canonical in pending {
            let lock = self.label_lock(&canonical);
            let guard = lock.lock().await;
            // Not if the label set was allocated again meanwhile.
            let done = self
                .held
                .lock()
                .expect("allocator lock")
                .contains_key(&canonical)
                || self
                    .client
                    .delete(&self.slave_key(&canonical))
                    .await
                    .is_ok();
            if done {
                self.pending_release
                    .lock()
                    .expect("allocator lock")
                    .remove(&canonical);
            }
            drop(guard);
            self.drop_label_lock(&canonical, lock);
        }
    }
}

impl AllocatorRunner {
    /// Re-creates the node's identity keys on every new session lease and
    /// every `resync_interval`, and retries failed releases, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let a = &self.allocator;
        let mut session = a.session.subscribe();
        let mut generation = session.borrow_and_update().generation;
        // Keys written so far are on the current lease.
        a.restored.send_replace(generation);
        let mut restoring: Option<u64> = None;
        let mut tick = tokio::time::interval(a.config.resync_interval);
        tick.tick().await;
        let mut retry = tokio::time::interval(RETRY_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                changed = session.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let state = *session.borrow_and_update();
                    if state.lease.is_some() && state.generation != generation {
                        generation = state.generation;
                        restoring = Some(generation);
                        if generation > 1 {
                            info!("new session lease; re-creating identity keys");
                        }
                        if generation <= 1 || a.resync().await {
                            a.restored.send_replace(generation);
                            restoring = None;
                        }
                    }
                }
                _ = tick.tick() => {
                    a.resync().await;
                }
                _ = retry.tick() => {
                    if !a.pending_release.lock().expect("allocator lock").is_empty() {
                        a.retry_releases().await;
                    }
                    // Writers gated on the restore wait until it is complete.
                    if let Some(generation) = restoring
                        && a.resync().await
                    {
                        a.restored.send_replace(generation);
                        restoring = None;
                    }
                }
            }
        }
    }
}

/// Compare: no key exists under `slaves`.
pub(crate) fn no_slaves(slaves: &KeyPrefix) -> Compare {
    Compare::create_revision(slaves.as_str(), CompareOp::Equal, 0).with_range(slaves.range_end())
}

/// Read the first slave key under `slaves`.
fn first_slave(slaves: &KeyPrefix) -> TxnOp {
    TxnOp::get(
        slaves.as_str(),
        Some(
            GetOptions::new()
                .with_range(slaves.range_end())
                .with_limit(1),
        ),
    )
}

/// The ID in the first slave returned by a failed transaction's `first_slave`.
fn first_slave_id(resp: &etcd_client::TxnResponse) -> Option<NumericIdentity> {
    resp.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get
            .kvs()
            .first()
            .and_then(|kv| std::str::from_utf8(kv.value()).ok()?.parse().ok()),
        _ => None,
    })
}
