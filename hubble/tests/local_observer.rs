//! A real Hubble server (unix socket, and TCP with mutual TLS) over a ring
//! of flows: `GetFlows` semantics, lost events, the Peer service, health,
//! and the real Hubble CLI against it.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result};
use certs::{Ca, CertName, Validity};
use futures::StreamExt;
use hubble::client::{Address, ClientTls};
use hubble::{
    Event, FlowBuffer, LocalObserver,
    peer::{PeerInfo, PeerService, Peers},
    ring::Capacity,
    server::{HubbleServer, Listen, TcpListen},
    time::timestamp,
};
use hubble_api::{
    flow::{Endpoint, Flow, FlowFilter, LostEventSource, Verdict},
    observer::{
        GetFlowsRequest, GetFlowsResponse, ServerStatusRequest, get_flows_response::ResponseTypes,
        observer_client::ObserverClient,
    },
    peer::{ChangeNotificationType, NotifyRequest, peer_client::PeerClient},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};

const DEADLINE: Duration = Duration::from_secs(20);

/// Flow `i`: at base + i seconds, from pod `p<i>` in namespace `ns<i%2>`,
/// dropped when `i` is a multiple of 3.
fn flow(base: SystemTime, i: u32) -> Flow {
    let dropped = i.is_multiple_of(3);
    Flow {
        time: Some(timestamp(base + Duration::from_secs(u64::from(i)))),
        verdict: if dropped {
            Verdict::Dropped
        } else {
            Verdict::Forwarded
        }
        .into(),
        node_name: "c1/n1".into(),
        source: Some(Endpoint {
            identity: 1000 + i,
            namespace: format!("ns{}", i % 2),
            pod_name: format!("p{i}"),
            cluster_name: "c1".into(),
            labels: vec![format!("k8s:app=a{i}")],
            ..Default::default()
        }),
        destination: Some(Endpoint {
            identity: 2000,
            namespace: "srv".into(),
            cluster_name: "c2".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

struct Running {
    buffer: Arc<FlowBuffer<Flow>>,
    socket: PathBuf,
    tcp: SocketAddr,
    peers: watch::Sender<Peers>,
    tls: TestTls,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

struct TestTls {
    ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(capacity: usize) -> Result<Running> {
    let dir = tempfile::tempdir()?;
    let pki = hubble::pki::HubblePki::issue(dir.path(), "c1")?;
    let server_tls = certs::ServerTls::load(pki.node_server.clone(), h2())?;
    let (ca_file, client_files) = (pki.ca.clone(), pki.user.clone());
    let buffer = Arc::new(FlowBuffer::new(Capacity::new(capacity)?));
    let observer = Arc::new(LocalObserver::new(
        buffer.clone(),
        "c1/n1".into(),
        "0.1.0".into(),
    ));
    let (peers, peers_rx) = watch::channel(Peers::new());
    let socket = dir.path().join("hubble.sock");
    let server = HubbleServer::bind(
        Listen {
            unix_socket: socket.clone(),
            tcp: Some(TcpListen {
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                acceptor: server_tls.acceptor(),
                on_handshake_failure: Arc::new(|_| {}),
            }),
        },
        observer,
        PeerService::new(peers_rx),
    )
    .await?;
    let tcp = server.tcp_addr().context("tcp bound")?;
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            server.run(shutdown).await.expect("server runs");
        }
    });
    Ok(Running {
        buffer,
        socket,
        tcp,
        peers,
        tls: TestTls {
            ca: ca_file,
            client_cert: client_files.cert,
            client_key: client_files.key,
        },
        shutdown,
        _dir: dir,
    })
}

async fn unix_channel(path: &Path) -> Result<Channel> {
    Ok(hubble::client::connect(&Address::Unix(path.to_path_buf()), None).await?)
}

fn h2() -> certs::Config {
    certs::Config {
        alpn_protocols: vec![b"h2".to_vec()],
        ..Default::default()
    }
}

/// A TLS channel to `server`, with the client certificate or without.
async fn tls_channel(server: &Running, with_cert: bool) -> Result<Channel> {
    let (cert, key) = if with_cert {
        (
            server.tls.client_cert.clone(),
            server.tls.client_key.clone(),
        )
    } else {
        // a certificate of another CA: the server must refuse it
        let other = Ca::generate("another CA", Validity::days(2)?)?;
        let files = other
            .issue_client(&CertName::new("intruder")?, Validity::days(1)?)?
            .write(server._dir.path().join("other").as_path())?;
        (files.cert, files.key)
    };
    let client =
        certs::ClientTls::load(certs::TlsFiles::new(cert, key, server.tls.ca.clone()), h2())?;
    Ok(hubble::client::connect(
        &Address::Tcp {
            host_port: server.tcp.to_string(),
            tls: true,
        },
        Some(ClientTls {
            connector: client.connector(),
            server_name: hubble::names::tls_server_name("n1", "c1"),
        }),
    )
    .await?)
}

async fn collect(channel: Channel, req: GetFlowsRequest) -> Result<Vec<GetFlowsResponse>> {
    let mut stream = ObserverClient::new(channel)
        .get_flows(req)
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(item) = tokio::time::timeout(DEADLINE, stream.next()).await? {
        out.push(item?);
    }
    Ok(out)
}

fn pods(responses: &[GetFlowsResponse]) -> Vec<String> {
    responses
        .iter()
        .filter_map(|r| match &r.response_types {
            Some(ResponseTypes::Flow(f)) => Some(f.source.as_ref()?.pod_name.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn number_first_since_until_and_filters() -> Result<()> {
    let server = start(63).await?;
    let base = SystemTime::now() - Duration::from_secs(3600);
    server
        .buffer
        .push_batch((0..10).map(|i| Event::Flow(flow(base, i))));
    let ch = unix_channel(&server.socket).await?;

    let last3 = collect(
        ch.clone(),
        GetFlowsRequest {
            number: 3,
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(pods(&last3), ["p7", "p8", "p9"]);
    assert_eq!(last3[0].node_name, "c1/n1");
    assert_eq!(
        last3[0].time,
        Some(timestamp(base + Duration::from_secs(7)))
    );

    let first2 = collect(
        ch.clone(),
        GetFlowsRequest {
            number: 2,
            first: true,
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(pods(&first2), ["p0", "p1"]);

    // since takes precedence over number; until ends the stream
    let window = collect(
        ch.clone(),
        GetFlowsRequest {
            number: 1,
            since: Some(timestamp(base + Duration::from_secs(4))),
            until: Some(timestamp(base + Duration::from_secs(6))),
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(pods(&window), ["p4"]);
    let window = collect(
        ch.clone(),
        GetFlowsRequest {
            since: Some(timestamp(base + Duration::from_secs(4))),
            until: Some(timestamp(base + Duration::from_secs(6))),
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(pods(&window), ["p4", "p5", "p6"]);

    // the last 2 dropped flows: the walk back counts only matches
    let dropped = collect(
        ch.clone(),
        GetFlowsRequest {
            number: 2,
            whitelist: vec![FlowFilter {
                verdict: vec![Verdict::Dropped.into()],
                ..Default::default()
            }],
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(pods(&dropped), ["p6", "p9"]);

    let err = ObserverClient::new(ch.clone())
        .get_flows(GetFlowsRequest {
            first: true,
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("first cannot be specified with follow"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn follow_streams_new_flows_and_overrun_readers_get_lost_events() -> Result<()> {
    let server = start(15).await?;
    let base = SystemTime::now();
    server
        .buffer
        .push_batch((0..2).map(|i| Event::Flow(flow(base, i))));
    let ch = unix_channel(&server.socket).await?;
    let mut stream = ObserverClient::new(ch.clone())
        .get_flows(GetFlowsRequest {
            follow: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    // follow alone starts at the newest entry: only what comes next
    server
        .buffer
        .push_batch((2..4).map(|i| Event::Flow(flow(base, i))));
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let item = tokio::time::timeout(DEADLINE, stream.next())
            .await?
            .context("open")??;
        seen.push(item);
    }
    assert_eq!(pods(&seen), ["p2", "p3"]);

    // a flood larger than the ring: the buffer keeps the newest, a reader
    // of everything learns how much it missed
    server
        .buffer
        .push_lost(LostEventSource::PerfEventRingBuffer, 7);
    server
        .buffer
        .push_batch((4..100).map(|i| Event::Flow(flow(base, i))));
    let all = collect(
        ch.clone(),
        GetFlowsRequest {
            first: true,
            number: 1000,
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(all.len(), 15, "the ring holds its capacity");
    let mut follower_lost = 0;
    let mut follower_flows = Vec::new();
    while follower_flows.last().map(String::as_str) != Some("p99") {
        let item = tokio::time::timeout(DEADLINE, stream.next())
            .await?
            .context("open")??;
        match item.response_types {
            Some(ResponseTypes::LostEvents(l)) => {
                follower_lost += l.num_events_lost;
                assert_eq!(item.node_name, "c1/n1");
            }
            _ => follower_flows.extend(pods(&[item])),
        }
    }
    // 96 flows + 1 kernel lost event entry were written; the follower saw
    // 15 of the entries and was told about the rest (the kernel's loss is
    // within the part it missed or it saw it as its own lost event)
    assert!(follower_lost >= 97 - 15, "lost {follower_lost}");
    let status = ObserverClient::new(ch)
        .server_status(ServerStatusRequest {})
        .await?
        .into_inner();
    assert_eq!(
        (status.num_flows, status.max_flows, status.seen_flows),
        (15, 15, 100)
    );
    assert!(status.num_connected_nodes.is_none());
    Ok(())
}

#[tokio::test]
async fn peers_over_mutual_tls_and_health() -> Result<()> {
    let server = start(15).await?;
    server.peers.send_replace(BTreeMap::from([(
        "c1/n1".to_string(),
        PeerInfo {
            name: "c1/n1".into(),
            address: "10.0.0.1:4244".into(),
            tls_server_name: Some("n1.c1.hubble-grpc.cilium.io".into()),
        },
    )]));
    let ch = tls_channel(&server, true).await?;
    let mut notes = PeerClient::new(ch.clone())
        .notify(NotifyRequest {})
        .await?
        .into_inner();
    let first = tokio::time::timeout(DEADLINE, notes.next())
        .await?
        .context("open")??;
    assert_eq!(first.name, "c1/n1");
    assert_eq!(first.r#type, ChangeNotificationType::PeerAdded as i32);
    assert_eq!(
        first.tls.unwrap().server_name,
        "n1.c1.hubble-grpc.cilium.io"
    );
    server.peers.send_modify(|p| {
        p.remove("c1/n1");
    });
    let gone = tokio::time::timeout(DEADLINE, notes.next())
        .await?
        .context("open")??;
    assert_eq!(gone.r#type, ChangeNotificationType::PeerDeleted as i32);

    let health = tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "hubble.server.Observer".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // a certificate of another CA: refused before gRPC
    let refused = async {
        let ch = tls_channel(&server, false).await?;
        ObserverClient::new(ch)
            .server_status(ServerStatusRequest {})
            .await?;
        anyhow::Ok(())
    }
    .await;
    assert!(refused.is_err(), "a client of another CA must be refused");
    Ok(())
}

#[tokio::test]
async fn the_real_hubble_cli_observes_and_reports_status() -> Result<()> {
    let Some(cli) = netns::shared_tool("tools/hubble/hubble", "the real Hubble CLI test") else {
        return Ok(());
    };
    let server = start(63).await?;
    let base = SystemTime::now() - Duration::from_secs(60);
    server
        .buffer
        .push_batch((0..5).map(|i| Event::Flow(flow(base, i))));
    let run = |args: &[&str]| {
        let cli = cli.clone();
        let socket = format!("unix://{}", server.socket.display());
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move {
            let out = tokio::process::Command::new(cli)
                .args(&args)
                .args(["--server", &socket])
                .env("HOME", "/nonexistent")
                .output()
                .await?;
            anyhow::ensure!(
                out.status.success(),
                "hubble {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            anyhow::Ok(String::from_utf8(out.stdout)?)
        }
    };
    let json = run(&["observe", "--last", "2", "-o", "json"]).await?;
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 2, "{json}");
    assert_eq!(lines[1]["flow"]["source"]["pod_name"], "p4");
    assert_eq!(lines[1]["flow"]["source"]["cluster_name"], "c1");
    assert_eq!(lines[1]["node_name"], "c1/n1");
    let compact = run(&["observe", "--last", "5"]).await?;
    assert!(
        compact.contains("DROPPED") && compact.contains("FORWARDED"),
        "{compact}"
    );
    let status = run(&["status"]).await?;
    assert!(status.contains("Current/Max Flows: 5/63"), "{status}");
    assert!(status.contains("Healthcheck (via unix://"), "{status}");
    Ok(())
}

#[tokio::test]
async fn a_stale_socket_is_replaced_and_another_file_is_not() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("hubble.sock");
    std::fs::write(&path, "not a socket")?;
    let (_tx, rx) = watch::channel(Peers::new());
    let buffer = Arc::new(FlowBuffer::<Flow>::new(Capacity::DEFAULT));
    let err = HubbleServer::bind(
        Listen {
            unix_socket: path.clone(),
            tcp: None,
        },
        Arc::new(LocalObserver::new(buffer.clone(), "n".into(), "0".into())),
        PeerService::new(rx.clone()),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&path)?, "not a socket");
    std::fs::remove_file(&path)?;
    // a live server's socket is not taken over
    let live = std::os::unix::net::UnixListener::bind(&path)?;
    let err = HubbleServer::bind(
        Listen {
            unix_socket: path.clone(),
            tcp: None,
        },
        Arc::new(LocalObserver::new(buffer.clone(), "n".into(), "0".into())),
        PeerService::new(rx.clone()),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    drop(live);
    // a stale one (nobody listening) is replaced
    HubbleServer::bind(
        Listen {
            unix_socket: path,
            tcp: None,
        },
        Arc::new(LocalObserver::new(buffer, "n".into(), "0".into())),
        PeerService::new(rx),
    )
    .await?;
    let _ = IpAddr::V4(Ipv4Addr::LOCALHOST);
    Ok(())
}
