use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use tracing::{debug, info};

use crate::{
    allocator::no_slaves,
    client::Client,
    error::Error,
    identity::{IdentityRange, NumericIdentity},
    keys,
};

/// The period `max_deletions_per_minute` counts in.
const MINUTE: Duration = Duration::from_secs(60);

/// How the identity garbage collector runs.
#[derive(Debug, Clone)]
pub struct IdentityGcConfig {
    /// Only masters in this range are collected (the local cluster's).
    pub range: IdentityRange,
    /// Deletions per minute at most. Default 2,500 (as Cilium).
    pub max_deletions_per_minute: u32,
    /// Keys per page when listing. Default 5,000.
    pub page_size: usize,
}

impl IdentityGcConfig {
    pub fn new(range: IdentityRange) -> Self {
        Self {
            range,
            max_deletions_per_minute: 2_500,
            page_size: 5_000,
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcRound {
    /// Master keys seen in the range.
    pub masters: usize,
    /// Masters with at least one slave key.
    pub in_use: usize,
    /// Unused masters marked in this round (deleted next round if unchanged).
    pub marked: usize,
    /// Masters deleted.
    pub deleted: usize,
    /// Masters outside the local range, left alone.
    pub out_of_range: usize,
    /// Stale lock keys deleted.
    pub locks_deleted: usize,
}

/// Deletes identities nobody uses (run by the operator's leader).
///
/// A round lists slave keys (which label sets are in use) and master keys.
/// An unused master is *marked* with its `mod_revision`; a master still
/// unused and unchanged at the next round is deleted in a transaction that
/// re-checks both (`mod_revision` equal, no slave key for its labels), so an
/// allocation racing with the collector either wins or sees the master gone.
/// Stale allocator locks (unchanged across two rounds) go the same way.
/// Deletions are spread to at most `max_deletions_per_minute`.
#[derive(Debug)]
pub struct IdentityGc {
    client: Client,
    config: IdentityGcConfig,
    marks: HashMap<NumericIdentity, i64>,
    lock_marks: HashMap<String, i64>,
}

impl IdentityGc {
    pub fn new(client: Client, config: IdentityGcConfig) -> Self {
        Self {
            client,
            config,
            marks: HashMap::new(),
            lock_marks: HashMap::new(),
        }
    }

    /// One mark-and-sweep round.
    pub async fn run_round(&mut self) -> Result<GcRound, Error> {
        let mut round = GcRound::default();
        let slave_prefix = keys::identity_slaves();
        let (slaves, _) = self
            .client
            .list(&slave_prefix, self.config.page_size)
            .await?;
        let in_use: HashSet<&str> = slaves
            .iter()
            .filter_map(|kv| {
                let (labels, _node) = keys::parse_identity_slave(slave_prefix.strip(&kv.key)?)?;
                Some(labels)
            })
            .collect();

        let master_prefix = keys::identity_masters();
        let (masters, _) = self
            .client
            .list(&master_prefix, self.config.page_size)
            .await?;
        let mut marks = HashMap::new();
        let mut doomed = Vec::new();
        for kv in &masters {
            let Some(id) = master_prefix
                .strip(&kv.key)
                .and_then(keys::parse_identity_master)
            else {
                continue;
            };
            if !self.config.range.contains(id) {
                round.out_of_range += 1;
                continue;
            }
            round.masters += 1;
            let labels = String::from_utf8_lossy(&kv.value);
            if in_use.contains(labels.as_ref()) {
                round.in_use += 1;
            } else if self.marks.get(&id) == Some(&kv.mod_revision) {
                doomed.push((id, labels.into_owned(), kv.mod_revision));
            } else {
                marks.insert(id, kv.mod_revision);
                round.marked += 1;
            }
        }
        self.marks = marks;

        let pause = MINUTE / self.config.max_deletions_per_minute.max(1);
        for (i, (id, labels, revision)) in doomed.into_iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            let master = keys::identity_master(id);
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(master.clone(), CompareOp::Equal, revision),
                    no_slaves(&keys::identity_slaves_of(&labels)),
                ])
                .and_then([TxnOp::delete(master, None)]);
            let deleted = self
                .client
                .txn("delete identity", &id.to_string(), txn)
                .await?
                .succeeded();
            if deleted {
                round.deleted += 1;
                debug!(%id, labels, "deleted unused identity");
            }
        }

        round.locks_deleted = self.collect_locks().await?;
        if round.deleted > 0 || round.locks_deleted > 0 {
            info!(
                deleted = round.deleted,
                locks = round.locks_deleted,
                in_use = round.in_use,
                "identity GC round"
            );
        }
        Ok(round)
    }

    async fn collect_locks(&mut self) -> Result<usize, Error> {
        let (locks, _) = self
            .client
            .list(&keys::identity_locks(), self.config.page_size)
            .await?;
        let mut marks = HashMap::new();
        let mut deleted = 0;
        for kv in locks {
            if self.lock_marks.get(&kv.key) == Some(&kv.mod_revision) {
                if self.client.delete_if(&kv.key, kv.mod_revision).await? {
                    deleted += 1;
                }
            } else {
                marks.insert(kv.key, kv.mod_revision);
            }
        }
        self.lock_marks = marks;
        Ok(deleted)
    }
}
