//! `GetFlows` through the relay.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result};
use futures::StreamExt;
use hubble::peer::PeerInfo;
use hubble_api::{
    observer::{GetFlowsRequest, GetFlowsResponse, ServerStatusRequest},
    relay::NodeState,
};
use relay::RELAY_VERSION_HEADER;

use crate::support::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test]
async fn flows_of_every_node_merged_in_time_order_after_node_events() -> Result<()> {
    let pki = Pki::new()?;
    let n1 = Node::start(&pki, "n1").await?;
    let n2 = Node::start(&pki, "n2").await?;
    let n3 = Node::start(&pki, "n3").await?;
    let base = SystemTime::now() - secs(600);
    // Node k's flow i is at 3i + k seconds: interleaved across nodes.
    for (k, node) in [&n1, &n2, &n3].into_iter().enumerate() {
        node.push(
            base,
            (0..10).map(|i| (i, secs(u64::from(i) * 3 + k as u64))),
        );
    }
    // A fourth node is announced, but nothing listens at its address.
    let dead = PeerInfo {
        name: "c1/n-dead".into(),
        address: "127.0.0.1:1".into(),
        tls_server_name: Some(hubble::names::tls_server_name("n-dead", CLUSTER)),
    };
    announce_all(&[&n1, &n2, &n3], std::slice::from_ref(&dead));
    let relay = start_relay_via(&pki, &n1).await?;
    wait_for_peers(&relay, 3, 4).await;

    let mut client = relay_client(&pki, &relay).await?;
    let response = client
        .get_flows(GetFlowsRequest {
            number: 4,
            ..Default::default()
        })
        .await?;
    assert_eq!(
        response
            .metadata()
            .get(RELAY_VERSION_HEADER)
            .map(|v| v.to_str().unwrap()),
        Some(env!("CARGO_PKG_VERSION"))
    );
    let responses = all(&mut response.into_inner()).await?;

    // NODE_CONNECTED, then NODE_UNAVAILABLE, before any flow, from the relay.
    let (state, connected) = status_event(&responses[0]).expect("node status first");
    assert_eq!(state, NodeState::NodeConnected);
    assert_eq!(
        sorted(connected.node_names.clone()),
        ["c1/n1", "c1/n2", "c1/n3"]
    );
    assert_eq!(responses[0].node_name, "relay-node");
    let (state, unavailable) = status_event(&responses[1]).expect("then unavailable");
    assert_eq!(state, NodeState::NodeUnavailable);
    assert_eq!(unavailable.node_names, ["c1/n-dead"]);
    let now = SystemTime::now();
    for r in &responses[..2] {
        let t = hubble::time::system_time(r.time.unwrap());
        assert!(
            now.duration_since(t).unwrap() < secs(30),
            "status time is now"
        );
    }

    // `number` is per node: the last 4 of each, 12 in all, in time order.
    let flows = &responses[2..];
    assert_eq!(flows.len(), 12, "{responses:#?}");
    assert!(flows.iter().all(|r| flow_of(r).is_some()));
    let times: Vec<_> = flows.iter().map(|r| r.time.unwrap()).collect();
    assert!(
        times
            .windows(2)
            .all(|w| (w[0].seconds, w[0].nanos) <= (w[1].seconds, w[1].nanos)),
        "{times:?}"
    );
    assert_eq!(
        pods(flows),
        [
            "n1-p6", "n2-p6", "n3-p6", "n1-p7", "n2-p7", "n3-p7", "n1-p8", "n2-p8", "n3-p8",
            "n1-p9", "n2-p9", "n3-p9"
        ]
    );
    assert_eq!(flows[0].node_name, "c1/n1");

    // A first/follow request is refused up front.
    let err = client
        .get_flows(GetFlowsRequest {
            first: true,
            follow: true,
            number: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "first cannot be specified with follow");
    Ok(())
}

/// Pushes a new flow to each of `nodes` that the stream has not shown one
/// of yet, every 300 ms, until it has from all (a following `GetFlows`
/// starts after the peers' streams are set up, which the client cannot
/// see); returns the node names seen. Pod numbers start at `round × 1000`.
async fn push_until_seen(
    stream: &mut tonic::Streaming<GetFlowsResponse>,
    nodes: &[&Node],
    round: u32,
) -> Result<Vec<String>> {
    let deadline = Instant::now() + DEADLINE;
    let mut seen = BTreeSet::new();
    let mut i = round * 1000;
    while seen.len() < nodes.len() {
        assert!(Instant::now() < deadline, "saw flows of only {seen:?}");
        for node in nodes.iter().filter(|n| !seen.contains(&n.name)) {
            node.push(SystemTime::now(), [(i, Duration::ZERO)]);
        }
        i += 1;
        let read_until = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(item) = tokio::time::timeout_at(read_until, stream.next()).await {
            let r = item.context("the stream ended")??;
            let Some(source) = flow_of(&r).and_then(|f| f.source.as_ref()) else {
                continue;
            };
            let number = source
                .pod_name
                .rsplit_once("-p")
                .and_then(|(_, n)| n.parse::<u32>().ok());
            if number.is_some_and(|n| n >= round * 1000) {
                seen.insert(r.node_name.clone());
            }
        }
    }
    Ok(seen.into_iter().collect())
}

#[tokio::test]
async fn a_killed_node_shows_as_error_and_unavailable_while_the_stream_goes_on() -> Result<()> {
    let pki = Pki::new()?;
    let n1 = Node::start(&pki, "n1").await?;
    let mut n2 = Node::start(&pki, "n2").await?;
    let n3 = Node::start(&pki, "n3").await?;
    announce_all(&[&n1, &n2, &n3], &[]);
    let relay = start_relay_via(&pki, &n1).await?;
    wait_for_peers(&relay, 3, 3).await;

    let mut client = relay_client(&pki, &relay).await?;
    let mut stream = client
        .get_flows(GetFlowsRequest {
            follow: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let first = until(&mut stream, |r| status_event(r).is_some()).await?;
    let (state, e) = status_event(&first[0]).unwrap();
    assert_eq!(state, NodeState::NodeConnected);
    assert_eq!(e.node_names.len(), 3);

    // Live flows from every node come through.
    let seen = push_until_seen(&mut stream, &[&n1, &n2, &n3], 1).await?;
    assert_eq!(seen, ["c1/n1", "c1/n2", "c1/n3"]);

    // n2 dies.
    n2.kill();
    let got = until(&mut stream, |r| {
        status_event(r).is_some_and(|(s, _)| s == NodeState::NodeError)
    })
    .await
    .context("waiting for NODE_ERROR")?;
    let (_, error) = status_event(got.last().unwrap()).unwrap();
    assert_eq!(error.node_names, ["c1/n2"]);
    assert!(error.message.starts_with("rpc error: code = "), "{error:?}");

    // The pool, GetNodes and ServerStatus see it unavailable.
    wait_for_peers(&relay, 2, 3).await;
    let status = client
        .server_status(ServerStatusRequest {})
        .await?
        .into_inner();
    assert_eq!(status.num_connected_nodes, Some(2));
    assert_eq!(status.unavailable_nodes, ["c1/n2"]);

    // The stream goes on with the others.
    let seen = push_until_seen(&mut stream, &[&n1, &n3], 2).await?;
    assert_eq!(seen, ["c1/n1", "c1/n3"]);

    // A node that joins later is picked up by the following stream.
    let n4 = Node::start(&pki, "n4").await?;
    announce_all(&[&n1, &n3, &n4], &[n2.peer_info()]);
    let got = until(&mut stream, |r| {
        status_event(r).is_some_and(|(s, _)| s == NodeState::NodeConnected)
    })
    .await
    .context("waiting for n4's NODE_CONNECTED")?;
    let (_, joined) = status_event(got.last().unwrap()).unwrap();
    assert_eq!(joined.node_names, ["c1/n4"]);
    let seen = push_until_seen(&mut stream, &[&n4], 3).await?;
    assert_eq!(seen, ["c1/n4"]);
    Ok(())
}

#[tokio::test]
async fn a_cut_node_is_found_dead_by_keepalive() -> Result<()> {
    let pki = Pki::new()?;
    let n1 = Node::start(&pki, "n1").await?;
    let n2 = Node::start(&pki, "n2").await?;
    // The relay reaches n2 through a path that the test cuts.
    let path = Cut::start(n2.tcp).await?;
    let mut n2_info = n2.peer_info();
    n2_info.address = path.addr.to_string();
    for node in [&n1, &n2] {
        node.announce([n1.peer_info(), n2_info.clone()]);
    }
    let relay = start_relay_via(&pki, &n1).await?;
    wait_for_peers(&relay, 2, 2).await;
    let mut client = relay_client(&pki, &relay).await?;
    let mut stream = client
        .get_flows(GetFlowsRequest {
            follow: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    until(&mut stream, |r| status_event(r).is_some()).await?;
    let seen = push_until_seen(&mut stream, &[&n1, &n2], 1).await?;
    assert_eq!(seen, ["c1/n1", "c1/n2"]);

    path.cut();
    // No FIN, no RST: only the keepalive pings (1s + 1s here) notice.
    let got = until(&mut stream, |r| {
        status_event(r).is_some_and(|(s, _)| s == NodeState::NodeError)
    })
    .await
    .context("waiting for NODE_ERROR")?;
    let (_, error) = status_event(got.last().unwrap()).unwrap();
    assert_eq!(error.node_names, ["c1/n2"]);
    wait_for_peers(&relay, 1, 2).await;
    let seen = push_until_seen(&mut stream, &[&n1], 2).await?;
    assert_eq!(seen, ["c1/n1"]);
    Ok(())
}

#[tokio::test]
async fn without_peers_the_stream_ends_after_an_empty_node_connected() -> Result<()> {
    let pki = Pki::new()?;
    let n1 = Node::start(&pki, "n1").await?;
    // n1 announces nobody.
    let relay = start_relay_via(&pki, &n1).await?;
    relay
        .handle
        .pool()
        .wait_for(|s| s.peer_service_connected)
        .await;
    let mut client = relay_client(&pki, &relay).await?;
    let responses = all(&mut client
        .get_flows(GetFlowsRequest::default())
        .await?
        .into_inner())
    .await?;
    assert_eq!(responses.len(), 1, "{responses:#?}");
    let (state, e) = status_event(&responses[0]).unwrap();
    assert_eq!(state, NodeState::NodeConnected);
    assert!(e.node_names.is_empty());
    Ok(())
}
