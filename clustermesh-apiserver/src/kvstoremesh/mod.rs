//! kvstoremesh: the local mirror of every remote cluster (Cilium's
//! `clustermesh-apiserver kvstoremesh`, `/work/shared/reference/kvstoremesh.md`).
//!
//! For each file of the clustermesh config directory (one per remote, the
//! format agents read, [`kvstore::remote::RemoteClusterConfig`]),
//! kvstoremesh connects to that remote's clustermesh-apiserver and copies
//! its published state, byte for byte, into the LOCAL etcd. Local agents
//! then read every remote from the local etcd: one connection per remote
//! cluster per kvstoremesh replica instead of one per agent, and an
//! unreachable remote leaves the agents a stable cache.
//!
//! # Key layout (in the local etcd)
//!
//! | what | remote key read | local key written |
//! |---|---|---|
//! | nodes | `cilium/state/nodes/v1/<remote>/<node>` | `cilium/cache/nodes/v1/<remote>/<node>` |
//! | services | `cilium/state/services/v1/<remote>/<ns>/<name>` | `cilium/cache/services/v1/<remote>/<ns>/<name>` |
//! | service exports | `cilium/state/serviceexports/v1/<remote>/<ns>/<name>` | `cilium/cache/serviceexports/v1/<remote>/<ns>/<name>` |
//! | identities | `cilium/state/identities/v1/id/<id>` | `cilium/cache/identities/v1/<remote>/id/<id>` |
//! | ipcache | `cilium/state/ip/v1/default/<ip>` | `cilium/cache/ip/v1/<remote>/<ip>` |
//! | canaries | `cilium/synced/<remote>/cilium/state/<kind>/v1` (waited for) | `cilium/synced/<remote>/cilium/cache/<kind>/v1`, once the kind's full list is written |
//! | cluster config | `cilium/cluster-config/<remote>` | the same key: the remote's ID, `maxConnectedClusters` and `serviceExportsEnabled`, with `syncedCanaries` and `cached` |
//! | mirror status (our extension) | — | `cilium/kvstoremesh/v1/<remote>` ([`kvstore::values::MirrorStatus`]) |
//!
//! A chained remote (itself a kvstoremesh mirror, `cached` in its cluster
//! config) is read from its `cilium/cache/…` instead. Every local key is
//! written on one session lease and re-created if the lease is lost.
//!
//! # Behaviour
//!
//! - A remote's mirror ([`mirror`]) connects, pins the remote etcd's
//!   cluster ID, reads and accepts its cluster config (an ID that is not
//!   ours or another remote's, the same max-connected-clusters), publishes
//!   the cluster config locally, then lists and watches each kind. Failures
//!   are counted and retried forever with jittered backoff; a refused
//!   remote's cache is withdrawn.
//! - Each kind's cache is written by an exclusive [`kvstore::SyncStore`]:
//!   after the kind's first complete list it deletes whatever it was not
//!   told to keep (left by a previous run, or deleted remotely meanwhile),
//!   then writes the cache canary. A restart therefore never deletes a key
//!   that still exists remotely.
//! - An unreachable remote keeps its cache; with a service cache TTL, its
//!   services and service exports are dropped after that long and listed
//!   again once it answers. A wiped remote etcd is listed again, and the
//!   sweep leaves exactly what exists.
//! - A removed file withdraws `cilium/cluster-config/<remote>` at once and
//!   deletes the cache, the canaries and the status after the drain delay,
//!   unless the file comes back first.
//! - kvstoremesh refuses only what no cluster may publish ([`validation`]);
//!   agents validate every value again as for a direct connection.
//! - `/readyz` ([`readiness`]) says ready once every remote present at start
//!   is mirrored; `/status` shows each remote ([`KvstoremeshStatus`]).
//! - On shutdown it stops; the keys stay on the lease until it expires, so
//!   agents keep their view across a restart.
//!
//! Not for: writing anything but the mirror (it never touches the local
//! cluster's own `cilium/state/…`, nor `cilium/cluster-config/<local>`), or
//! judging a remote's values against the local cluster (the agents do).

mod args;
mod config;
mod directory;
mod http;
mod metrics;
mod mirror;
mod readiness;
mod status;
mod stores;
mod validation;

use std::{fmt, io, net::SocketAddr, time::Instant};

use kvstore::{Client, KeyPrefix, RawEntry, Session, SyncStore, SyncStoreConfig, keys};
use prometheus_client::registry::Registry;

use crate::spawn::spawn_logged;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::info;

pub use self::{
    args::{KvstoremeshArgs, kvstoremesh_env},
    config::{DEFAULT_KVSTOREMESH_HEALTH_LISTEN, KvstoremeshConfig},
    status::{KvstoremeshStatus, MirrorView, StatusBoard},
};
use self::{
    directory::Directory, http::HttpServer, metrics::KvstoremeshMetrics, mirror::Timing,
    readiness::Readiness,
};

/// Why kvstoremesh could not start.
#[derive(Debug, thiserror::Error)]
pub enum KvstoremeshError {
    #[error("invalid local etcd configuration")]
    EtcdClient(#[source] kvstore::Error),
    #[error("binding {addr} failed")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

impl KvstoremeshError {
    /// Whether the configuration is at fault, as opposed to the environment.
    pub fn is_config(&self) -> bool {
        matches!(self, Self::EtcdClient(_))
    }
}

/// kvstoremesh: the directory follower with a mirror per remote, the
/// session lease, the cluster config and status writers, and the HTTP
/// server. [`Kvstoremesh::bind`] validates and binds (so tests can bind
/// port 0 and read the address); [`Kvstoremesh::run`] mirrors until
/// shutdown.
pub struct Kvstoremesh {
    config: KvstoremeshConfig,
    local: Client,
    listener: TcpListener,
    health_addr: SocketAddr,
    registry: Registry,
    metrics: KvstoremeshMetrics,
    board: StatusBoard,
}

impl fmt::Debug for Kvstoremesh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kvstoremesh")
            .field("cluster", &self.config.cluster_name)
            .field("health_addr", &self.health_addr)
            .finish_non_exhaustive()
    }
}

impl Kvstoremesh {
    pub async fn bind(config: KvstoremeshConfig) -> Result<Self, KvstoremeshError> {
        let mut registry = Registry::default();
        daemon::register_process_metrics(&mut registry, "kvstoremesh", env!("CARGO_PKG_VERSION"));
        let metrics = KvstoremeshMetrics::register(&mut registry);
        let local = Client::connect_lazy(&config.etcd)
            .await
            .map_err(KvstoremeshError::EtcdClient)?;
        let listener = TcpListener::bind(config.health_listen)
            .await
            .map_err(|source| KvstoremeshError::Bind {
                addr: config.health_listen,
                source,
            })?;
        let health_addr = listener
            .local_addr()
            .map_err(|source| KvstoremeshError::Bind {
                addr: config.health_listen,
                source,
            })?;
        let board = StatusBoard::new(
            &config.cluster_name,
            Readiness::new(
                Instant::now(),
                config.per_cluster_ready_timeout,
                config.global_ready_timeout,
            ),
        );
        Ok(Self {
            config,
            local,
            listener,
            health_addr,
            registry,
            metrics,
            board,
        })
    }

    /// Where `/healthz`, `/readyz`, `/metrics` and `/status` listen.
    pub fn health_addr(&self) -> SocketAddr {
        self.health_addr
    }

    /// Every remote's view and the readiness, for in-process callers.
    pub fn status_board(&self) -> StatusBoard {
        self.board.clone()
    }

    /// Mirrors until `shutdown`; then every task stops and is awaited. What
    /// was written stays on the session lease until it expires.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), KvstoremeshError> {
        let Self {
            config,
            local,
            listener,
            health_addr,
            registry,
            metrics,
            board,
        } = self;
        let shutdown = shutdown.child_token();
        let tasks = TaskTracker::new();
        let (session, session_handle) = Session::new(local.clone(), config.session_ttl);
        let store = |prefix: &str, name: &str| {
            let mut store_config = SyncStoreConfig::new(KeyPrefix::new(prefix));
            store_config.name = name.to_owned();
            SyncStore::<RawEntry>::new(local.clone(), session_handle.clone(), store_config)
        };
        let (cluster_configs, cluster_configs_runner) =
            store(keys::CLUSTER_CONFIG, "remote cluster configs");
        let (statuses, statuses_runner) = store(keys::KVSTOREMESH, "mirror statuses");
        spawn_logged(
            &tasks,
            "writing the remote cluster configs stopped",
            cluster_configs_runner.run(shutdown.clone()),
        );
        spawn_logged(
            &tasks,
            "writing the mirror statuses stopped",
            statuses_runner.run(shutdown.clone()),
        );
        spawn_logged(
            &tasks,
            "the session lease stopped",
            session.run(shutdown.clone()),
        );
        let server = HttpServer {
            listener,
            board: board.clone(),
            registry,
        };
        spawn_logged(
            &tasks,
            "the health, metrics and status server stopped",
            server.run(shutdown.clone()),
        );
        info!(
            cluster = %config.cluster_name,
            cluster_id = config.cluster_id.get(),
            etcd = local.endpoints(),
            dir = %config.clustermesh_config.display(),
            %health_addr,
            "kvstoremesh mirroring"
        );
        // The connections stored by `clustermesh connect`, as config files.
        let mirror = kvstore::remote::ConfigMirror {
            client: local.clone(),
            dir: config.clustermesh_config.clone(),
            local: config.cluster_name.clone(),
            through_cache: None,
        };
        spawn_logged(
            &tasks,
            "mirroring the stored remote cluster records stopped",
            mirror.run(shutdown.clone()),
        );
        let directory = Directory {
            dir: config.clustermesh_config.clone(),
            local_name: config.cluster_name.clone(),
            local_id: config.cluster_id,
            mode: config.max_connected_clusters,
            default_service_cache_ttl: config.service_cache_ttl,
            local,
            session: session_handle,
            cluster_configs,
            statuses,
            board,
            metrics,
            timing: Timing {
                retry_min: config.retry_min,
                retry_max: config.retry_max,
                check_interval: config.check_interval,
                drain_delay: config.drain_delay,
            },
            rescan_interval: config.rescan_interval,
        };
        directory.run(shutdown.clone()).await;
        shutdown.cancel();
        tasks.close();
        tasks.wait().await;
        Ok(())
    }
}
