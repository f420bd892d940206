use std::{fmt, time::Duration};

use kvstore::{
    Client, ClusterId, ClusterName, KeyPrefix, MaxConnectedClusters, RawEntry, Session,
    SessionHandle, StoreValue, SyncStore, SyncStoreConfig, SyncStoreRunner, keys,
    values::ClusterConfig,
};
use tokio_util::sync::CancellationToken;

/// Why publishing stopped.
#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    #[error("keeping the session lease alive failed")]
    Session(#[source] kvstore::Error),
    #[error("writing the cluster config failed")]
    Write(#[source] kvstore::Error),
}

/// Keeps `cilium/cluster-config/<name>` in etcd (DESIGN §3):
/// `{"id":N,"capabilities":{"syncedCanaries":true,"maxConnectedClusters":M}}`,
/// attached to the apiserver's session lease. Remote clusters read it before
/// anything else. A [`SyncStore`] owns the key: it re-creates it on a new
/// lease after the lease was lost, and rewrites it when someone else changes
/// or deletes it.
pub struct ClusterConfigPublisher {
    session: Session,
    runner: SyncStoreRunner,
    store: SyncStore<RawEntry>,
    entry: RawEntry,
}

impl fmt::Debug for ClusterConfigPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfigPublisher")
            .field("key", &self.entry.key)
            .finish_non_exhaustive()
    }
}

/// Whether the cluster config is in etcd, readable while the publisher runs.
#[derive(Debug, Clone)]
pub struct PublisherStatus {
    store: SyncStore<RawEntry>,
    session: SessionHandle,
}

impl PublisherStatus {
    /// The key is written on the current lease and nothing is pending.
    pub fn is_published(&self) -> bool {
        let status = self.store.status();
        self.session.current().lease.is_some()
            && status.keys == 1
            && status.pending == 0
            && status.flushed > 0
    }

    /// Notified on every change of the apiserver's session lease (a new
    /// generation after a lost lease means etcd may have lost its data).
    pub fn session_changes(&self) -> tokio::sync::watch::Receiver<kvstore::SessionState> {
        self.session.subscribe()
    }

    /// Why it is not published, for `/readyz`.
    pub fn describe(&self) -> String {
        let status = self.store.status();
        if self.session.current().lease.is_none() {
            return "no session lease yet".into();
        }
        match status.last_error {
            Some(e) if status.pending > 0 => format!("cluster config not written: {e}"),
            _ if status.pending > 0 || status.flushed == 0 => "cluster config being written".into(),
            _ => "cluster config published".into(),
        }
    }
}

impl ClusterConfigPublisher {
    /// Nothing is written until [`ClusterConfigPublisher::run`].
    pub fn new(
        client: Client,
        cluster: &ClusterName,
        id: ClusterId,
        mode: MaxConnectedClusters,
        session_ttl: Duration,
    ) -> (Self, PublisherStatus) {
        let (session, handle) = Session::new(client.clone(), session_ttl);
        let mut store_config = SyncStoreConfig::new(KeyPrefix::new(keys::CLUSTER_CONFIG));
        store_config.name = "cluster config".into();
        let (store, runner) = SyncStore::<RawEntry>::new(client, handle.clone(), store_config);
        let entry = RawEntry {
            key: cluster.as_str().to_owned(),
            value: ClusterConfig::new(id, mode).encode(),
        };
        let status = PublisherStatus {
            store: store.clone(),
            session: handle,
        };
        (
            Self {
                session,
                runner,
                store,
                entry,
            },
            status,
        )
    }

    /// Publishes and keeps the key until `shutdown`. The key stays in etcd
    /// until the lease runs out, so a restarting apiserver (or a second
    /// replica) does not make remote clusters see the cluster vanish.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), PublisherError> {
        self.store.upsert(&self.entry);
        let (session, runner) = tokio::join!(
            self.session.run(shutdown.clone()),
            self.runner.run(shutdown.clone())
        );
        session.map_err(PublisherError::Session)?;
        runner.map_err(PublisherError::Write)
    }
}
