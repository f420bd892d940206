//! A remote's four watch stores (identities, ipcache, nodes, services),
//! kept across its connections: each connection lists again and the stores
//! deliver only the difference to what the control loop already has.

use std::sync::Arc;

use kvstore::{
    Client, ClusterId, ClusterName, ListBudget, MaxConnectedClusters, RestartableWatchStore,
    StoreValue, Validator, WatchStoreConfig, WatchStoreStats, WatchTask, keys,
    remote_identity_validator,
    values::{ClusterService, IdentityEntry, IpIdentityPair, Node},
};
use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;

use super::validators::{ipcache_validator, node_validator, service_validator};
use crate::{
    agent::forward,
    control_loop::{Input, IpEvent, LoopHandle, StoreKind},
    tables::SourceId,
};

/// What one connection's stores check and wait for.
pub(super) struct Connection<'a> {
    pub client: &'a Client,
    pub name: &'a ClusterName,
    pub id: ClusterId,
    pub mode: MaxConnectedClusters,
    /// The remote writes sync canaries: wait for each before listing.
    pub canaries: bool,
    /// Where its state is read: the remote's own etcd, or the local
    /// kvstoremesh cache (the remote's cluster config says `cached`).
    pub source: keys::Source,
}

/// One store, idle between connections or running in a task of its own.
struct Store<V> {
    kind: StoreKind,
    /// Which of the remote's published kinds it reads (its prefixes and
    /// canaries, directly or through kvstoremesh).
    state: keys::StateKind,
    stats: Arc<WatchStoreStats>,
    task: WatchTask<V>,
}

impl<V: StoreValue> Store<V> {
    fn new(
        remote: &ClusterName,
        kind: StoreKind,
        state: keys::StateKind,
        forwarders: &mut JoinSet<()>,
        control: &LoopHandle,
        (retry_now, budget): (&watch::Sender<u64>, &ListBudget),
        wrap: impl Fn(kvstore::Event<V>) -> Input + Send + 'static,
    ) -> Self {
        let source = keys::Source::State;
        let config = WatchStoreConfig::new(state.prefix(remote, source))
            .relative_to(state.relative_to(remote, source))
            .with_name(format!("{remote}/{}", kind.as_str()))
            .with_retry_signal(retry_now.subscribe())
            .with_list_budget(budget.clone());
        let (store, rx) = RestartableWatchStore::new(config);
        let control = control.clone();
        forwarders.spawn(async move {
            let _ = forward(rx, control, wrap).await;
        });
        Self {
            kind,
            state,
            stats: store.stats(),
            task: WatchTask::new(format!("{remote}/{}", kind.as_str()), store),
        }
    }

    fn start(
        &mut self,
        connection: &Connection<'_>,
        validator: Validator<V>,
        parent: &CancellationToken,
    ) {
        let (name, source, state) = (connection.name, connection.source, self.state);
        self.task.start(connection.client, parent, |store| {
            store.set_validator(validator);
            store.set_prefix(
                state.prefix(name, source),
                Some(state.relative_to(name, source)),
            );
            store.set_canary(connection.canaries.then(|| state.canary(name, source)));
        });
    }

    async fn stop(&mut self) {
        self.task.stop().await;
    }

    async fn drain(&mut self) {
        self.task.drain().await;
    }
}

/// The four stores of a remote and the tasks that forward their events
/// into the control loop.
pub(super) struct RemoteStores {
    identities: Store<IdentityEntry>,
    ipcache: Store<IpIdentityPair>,
    nodes: Store<Node>,
    services: Store<ClusterService>,
    forwarders: JoinSet<()>,
    /// Wakes the stores waiting to retry after a failure.
    retry_now: watch::Sender<u64>,
}

impl RemoteStores {
    /// `budget`: room for list pages, shared with every other remote.
    pub(super) fn new(
        remote: &ClusterName,
        source: SourceId,
        control: &LoopHandle,
        budget: &ListBudget,
    ) -> Self {
        let mut forwarders = JoinSet::new();
        let f = &mut forwarders;
        let retry_now = watch::Sender::new(0);
        let r = (&retry_now, budget);
        Self {
            identities: Store::new(
                remote,
                StoreKind::Identities,
                keys::StateKind::Identities,
                f,
                control,
                r,
                move |e| Input::Identity(source, e),
            ),
            ipcache: Store::new(
                remote,
                StoreKind::IpCache,
                keys::StateKind::Ip,
                f,
                control,
                r,
                move |e| Input::Ip(source, IpEvent::from_event(e, true)),
            ),
            nodes: Store::new(
                remote,
                StoreKind::Nodes,
                keys::StateKind::Nodes,
                f,
                control,
                r,
                move |e| Input::Node(source, e),
            ),
            services: Store::new(
                remote,
                StoreKind::Services,
                keys::StateKind::Services,
                f,
                control,
                r,
                move |e| Input::Service(source, e),
            ),
            forwarders,
            retry_now,
        }
    }

    /// The remote answers again: the stores waiting out a backoff after a
    /// failure retry now.
    pub(super) fn retry_now(&self) {
        self.retry_now.send_modify(|n| *n += 1);
    }

    /// Starts listing and watching through `connection`, with the checks of
    /// the remote's name and ID.
    pub(super) fn start(&mut self, connection: &Connection<'_>, parent: &CancellationToken) {
        let (name, id, mode) = (connection.name, connection.id, connection.mode);
        self.identities.start(
            connection,
            remote_identity_validator(name, id, mode),
            parent,
        );
        self.ipcache
            .start(connection, ipcache_validator(name, id, mode), parent);
        self.nodes
            .start(connection, node_validator(name, id), parent);
        self.services
            .start(connection, service_validator(name, id), parent);
    }

    /// Stops every store; what they delivered stays.
    pub(super) async fn stop(&mut self) {
        self.identities.stop().await;
        self.ipcache.stop().await;
        self.nodes.stop().await;
        self.services.stop().await;
    }

    /// Stops every store and deletes what they delivered.
    pub(super) async fn drain(&mut self) {
        self.identities.drain().await;
        self.ipcache.drain().await;
        self.nodes.drain().await;
        self.services.drain().await;
    }

    /// Stops the services store and deletes the services (the remote was
    /// unreachable longer than its service cache TTL); the next connection
    /// lists them again.
    pub(super) async fn drain_services(&mut self) {
        self.services.drain().await;
    }

    /// Drops the stores and waits until the forwarders handed everything
    /// to the loop.
    pub(super) async fn close(self) {
        let Self {
            identities,
            ipcache,
            nodes,
            services,
            mut forwarders,
            retry_now: _,
        } = self;
        drop((identities, ipcache, nodes, services));
        while forwarders.join_next().await.is_some() {}
    }

    /// Each store's counters, by kind.
    pub(super) fn stats(&self) -> [(StoreKind, Arc<WatchStoreStats>); 4] {
        [
            (self.identities.kind, self.identities.stats.clone()),
            (self.ipcache.kind, self.ipcache.stats.clone()),
            (self.nodes.kind, self.nodes.stats.clone()),
            (self.services.kind, self.services.stats.clone()),
        ]
    }
}
