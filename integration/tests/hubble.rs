//! Hubble on a real local mesh: flows of real packets, as the agents'
//! Hubble servers serve them and as the real Hubble CLI shows them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use futures::StreamExt;
use hubble::client::Address;
use hubble_api::{
    flow::{DropReason, Flow, FlowFilter, TrafficDirection, Verdict, layer4},
    observer::{
        GetFlowsRequest, GetNodesRequest, get_flows_response::ResponseTypes,
        observer_client::ObserverClient,
    },
    relay::NodeState,
};
use integration::{TestMesh, can_run, echo_admits_local_clients, wait_for};
use kvstore::{StoreValue, keys};

/// Flows from the Hubble server at `socket` that pass `filter`.
fn flows(socket: &Path, filter: FlowFilter) -> anyhow::Result<Vec<Flow>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let channel = hubble::client::connect(&Address::Unix(socket.to_path_buf()), None).await?;
        get_flows(channel, filter).await
    })
}

fn hubble_socket(mesh: &TestMesh, cluster: &str, node: &str) -> PathBuf {
    mesh.node(cluster, node)
        .unwrap()
        .hubble_socket
        .clone()
        .expect("the mesh's agents serve Hubble")
}

#[test]
fn a_denied_request_is_a_policy_drop_with_both_clusters_and_labels() -> anyhow::Result<()> {
    if !can_run("a_denied_request_is_a_policy_drop_with_both_clusters_and_labels") {
        return Ok(());
    }
    let mut mesh = TestMesh::up(2, 2)?;
    let echo = mesh.echo_addr("c2", "echo-n1");
    let socket = hubble_socket(&mesh, "c2", "n1");

    // Allowed first: the connection is a FORWARDED flow into the echo pod.
    wait_for("c1's client reaches c2's echo", || {
        mesh.reaches("c1", "client", echo)
    });
    let from_c1 = FlowFilter {
        source_cluster_name: vec!["c1".into()],
        destination_pod: vec!["demo/c2-echo-n1".into()],
        ..Default::default()
    };
    wait_for("the forwarded flow in c2/n1's Hubble", || {
        flows(
            &socket,
            FlowFilter {
                verdict: vec![Verdict::Forwarded.into()],
                ..from_c1.clone()
            },
        )
        .is_ok_and(|f| !f.is_empty())
    });

    // Then denied: the same request is a DROPPED flow with the reason.
    mesh.put(
        "c2",
        &keys::policies().key(&echo_admits_local_clients().key()),
        echo_admits_local_clients().encode(),
    )?;
    wait_for("c1's client denied", || mesh.denied("c1", "client", echo));
    let dropped = flows(
        &socket,
        FlowFilter {
            verdict: vec![Verdict::Dropped.into()],
            ..from_c1.clone()
        },
    )?;
    let drop = dropped.last().context("a dropped flow from c1")?;
    assert_eq!(drop.drop_reason_desc, DropReason::PolicyDenied as i32);
    let (src, dst) = (
        drop.source.as_ref().unwrap(),
        drop.destination.as_ref().unwrap(),
    );
    assert_eq!(src.cluster_name, "c1");
    assert!(
        src.labels.contains(&"k8s:app=client".to_string()),
        "{:?}",
        src.labels
    );
    assert_eq!(
        (src.namespace.as_str(), src.pod_name.as_str()),
        ("demo", "c1-client")
    );
    assert_eq!(dst.cluster_name, "c2");
    assert!(
        dst.labels.contains(&"k8s:app=echo".to_string()),
        "{:?}",
        dst.labels
    );
    assert_ne!(dst.id, 0, "the local endpoint's ID");
    assert_eq!(drop.node_name, "c2/n1");
    assert_eq!(drop.traffic_direction, TrafficDirection::Ingress as i32);
    assert_eq!(drop.is_reply, Some(false));
    let ip = drop.ip.as_ref().unwrap();
    assert_eq!(ip.destination, echo.ip().to_string());
    let Some(layer4::Protocol::Tcp(tcp)) = drop.l4.as_ref().and_then(|l| l.protocol.clone()) else {
        panic!("a TCP flow: {drop:?}")
    };
    assert_eq!(tcp.destination_port, u32::from(echo.port()));
    assert!(tcp.flags.is_some_and(|f| f.syn && !f.ack), "a SYN");

    // A filter on another cluster's name selects nothing of it.
    let none = flows(
        &socket,
        FlowFilter {
            source_cluster_name: vec!["c3".into()],
            ..Default::default()
        },
    )?;
    assert!(none.is_empty(), "{none:?}");

    // The real Hubble CLI sees the same drop through the agent's socket.
    if let Some(cli) = netns::shared_tool("tools/hubble/hubble", "the Hubble CLI part") {
        let out = std::process::Command::new(cli)
            .args(["observe", "--server"])
            .arg(format!("unix://{}", socket.display()))
            .args([
                "--last",
                "100",
                "--verdict",
                "DROPPED",
                "--from-label",
                "io.cilium.k8s.policy.cluster=c1",
                "--node-name",
                "c2/",
                "-o",
                "json",
            ])
            .env("HOME", "/nonexistent")
            .output()?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout)?;
        let line: serde_json::Value = serde_json::from_str(text.lines().last().context("a line")?)?;
        assert_eq!(line["flow"]["drop_reason_desc"], "POLICY_DENIED", "{text}");
        assert_eq!(line["flow"]["source"]["cluster_name"], "c1");
        assert_eq!(line["flow"]["destination"]["cluster_name"], "c2");
        assert_eq!(line["node_name"], "c2/n1");
    }

    // Through c1's relay: every node of both clusters, the drop on c2's
    // node among the flows; a node whose agent dies shows as unavailable
    // and the relay goes on with the others.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let relay = relay_channel(&mesh, "c1", &runtime)?;
    let all = ["c1/n1", "c1/n2", "c2/n1", "c2/n2"];
    wait_for(
        "c1's relay connected to the 4 nodes of both clusters",
        || {
            runtime.block_on(nodes(relay.clone())).is_ok_and(|n| {
                all.iter().all(|name| {
                    n.iter()
                        .any(|(m, s)| m == name && *s == NodeState::NodeConnected)
                })
            })
        },
    );
    let through_relay = runtime.block_on(get_flows(
        relay.clone(),
        FlowFilter {
            verdict: vec![Verdict::Dropped.into()],
            ..from_c1.clone()
        },
    ))?;
    assert!(
        through_relay.iter().any(|f| f.node_name == "c2/n1"),
        "the relay of c1 shows the drop on c2/n1"
    );
    mesh.kill_agent("c2", "n2")?;
    wait_for("c2/n2 unavailable through the relay", || {
        runtime.block_on(nodes(relay.clone())).is_ok_and(|n| {
            n.iter()
                .any(|(m, s)| m == "c2/n2" && *s != NodeState::NodeConnected)
        })
    });
    let still = runtime.block_on(get_flows(relay.clone(), from_c1))?;
    assert!(
        !still.is_empty(),
        "the relay still serves the other nodes' flows"
    );
    Ok(())
}

/// A mutual-TLS channel to `cluster`'s relay, as its admin.
fn relay_channel(
    mesh: &TestMesh,
    cluster: &str,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<tonic::transport::Channel> {
    let c = mesh.state.cluster(cluster)?;
    let addr = c
        .hubble_relay
        .clone()
        .context("the mesh records its relay")?;
    let tls = certs::ClientTls::load(
        certs::TlsFiles::new(
            c.certs.admin_cert.clone(),
            c.certs.admin_key.clone(),
            c.certs.ca.clone(),
        ),
        certs::Config {
            alpn_protocols: vec![b"h2".to_vec()],
            ..Default::default()
        },
    )?;
    // The channel's connection task lives on `runtime`: use it there only.
    Ok(runtime.block_on(hubble::client::connect(
        &Address::Tcp {
            host_port: addr,
            tls: true,
        },
        Some(hubble::client::ClientTls {
            connector: tls.connector(),
            server_name: format!("hubble-relay.{cluster}.hubble-grpc.cilium.io"),
        }),
    ))?)
}

async fn nodes(channel: tonic::transport::Channel) -> anyhow::Result<Vec<(String, NodeState)>> {
    let response = ObserverClient::new(channel)
        .get_nodes(GetNodesRequest {})
        .await?
        .into_inner();
    Ok(response
        .nodes
        .into_iter()
        .map(|n| {
            (
                n.name,
                NodeState::try_from(n.state).unwrap_or(NodeState::UnknownNodeState),
            )
        })
        .collect())
}

async fn get_flows(
    channel: tonic::transport::Channel,
    filter: FlowFilter,
) -> anyhow::Result<Vec<Flow>> {
    let mut stream = ObserverClient::new(channel)
        .get_flows(GetFlowsRequest {
            number: 1000,
            whitelist: vec![filter],
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        if let Some(ResponseTypes::Flow(f)) = item?.response_types {
            out.push(f);
        }
    }
    Ok(out)
}
