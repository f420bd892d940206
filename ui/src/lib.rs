//! The Hubble UI of a whole mesh: a service map with a region per cluster,
//! the flows table and the global services panel, live. The backend reads
//! flows from the relays ([`feed`]) and services from each cluster's agents
//! ([`services`]), keeps the map ([`model`]) and sends pages what changed
//! ([`hub`], [`server`]); the front end (`web/`) is built by `build.rs` and
//! embedded in the binary.

pub mod feed;
pub mod flags;
pub mod hub;
pub mod model;
pub mod server;
pub mod services;
#[cfg(feature = "testing")]
pub mod testing;

pub use flags::{Config, Flags};

use std::{net::SocketAddr, sync::Arc};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A UI bound to its address, ready to run.
pub struct Ui {
    listener: TcpListener,
    config: Config,
    hub: Arc<hub::Hub>,
}

impl Ui {
    /// Binds `config.listen` (port 0 picks a free one).
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let relays: Vec<(String, String)> = config
            .relays
            .iter()
            .map(|r| (r.name.clone(), r.address.to_string()))
            .collect();
        let clusters = config
            .relays
            .iter()
            .map(|r| r.name.clone())
            .chain(config.agents.iter().map(|a| a.cluster.clone()))
            .collect();
        let hub = hub::Hub::new(config.limits, &relays, clusters);
        Ok(Self {
            listener,
            config,
            hub,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`: the feed, the services poller, the flush
    /// ticker and the HTTP server.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            listener,
            config,
            hub,
        } = self;
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(feed::run(
            hub.clone(),
            config.relays,
            config.feed,
            shutdown.clone(),
        ));
        tasks.spawn(services::run(
            hub.clone(),
            config.agents,
            config.services_interval,
            shutdown.clone(),
        ));
        let flusher = hub.clone();
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => flusher.flush(),
                }
            }
        });
        let app = server::router(hub, shutdown.clone());
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        tasks.shutdown().await;
        result.map_err(|e| anyhow::anyhow!("serving the UI: {e}"))
    }
}

/// How often changes are sent to the pages (a flow reaches the page
/// within this much of reaching the UI).
pub const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);
