use std::{
    collections::{BTreeMap, HashMap, HashSet},
    hash::{DefaultHasher, Hash, Hasher},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use etcd_client::{EventType, WatchOptions};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    backoff::{Backoff, ETCD_RETRY_MAX, ETCD_RETRY_MIN},
    client::Client,
    error::{Error, ErrorKind},
    list_budget::ListBudget,
    prefix::KeyPrefix,
    short_key::ShortKey,
    tick_grid::on_grid,
    value::{DecodeError, InvalidReason, StoreValue},
};

/// What a [`WatchStore`] reports. Keys are relative to the store's prefix.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<V> {
    /// The key was created or its value changed.
    Upsert { key: String, value: V },
    /// The key is gone (deleted, expired, vanished while disconnected, or its
    /// new value is invalid).
    Delete { key: String },
    /// The initial list is complete: the consumer has seen every key that
    /// exists. Sent once per connection: once by a [`WatchStore`], after the
    /// first list of every [`RestartableWatchStore::watch`].
    Synced,
}

/// Checks a decoded value against what the consumer knows (e.g. that a remote
/// cluster's identity is in its range). A refusal is treated like a value that
/// failed to decode.
pub type Validator<V> = Arc<dyn Fn(&str, &V) -> Result<(), DecodeError> + Send + Sync>;

/// How a [`WatchStore`] runs.
#[derive(Debug, Clone)]
pub struct WatchStoreConfig {
    /// What to watch.
    pub prefix: KeyPrefix,
    /// What reported keys are relative to: `prefix` itself (the default) or
    /// a shorter prefix of it, so that the same entries read from two
    /// places (a remote's `cilium/state/nodes/v1/<c>/` and kvstoremesh's
    /// `cilium/cache/nodes/v1/<c>/`, both relative to their `…/nodes/v1/`)
    /// have the same keys.
    pub relative_to: Option<KeyPrefix>,
    /// Full key of a canary to wait for before the first list (the writer's
    /// "initial sync done" mark). Default: none.
    pub canary: Option<String>,
    /// Keys of the first page of a list (later pages grow to about 8 MiB;
    /// see [`crate::Pager`]). Default 5,000.
    pub page_size: usize,
    /// Events buffered for a slow consumer before the store waits. Default 4,096.
    pub channel_capacity: usize,
    /// Retry delays after a failure: from 100 ms, doubling, up to 5 s.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// A watch that received nothing for this long asks etcd for its
    /// progress; default 30 s. (etcd 3.4 sends progress notifications on its
    /// own only every 10 minutes.)
    pub progress_after: Duration,
    /// A progress request not answered within this is taken for a dead
    /// stream (a member or proxy that hangs without closing the
    /// connection): the watch resumes, on another member if there are
    /// several. Default 10 s.
    pub progress_timeout: Duration,
    /// Name for logs (e.g. `c2/ipcache`). Default: the prefix.
    pub name: String,
    /// When the etcd behind the store lost its data (its revision went
    /// backwards, or another etcd cluster answers), the entries the new
    /// list lacks stay delivered instead of being deleted: no
    /// [`Event::Delete`] is sent for them (counted by
    /// [`WatchStoreStats::kept_after_data_loss`]); only a watched delete
    /// removes them. For state that the consumer can put back (see
    /// [`WatchStoreStats::data_losses`]). Default: off (they are deleted).
    pub keep_on_data_loss: bool,
    /// Changed when the server is known to answer again (a probe of it
    /// did): a store waiting out its backoff after a failure retries at
    /// once instead of up to [`WatchStoreConfig::max_backoff`] later. A
    /// change since the failed attempt started counts. Default: none.
    pub retry_now: Option<watch::Receiver<u64>>,
    /// Room for list pages shared with other stores: a list reads its next
    /// page while delivering the current one only while the budget has
    /// room (see [`ListBudget`]). Default: none (always reads ahead).
    pub list_budget: Option<ListBudget>,
}

/// Keys per page of a list: large enough that a 100k-entry list takes 20
/// round trips, small enough that one page's values stay a few megabytes.
const PAGE_SIZE: usize = 5_000;
/// Events buffered for a slow consumer: about one page's worth of changes
/// before the store waits (and stops reading etcd).
const CHANNEL_CAPACITY: usize = 4_096;
/// Default [`WatchStoreConfig::progress_after`].
const PROGRESS_AFTER: Duration = Duration::from_secs(30);
/// Default [`WatchStoreConfig::progress_timeout`]: etcd answers a progress
/// request at once; 10 s rides out a busy server.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(10);
/// The most keys a list makes room for up front, whatever the server
/// counts (a remote's answer is not trusted with the agent's memory).
const RESERVE_MAX: usize = 1 << 20;
/// Progress requests of quiet watches go out on a grid whose step is this
/// fraction of [`WatchStoreConfig::progress_after`] (1 s for the default
/// 30 s), so that those of many watches share a wakeup ([`on_grid`]).
const PROGRESS_GRID_DIVISOR: u32 = 30;
/// The `watch_id` of etcd's answers to a progress request: they are for
/// the whole stream.
const STREAM_WATCH_ID: i64 = -1;

impl WatchStoreConfig {
    pub fn new(prefix: KeyPrefix) -> Self {
        Self {
            name: prefix.to_string(),
            prefix,
            relative_to: None,
            canary: None,
            page_size: PAGE_SIZE,
            channel_capacity: CHANNEL_CAPACITY,
            min_backoff: ETCD_RETRY_MIN,
            max_backoff: ETCD_RETRY_MAX,
            progress_after: PROGRESS_AFTER,
            progress_timeout: PROGRESS_TIMEOUT,
            keep_on_data_loss: false,
            retry_now: None,
            list_budget: None,
        }
    }

    /// Sets [`WatchStoreConfig::list_budget`].
    pub fn with_list_budget(mut self, budget: ListBudget) -> Self {
        self.list_budget = Some(budget);
        self
    }

    /// Sets [`WatchStoreConfig::retry_now`].
    pub fn with_retry_signal(mut self, retry_now: watch::Receiver<u64>) -> Self {
        self.retry_now = Some(retry_now);
        self
    }

    /// Sets [`WatchStoreConfig::keep_on_data_loss`].
    pub fn keeping_entries_on_data_loss(mut self) -> Self {
        self.keep_on_data_loss = true;
        self
    }

    pub fn with_canary(mut self, canary: impl Into<String>) -> Self {
        self.canary = Some(canary.into());
        self
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Reports keys relative to `base`, a prefix of [`WatchStoreConfig::prefix`]
    /// (see [`WatchStoreConfig::relative_to`]).
    pub fn relative_to(mut self, base: KeyPrefix) -> Self {
        debug_assert!(self.prefix.as_str().starts_with(base.as_str()));
        self.relative_to = Some(base);
        self
    }

    /// The key reported for a full etcd key, if it is under the prefix.
    fn relative<'a>(&self, full_key: &'a str) -> Option<&'a str> {
        self.prefix.strip(full_key)?;
        self.relative_to
            .as_ref()
            .unwrap_or(&self.prefix)
            .strip(full_key)
    }
}

/// Counters of a [`WatchStore`], readable while it runs (status, metrics).
#[derive(Debug, Default)]
pub struct WatchStoreStats {
    entries: AtomicU64,
    upserts: AtomicU64,
    deletes: AtomicU64,
    invalid: AtomicU64,
    lists: AtomicU64,
    watch_starts: AtomicU64,
    errors: AtomicU64,
    progress_requests: AtomicU64,
    revision: AtomicI64,
    synced: AtomicBool,
    watching: AtomicBool,
    waiting_for_canary: AtomicBool,
    invalid_by_reason: Mutex<BTreeMap<InvalidReason, u64>>,
    last_error: Mutex<Option<(ErrorKind, String)>>,
    kept_after_data_loss: AtomicU64,
    /// Data losses noticed, counted once their list is done.
    data_losses: watch::Sender<u64>,
}

impl WatchStoreStats {
    /// Valid keys currently known.
    pub fn entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }
    /// Upsert events emitted.
    pub fn upserts(&self) -> u64 {
        self.upserts.load(Ordering::Relaxed)
    }
    /// Delete events emitted.
    pub fn deletes(&self) -> u64 {
        self.deletes.load(Ordering::Relaxed)
    }
    /// Values skipped because they failed to decode or validate.
    pub fn invalid(&self) -> u64 {
        self.invalid.load(Ordering::Relaxed)
    }
    /// Invalid values by reason.
    pub fn invalid_by_reason(&self) -> BTreeMap<InvalidReason, u64> {
        self.invalid_by_reason.lock().expect("stats lock").clone()
    }
    /// Full lists done (1 + re-lists after compaction or data loss).
    pub fn lists(&self) -> u64 {
        self.lists.load(Ordering::Relaxed)
    }
    /// Watches started (1 + resumes after breaks).
    pub fn watch_starts(&self) -> u64 {
        self.watch_starts.load(Ordering::Relaxed)
    }
    /// Failures (each followed by a retry).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
    /// Progress requests sent after quiet periods (each either answered or
    /// followed by a resume).
    pub fn progress_requests(&self) -> u64 {
        self.progress_requests.load(Ordering::Relaxed)
    }
    /// Revision the store has seen everything up to.
    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::Relaxed)
    }
    /// Whether the initial list completed.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }
    /// Whether a watch is established right now.
    pub fn is_watching(&self) -> bool {
        self.watching.load(Ordering::Relaxed)
    }
    /// Whether the store is waiting for its canary before the first list.
    pub fn is_waiting_for_canary(&self) -> bool {
        self.waiting_for_canary.load(Ordering::Relaxed)
    }
    /// The last failure, if any, with its class.
    pub fn last_error(&self) -> Option<(ErrorKind, String)> {
        self.last_error.lock().expect("stats lock").clone()
    }
    /// Entries kept although the list after a data loss lacked them
    /// ([`WatchStoreConfig::keep_on_data_loss`]).
    pub fn kept_after_data_loss(&self) -> u64 {
        self.kept_after_data_loss.load(Ordering::Relaxed)
    }
    /// Times the etcd behind the store lost its data (revision gone
    /// backwards, or another etcd cluster answering). The receiver sees
    /// each one once the list that follows it is delivered.
    pub fn data_losses(&self) -> watch::Receiver<u64> {
        self.data_losses.subscribe()
    }
}

/// List-then-watch of one prefix over one client, delivering typed events
/// in order: a [`RestartableWatchStore`] bound to a client for its lifetime.
///
/// Algorithm:
/// 1. Optionally wait for the canary key.
/// 2. List the prefix at one revision `R` (paginated). For each key, emit
///    `Upsert` unless the consumer already has that exact value; afterwards
///    emit `Delete` for every key the consumer has that the list did not
///    contain (mark and sweep), then `Synced` the first time.
/// 3. Watch from `R + 1` and emit each change, remembering the last revision.
/// 4. When the watch breaks (network error, etcd restart), resume from the
///    last revision + 1: nothing is missed and nothing repeated. When that
///    revision was compacted, or the etcd behind the endpoint lost its data
///    (cluster ID changed, or any response's revision is below one already
///    seen), go back to 2: the re-list's sweep leaves exactly what exists.
///
/// The store remembers a hash of every valid value it delivered, so a re-list
/// emits only real changes. Values that fail to decode (or that the
/// [`Validator`] refuses) are skipped, counted by reason and logged once per
/// key; a key whose new value is invalid is reported deleted.
pub struct WatchStore<V> {
    client: Client,
    inner: RestartableWatchStore<V>,
}

impl<V> std::fmt::Debug for WatchStore<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStore")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl<V: StoreValue> WatchStore<V> {
    /// A store and the receiver of its events. Nothing happens until
    /// [`WatchStore::run`].
    pub fn new(client: Client, config: WatchStoreConfig) -> (Self, mpsc::Receiver<Event<V>>) {
        let (inner, rx) = RestartableWatchStore::new(config);
        (Self { client, inner }, rx)
    }

    /// Adds a check that every decoded value must pass.
    pub fn with_validator(self, validator: Validator<V>) -> Self {
        Self {
            inner: self.inner.with_validator(validator),
            ..self
        }
    }

    /// Counters, shared with the running store.
    pub fn stats(&self) -> Arc<WatchStoreStats> {
        self.inner.stats()
    }

    /// Runs until `shutdown` or until the receiver is dropped. Failures are
    /// retried forever with backoff; they are visible in [`WatchStoreStats`].
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), Error> {
        self.inner.watch(&self.client, &shutdown).await;
        Ok(())
    }
}

/// A [`WatchStore`] that outlives its connections, as Cilium's
/// `restartableWatchStore` (`pkg/kvstore/store/watchstore.go`) and
/// kube-runtime's watcher (`Init`, `InitApply`, `InitDone`): for a remote
/// cluster that is reached through one client after another.
///
/// Each [`RestartableWatchStore::watch`] lists again, and what the consumer
/// received from an earlier connection is marked stale: the list re-delivers
/// only what changed, and once it is complete the keys it did not contain
/// are deleted. The consumer sees exactly the difference between what it has
/// and what exists; it never tracks staleness itself.
/// [`RestartableWatchStore::drain`] deletes everything (the source is gone).
///
/// Not for: more than one connection at a time (`watch` takes `&mut self`).
pub struct RestartableWatchStore<V> {
    config: WatchStoreConfig,
    tx: mpsc::Sender<Event<V>>,
    validator: Option<Validator<V>>,
    stats: Arc<WatchStoreStats>,
    state: State,
}

impl<V> std::fmt::Debug for RestartableWatchStore<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestartableWatchStore")
            .field("config", &self.config)
            .field("known", &self.state.known.len())
            .finish()
    }
}

/// What the store remembers between list and watch cycles.
#[derive(Default)]
struct State {
    /// Valid keys delivered to the consumer → what was delivered. Compact:
    /// a remote cluster's store holds one per entry (32 bytes).
    known: HashMap<ShortKey, Seen>,
    /// Keys with an invalid value that were already logged.
    logged_invalid: HashSet<String>,
    /// Everything up to this revision has been delivered.
    revision: i64,
    /// etcd cluster ID of the data delivered.
    cluster_id: u64,
    /// The mark of the current (or last) list: lists alternate marks, and
    /// the entries without the current one after a list were not in it.
    mark: bool,
    /// A list started and did not finish: the marks of its entries are
    /// mixed.
    list_open: bool,
    need_list: bool,
    canary_seen: bool,
    synced: bool,
    /// The next list decodes and validates even the values the consumer
    /// already has (a new connection may come with a new validator).
    revalidate: bool,
    /// The next list follows a data loss.
    after_data_loss: bool,
}

/// Why a cycle ended without an error.
enum Flow {
    /// The consumer went away.
    Stop,
    /// The watch cannot resume (compaction): list again at once.
    Relist,
}

impl<V: StoreValue> RestartableWatchStore<V> {
    /// A store and the receiver of its events. Nothing happens until
    /// [`RestartableWatchStore::watch`].
    pub fn new(config: WatchStoreConfig) -> (Self, mpsc::Receiver<Event<V>>) {
        let (tx, rx) = mpsc::channel(config.channel_capacity.max(1));
        (
            Self {
                config,
                tx,
                validator: None,
                stats: Arc::default(),
                state: State::default(),
            },
            rx,
        )
    }

    /// Adds a check that every decoded value must pass.
    pub fn with_validator(mut self, validator: Validator<V>) -> Self {
        self.validator = Some(validator);
        self
    }

    /// Replaces the check for the next connection (whose list then judges
    /// every value again).
    pub fn set_validator(&mut self, validator: Validator<V>) {
        self.validator = Some(validator);
    }

    /// Sets the canary the next connection waits for before it lists (the
    /// writer's "initial sync done" mark; `None`: list at once).
    pub fn set_canary(&mut self, canary: Option<String>) {
        self.config.canary = canary;
    }

    /// Reads from another prefix from the next connection on (with keys
    /// relative to `relative_to`, or to `prefix` itself). The consumer's
    /// keys carry over: the next list delivers only what differs, so the
    /// same entries read from a new place change nothing.
    pub fn set_prefix(&mut self, prefix: KeyPrefix, relative_to: Option<KeyPrefix>) {
        self.config.prefix = prefix;
        self.config.relative_to = relative_to;
    }

    /// Counters, shared with the running store. Invalid values are counted
    /// per connection (each list judges every value again).
    pub fn stats(&self) -> Arc<WatchStoreStats> {
        self.stats.clone()
    }

    /// Lists and watches through `client` until `shutdown` or until the
    /// receiver is dropped. Failures are retried forever with backoff; they
    /// are visible in [`WatchStoreStats`]. The list at the start deletes
    /// what an earlier connection delivered and this one does not.
    pub async fn watch(&mut self, client: &Client, shutdown: &CancellationToken) {
        let st = &mut self.state;
        st.need_list = true;
        st.canary_seen = false;
        st.revalidate = !st.known.is_empty();
        st.synced = false;
        self.stats.synced.store(false, Ordering::Relaxed);
        self.stats
            .invalid_by_reason
            .lock()
            .expect("stats lock")
            .clear();
        let mut backoff = Backoff::new(self.config.min_backoff, self.config.max_backoff);
        let session = Session {
            client,
            config: &self.config,
            tx: &self.tx,
            validator: self.validator.as_ref(),
            stats: &self.stats,
        };
        loop {
            // Only a retry signal from now on counts for this attempt.
            let mut retry_now = self.config.retry_now.clone();
            if let Some(signal) = &mut retry_now {
                signal.borrow_and_update();
            }
            let result = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = session.cycle(&mut self.state, &mut backoff) => r,
            };
            self.stats.watching.store(false, Ordering::Relaxed);
            match result {
                Ok(Flow::Stop) => break,
                Ok(Flow::Relist) => self.state.need_list = true,
                Err(e) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    let message = e.full_message();
                    warn!(store = %self.config.name, error = %message, "watch store interrupted; retrying");
                    *self.stats.last_error.lock().expect("stats lock") = Some((e.kind(), message));
                    let waited = tokio::select! {
                        waited = backoff.wait(shutdown) => waited,
                        () = signalled(&mut retry_now) => {
                            debug!(store = %self.config.name, "the server answers again; retrying now");
                            true
                        }
                    };
                    if !waited {
                        break;
                    }
                }
            }
        }
        self.stats.watching.store(false, Ordering::Relaxed);
    }

    /// Deletes everything the consumer received (its source is gone, or
    /// its data may no longer stand); a later [`RestartableWatchStore::watch`]
    /// delivers what exists from scratch. Only between connections.
    pub async fn drain(&mut self) {
        let known = std::mem::take(&mut self.state);
        self.stats.entries.store(0, Ordering::Relaxed);
        self.stats.synced.store(false, Ordering::Relaxed);
        self.stats.revision.store(0, Ordering::Relaxed);
        debug!(store = %self.config.name, entries = known.known.len(), "draining");
        for key in known.known.into_keys() {
            self.stats.deletes.fetch_add(1, Ordering::Relaxed);
            let event = Event::Delete {
                key: key.as_str().to_string(),
            };
            if self.tx.send(event).await.is_err() {
                return;
            }
        }
    }
}

/// Resolves when `signal` changes (never without one, or once its sender
/// is gone).
async fn signalled(signal: &mut Option<watch::Receiver<u64>>) {
    let changed = match signal {
        Some(signal) => signal.changed().await.is_ok(),
        None => false,
    };
    if !changed {
        std::future::pending::<()>().await;
    }
}

/// One connection of a store: what a list-and-watch cycle reads.
struct Session<'a, V> {
    client: &'a Client,
    config: &'a WatchStoreConfig,
    tx: &'a mpsc::Sender<Event<V>>,
    validator: Option<&'a Validator<V>>,
    stats: &'a WatchStoreStats,
}

impl<V: StoreValue> Session<'_, V> {
    async fn cycle(&self, st: &mut State, backoff: &mut Backoff) -> Result<Flow, Error> {
        if !st.canary_seen {
            if let Some(canary) = &self.config.canary {
                self.stats.waiting_for_canary.store(true, Ordering::Relaxed);
                self.wait_for_key(canary).await?;
                self.stats
                    .waiting_for_canary
                    .store(false, Ordering::Relaxed);
            }
            st.canary_seen = true;
        }
        if st.need_list {
            if self.list(st).await?.is_some() {
                return Ok(Flow::Stop);
            }
            st.need_list = false;
            backoff.reset();
        }
        self.watch(st, backoff).await
    }

    /// Waits until `key` exists.
    async fn wait_for_key(&self, key: &str) -> Result<(), Error> {
        let (kv, revision) = self.client.get_at(key).await?;
        if kv.is_some() {
            return Ok(());
        }
        info!(store = %self.config.name, canary = key, "waiting for the canary before listing");
        let opts = WatchOptions::new().with_start_revision(revision + 1);
        let mut stream = self
            .client
            .watch_client()
            .watch(key, Some(opts))
            .await
            .map_err(|source| watch_error(key, source))?;
        loop {
            let Some(resp) = stream
                .message()
                .await
                .map_err(|source| watch_error(key, source))?
            else {
                return Err(Error::WatchBroken {
                    prefix: key.to_string(),
                    reason: "stream closed by the server".into(),
                });
            };
            if resp.canceled() {
                return Err(Error::WatchBroken {
                    prefix: key.to_string(),
                    reason: format!("canceled: {}", resp.cancel_reason()),
                });
            }
            if resp
                .events()
                .iter()
                .any(|e| e.event_type() == EventType::Put)
            {
                return Ok(());
            }
        }
    }

    /// Lists the prefix and reconciles the consumer's view with it. Returns
    /// `Some(Flow::Stop)` if the consumer went away.
    async fn list(&self, st: &mut State) -> Result<Option<Flow>, Error> {
        let mut pager = self
            .client
            .pager(&self.config.prefix, self.config.page_size);
        let mark = st.begin_list();
        let mut page = pager.next_page().await?;
        // Room for every key at once instead of growing the table page by
        // page (each growth copies it and faults in fresh memory); the
        // server's count is trusted up to a bound.
        let expected = usize::try_from(pager.count()).unwrap_or(0).min(RESERVE_MAX);
        st.known.reserve(expected.saturating_sub(st.known.len()));
        // The budget's room for `page` (none for the first page).
        let mut room = None;
        while let Some(kvs) = page.take() {
            let deliver = async {
                for kv in kvs.iter() {
                    if let Some(event) = self.apply_put(st, &kv.key, kv.value, mark)
                        && self.send(event).await.is_err()
                    {
                        return Err(());
                    }
                }
                Ok(())
            };
            let next_bytes = pager.next_page_bytes();
            let budget = self.config.list_budget.as_ref().filter(|_| next_bytes > 0);
            let read_ahead = match budget {
                None => Some(None),
                Some(budget) => budget.try_take(next_bytes).map(Some),
            };
            if let Some(next_room) = read_ahead {
                // The next page is read while this one is decoded and
                // delivered (etcd and the consumer work at once); page by
                // page, so memory stays bounded on large lists.
                let (next, delivered) = tokio::join!(pager.next_page(), deliver);
                if delivered.is_err() {
                    return Ok(Some(Flow::Stop));
                }
                room = next_room;
                page = next?;
            } else {
                // No room to read ahead: this page first, then room for
                // the next, waited for holding none.
                if deliver.await.is_err() {
                    return Ok(Some(Flow::Stop));
                }
                drop(room.take());
                if let Some(budget) = budget {
                    room = Some(budget.take(next_bytes).await);
                }
                page = pager.next_page().await?;
            }
        }
        drop(room);
        // Sweep: whatever the consumer has and the list did not contain is
        // gone, unless it went with lost data and the consumer keeps it.
        let mut vanished: Vec<ShortKey> = st
            .known
            .iter()
            .filter(|(_, seen)| seen.mark() != mark)
            .map(|(k, _)| k.clone())
            .collect();
        let data_lost = std::mem::take(&mut st.after_data_loss);
        if data_lost && self.config.keep_on_data_loss {
            if !vanished.is_empty() {
                warn!(store = %self.config.name, kept = vanished.len(),
                    "entries lost with etcd's data are kept until deleted");
            }
            self.stats
                .kept_after_data_loss
                .fetch_add(vanished.len() as u64, Ordering::Relaxed);
            for key in vanished.drain(..) {
                if let Some(seen) = st.known.get_mut(key.as_str()) {
                    seen.set_mark(mark);
                }
            }
        }
        for key in vanished {
            st.known.remove(key.as_str());
            self.stats.deletes.fetch_add(1, Ordering::Relaxed);
            if self
                .send(Event::Delete {
                    key: key.as_str().to_string(),
                })
                .await
                .is_err()
            {
                return Ok(Some(Flow::Stop));
            }
        }
        st.revalidate = false;
        st.list_open = false;
        st.revision = pager.revision();
        st.cluster_id = pager.cluster_id();
        self.stats
            .entries
            .store(st.known.len() as u64, Ordering::Relaxed);
        self.stats.revision.store(st.revision, Ordering::Relaxed);
        self.stats.lists.fetch_add(1, Ordering::Relaxed);
        debug!(store = %self.config.name, revision = st.revision, entries = st.known.len(), "listed");
        if data_lost {
            self.stats.data_losses.send_modify(|n| *n += 1);
        }
        if !st.synced {
            st.synced = true;
            self.stats.synced.store(true, Ordering::Relaxed);
            if self.send(Event::Synced).await.is_err() {
                return Ok(Some(Flow::Stop));
            }
        }
        Ok(None)
    }

    /// Watches from the last revision until the watch breaks.
    async fn watch(&self, st: &mut State, backoff: &mut Backoff) -> Result<Flow, Error> {
        let prefix = &self.config.prefix;
        let opts = WatchOptions::new()
            .with_range(prefix.range_end())
            .with_start_revision(st.revision + 1)
            .with_progress_notify();
        let mut stream = self
            .client
            .watch_client()
            .watch(prefix.as_str(), Some(opts))
            .await
            .map_err(|source| watch_error(prefix.as_str(), source))?;
        let broken = |reason: String| Error::WatchBroken {
            prefix: prefix.to_string(),
            reason,
        };
        // Liveness: after a quiet period, ask for progress; no answer in
        // time means the stream hangs (its member or a proxy stopped without
        // closing it) and the watch resumes elsewhere.
        let grid = self.config.progress_after / PROGRESS_GRID_DIVISOR;
        let mut quiet_until = on_grid(Instant::now() + self.config.progress_after, grid);
        let mut answer_due: Option<Instant> = None;
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                () = tokio::time::sleep_until(answer_due.unwrap_or(quiet_until)) => {
                    if answer_due.is_some() {
                        return Err(broken(format!(
                            "no answer to a progress request within {:?}",
                            self.config.progress_timeout
                        )));
                    }
                    self.stats.progress_requests.fetch_add(1, Ordering::Relaxed);
                    stream
                        .request_progress()
                        .await
                        .map_err(|source| watch_error(prefix.as_str(), source))?;
                    answer_due = Some(Instant::now() + self.config.progress_timeout);
                    continue;
                }
            };
            let Some(resp) = message.map_err(|source| watch_error(prefix.as_str(), source))? else {
                return Err(broken("stream closed by the server".into()));
            };
            quiet_until = on_grid(Instant::now() + self.config.progress_after, grid);
            answer_due = None;
            if let Some(header) = resp.header() {
                if st.cluster_id != 0
                    && header.cluster_id() != 0
                    && header.cluster_id() != st.cluster_id
                {
                    warn!(store = %self.config.name, "a different etcd cluster answers now; listing again");
                    st.after_data_loss = true;
                    return Ok(Flow::Relist);
                }
                // etcd stamps every response with its current revision, which
                // never goes below what it already sent. Lower means the data
                // behind the endpoint was lost (etcd wiped and restarted with
                // the same cluster ID), whether the watch was re-created or a
                // proxy's stream stayed open across the loss.
                if header.revision() > 0 && header.revision() < st.revision {
                    warn!(
                        store = %self.config.name,
                        revision = header.revision(),
                        seen = st.revision,
                        "etcd's revision went backwards (its data was lost); listing again"
                    );
                    st.after_data_loss = true;
                    return Ok(Flow::Relist);
                }
            }
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    info!(
                        store = %self.config.name,
                        from = st.revision + 1,
                        compacted = resp.compact_revision(),
                        "watch revision was compacted; listing again"
                    );
                    return Ok(Flow::Relist);
                }
                return Err(broken(format!(
                    "canceled by the server: {}",
                    resp.cancel_reason()
                )));
            }
            if resp.created() {
                self.stats.watch_starts.fetch_add(1, Ordering::Relaxed);
                self.stats.watching.store(true, Ordering::Relaxed);
                backoff.reset();
            }
            if resp.events().is_empty() {
                // A progress notification: everything up to the header's
                // revision has been delivered to this (synced) watcher. Not
                // so an answer to a progress request: etcd 3.4 answers it
                // with its current revision even while the watcher still
                // catches up, so it only shows that the stream lives.
                if !resp.created()
                    && resp.watch_id() != STREAM_WATCH_ID
                    && let Some(header) = resp.header()
                {
                    st.revision = st.revision.max(header.revision());
                }
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                // A key that is not UTF-8 reads with replacement characters.
                let key = String::from_utf8_lossy(kv.key());
                st.revision = st.revision.max(kv.mod_revision());
                let outgoing = match event.event_type() {
                    EventType::Put => self.apply_put(st, &key, kv.value(), st.mark),
                    EventType::Delete => self.apply_delete(st, &key),
                };
                if let Some(event) = outgoing
                    && self.send(event).await.is_err()
                {
                    return Ok(Flow::Stop);
                }
            }
            self.stats
                .entries
                .store(st.known.len() as u64, Ordering::Relaxed);
            self.stats.revision.store(st.revision, Ordering::Relaxed);
        }
    }

    /// Decodes a put; returns the event to emit, if any.
    fn apply_put(
        &self,
        st: &mut State,
        full_key: &str,
        value: &[u8],
        mark: bool,
    ) -> Option<Event<V>> {
        let key = self.config.relative(full_key)?;
        let seen = Seen::new(hash_bytes(value), mark);
        let unchanged = st.known.get(key).is_some_and(|s| s.same_value(seen));
        if unchanged
            && !st.revalidate
            && let Some(s) = st.known.get_mut(key)
        {
            s.set_mark(mark);
            return None;
        }
        let decoded = V::decode(key, value).and_then(|value| match self.validator {
            Some(validate) => validate(key, &value).map(|()| value),
            None => Ok(value),
        });
        match decoded {
            Ok(value) => {
                st.logged_invalid.remove(key);
                st.known.insert(ShortKey::new(key), seen);
                if unchanged {
                    return None;
                }
                self.stats.upserts.fetch_add(1, Ordering::Relaxed);
                Some(Event::Upsert {
                    key: key.to_string(),
                    value,
                })
            }
            Err(e) => {
                self.stats.invalid.fetch_add(1, Ordering::Relaxed);
                *self
                    .stats
                    .invalid_by_reason
                    .lock()
                    .expect("stats lock")
                    .entry(e.reason)
                    .or_default() += 1;
                if st.logged_invalid.insert(key.to_string()) {
                    warn!(store = %self.config.name, error = %e, "skipping an invalid value");
                }
                // The consumer must not keep acting on the previous value.
                st.known.remove(key).map(|_| {
                    self.stats.deletes.fetch_add(1, Ordering::Relaxed);
                    Event::Delete {
                        key: key.to_string(),
                    }
                })
            }
        }
    }

    fn apply_delete(&self, st: &mut State, full_key: &str) -> Option<Event<V>> {
        let key = self.config.relative(full_key)?;
        st.logged_invalid.remove(key);
        st.known.remove(key)?;
        self.stats.deletes.fetch_add(1, Ordering::Relaxed);
        Some(Event::Delete {
            key: key.to_string(),
        })
    }

    async fn send(&self, event: Event<V>) -> Result<(), ()> {
        self.tx.send(event).await.map_err(|_| ())
    }
}

fn watch_error(prefix: &str, source: etcd_client::Error) -> Error {
    Error::Request {
        op: "watch",
        key: prefix.to_string(),
        source,
    }
}

impl State {
    /// Starts a list; returns its mark. After a list that did not finish,
    /// every entry is marked as not seen first.
    fn begin_list(&mut self) -> bool {
        self.mark = !self.mark;
        if std::mem::replace(&mut self.list_open, true) {
            for seen in self.known.values_mut() {
                seen.set_mark(!self.mark);
            }
        }
        self.mark
    }
}

/// What the store keeps of a delivered value (8 bytes): a hash of it, and
/// in the top bit the mark of the list (or watch) that delivered it last.
#[derive(Debug, Clone, Copy)]
struct Seen(u64);

impl Seen {
    const MARK: u64 = 1 << 63;

    fn new(hash: u64, mark: bool) -> Self {
        let mut seen = Self(hash & !Self::MARK);
        seen.set_mark(mark);
        seen
    }

    /// The same value (by its hash's other 63 bits).
    fn same_value(self, other: Self) -> bool {
        (self.0 ^ other.0) & !Self::MARK == 0
    }

    fn mark(self) -> bool {
        self.0 & Self::MARK != 0
    }

    fn set_mark(&mut self, mark: bool) {
        self.0 = (self.0 & !Self::MARK) | if mark { Self::MARK } else { 0 };
    }
}

fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_kept_in_8_bytes_and_an_entry_in_32() {
        assert_eq!(std::mem::size_of::<Seen>(), 8);
        assert_eq!(std::mem::size_of::<(ShortKey, Seen)>(), 32);
        let seen = Seen::new(u64::MAX, false);
        assert!(!seen.mark());
        assert!(seen.same_value(Seen::new(u64::MAX, true)));
        assert!(!seen.same_value(Seen::new(u64::MAX - 1, false)));
    }

    #[test]
    fn a_list_after_one_that_did_not_finish_sees_nothing_yet() {
        let mut st = State::default();
        for k in ["a", "b", "c"] {
            st.known.insert(ShortKey::new(k), Seen::new(1, st.mark));
        }
        // A list that finishes: what it did not mark is swept.
        let mark = st.begin_list();
        st.known.get_mut("a").unwrap().set_mark(mark);
        st.list_open = false;
        st.known.retain(|_, s| s.mark() == mark);
        assert_eq!(st.known.len(), 1);
        st.known.insert(ShortKey::new("b"), Seen::new(1, st.mark));
        // A list that fails after seeing "a", then one that sees "a" too:
        // "b" was in neither (its mark is the one the last list gives).
        let failed = st.begin_list();
        st.known.get_mut("a").unwrap().set_mark(failed);
        let mark = st.begin_list();
        st.known.get_mut("a").unwrap().set_mark(mark);
        let unseen: Vec<&str> = st
            .known
            .iter()
            .filter(|(_, s)| s.mark() != mark)
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(unseen, ["b"]);
    }
}
