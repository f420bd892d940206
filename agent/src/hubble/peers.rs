//! The Peer service's view: every node the agent knows, of its own cluster
//! and of every connected remote cluster, as a Hubble server address.

use std::collections::BTreeMap;

use hubble::{
    names::{node_fullname, tls_server_name},
    peer::{PeerInfo, Peers},
};
use kvstore::values::Node;

/// How the agent's nodes are reached (every node is assumed to serve
/// Hubble on the same port, with the same TLS setting, as this one).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerPort {
    pub port: u16,
    pub tls: bool,
}

/// The peers of `nodes` (cluster → node name → node). Nodes without an
/// internal IP are left out (they cannot be dialled).
pub(crate) fn peers(nodes: &BTreeMap<String, BTreeMap<String, Node>>, how: PeerPort) -> Peers {
    nodes
        .iter()
        .flat_map(|(cluster, nodes)| nodes.iter().map(move |(name, node)| (cluster, name, node)))
        .filter_map(|(cluster, name, node)| {
            let ip = node.internal_ip()?;
            let fullname = node_fullname(cluster, name);
            Some((
                fullname.clone(),
                PeerInfo {
                    name: fullname,
                    address: std::net::SocketAddr::new(ip, how.port).to_string(),
                    tls_server_name: how.tls.then(|| tls_server_name(name, cluster)),
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use kvstore::{
        ClusterName,
        values::{Node, NodeAddress},
    };

    use super::*;

    #[test]
    fn nodes_of_every_cluster_with_their_tls_names() {
        let node = |cluster: &str, name: &str, ip: &str| {
            let mut n = Node::new(&ClusterName::new(cluster).unwrap(), name, 1);
            n.ip_addresses.push(NodeAddress {
                kind: NodeAddress::INTERNAL_IP.into(),
                ip: ip.parse().unwrap(),
            });
            n
        };
        let mut nodes = BTreeMap::new();
        nodes
            .entry("c1".to_string())
            .or_insert_with(BTreeMap::new)
            .insert("n1".to_string(), node("c1", "n1", "10.0.1.1"));
        nodes
            .entry("c2".to_string())
            .or_insert_with(BTreeMap::new)
            .insert("n1".to_string(), node("c2", "n1", "10.0.2.1"));
        let peers = peers(
            &nodes,
            PeerPort {
                port: 4244,
                tls: true,
            },
        );
        assert_eq!(peers.len(), 2);
        let p = &peers["c2/n1"];
        assert_eq!(p.address, "10.0.2.1:4244");
        assert_eq!(
            p.tls_server_name.as_deref(),
            Some("n1.c2.hubble-grpc.cilium.io")
        );
    }
}
