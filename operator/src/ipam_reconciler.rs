use std::{collections::HashSet, time::Duration};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use ipnet::IpNet;
use kvstore::{
    Backoff, Client, ClusterName, Event, RawEntry, StoreValue, WatchStore, WatchStoreConfig, keys,
    values::IpamAssignment,
};
use tokio::{sync::mpsc, task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::{
    cidr_pool::{CidrPool, IpFamily},
    cluster_node::ClusterNode,
    error_chain,
    ipam_planner::{IpamAction, IpamPlanner},
    metrics::OperatorMetrics,
};

/// Default of [`IpamConfig::release_delay`]: 5 minutes. A node's key is on
/// its agent's session lease, so it vanishes for a while when the agent
/// deregisters for a restart, or when its lease expired during a partition
/// and is re-created on reconnect; the pods of that node still use its
/// CIDR. Handing the CIDR to another node then would route one prefix to two
/// nodes, while keeping a departed node's CIDR a few minutes longer only
/// costs pool space.
pub const DEFAULT_RELEASE_DELAY: Duration = Duration::from_secs(5 * 60);

/// How IPAM hands out pod CIDRs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConfig {
    /// The IPv4 pool (`--pod-cidr-pool`, `--node-cidr-mask-size`).
    pub ipv4: Option<CidrPool>,
    /// The IPv6 pool (`--pod-cidr-pool-v6`, `--node-cidr-mask-size-v6`).
    pub ipv6: Option<CidrPool>,
    /// How long a node must stay gone before its CIDRs are released.
    /// Default [`DEFAULT_RELEASE_DELAY`].
    pub release_delay: Duration,
}

impl IpamConfig {
    pub fn new(ipv4: Option<CidrPool>, ipv6: Option<CidrPool>) -> Self {
        Self {
            ipv4,
            ipv6,
            release_delay: DEFAULT_RELEASE_DELAY,
        }
    }

    /// The configured pools.
    pub fn pools(&self) -> Vec<CidrPool> {
        self.ipv4.into_iter().chain(self.ipv6).collect()
    }
}

/// Why IPAM stopped or an action failed.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("{action} pod CIDRs of node {node:?}")]
    Apply {
        action: &'static str,
        node: String,
        #[source]
        source: kvstore::Error,
    },
    #[error("the IPAM watch of {store} stopped")]
    WatchStopped { store: &'static str },
    #[error("the IPAM watch of {store} failed")]
    Watch {
        store: &'static str,
        #[source]
        source: kvstore::Error,
    },
}

/// Hands each node of the cluster pod CIDRs from the pools, while this
/// operator leads.
///
/// Keys (local to the cluster, no lease, so assignments survive restarts of
/// agents and operators):
/// - `cilium/ipam/v1/cidrs/<cidr>` → node name: created only if absent, the
///   guard that keeps two operators (or two terms) from handing out a CIDR
///   twice;
/// - `cilium/ipam/v1/nodes/<node>` → [`IpamAssignment`] JSON: written only
///   while the node exists, its assignment is what this operator last saw,
///   and every CIDR key it holds names the node.
///
/// The reconciler watches the nodes (`cilium/state/nodes/v1/<cluster>/`),
/// the assignments and the CIDR keys, and after the initial lists (which is
/// the start-of-term reconciliation) applies what the [`IpamPlanner`] decides
/// whenever anything changes. Each write is conditional on the facts the
/// decision rests on; a write that loses a race just leads to a new plan.
#[derive(Debug)]
pub struct IpamReconciler {
    client: Client,
    cluster: ClusterName,
    config: IpamConfig,
    metrics: OperatorMetrics,
}

/// Applied actions' effect on the loop.
#[derive(Debug, Default)]
struct Outcome {
    done: usize,
    stale: usize,
    failed: bool,
}

impl IpamReconciler {
    pub fn new(
        client: Client,
        cluster: ClusterName,
        config: IpamConfig,
        metrics: OperatorMetrics,
    ) -> Self {
        Self {
            client,
            cluster,
            config,
            metrics,
        }
    }

    /// Reconciles until `shutdown` (the end of the term).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), IpamError> {
        let stores_shutdown = shutdown.child_token();
        let mut stores = JoinSet::new();
        let (nodes, mut nodes_rx) = WatchStore::<ClusterNode>::new(
            self.client.clone(),
            WatchStoreConfig::new(keys::nodes_of(&self.cluster)).with_name("ipam nodes"),
        );
        let (assignments, mut assignments_rx) = WatchStore::<IpamAssignment>::new(
            self.client.clone(),
            WatchStoreConfig::new(keys::ipam_nodes()).with_name("ipam assignments"),
        );
        let (cidrs, mut cidrs_rx) = WatchStore::<RawEntry>::new(
            self.client.clone(),
            WatchStoreConfig::new(keys::ipam_cidrs()).with_name("ipam cidrs"),
        );
        stores.spawn(tagged("nodes", nodes.run(stores_shutdown.clone())));
        stores.spawn(tagged(
            "assignments",
            assignments.run(stores_shutdown.clone()),
        ));
        stores.spawn(tagged("cidrs", cidrs.run(stores_shutdown.clone())));

        for pool in self.config.pools() {
            let family = OperatorMetrics::family(pool.family());
            self.metrics.ipam_waiting.get_or_create(&family).set(0);
            let _ = self.metrics.ipam_exhausted.get_or_create(&family);
        }
        let result = self
            .reconcile(
                &shutdown,
                &mut stores,
                &mut nodes_rx,
                &mut assignments_rx,
                &mut cidrs_rx,
            )
            .await;
        stores_shutdown.cancel();
        while stores.join_next().await.is_some() {}
        result
    }

    async fn reconcile(
        &self,
        shutdown: &CancellationToken,
        stores: &mut JoinSet<(&'static str, Result<(), kvstore::Error>)>,
        nodes_rx: &mut mpsc::Receiver<Event<ClusterNode>>,
        assignments_rx: &mut mpsc::Receiver<Event<IpamAssignment>>,
        cidrs_rx: &mut mpsc::Receiver<Event<RawEntry>>,
    ) -> Result<(), IpamError> {
        let mut planner = IpamPlanner::new(self.config.pools(), self.config.release_delay);
        let mut view = View {
            cluster: self.cluster.clone(),
            nodes_synced: false,
            assignments_synced: false,
            cidrs_synced: false,
            reconciled: false,
            retrying: false,
            bad_nodes: HashSet::new(),
            bad_cidr_keys: HashSet::new(),
        };
        let mut backoff = Backoff::for_etcd();
        let mut wake_at: Option<Instant> = None;
        let mut reported: HashSet<(String, IpFamily)> = HashSet::new();
        loop {
            // Biased: once `shutdown` fires the stores stop too, and their
            // closed channels must not be mistaken for a failure.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                e = nodes_rx.recv() => view.node(&mut planner, e.ok_or(IpamError::WatchStopped { store: "nodes" })?),
                e = assignments_rx.recv() => view.assignment(&mut planner, e.ok_or(IpamError::WatchStopped { store: "assignments" })?),
                e = cidrs_rx.recv() => view.cidr(&mut planner, e.ok_or(IpamError::WatchStopped { store: "cidrs" })?),
                Some(done) = stores.join_next() => {
                    return Err(match done {
                        Ok((store, Err(source))) => IpamError::Watch { store, source },
                        Ok((store, Ok(()))) => IpamError::WatchStopped { store },
                        Err(_) => IpamError::WatchStopped { store: "a store (panicked)" },
                    });
                }
                _ = sleep_until(wake_at) => {}
            }
            // Take everything already queued before planning: the initial
            // lists arrive as a burst.
            while let Ok(e) = nodes_rx.try_recv() {
                view.node(&mut planner, e);
            }
            while let Ok(e) = assignments_rx.try_recv() {
                view.assignment(&mut planner, e);
            }
            while let Ok(e) = cidrs_rx.try_recv() {
                view.cidr(&mut planner, e);
            }
            if !view.synced() {
                continue;
            }
            if !view.reconciled {
                view.reconciled = true;
                info!(
                    nodes = planner.node_count(),
                    "IPAM view loaded; reconciling assignments with the nodes"
                );
            }
            let now = Instant::now();
            if wake_at.is_some_and(|t| now < t) && view.retrying {
                continue;
            }
            let plan = planner.plan(now.into_std());
            self.report(&planner, &plan.waiting, &mut reported);
            let actions = plan.actions.len();
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                o = self.apply(&mut planner, plan.actions) => o,
            };
            view.retrying = outcome.failed || outcome.stale > 0;
            wake_at = if view.retrying {
                Some(Instant::now() + backoff.next_delay())
            } else {
                backoff.reset();
                if outcome.done > 0 {
                    // Follow-ups (an orphan after an adoption) are planned at once.
                    Some(Instant::now())
                } else {
                    plan.next_wakeup.map(Instant::from_std)
                }
            };
            if actions > 0 {
                debug!(
                    actions,
                    done = outcome.done,
                    stale = outcome.stale,
                    failed = outcome.failed,
                    "IPAM actions applied"
                );
            }
        }
    }

    /// Applies actions in order; stops at the first etcd failure.
    async fn apply(&self, planner: &mut IpamPlanner, actions: Vec<IpamAction>) -> Outcome {
        let mut outcome = Outcome::default();
        for action in actions {
            let (name, node) = match &action {
                IpamAction::Assign { node, .. } => ("assign", node.clone()),
                IpamAction::Release { node, .. } => ("release", node.clone()),
                IpamAction::DeleteOrphan { node, .. } => {
                    ("delete an orphan CIDR key of", node.clone())
                }
            };
            let result = match action {
                IpamAction::Assign {
                    node,
                    current,
                    want,
                    create,
                } => self.assign(planner, &node, current, want, create).await,
                IpamAction::Release {
                    node,
                    assignment,
                    cidrs,
                } => self.release(planner, &node, assignment, cidrs).await,
                IpamAction::DeleteOrphan {
                    cidr,
                    node,
                    assignment,
                } => self.delete_orphan(planner, cidr, &node, assignment).await,
            };
            match result {
                Ok(true) => outcome.done += 1,
                Ok(false) => {
                    self.metrics.ipam_conflicts.inc();
                    outcome.stale += 1;
                }
                Err(source) => {
                    let e = IpamError::Apply {
                        action: name,
                        node,
                        source,
                    };
                    warn!(error = %error_chain(&e), "IPAM write failed; retrying");
                    outcome.failed = true;
                    break;
                }
            }
        }
        outcome
    }

    /// Creates the new CIDR keys, then the assignment. `Ok(false)` when a
    /// fact the plan rested on changed.
    async fn assign(
        &self,
        planner: &mut IpamPlanner,
        node: &str,
        current: Option<IpamAssignment>,
        want: IpamAssignment,
        create: Vec<IpNet>,
    ) -> Result<bool, kvstore::Error> {
        for cidr in create {
            let key = keys::ipam_cidr(&cidr);
            if !self.client.create(&key, node, None).await? {
                // Taken (by another operator, or our view lags): learn by
                // whom so that the next plan picks another one.
                if let Some(kv) = self.client.get(&key).await? {
                    planner.upsert_cidr(cidr, &String::from_utf8_lossy(&kv.value));
                }
                debug!(node, %cidr, "CIDR already taken; planning again");
                return Ok(false);
            }
            planner.upsert_cidr(cidr, node);
        }
        let key = keys::ipam_nodes().key(node);
        let Some(expected) = self
            .assignment_revision(&key, node, current.as_ref())
            .await?
        else {
            return Ok(false);
        };
        let mut compares = vec![
            Compare::mod_revision(key.as_str(), CompareOp::Equal, expected),
            Compare::create_revision(
                keys::nodes_of(&self.cluster).key(node),
                CompareOp::Greater,
                0,
            ),
        ];
        for cidr in want.ipv4.iter().chain(&want.ipv6) {
            compares.push(Compare::value(
                keys::ipam_cidr(cidr),
                CompareOp::Equal,
                node,
            ));
        }
        let t = Txn::new()
            .when(compares)
            .and_then([TxnOp::put(key.as_str(), want.encode(), None)]);
        if !self
            .client
            .txn("assign pod CIDRs", &key, t)
            .await?
            .succeeded()
        {
            debug!(node, "assignment precondition failed; planning again");
            return Ok(false);
        }
        info!(
            node,
            ipv4 = ?want.ipv4.map(|n| n.to_string()),
            ipv6 = ?want.ipv6.map(|n| n.to_string()),
            "assigned pod CIDRs"
        );
        planner.upsert_assignment(want);
        Ok(true)
    }

    /// Deletes the assignment and CIDR keys of a node that is gone.
    async fn release(
        &self,
        planner: &mut IpamPlanner,
        node: &str,
        assignment: Option<IpamAssignment>,
        cidrs: Vec<IpNet>,
    ) -> Result<bool, kvstore::Error> {
        let key = keys::ipam_nodes().key(node);
        let Some(expected) = self
            .assignment_revision(&key, node, assignment.as_ref())
            .await?
        else {
            return Ok(false);
        };
        let mut compares = vec![
            Compare::create_revision(keys::nodes_of(&self.cluster).key(node), CompareOp::Equal, 0),
            Compare::mod_revision(key.as_str(), CompareOp::Equal, expected),
        ];
        let mut ops = vec![TxnOp::delete(key.as_str(), None)];
        for cidr in &cidrs {
            let cidr_key = keys::ipam_cidr(cidr);
            compares.push(Compare::value(cidr_key.as_str(), CompareOp::Equal, node));
            ops.push(TxnOp::delete(cidr_key, None));
        }
        let t = Txn::new().when(compares).and_then(ops);
        if !self
            .client
            .txn("release pod CIDRs", &key, t)
            .await?
            .succeeded()
        {
            debug!(
                node,
                "release precondition failed (the node is back, or the view lags)"
            );
            return Ok(false);
        }
        info!(
            node,
            cidrs = ?cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            delay = ?self.config.release_delay,
            "released the pod CIDRs of a node that is gone"
        );
        planner.delete_assignment(node);
        for cidr in &cidrs {
            planner.delete_cidr(cidr);
        }
        Ok(true)
    }

    /// Deletes a CIDR key that names a node whose assignment holds another CIDR.
    async fn delete_orphan(
        &self,
        planner: &mut IpamPlanner,
        cidr: IpNet,
        node: &str,
        assignment: IpamAssignment,
    ) -> Result<bool, kvstore::Error> {
        let key = keys::ipam_nodes().key(node);
        let Some(expected) = self
            .assignment_revision(&key, node, Some(&assignment))
            .await?
        else {
            return Ok(false);
        };
        let cidr_key = keys::ipam_cidr(&cidr);
        let t = Txn::new()
            .when([
                Compare::mod_revision(key.as_str(), CompareOp::Equal, expected),
                Compare::value(cidr_key.as_str(), CompareOp::Equal, node),
            ])
            .and_then([TxnOp::delete(cidr_key.as_str(), None)]);
        if !self
            .client
            .txn("delete orphan CIDR key", &cidr_key, t)
            .await?
            .succeeded()
        {
            return Ok(false);
        }
        info!(node, %cidr, "deleted a CIDR key that the node's assignment does not hold");
        planner.delete_cidr(&cidr);
        Ok(true)
    }

    /// The `mod_revision` of the assignment at `key` if it is `expected`
    /// (0 when `expected` is `None` and there is none), else `None`.
    async fn assignment_revision(
        &self,
        key: &str,
        node: &str,
        expected: Option<&IpamAssignment>,
    ) -> Result<Option<i64>, kvstore::Error> {
        let Some(expected) = expected else {
            // The transaction's comparison with 0 checks absence.
            return Ok(Some(0));
        };
        let kv = self.client.get(key).await?;
        Ok(kv.and_then(|kv| {
            let current = IpamAssignment::decode(node, &kv.value).ok()?;
            (current == *expected).then_some(kv.mod_revision)
        }))
    }

    /// Updates the IPAM metrics and logs nodes that newly wait for a CIDR.
    fn report(
        &self,
        planner: &IpamPlanner,
        waiting: &[(String, IpFamily)],
        reported: &mut HashSet<(String, IpFamily)>,
    ) {
        for usage in planner.usage() {
            let family = OperatorMetrics::family(usage.family);
            let clamp = |v: u128| i64::try_from(v).unwrap_or(i64::MAX);
            self.metrics
                .ipam_assigned
                .get_or_create(&family)
                .set(clamp(usage.assigned));
            self.metrics
                .ipam_free
                .get_or_create(&family)
                .set(clamp(usage.free()));
            let count = waiting.iter().filter(|(_, f)| *f == usage.family).count();
            self.metrics
                .ipam_waiting
                .get_or_create(&family)
                .set(count as i64);
        }
        for (node, family) in waiting {
            if reported.insert((node.clone(), *family)) {
                self.metrics
                    .ipam_exhausted
                    .get_or_create(&OperatorMetrics::family(*family))
                    .inc();
                let pool = self
                    .config
                    .pools()
                    .into_iter()
                    .find(|p| p.family() == *family)
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                error!(
                    node,
                    %family,
                    pool,
                    "pod CIDR pool exhausted: the node gets no {family} pod CIDR until another node's is released"
                );
            }
        }
        reported.retain(|w| waiting.contains(w));
    }
}

/// What the watches reported so far.
#[derive(Debug)]
struct View {
    cluster: ClusterName,
    nodes_synced: bool,
    assignments_synced: bool,
    cidrs_synced: bool,
    reconciled: bool,
    retrying: bool,
    /// Node keys with an invalid value, logged once.
    bad_nodes: HashSet<String>,
    /// CIDR keys that do not name a CIDR, logged once.
    bad_cidr_keys: HashSet<String>,
}

impl View {
    fn synced(&self) -> bool {
        self.nodes_synced && self.assignments_synced && self.cidrs_synced
    }

    fn node(&mut self, planner: &mut IpamPlanner, event: Event<ClusterNode>) {
        match event {
            Event::Upsert { key, value } => {
                // The key is what counts (the etcd guards check it); a bad
                // value is worth a warning, once.
                match value.check(&self.cluster) {
                    Ok(_) => {
                        self.bad_nodes.remove(&key);
                    }
                    Err(e) => {
                        if self.bad_nodes.insert(key.clone()) {
                            warn!(error = %e, "a node key holds an invalid node; IPAM treats it as a node all the same");
                        }
                    }
                }
                planner.upsert_node(&key);
            }
            Event::Delete { key } => {
                self.bad_nodes.remove(&key);
                planner.delete_node(&key);
            }
            Event::Synced => self.nodes_synced = true,
        }
    }

    fn assignment(&mut self, planner: &mut IpamPlanner, event: Event<IpamAssignment>) {
        match event {
            Event::Upsert { value, .. } => planner.upsert_assignment(value),
            Event::Delete { key } => planner.delete_assignment(&key),
            Event::Synced => self.assignments_synced = true,
        }
    }

    fn cidr(&mut self, planner: &mut IpamPlanner, event: Event<RawEntry>) {
        match event {
            Event::Upsert { key, value } => match keys::parse_ipam_cidr(&key) {
                Some(cidr) => planner.upsert_cidr(cidr, &String::from_utf8_lossy(&value.value)),
                None => {
                    if self.bad_cidr_keys.insert(key.clone()) {
                        warn!(key, "ignoring an IPAM CIDR key that does not name a CIDR");
                    }
                }
            },
            Event::Delete { key } => {
                if let Some(cidr) = keys::parse_ipam_cidr(&key) {
                    planner.delete_cidr(&cidr);
                }
            }
            Event::Synced => self.cidrs_synced = true,
        }
    }
}

async fn tagged<F>(name: &'static str, f: F) -> (&'static str, Result<(), kvstore::Error>)
where
    F: Future<Output = Result<(), kvstore::Error>>,
{
    (name, f.await)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
