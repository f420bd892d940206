//! `GetNodes` of a relay: one `Node` per peer.

use hubble_api::{
    observer::{Node, ServerStatusResponse, Tls},
    relay::NodeState,
};

use crate::{Peer, peer_answer::PeerAnswer};

/// The `Node` for `peer`, given what its `ServerStatus` answered:
/// `NODE_UNAVAILABLE` when it could not be asked, `NODE_ERROR` when the
/// call failed, else `NODE_CONNECTED` with its version, uptime and flow
/// counts (Cilium's relay `GetNodes`).
pub(crate) fn node(peer: &Peer, answer: &PeerAnswer<ServerStatusResponse>) -> Node {
    let server_name = peer.security.server_name();
    let mut node = Node {
        name: peer.name.clone(),
        address: peer.address.clone(),
        tls: Some(Tls {
            enabled: server_name.is_some(),
            server_name: server_name.unwrap_or_default().to_owned(),
        }),
        ..Default::default()
    };
    let state = match answer {
        PeerAnswer::Unavailable => NodeState::NodeUnavailable,
        PeerAnswer::Failed(_) => NodeState::NodeError,
        PeerAnswer::Answered(status) => {
            node.version = status.version.clone();
            node.uptime_ns = status.uptime_ns;
            node.num_flows = status.num_flows;
            node.max_flows = status.max_flows;
            node.seen_flows = status.seen_flows;
            NodeState::NodeConnected
        }
    };
    node.state = state as i32;
    node
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConnectionStatus, Security};

    fn peer(name: &str, security: Security) -> Peer {
        Peer {
            name: name.into(),
            address: "10.0.0.1:4244".into(),
            security,
            status: ConnectionStatus::Ready,
            connection: None,
            last_error: None,
        }
    }

    #[test]
    fn state_and_fields_follow_the_answer() {
        let tls = Security::Tls {
            server_name: "n1.c1.hubble-grpc.cilium.io".into(),
        };
        let status = ServerStatusResponse {
            version: "0.1.0".into(),
            uptime_ns: 7,
            num_flows: 1,
            max_flows: 2,
            seen_flows: 3,
            ..Default::default()
        };
        let n = node(&peer("c1/n1", tls), &PeerAnswer::Answered(status));
        assert_eq!(n.state, NodeState::NodeConnected as i32);
        assert_eq!(
            (
                n.version.as_str(),
                n.uptime_ns,
                n.num_flows,
                n.max_flows,
                n.seen_flows
            ),
            ("0.1.0", 7, 1, 2, 3)
        );
        let t = n.tls.unwrap();
        assert!(t.enabled);
        assert_eq!(t.server_name, "n1.c1.hubble-grpc.cilium.io");
        assert_eq!(n.address, "10.0.0.1:4244");

        let n = node(&peer("n2", Security::Plaintext), &PeerAnswer::Unavailable);
        assert_eq!(n.state, NodeState::NodeUnavailable as i32);
        assert!(!n.tls.unwrap().enabled);
        let n = node(
            &peer("n3", Security::Plaintext),
            &PeerAnswer::Failed("x".into()),
        );
        assert_eq!(n.state, NodeState::NodeError as i32);
        assert_eq!(n.version, "");
    }
}
