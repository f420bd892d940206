//! Everything a [`Relay`](crate::Relay) is configured with.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    time::Duration,
};

use certs::TlsFiles;

use crate::{ObserverConfig, PeerAddress, PoolConfig, Security};

/// The relay's gRPC port (Observer + health), on every interface.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(
    Ipv4Addr::UNSPECIFIED,
    hubble::names::RELAY_PORT,
));

/// The relay's health-only gRPC port, on every interface.
pub const DEFAULT_HEALTH_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(
    Ipv4Addr::UNSPECIFIED,
    hubble::names::RELAY_HEALTH_PORT,
));

/// The Peer service's name in its TLS server name,
/// `hubble-peer.<cluster>.hubble-grpc.cilium.io` (Cilium's
/// `defaults.PeerServiceName`).
pub const PEER_SERVICE_NAME: &str = "hubble-peer";

/// The Peer service followed by default: the local clustermesh agent's
/// Hubble socket (beside its API socket, `/run/clustermesh/agent.sock`).
/// Cilium's relay follows its agent's `unix:///var/run/cilium/hubble.sock`
/// the same way (`defaults.PeerTarget`).
pub const DEFAULT_PEER_SERVICE: &str = "unix:///run/clustermesh/agent.hubble.sock";

/// The relay's configuration; [`RelayConfig::new`] gives Cilium's defaults.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Where the Observer and gRPC health are served ([`DEFAULT_LISTEN`]).
    pub listen: SocketAddr,
    /// Where gRPC health alone is served, in plaintext
    /// ([`DEFAULT_HEALTH_LISTEN`]; `None`: not served apart).
    pub health_listen: Option<SocketAddr>,
    /// Where `/metrics` is served over HTTP (`None`: nowhere).
    pub metrics_listen: Option<SocketAddr>,
    /// Serve `listen` with mutual TLS: the relay's server certificate and
    /// key, and the CAs that sign its clients' certificates. `None`:
    /// plaintext.
    pub server_tls: Option<TlsFiles>,
    /// Dial TLS peers with mutual TLS: the relay's client certificate and
    /// key, and the CAs that sign the Hubble servers' certificates. `None`:
    /// only plaintext peers can be reached.
    pub client_tls: Option<TlsFiles>,
    /// The Peer service and the connection pool.
    pub pool: PoolConfig,
    /// The Observer's behaviour.
    pub observer: ObserverConfig,
    /// Time allowed to connect to a peer, TLS handshake included (5s).
    pub dial_timeout: Duration,
    /// HTTP/2 ping interval and timeout on peer connections (3s, 3s): a node
    /// that stops answering is unavailable after about their sum.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// How often the gRPC health is re-checked besides on every pool change
    /// (Cilium's 5s).
    pub health_check_interval: Duration,
    /// How the TLS files are watched and reloaded.
    pub tls_reload: certs::Config,
}

impl RelayConfig {
    /// A relay named `node_name` following the Peer service at
    /// `peer_service`, with the defaults above.
    pub fn new(
        peer_service: PeerAddress,
        security: Security,
        node_name: impl Into<String>,
    ) -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            health_listen: Some(DEFAULT_HEALTH_LISTEN),
            metrics_listen: None,
            server_tls: None,
            client_tls: None,
            pool: PoolConfig::new(peer_service, security),
            observer: ObserverConfig::new(node_name),
            dial_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(3),
            keepalive_timeout: Duration::from_secs(3),
            health_check_interval: Duration::from_secs(5),
            tls_reload: certs::Config {
                // gRPC over TLS negotiates HTTP/2 with ALPN; grpc-go peers
                // and clients insist on it.
                alpn_protocols: vec![b"h2".to_vec()],
                ..certs::Config::default()
            },
        }
    }
}
