//! Hubble Relay: one `observer.Observer` over every node of a cluster (and
//! of the clusters meshed with it), as Cilium's `hubble-relay` serves it.
//!
//! - [`PeerManager`] follows a node's Peer service and keeps a connection to
//!   every peer it announces ([`PeerPool`] is the readers' view);
//! - [`RelayObserver`] fans every call out to the available peers: flows
//!   merged in time order with `NODE_CONNECTED`/`NODE_UNAVAILABLE`/
//!   `NODE_ERROR` events, aggregated `ServerStatus`, `GetNodes`,
//!   `GetNamespaces`;
//! - [`Relay`] puts them together with the gRPC listeners, gRPC health
//!   (`hubble.server.Observer`) and metrics; [`Flags`] is its command line.
//!
//! Not for: serving the flows of one node (that is the `hubble` crate, in
//! the agent) or printing them (the CLI).

mod backoff;
mod config;
mod dialer;
mod error_aggregator;
mod flags;
mod flow_collector;
mod health;
mod metrics;
mod namespaces;
mod node_status;
mod nodes;
mod observer;
mod peer_address;
mod peer_answer;
mod peer_manager;
mod peer_pool;
mod peer_table;
mod relay;
mod server_status;
mod sort_buffer;

pub use crate::{
    config::{
        DEFAULT_HEALTH_LISTEN, DEFAULT_LISTEN, DEFAULT_PEER_SERVICE, PEER_SERVICE_NAME, RelayConfig,
    },
    dialer::{Connection, DialError, Dialer, Security},
    flags::{ConfigError, Flags},
    metrics::RelayMetrics,
    observer::{ObserverConfig, RELAY_VERSION_HEADER, RelayObserver},
    peer_address::{DEFAULT_PEER_PORT, Host, PeerAddress, PeerAddressError},
    peer_manager::{PeerManager, PoolConfig},
    peer_pool::{ConnectionStatus, Peer, PeerPool, PoolState},
    relay::{BoundAddrs, Relay, RelayError, RelayHandle},
};

pub use daemon::error_chain;

/// A gRPC status as grpc-go prints it (`rpc error: code = … desc = …`),
/// which is what Cilium's relay puts in `NODE_ERROR` messages, with the
/// transport error's causes when there are any.
pub(crate) fn status_message(status: &tonic::Status) -> String {
    let mut desc = status.message().to_owned();
    if let Some(source) = std::error::Error::source(status) {
        let causes = error_chain(source);
        if !desc.contains(&causes) {
            if !desc.is_empty() {
                desc.push_str(": ");
            }
            desc.push_str(&causes);
        }
    }
    format!("rpc error: code = {:?} desc = {desc}", status.code())
}
