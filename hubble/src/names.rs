//! Names as Cilium's Hubble forms them (`pkg/hubble/peer/handler.go`).

/// The cluster name Cilium treats as "no cluster" in node names.
pub const DEFAULT_CLUSTER: &str = "default";

/// The Hubble gRPC service's name in TLS server names.
pub const GRPC_SERVICE_NAME: &str = "hubble-grpc";

/// The domain of Hubble's TLS server names.
pub const DOMAIN_NAME: &str = "cilium.io";

/// Hubble server port (`hubble-listen-address`).
pub const SERVER_PORT: u16 = 4244;

/// Hubble Relay's gRPC port.
pub const RELAY_PORT: u16 = 4245;

/// Hubble Relay's health-only gRPC port.
pub const RELAY_HEALTH_PORT: u16 = 4222;

/// The gRPC health service name of an Observer (server and relay).
pub const OBSERVER_HEALTH_SERVICE: &str = "hubble.server.Observer";

/// A node's name in flows and in the Peer service: `node`, or
/// `cluster/node` unless the cluster is `default`.
pub fn node_fullname(cluster: &str, node: &str) -> String {
    if cluster.is_empty() || cluster == DEFAULT_CLUSTER {
        node.to_owned()
    } else {
        format!("{cluster}/{node}")
    }
}

/// The TLS server name of a node's Hubble server:
/// `<node>.<cluster>.hubble-grpc.cilium.io`, dots in either replaced by
/// `-`, and `default` for an empty cluster.
pub fn tls_server_name(node: &str, cluster: &str) -> String {
    let cluster = if cluster.is_empty() {
        DEFAULT_CLUSTER.to_owned()
    } else {
        cluster.replace('.', "-")
    };
    format!(
        "{}.{cluster}.{GRPC_SERVICE_NAME}.{DOMAIN_NAME}",
        node.replace('.', "-")
    )
}

/// The DNS name a cluster's Hubble server certificates carry:
/// `*.<cluster>.hubble-grpc.cilium.io`.
pub fn server_cert_wildcard(cluster: &str) -> String {
    format!("*.{}", tls_server_name("", cluster).trim_start_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_cilium_forms_them() {
        assert_eq!(node_fullname("default", "n1"), "n1");
        assert_eq!(node_fullname("c1", "n1"), "c1/n1");
        assert_eq!(
            tls_server_name("node.a", "c.1"),
            "node-a.c-1.hubble-grpc.cilium.io"
        );
        assert_eq!(
            tls_server_name("n1", ""),
            "n1.default.hubble-grpc.cilium.io"
        );
        assert_eq!(server_cert_wildcard("c1"), "*.c1.hubble-grpc.cilium.io");
    }
}
