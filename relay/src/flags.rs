//! The command line of `clustermesh-relay`.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use certs::TlsFiles;
use clap::Parser;

use crate::{
    DEFAULT_PEER_SERVICE, PEER_SERVICE_NAME, PeerAddress, PeerAddressError, RelayConfig, Security,
};

/// Why the flags do not make a configuration. The binary exits with 64.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid --peer-service")]
    PeerService(#[source] PeerAddressError),
    #[error("invalid {flag} {value:?}: {reason}")]
    Value {
        flag: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("{0}")]
    Tls(&'static str),
    #[error("invalid {flag} {reason}")]
    Listen { flag: &'static str, reason: String },
}

/// The command line of `clustermesh-relay`. Every flag can also be set
/// through the environment variable shown in `--help`; this struct is the
/// one place that names them.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "clustermesh-relay",
    version,
    about = "Hubble Relay: one Observer over every node of the cluster (and of the clusters meshed with it)",
    long_about = "Hubble Relay: one Observer over every node of the cluster (and of the clusters meshed with it).\n\n\
It follows a node's Peer service (--peer-service) to learn every Hubble server, keeps a connection \
to each (mutual TLS when the Peer service gives a TLS server name), and serves the Observer API on \
--listen: flows of all nodes merged in time order with node status events (GetFlows; --last N is \
per node), ServerStatus summed over the nodes, GetNodes and GetNamespaces. gRPC health \
(hubble.server.Observer) is SERVING while the Peer service is followed and a node is connected; it \
is served on --listen and on --health-listen."
)]
pub struct Flags {
    /// Address of the Observer and gRPC health server; ":PORT" listens on
    /// every interface.
    #[arg(long, alias = "listen-address", env = "CLUSTERMESH_RELAY_LISTEN", value_name = "ADDR", default_value = ":4245", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// Address of the plaintext gRPC health server; "" disables it.
    #[arg(
        long,
        alias = "health-listen-address",
        env = "CLUSTERMESH_RELAY_HEALTH_LISTEN",
        value_name = "ADDR",
        default_value = ":4222"
    )]
    pub health_listen: String,

    /// Address of the HTTP /metrics server (hubble_relay_pool_peer_connection_status and process
    /// metrics); off when not given.
    #[arg(long, alias = "metrics-listen-address", env = "CLUSTERMESH_RELAY_METRICS_LISTEN", value_name = "ADDR", value_parser = parse_listen)]
    pub metrics_listen: Option<SocketAddr>,

    /// The Peer service to follow: "unix:///PATH" or "/PATH" (a node's Hubble socket, plaintext;
    /// the default is the local agent's) or "HOST:PORT" (mutual TLS with the client certificate
    /// and --peer-service-server-name).
    #[arg(long, env = "CLUSTERMESH_RELAY_PEER_SERVICE", value_name = "ADDR", default_value = DEFAULT_PEER_SERVICE)]
    pub peer_service: String,

    /// TLS server name of a TCP --peer-service [default: hubble-peer.<cluster>.hubble-grpc.cilium.io].
    /// When the Peer service is a node's own listener, give that node's name,
    /// <node>.<cluster>.hubble-grpc.cilium.io.
    #[arg(
        long,
        env = "CLUSTERMESH_RELAY_PEER_SERVICE_SERVER_NAME",
        value_name = "NAME"
    )]
    pub peer_service_server_name: Option<String>,

    /// Reach a TCP --peer-service without TLS.
    #[arg(long, env = "CLUSTERMESH_RELAY_PEER_SERVICE_PLAINTEXT")]
    pub peer_service_plaintext: bool,

    /// Name of the cluster, for the default --peer-service-server-name.
    #[arg(long, env = "CLUSTERMESH_CLUSTER_NAME", value_name = "NAME", default_value = hubble::names::DEFAULT_CLUSTER)]
    pub cluster_name: String,

    /// Name of this relay in the node status events it sends [default: the host name].
    #[arg(long, env = "CLUSTERMESH_RELAY_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,

    /// Client certificate (PEM) the relay presents to Hubble servers.
    #[arg(
        long,
        env = "CLUSTERMESH_RELAY_TLS_CLIENT_CERT_FILE",
        value_name = "FILE"
    )]
    pub tls_client_cert_file: Option<PathBuf>,

    /// Key of --tls-client-cert-file.
    #[arg(
        long,
        env = "CLUSTERMESH_RELAY_TLS_CLIENT_KEY_FILE",
        value_name = "FILE"
    )]
    pub tls_client_key_file: Option<PathBuf>,

    /// CA bundle (PEM, one file holding every CA) that signs the Hubble servers' certificates.
    #[arg(
        long,
        env = "CLUSTERMESH_RELAY_TLS_HUBBLE_SERVER_CA_FILES",
        value_name = "FILE"
    )]
    pub tls_hubble_server_ca_files: Option<PathBuf>,

    /// Server certificate (PEM) of the relay's own listener; with the key and client CA it
    /// serves mutual TLS, without them plaintext.
    #[arg(
        long,
        env = "CLUSTERMESH_RELAY_TLS_SERVER_CERT_FILE",
        value_name = "FILE"
    )]
    pub tls_server_cert_file: Option<PathBuf>,

    /// Key of --tls-server-cert-file.
    #[arg(
        long,
        env = "CLUSTERMESH_RELAY_TLS_SERVER_KEY_FILE",
        value_name = "FILE"
    )]
    pub tls_server_key_file: Option<PathBuf>,

    /// CA bundle (PEM) that signs the certificates of the relay's clients.
    #[arg(
        long,
        env = "CLUSTERMESH_RELAY_TLS_CLIENT_CA_FILES",
        value_name = "FILE"
    )]
    pub tls_client_ca_files: Option<PathBuf>,

    /// Wait before following the Peer service again after it failed.
    #[arg(long, env = "CLUSTERMESH_RELAY_RETRY_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub retry_timeout: Duration,

    /// Time allowed to connect to a node (TCP and TLS handshake).
    #[arg(long, env = "CLUSTERMESH_RELAY_DIAL_TIMEOUT", value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub dial_timeout: Duration,

    /// HTTP/2 ping interval on node connections; a node that does not answer a ping within
    /// as long again is unavailable.
    #[arg(long, env = "CLUSTERMESH_RELAY_KEEPALIVE", value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
    pub keepalive: Duration,

    /// Flows the merge buffer holds to put the nodes' flows in time order.
    #[arg(
        long,
        env = "CLUSTERMESH_RELAY_SORT_BUFFER_LEN_MAX",
        value_name = "N",
        default_value_t = 100
    )]
    pub sort_buffer_len_max: usize,

    /// Age after which a buffered flow is sent even if the buffer is not full.
    #[arg(long, env = "CLUSTERMESH_RELAY_SORT_BUFFER_DRAIN_TIMEOUT", value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub sort_buffer_drain_timeout: Duration,

    /// Window in which NODE_ERROR events with the same message are sent as one.
    #[arg(long, env = "CLUSTERMESH_RELAY_ERROR_AGGREGATION_WINDOW", value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub error_aggregation_window: Duration,

    /// How often a following GetFlows looks for nodes that became available.
    #[arg(long, env = "CLUSTERMESH_RELAY_PEER_UPDATE_INTERVAL", value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub peer_update_interval: Duration,

    /// Deadline of one node's answer to ServerStatus, GetNodes and GetNamespaces.
    #[arg(long, env = "CLUSTERMESH_RELAY_PEER_REQUEST_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub peer_request_timeout: Duration,
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?}: the port must be a number"))?;
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    s.parse()
        .map_err(|_| format!("{s:?}: expected IP:PORT, [IPv6]:PORT or :PORT"))
}

impl Flags {
    /// Validates the flags.
    pub fn into_config(self) -> Result<RelayConfig, ConfigError> {
        let peer_service: PeerAddress = self
            .peer_service
            .parse()
            .map_err(ConfigError::PeerService)?;
        let client_tls = all_or_none(
            [
                self.tls_client_cert_file,
                self.tls_client_key_file,
                self.tls_hubble_server_ca_files,
            ],
            "--tls-client-cert-file, --tls-client-key-file and --tls-hubble-server-ca-files must be given together",
        )?;
        let server_tls = all_or_none(
            [
                self.tls_server_cert_file,
                self.tls_server_key_file,
                self.tls_client_ca_files,
            ],
            "--tls-server-cert-file, --tls-server-key-file and --tls-client-ca-files must be given together",
        )?;
        let security = match (&peer_service, self.peer_service_plaintext) {
            (PeerAddress::Unix(_), _) | (_, true) => Security::Plaintext,
            (PeerAddress::Tcp { .. }, false) => {
                if client_tls.is_none() {
                    return Err(ConfigError::Tls(
                        "a TCP --peer-service is reached with mutual TLS: give --tls-client-cert-file, --tls-client-key-file and --tls-hubble-server-ca-files, or --peer-service-plaintext",
                    ));
                }
                let server_name = self.peer_service_server_name.unwrap_or_else(|| {
                    hubble::names::tls_server_name(PEER_SERVICE_NAME, &self.cluster_name)
                });
                Security::Tls { server_name }
            }
        };
        let node_name = match self.node_name {
            Some(n) if n.trim().is_empty() => {
                return Err(value("--node-name", n, "must not be empty"));
            }
            Some(n) => n,
            None => host_name(),
        };
        for (flag, d) in [
            ("--retry-timeout", self.retry_timeout),
            ("--dial-timeout", self.dial_timeout),
            ("--keepalive", self.keepalive),
            (
                "--sort-buffer-drain-timeout",
                self.sort_buffer_drain_timeout,
            ),
            ("--peer-update-interval", self.peer_update_interval),
            ("--peer-request-timeout", self.peer_request_timeout),
        ] {
            if d.is_zero() {
                return Err(value(flag, "0s", "must be longer than zero"));
            }
        }
        if self.sort_buffer_len_max == 0 {
            return Err(value("--sort-buffer-len-max", "0", "must be at least 1"));
        }
        let mut config = RelayConfig::new(peer_service, security, node_name);
        config.listen = self.listen;
        config.health_listen = match self.health_listen.trim() {
            "" => None,
            addr => Some(parse_listen(addr).map_err(|reason| ConfigError::Listen {
                flag: "--health-listen",
                reason,
            })?),
        };
        config.metrics_listen = self.metrics_listen;
        config.client_tls = client_tls;
        config.server_tls = server_tls;
        config.pool.retry_timeout = self.retry_timeout;
        config.dial_timeout = self.dial_timeout;
        config.keepalive_interval = self.keepalive;
        config.keepalive_timeout = self.keepalive;
        config.observer.sort_buffer_max_len = self.sort_buffer_len_max;
        config.observer.sort_buffer_drain_timeout = self.sort_buffer_drain_timeout;
        config.observer.error_aggregation_window = self.error_aggregation_window;
        config.observer.peer_update_interval = self.peer_update_interval;
        config.observer.peer_request_timeout = self.peer_request_timeout;
        Ok(config)
    }
}

fn all_or_none(
    [cert, key, ca]: [Option<PathBuf>; 3],
    message: &'static str,
) -> Result<Option<TlsFiles>, ConfigError> {
    match (cert, key, ca) {
        (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles::new(cert, key, ca))),
        (None, None, None) => Ok(None),
        _ => Err(ConfigError::Tls(message)),
    }
}

fn value(flag: &'static str, value: impl ToString, reason: &'static str) -> ConfigError {
    ConfigError::Value {
        flag,
        value: value.to_string(),
        reason,
    }
}

/// The kernel's host name, or `hubble-relay` when it cannot be read.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "hubble-relay".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_chain;

    fn parse(args: &[&str]) -> Result<RelayConfig, String> {
        let mut argv = vec!["clustermesh-relay"];
        argv.extend(args);
        let flags = Flags::try_parse_from(argv).map_err(|e| e.to_string())?;
        flags.into_config().map_err(|e| error_chain(&e))
    }

    #[test]
    fn defaults_are_ciliums() {
        let c = parse(&["--node-name", "relay-1"]).unwrap();
        assert_eq!(c.listen, "0.0.0.0:4245".parse().unwrap());
        assert_eq!(c.health_listen, Some("0.0.0.0:4222".parse().unwrap()));
        assert_eq!(c.metrics_listen, None);
        assert_eq!(
            c.pool.peer_service,
            PeerAddress::Unix("/run/clustermesh/agent.hubble.sock".into())
        );
        assert_eq!(c.pool.peer_service_security, Security::Plaintext);
        assert_eq!(c.pool.retry_timeout, Duration::from_secs(30));
        assert_eq!(c.observer.node_name, "relay-1");
        assert_eq!(c.observer.sort_buffer_max_len, 100);
        assert_eq!(c.observer.sort_buffer_drain_timeout, Duration::from_secs(1));
        assert_eq!(c.observer.error_aggregation_window, Duration::from_secs(10));
        assert_eq!(c.observer.peer_update_interval, Duration::from_secs(2));
        assert!(c.client_tls.is_none() && c.server_tls.is_none());
        assert!(!parse(&[]).unwrap().observer.node_name.is_empty());
    }

    #[test]
    fn tcp_peer_service_uses_mutual_tls_with_the_peer_server_name() {
        let tls = [
            "--tls-client-cert-file",
            "c.crt",
            "--tls-client-key-file",
            "c.key",
            "--tls-hubble-server-ca-files",
            "ca.crt",
        ];
        let mut args = vec!["--peer-service", "10.0.0.1:4244", "--cluster-name", "c1"];
        args.extend(tls);
        let c = parse(&args).unwrap();
        assert_eq!(
            c.pool.peer_service_security,
            Security::Tls {
                server_name: "hubble-peer.c1.hubble-grpc.cilium.io".into()
            }
        );
        assert_eq!(c.client_tls.unwrap().ca_bundle, PathBuf::from("ca.crt"));
        args.extend(["--peer-service-server-name", "n1.c1.hubble-grpc.cilium.io"]);
        assert_eq!(
            parse(&args)
                .unwrap()
                .pool
                .peer_service_security
                .server_name(),
            Some("n1.c1.hubble-grpc.cilium.io")
        );
        let c = parse(&[
            "--peer-service",
            "127.0.0.1:4244",
            "--peer-service-plaintext",
        ])
        .unwrap();
        assert_eq!(c.pool.peer_service_security, Security::Plaintext);
    }

    #[test]
    fn listen_addresses() {
        let c = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--health-listen",
            "",
            "--metrics-listen",
            ":9966",
        ])
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(c.health_listen, None);
        assert_eq!(c.metrics_listen, Some("0.0.0.0:9966".parse().unwrap()));
        let err = parse(&["--listen", "4245"]).unwrap_err();
        assert!(
            err.contains("expected IP:PORT, [IPv6]:PORT or :PORT"),
            "{err}"
        );
    }

    #[test]
    fn clear_errors() {
        let err = |args: &[&str]| parse(args).unwrap_err();
        assert_eq!(
            err(&["--peer-service", "unix://"]),
            "invalid --peer-service: invalid address \"unix://\": the unix socket path is empty"
        );
        assert_eq!(
            err(&["--peer-service", "10.0.0.1:4244"]),
            "a TCP --peer-service is reached with mutual TLS: give --tls-client-cert-file, --tls-client-key-file and --tls-hubble-server-ca-files, or --peer-service-plaintext"
        );
        assert_eq!(
            err(&["--tls-server-cert-file", "s.crt"]),
            "--tls-server-cert-file, --tls-server-key-file and --tls-client-ca-files must be given together"
        );
        assert_eq!(
            err(&["--retry-timeout", "0s"]),
            "invalid --retry-timeout \"0s\": must be longer than zero"
        );
        assert_eq!(
            err(&["--node-name", " "]),
            "invalid --node-name \" \": must not be empty"
        );
    }
}
