//! What the relay knows of its peers, for the services that fan out to
//! them: one writer (the [`PeerManager`](crate::PeerManager)), many readers.

use std::{collections::BTreeMap, fmt, sync::Arc};

use tokio::sync::watch;

use crate::{Connection, Security};

/// The state of a peer's connection, named as gRPC connectivity states are
/// (the `status` label of `hubble_relay_pool_peer_connection_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnectionStatus {
    /// Known, not dialled yet.
    Idle,
    /// A dial is in progress.
    Connecting,
    /// Connected: calls can be made.
    Ready,
    /// The last dial failed or the connection broke; another attempt is
    /// scheduled.
    TransientFailure,
    /// The relay is stopping.
    Shutdown,
    /// No connection can be made: the announced address is invalid.
    NilConnection,
}

impl ConnectionStatus {
    pub const ALL: [Self; 6] = [
        Self::Idle,
        Self::Connecting,
        Self::Ready,
        Self::TransientFailure,
        Self::Shutdown,
        Self::NilConnection,
    ];

    /// The metric label (Cilium's names).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "IDLE",
            Self::Connecting => "CONNECTING",
            Self::Ready => "READY",
            Self::TransientFailure => "TRANSIENT_FAILURE",
            Self::Shutdown => "SHUTDOWN",
            Self::NilConnection => "NIL_CONNECTION",
        }
    }
}

impl fmt::Display for ConnectionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One peer as last announced by the Peer service, and its connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// `node`, or `cluster/node`.
    pub name: String,
    /// The address as announced (empty when none was).
    pub address: String,
    pub security: Security,
    pub status: ConnectionStatus,
    /// Set when `status` is [`ConnectionStatus::Ready`].
    pub connection: Option<Connection>,
    /// Why the last dial failed or the connection broke.
    pub last_error: Option<String>,
}

impl Peer {
    /// Whether calls can be made to the peer now (Cilium's `isAvailable`).
    pub fn is_available(&self) -> bool {
        self.status == ConnectionStatus::Ready
            && self.connection.as_ref().is_some_and(|c| !c.is_gone())
    }

    /// The connection, if the peer is available.
    pub fn available_connection(&self) -> Option<&Connection> {
        self.connection.as_ref().filter(|_| self.is_available())
    }
}

/// A snapshot of the pool.
#[derive(Debug, Clone, Default)]
pub struct PoolState {
    /// By name.
    pub peers: BTreeMap<String, Peer>,
    /// Whether the relay follows the Peer service's notifications now.
    pub peer_service_connected: bool,
}

impl PoolState {
    /// How many peers are in each status.
    pub fn count_by_status(&self) -> BTreeMap<ConnectionStatus, usize> {
        let mut counts: BTreeMap<_, _> = ConnectionStatus::ALL.iter().map(|s| (*s, 0)).collect();
        for peer in self.peers.values() {
            *counts.entry(peer.status).or_default() += 1;
        }
        counts
    }
}

/// The readers' handle on the pool: cheap to clone, never blocks the
/// writer.
#[derive(Debug, Clone)]
pub struct PeerPool {
    state: watch::Receiver<Arc<PoolState>>,
}

impl PeerPool {
    pub(crate) fn new(state: watch::Receiver<Arc<PoolState>>) -> Self {
        Self { state }
    }

    /// The current snapshot.
    pub fn state(&self) -> Arc<PoolState> {
        self.state.borrow().clone()
    }

    /// Every peer, by name (Cilium's `List()`).
    pub fn list(&self) -> Vec<Peer> {
        self.state().peers.values().cloned().collect()
    }

    pub fn peer_service_connected(&self) -> bool {
        self.state().peer_service_connected
    }

    /// Whether the relay can serve: it follows the Peer service and at least
    /// one peer is available (what its gRPC health reports).
    pub fn is_serving(&self) -> bool {
        let state = self.state();
        state.peer_service_connected && state.peers.values().any(Peer::is_available)
    }

    /// A receiver that is notified on every change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<PoolState>> {
        self.state.clone()
    }

    /// Waits until `condition` holds for a snapshot (or the pool's writer is
    /// gone, then `None`).
    pub async fn wait_for(
        &self,
        mut condition: impl FnMut(&PoolState) -> bool,
    ) -> Option<Arc<PoolState>> {
        let mut rx = self.state.clone();
        rx.wait_for(|s| condition(s)).await.ok().map(|s| s.clone())
    }
}
