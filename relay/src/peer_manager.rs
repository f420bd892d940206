//! Follows the Peer service and keeps a connection to every peer.

use std::{sync::Arc, time::Duration};

use hubble_api::peer::{ChangeNotification, NotifyRequest, peer_client::PeerClient};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    Connection, Dialer, PeerAddress, PeerPool, PoolState, RelayMetrics, Security, error_chain,
    peer_table::{Action, PeerTable},
};

/// How the pool finds and keeps its peers.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The Peer service (a node's Hubble server).
    pub peer_service: PeerAddress,
    /// How to secure the connection to the Peer service.
    pub peer_service_security: Security,
    /// The wait before following the Peer service again after its stream
    /// broke or it could not be reached (Cilium's `retry-timeout`, 30s).
    pub retry_timeout: Duration,
    /// The first wait before dialling a failed peer again; it doubles on
    /// each failure up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl PoolConfig {
    /// Cilium's defaults for a Peer service at `peer_service`.
    pub fn new(peer_service: PeerAddress, peer_service_security: Security) -> Self {
        Self {
            peer_service,
            peer_service_security,
            retry_timeout: Duration::from_secs(30),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

enum Event {
    Notification(ChangeNotification),
    PeerServiceConnected(bool),
}

enum ConnEvent {
    Dialed {
        name: String,
        generation: u64,
        result: Result<Connection, String>,
    },
    Gone {
        name: String,
        generation: u64,
    },
}

/// The writer of the [`PeerPool`]: follows the Peer service's `Notify`
/// stream and applies it to a [`PeerTable`], dialling and closing
/// connections as it says (see there for the rules). The one task that
/// changes the pool; readers get snapshots.
pub struct PeerManager {
    config: PoolConfig,
    dialer: Dialer,
    metrics: RelayMetrics,
    state: watch::Sender<Arc<PoolState>>,
}

impl std::fmt::Debug for PeerManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerManager")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PeerManager {
    pub fn new(config: PoolConfig, dialer: Dialer, metrics: RelayMetrics) -> (Self, PeerPool) {
        let (state, rx) = watch::channel(Arc::new(PoolState::default()));
        (
            Self {
                config,
                dialer,
                metrics,
                state,
            },
            PeerPool::new(rx),
        )
    }

    /// Runs until `shutdown`, then closes every connection.
    pub async fn run(self, shutdown: CancellationToken) {
        let (events_tx, events) = mpsc::channel(1024);
        let watcher = watch_notifications(
            self.dialer.clone(),
            self.config.clone(),
            events_tx,
            shutdown.clone(),
        );
        tokio::join!(watcher, self.manage(events, shutdown));
    }

    async fn manage(&self, mut events: mpsc::Receiver<Event>, shutdown: CancellationToken) {
        let mut table = PeerTable::new(self.config.backoff_min, self.config.backoff_max);
        let mut peer_service_connected = false;
        let mut tasks: JoinSet<ConnEvent> = JoinSet::new();
        loop {
            let deadline = table.next_deadline();
            let actions = tokio::select! {
                () = shutdown.cancelled() => break,
                Some(event) = events.recv() => match event {
                    Event::Notification(n) => {
                        debug!(peer = %n.name, address = %n.address, r#type = n.r#type, "peer notification");
                        table.apply(n)
                    }
                    Event::PeerServiceConnected(connected) => {
                        peer_service_connected = connected;
                        Vec::new()
                    }
                },
                Some(done) = tasks.join_next() => match done {
                    Ok(ConnEvent::Dialed { name, generation, result }) => {
                        match &result {
                            Ok(_) => info!(peer = %name, "connected to peer"),
                            Err(error) => warn!(peer = %name, %error, "cannot connect to peer"),
                        }
                        let ok = result.as_ref().ok().cloned();
                        let actions = table.dialed(&name, generation, result, Instant::now().into_std());
                        if let Some(connection) = ok {
                            tasks.spawn(async move {
                                connection.gone().await;
                                ConnEvent::Gone { name, generation }
                            });
                        }
                        actions
                    }
                    Ok(ConnEvent::Gone { name, generation }) => {
                        debug!(peer = %name, "peer connection gone");
                        table.gone(&name, generation, Instant::now().into_std());
                        Vec::new()
                    }
                    Err(e) => {
                        warn!(error = %e, "peer connection task failed");
                        Vec::new()
                    }
                },
                () = sleep_until(deadline), if deadline.is_some() => table.due(Instant::now().into_std()),
            };
            self.execute(actions, &mut tasks);
            self.publish(table.snapshot(peer_service_connected));
        }
        self.execute(table.shutdown(), &mut tasks);
        self.publish(table.snapshot(false));
    }

    fn execute(&self, actions: Vec<Action>, tasks: &mut JoinSet<ConnEvent>) {
        for action in actions {
            match action {
                Action::Close(connection) => connection.close(),
                Action::Dial {
                    name,
                    generation,
                    address,
                    security,
                } => {
                    debug!(peer = %name, %address, ?security, "dialling peer");
                    let dialer = self.dialer.clone();
                    tasks.spawn(async move {
                        let result = dialer
                            .dial(&address, &security)
                            .await
                            .map_err(|e| error_chain(&e));
                        ConnEvent::Dialed {
                            name,
                            generation,
                            result,
                        }
                    });
                }
            }
        }
    }

    fn publish(&self, state: PoolState) {
        self.metrics.set_peer_statuses(&state.count_by_status());
        self.state.send_replace(Arc::new(state));
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(Instant::from_std(d)).await;
    }
}

/// Follows the Peer service: connect, `Notify`, forward every notification;
/// when that fails or the stream ends, wait `retry_timeout` and start over.
async fn watch_notifications(
    dialer: Dialer,
    config: PoolConfig,
    events: mpsc::Sender<Event>,
    shutdown: CancellationToken,
) {
    let target = &config.peer_service;
    loop {
        let followed = tokio::select! {
            () = shutdown.cancelled() => return,
            r = follow_once(&dialer, &config, &events) => r,
        };
        if events
            .send(Event::PeerServiceConnected(false))
            .await
            .is_err()
        {
            return;
        }
        match followed {
            Ok(()) => {
                warn!(peer_service = %target, retry_in = ?config.retry_timeout, "the Peer service ended its notification stream")
            }
            Err(error) => {
                warn!(peer_service = %target, retry_in = ?config.retry_timeout, %error, "cannot follow the Peer service")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(config.retry_timeout) => {}
        }
    }
}

async fn follow_once(
    dialer: &Dialer,
    config: &PoolConfig,
    events: &mpsc::Sender<Event>,
) -> Result<(), String> {
    let connection = dialer
        .dial(&config.peer_service, &config.peer_service_security)
        .await
        .map_err(|e| error_chain(&e))?;
    // Closed when this returns, whichever way.
    let _close = CloseOnDrop(connection.clone());
    let mut client = PeerClient::new(connection.channel());
    let mut stream = client
        .notify(NotifyRequest {})
        .await
        .map_err(|s| crate::status_message(&s))?
        .into_inner();
    info!(peer_service = %config.peer_service, "following the Peer service");
    if events
        .send(Event::PeerServiceConnected(true))
        .await
        .is_err()
    {
        return Ok(());
    }
    loop {
        match stream.message().await {
            Ok(Some(notification)) => {
                if events
                    .send(Event::Notification(notification))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            Ok(None) => return Ok(()),
            Err(status) => return Err(crate::status_message(&status)),
        }
    }
}

struct CloseOnDrop(Connection);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}
