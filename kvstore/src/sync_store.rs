use std::{
    collections::{HashMap, HashSet},
    marker::PhantomData,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use futures::{StreamExt, stream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    backoff::Backoff,
    client::{Client, LeaseId},
    error::{Error, ErrorKind},
    prefix::KeyPrefix,
    session::SessionHandle,
    value::{RawEntry, StoreValue},
    values::Timestamp,
    watch_store::{Event, WatchStore, WatchStoreConfig},
};

/// How a [`SyncStore`] runs.
#[derive(Debug, Clone)]
pub struct SyncStoreConfig {
    /// Where the keys live (other writers may share the prefix).
    pub prefix: KeyPrefix,
    /// Full key of the canary to write once the initial set is written
    /// (`cilium/synced/<cluster>/<store>`). Default: none.
    pub canary: Option<String>,
    /// Transactions in flight at once. Default 8.
    pub concurrency: usize,
    /// Keys written (or deleted) per transaction: one etcd commit, and one
    /// fsync, for all of them. Default 64 (etcd takes at most 128).
    pub txn_keys: usize,
    /// Keys written per round before commands are read again. Default 1,024.
    pub batch: usize,
    /// Name for logs. Default: the prefix.
    pub name: String,
    /// Keys are written on a lease of session generation `g` only once this
    /// reaches `g`: e.g. the allocator's [`crate::Allocator::restored`], so
    /// that after a lost lease (or a wiped etcd) ipcache entries are
    /// re-announced only when the identities they name exist again.
    /// Default: none (write at once).
    pub after: Option<watch::Receiver<u64>>,
    /// The store owns every key under the prefix, not only the ones it
    /// was told about: once the initial set is written ([`SyncStore::synced`]),
    /// keys it does not own are deleted, then and whenever one appears
    /// (kvstoremesh's mirror of a remote, whose previous run may have left
    /// keys that the remote deleted since). The canary is written after
    /// that sweep. Default: false (other writers may share the prefix).
    pub exclusive: bool,
}

impl SyncStoreConfig {
    pub fn new(prefix: KeyPrefix) -> Self {
        Self {
            name: prefix.to_string(),
            prefix,
            canary: None,
            concurrency: 8,
            txn_keys: 64,
            batch: 1_024,
            after: None,
            exclusive: false,
        }
    }

    /// Owns the whole prefix (see [`SyncStoreConfig::exclusive`]).
    pub fn exclusive(mut self) -> Self {
        self.exclusive = true;
        self
    }

    /// Writes only after `gate` reached the session's generation (see
    /// [`SyncStoreConfig::after`]).
    pub fn after(mut self, gate: watch::Receiver<u64>) -> Self {
        self.after = Some(gate);
        self
    }

    pub fn with_canary(mut self, canary: impl Into<String>) -> Self {
        self.canary = Some(canary.into());
        self
    }
}

/// Progress of a [`SyncStore`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStatus {
    /// Keys the store owns.
    pub keys: usize,
    /// Keys whose etcd state may still differ from the desired one.
    pub pending: usize,
    /// Whether the canary is written (on the current lease).
    pub canary_written: bool,
    /// Every command up to this sequence number is applied to etcd.
    pub flushed: u64,
    /// Failed writes so far.
    pub errors: u64,
    pub last_error: Option<String>,
}

enum Command {
    Upsert { key: String, value: Vec<u8> },
    Delete { key: String },
    Synced,
}

/// Write side of a prefix: the set of keys this process owns, kept in etcd on
/// the session lease.
///
/// Callers state what should exist ([`SyncStore::upsert`],
/// [`SyncStore::delete`]); the runner makes etcd match: it writes only what
/// changed, retries failures, re-creates its keys on a new lease after the
/// session was lost, and rewrites keys that someone else deleted or changed.
/// Once [`SyncStore::synced`] was called and everything before it is written,
/// it writes the canary so readers know the initial set is complete.
pub struct SyncStore<V> {
    tx: mpsc::UnboundedSender<(u64, Command)>,
    seq: Arc<AtomicU64>,
    status: watch::Receiver<SyncStatus>,
    _value: PhantomData<fn(V)>,
}

impl<V> Clone for SyncStore<V> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            seq: self.seq.clone(),
            status: self.status.clone(),
            _value: PhantomData,
        }
    }
}

impl<V> std::fmt::Debug for SyncStore<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncStore")
            .field("status", &*self.status.borrow())
            .finish()
    }
}

/// The task behind a [`SyncStore`]; see [`SyncStoreRunner::run`].
pub struct SyncStoreRunner {
    client: Client,
    session: SessionHandle,
    config: SyncStoreConfig,
    rx: mpsc::UnboundedReceiver<(u64, Command)>,
    status: watch::Sender<SyncStatus>,
}

impl std::fmt::Debug for SyncStoreRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncStoreRunner")
            .field("config", &self.config)
            .finish()
    }
}

impl<V: StoreValue> SyncStore<V> {
    /// A store handle and its runner. Nothing is written until the runner runs.
    pub fn new(
        client: Client,
        session: SessionHandle,
        config: SyncStoreConfig,
    ) -> (Self, SyncStoreRunner) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (status_tx, status_rx) = watch::channel(SyncStatus::default());
        (
            Self {
                tx,
                seq: Arc::default(),
                status: status_rx,
                _value: PhantomData,
            },
            SyncStoreRunner {
                client,
                session,
                config,
                rx,
                status: status_tx,
            },
        )
    }

    /// The value should exist (at `value.key()` under the prefix).
    pub fn upsert(&self, value: &V) {
        self.send(Command::Upsert {
            key: value.key(),
            value: value.encode(),
        });
    }

    /// The key (relative to the prefix) should not exist.
    pub fn delete(&self, key: &str) {
        self.send(Command::Delete {
            key: key.to_string(),
        });
    }

    /// Everything that exists initially has been upserted: write the canary
    /// once it is in etcd.
    pub fn synced(&self) {
        self.send(Command::Synced);
    }

    /// Waits until every command sent before this call is applied to etcd.
    /// Returns `false` if the runner stopped first.
    pub async fn flushed(&self) -> bool {
        let target = self.seq.load(Ordering::SeqCst);
        let mut status = self.status.clone();
        status.wait_for(|s| s.flushed >= target).await.is_ok()
    }

    /// Current progress.
    pub fn status(&self) -> SyncStatus {
        self.status.borrow().clone()
    }

    fn send(&self, command: Command) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        // If the runner is gone the process is shutting down; nothing to do.
        let _ = self.tx.send((seq, command));
    }
}

/// The runner's view of what etcd should hold.
#[derive(Default)]
struct Desired {
    keys: HashMap<String, Vec<u8>>,
    dirty: HashSet<String>,
    received: u64,
    synced_requested: bool,
    canary_written: bool,
    errors: u64,
    last_error: Option<String>,
    /// Exclusive stores: keys in etcd that the store does not own.
    foreign: HashSet<String>,
    /// Exclusive stores: the own-prefix watch has listed what is in etcd.
    listed: bool,
    exclusive: bool,
}

impl Desired {
    /// Whether foreign keys are deleted now: the initial set is complete
    /// and what etcd held is known.
    fn sweeping(&self) -> bool {
        self.exclusive && self.synced_requested && self.listed
    }

    /// Marks every foreign key for deletion once sweeping.
    fn sweep(&mut self) {
        if self.sweeping() {
            let foreign: Vec<String> = self
                .foreign
                .iter()
                .filter(|k| !self.keys.contains_key(*k))
                .cloned()
                .collect();
            self.dirty.extend(foreign);
        }
    }

    /// Whether the canary may be written once nothing is dirty.
    fn canary_due(&self) -> bool {
        self.synced_requested && !self.canary_written && (!self.exclusive || self.listed)
    }
}

impl SyncStoreRunner {
    /// Applies the desired state to etcd until `shutdown`. Keys stay in etcd
    /// after shutdown until the session lease ends.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), Error> {
        let (watcher, mut external) = WatchStore::<RawEntry>::new(
            self.client.clone(),
            WatchStoreConfig::new(self.config.prefix.clone())
                .with_name(format!("{} (own keys)", self.config.name)),
        );
        let watch_shutdown = shutdown.child_token();
        let watch_task = watcher.run(watch_shutdown.clone());
        tokio::pin!(watch_task);
        let mut session = self.session.subscribe();
        let mut generation = session.borrow_and_update().generation;
        let mut desired = Desired {
            exclusive: self.config.exclusive,
            ..Desired::default()
        };
        let mut backoff = Backoff::for_etcd();
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut commands_open = true;
        let mut watch_done = false;
        let mut gate = self.config.after.clone();

        loop {
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                command = self.rx.recv(), if commands_open => match command {
                    Some((seq, command)) => {
                        apply(&mut desired, seq, command);
                        while let Ok((seq, command)) = self.rx.try_recv() {
                            apply(&mut desired, seq, command);
                        }
                        desired.sweep();
                    }
                    // Every handle is gone: keep the keys in etcd as they are.
                    None => commands_open = false,
                },
                Some(event) = external.recv() => on_external_change(&mut desired, event),
                changed = session.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let state = *session.borrow_and_update();
                    if state.lease.is_some() && state.generation != generation {
                        generation = state.generation;
                        debug!(store = %self.config.name, "new session lease; re-creating keys");
                        desired.dirty.extend(desired.keys.keys().cloned());
                        desired.canary_written = false;
                        retry_at = None;
                    }
                }
                _ = &mut watch_task, if !watch_done => watch_done = true,
                _ = retry => retry_at = None,
                opened = gate_changed(&mut gate) => {
                    if !opened {
                        // Whoever kept the gate is gone: do not wait for it.
                        gate = None;
                    }
                }
            }
            if retry_at.is_some() {
                self.publish(&desired);
                continue;
            }
            let current = self.session.current();
            let Some(lease) = current.lease else {
                self.publish(&desired);
                continue;
            };
            if gate
                .as_ref()
                .is_some_and(|g| *g.borrow() < current.generation)
            {
                self.publish(&desired);
                continue;
            }
            match self.flush(&mut desired, lease).await {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    if e.kind() == ErrorKind::LeaseExpired {
                        // etcd forgot the lease (expired, or its data was
                        // lost): have the session replace it now.
                        self.session.report_lost(lease);
                    }
                    desired.errors += 1;
                    let message = e.full_message();
                    warn!(store = %self.config.name, error = %message, "writing to etcd failed; retrying");
                    desired.last_error = Some(message);
                    retry_at = Some(tokio::time::Instant::now() + backoff.next_delay());
                }
            }
            self.publish(&desired);
        }
        watch_shutdown.cancel();
        Ok(())
    }

    /// Writes up to one batch of dirty keys (and the canary when due).
    async fn flush(&self, desired: &mut Desired, lease: LeaseId) -> Result<(), Error> {
        while !desired.dirty.is_empty() {
            let batch: Vec<String> = desired
                .dirty
                .iter()
                .take(self.config.batch)
                .cloned()
                .collect();
            let client = &self.client;
            let writes: Vec<_> = batch
                .chunks(self.config.txn_keys.max(1))
                .map(|keys| {
                    let ops: Vec<(String, Option<Vec<u8>>)> = keys
                        .iter()
                        .map(|key| (self.config.prefix.key(key), desired.keys.get(key).cloned()))
                        .collect();
                    let keys = keys.to_vec();
                    async move { (keys, client.write_batch(ops, Some(lease)).await) }
                })
                .collect();
            let results: Vec<_> = stream::iter(writes)
                .buffer_unordered(self.config.concurrency.max(1))
                .collect()
                .await;
            let mut first_error = None;
            for (keys, result) in results {
                match result {
                    Ok(()) => {
                        for key in keys {
                            desired.dirty.remove(&key);
                        }
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
        }
        if desired.canary_due() {
            if let Some(canary) = &self.config.canary {
                self.client
                    .put_leased(canary, Timestamp::now().encode(), lease)
                    .await?;
                debug!(store = %self.config.name, canary, "initial set written; canary set");
            }
            desired.canary_written = true;
        }
        Ok(())
    }

    fn publish(&self, desired: &Desired) {
        let flushed = if desired.dirty.is_empty() {
            desired.received
        } else {
            self.status.borrow().flushed
        };
        self.status.send_replace(SyncStatus {
            keys: desired.keys.len(),
            pending: desired.dirty.len(),
            canary_written: desired.canary_written,
            flushed,
            errors: desired.errors,
            last_error: desired.last_error.clone(),
        });
    }
}

/// Waits for the gate to change; `false` if its sender is gone. Without a
/// gate, never returns.
async fn gate_changed(gate: &mut Option<watch::Receiver<u64>>) -> bool {
    match gate {
        Some(g) => g.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

fn apply(desired: &mut Desired, seq: u64, command: Command) {
    desired.received = desired.received.max(seq);
    match command {
        Command::Upsert { key, value } => {
            desired.foreign.remove(&key);
            if desired.keys.get(&key) != Some(&value) {
                desired.keys.insert(key.clone(), value);
                desired.dirty.insert(key);
            }
        }
        Command::Delete { key } => {
            if desired.keys.remove(&key).is_some() {
                desired.dirty.insert(key);
            }
        }
        Command::Synced => desired.synced_requested = true,
    }
}

/// Someone else touched the prefix: rewrite our keys if they were changed or
/// deleted behind our back (and, in an exclusive store, delete the keys that
/// are not ours).
fn on_external_change(desired: &mut Desired, event: Event<RawEntry>) {
    match event {
        Event::Upsert { key, value } => match desired.keys.get(&key) {
            Some(ours) if *ours != value.value => {
                desired.dirty.insert(key);
            }
            Some(_) => {}
            None if desired.exclusive => {
                if desired.sweeping() {
                    desired.dirty.insert(key.clone());
                }
                desired.foreign.insert(key);
            }
            None => {}
        },
        Event::Delete { key } => {
            desired.foreign.remove(&key);
            if desired.keys.contains_key(&key) {
                desired.dirty.insert(key);
            }
        }
        Event::Synced => {
            desired.listed = true;
            desired.sweep();
        }
    }
}
