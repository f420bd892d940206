//! `GetNodes`, `ServerStatus`, `GetNamespaces`, health and metrics of the
//! relay.

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use anyhow::Result;
use hubble::peer::PeerInfo;
use hubble_api::{
    observer::{GetNamespacesRequest, GetNodesRequest, ServerStatusRequest},
    relay::NodeState,
};
use relay::{PeerAddress, Security};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::support::*;

async fn health(channel: tonic::transport::Channel, service: &str) -> Result<ServingStatus> {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?;
    Ok(response.into_inner().status())
}

async fn plaintext(addr: SocketAddr) -> Result<tonic::transport::Channel> {
    Ok(hubble::client::connect(
        &hubble::client::Address::Tcp {
            host_port: addr.to_string(),
            tls: false,
        },
        None,
    )
    .await?)
}

/// Waits until both health ports say `want` for "" and the Observer.
async fn wait_for_health(pki: &Pki, relay: &RunningRelay, want: ServingStatus) {
    eventually(&format!("health {want:?}"), || async {
        let main = relay_channel(pki, relay).await.ok()?;
        let apart = plaintext(relay.addrs.health?).await.ok()?;
        for channel in [main, apart] {
            for service in ["", "hubble.server.Observer"] {
                if health(channel.clone(), service).await.ok()? != want {
                    return None;
                }
            }
        }
        Some(())
    })
    .await;
}

async fn metrics(relay: &RunningRelay) -> Result<String> {
    // A plain HTTP/1.1 GET, without a client library.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(relay.addrs.metrics.unwrap()).await?;
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .await?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).await?;
    Ok(text)
}

#[tokio::test]
async fn nodes_status_namespaces_health_and_metrics() -> Result<()> {
    let pki = Pki::new()?;
    let n1 = Node::start(&pki, "n1").await?;
    let n2 = Node::start(&pki, "n2").await?;
    let base = SystemTime::now() - Duration::from_secs(60);
    n1.push(base, (0..5).map(|i| (i, Duration::from_secs(u64::from(i)))));
    n2.push(base, (0..7).map(|i| (i, Duration::from_secs(u64::from(i)))));
    let dead = PeerInfo {
        name: "c1/n-dead".into(),
        address: "127.0.0.1:1".into(),
        tls_server_name: None,
    };
    announce_all(&[&n1, &n2], &[dead]);
    let relay = start_relay_via(&pki, &n1).await?;
    wait_for_peers(&relay, 2, 3).await;
    wait_for_health(&pki, &relay, ServingStatus::Serving).await;
    let mut client = relay_client(&pki, &relay).await?;

    let mut nodes = client
        .get_nodes(GetNodesRequest {})
        .await?
        .into_inner()
        .nodes;
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<_> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["c1/n-dead", "c1/n1", "c1/n2"]);
    let [dead, n1_node, n2_node] = &nodes[..] else {
        unreachable!()
    };
    assert_eq!(dead.state(), NodeState::NodeUnavailable);
    assert_eq!(dead.address, "127.0.0.1:1");
    assert!(!dead.tls.as_ref().unwrap().enabled);
    assert_eq!(n1_node.state(), NodeState::NodeConnected);
    assert_eq!(n1_node.version, "0.1.0");
    assert_eq!(n1_node.address, n1.tcp.to_string());
    assert_eq!(
        (n1_node.num_flows, n1_node.max_flows, n1_node.seen_flows),
        (5, RING as u64, 5)
    );
    assert!(n1_node.uptime_ns > 0);
    let tls = n2_node.tls.as_ref().unwrap();
    assert!(tls.enabled);
    assert_eq!(tls.server_name, "n2.c1.hubble-grpc.cilium.io");
    assert_eq!(n2_node.num_flows, 7);

    let status = client
        .server_status(ServerStatusRequest {})
        .await?
        .into_inner();
    assert_eq!((status.num_flows, status.max_flows), (12, 2 * RING as u64));
    assert_eq!(status.seen_flows, 12);
    assert_eq!(status.num_connected_nodes, Some(2));
    assert_eq!(status.num_unavailable_nodes, Some(1));
    assert_eq!(status.unavailable_nodes, ["c1/n-dead"]);
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    assert!(status.uptime_ns >= n1_node.uptime_ns.min(n2_node.uptime_ns));

    // Namespaces are collected by the servers every few seconds.
    let namespaces = eventually("namespaces of both nodes", || {
        let mut client = client.clone();
        async move {
            let ns = client
                .get_namespaces(GetNamespacesRequest {})
                .await
                .ok()?
                .into_inner();
            let names: Vec<_> = ns
                .namespaces
                .iter()
                .map(|n| format!("{}/{}", n.cluster, n.namespace))
                .collect();
            (names.len() == 3).then_some(names)
        }
    })
    .await;
    assert_eq!(namespaces, ["c1/ns-n1", "c1/ns-n2", "c1/srv"]);

    let text = metrics(&relay).await?;
    for line in [
        "hubble_relay_pool_peer_connection_status{status=\"READY\"} 2",
        "hubble_relay_pool_peer_connection_status{status=\"TRANSIENT_FAILURE\"} 1",
        "clustermesh_build_info{binary=\"clustermesh-relay\"",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    Ok(())
}

#[tokio::test]
async fn health_follows_the_peer_service_on_a_unix_socket() -> Result<()> {
    let pki = Pki::new()?;
    // The relay starts before the node whose socket it follows.
    let socket = pki.dir.path().join("n1.sock");
    let relay = start_relay(&pki, PeerAddress::Unix(socket.clone()), Security::Plaintext).await?;
    wait_for_health(&pki, &relay, ServingStatus::NotServing).await;
    assert!(!relay.handle.pool().peer_service_connected());

    let mut n1 = Node::start(&pki, "n1").await?;
    assert_eq!(n1.socket, socket);
    announce_all(&[&n1], &[]);
    wait_for_peers(&relay, 1, 1).await;
    wait_for_health(&pki, &relay, ServingStatus::Serving).await;

    // The only node, which is also the Peer service, dies.
    n1.kill();
    wait_for_health(&pki, &relay, ServingStatus::NotServing).await;
    let pool = relay.handle.pool().clone();
    eventually("the Peer service disconnected", || {
        let pool = pool.clone();
        async move { (!pool.peer_service_connected()).then_some(()) }
    })
    .await;
    Ok(())
}
