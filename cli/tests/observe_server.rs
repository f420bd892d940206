//! `clustermesh observe` and `clustermesh hubble` against a real Hubble
//! server (the agent's, from the `hubble` crate) on a unix socket and on TCP
//! with mutual TLS, also found through a mesh.json.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Output,
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result};
use hubble::{
    Event, FlowBuffer, LocalObserver,
    peer::{PeerService, Peers},
    ring::Capacity,
    server::{HubbleServer, Listen, TcpListen},
    time::timestamp,
};
use hubble_api::flow::{Endpoint, Flow, Ip, Verdict};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

struct Running {
    socket: PathBuf,
    tcp: SocketAddr,
    ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn h2() -> certs::Config {
    certs::Config {
        alpn_protocols: vec![b"h2".to_vec()],
        ..Default::default()
    }
}

/// Flow `i`: 2024-05-01T10:11:1i, pod `p<i>` (10.1.0.i) in `ns<i%2>` of c1
/// to c2's `srv/echo`, dropped when `i` is a multiple of 3.
fn flow(i: u32) -> Flow {
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_558_270);
    Flow {
        time: Some(timestamp(base + Duration::from_secs(u64::from(i)))),
        verdict: if i.is_multiple_of(3) {
            Verdict::Dropped
        } else {
            Verdict::Forwarded
        }
        .into(),
        node_name: "c1/n1".into(),
        is_reply: Some(false),
        ip: Some(Ip {
            source: format!("10.1.0.{i}"),
            destination: "10.2.0.9".into(),
            ..Default::default()
        }),
        source: Some(Endpoint {
            identity: 1000 + i,
            namespace: format!("ns{}", i % 2),
            pod_name: format!("p{i}"),
            cluster_name: "c1".into(),
            ..Default::default()
        }),
        destination: Some(Endpoint {
            identity: 2000,
            namespace: "srv".into(),
            pod_name: "echo".into(),
            cluster_name: "c2".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn start() -> Result<Running> {
    let dir = tempfile::tempdir()?;
    let pki = hubble::pki::HubblePki::issue(dir.path(), "c1")?;
    let server_tls = certs::ServerTls::load(pki.node_server.clone(), h2())?;
    let (ca_file, client) = (pki.ca.clone(), pki.user.clone());
    let buffer = Arc::new(FlowBuffer::new(Capacity::new(63)?));
    buffer.push_batch((0..6).map(|i| Event::Flow(flow(i))));
    let observer = Arc::new(LocalObserver::new(buffer, "c1/n1".into(), "0.1.0".into()));
    let (_peers, peers_rx) = watch::channel(Peers::new());
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
        async move { server.run(shutdown).await.expect("server runs") }
    });
    Ok(Running {
        socket,
        tcp,
        ca: ca_file,
        client_cert: client.cert,
        client_key: client.key,
        dir,
        shutdown,
    })
}

/// Runs the CLI off the runtime (the server runs on it).
async fn cli(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_clustermesh"))
            .args(&args)
            .output()
            .expect("run clustermesh")
    })
    .await
    .expect("joined")
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[tokio::test(flavor = "multi_thread")]
async fn observe_a_node_over_its_socket_with_filters() -> Result<()> {
    let s = start().await?;
    let sock = format!("unix://{}", s.socket.display());
    let out = cli(args(&["observe", "--server", &sock, "--last", "2"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "May  1 10:11:14.000: ns0/p4 (ID:1004) -> srv/echo (ID:2000) UNKNOWN FORWARDED ()\n\
         May  1 10:11:15.000: ns1/p5 (ID:1005) -> srv/echo (ID:2000) UNKNOWN FORWARDED ()\n"
    );
    // Dropped flows of ns0, oldest first: only p0 (p3 is in ns1).
    let out = cli(args(&[
        "observe",
        "--server",
        &sock,
        "--first",
        "5",
        "--verdict",
        "DROPPED",
        "--from-pod",
        "ns0/",
        "-o",
        "json",
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(
            r#"{"flow":{"time":"2024-05-01T10:11:10Z","verdict":"DROPPED","IP":{"source":"10.1.0.0","#
        ),
        "{}",
        lines[0]
    );
    assert!(lines[0].ends_with(r#""node_name":"c1/n1","time":"2024-05-01T10:11:10Z"}"#));
    // --cluster is the source or the destination cluster.
    let out = cli(args(&[
        "observe",
        "--server",
        &sock,
        "--all",
        "--cluster",
        "c2",
    ]))
    .await;
    assert_eq!(
        text(&out.stdout).lines().count(),
        6,
        "{}",
        text(&out.stderr)
    );
    let out = cli(args(&[
        "observe",
        "--server",
        &sock,
        "--all",
        "--not",
        "--cluster",
        "c1",
    ]))
    .await;
    assert_eq!(text(&out.stdout), "", "{}", text(&out.stderr));
    // Refused by the CLI before asking.
    let out = cli(args(&[
        "observe", "--server", &sock, "--first", "2", "--follow",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(64));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn status_and_nodes_of_a_node() -> Result<()> {
    let s = start().await?;
    let sock = path(&s.socket).to_owned();
    let out = cli(args(&["hubble", "status", "--server", &sock])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!(
            "Healthcheck (via unix://{sock}): Ok\nCurrent/Max Flows: 6/63 (9.52%)\nFlows/s: "
        )),
        "{stdout}"
    );
    assert!(stdout.ends_with("Connected Nodes: N/A\n"), "{stdout}");
    let out = cli(args(&["hubble", "status", "--server", &sock, "-o", "json"])).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(json["num_flows"], "6");
    assert_eq!(json["max_flows"], "63");
    // A node's server does not list nodes.
    let out = cli(args(&["hubble", "nodes", "--server", &sock])).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("only a relay does"),
        "{}",
        text(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_by_flags_and_through_mesh_json() -> Result<()> {
    let s = start().await?;
    let tcp = s.tcp.to_string();
    let out = cli(args(&[
        "observe",
        "--server",
        &tcp,
        "--tls-ca-cert-files",
        path(&s.ca),
        "--tls-client-cert-file",
        path(&s.client_cert),
        "--tls-client-key-file",
        path(&s.client_key),
        "--tls-server-name",
        "n1.c1.hubble-grpc.cilium.io",
        "--last",
        "1",
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 1);

    // A mesh whose c1 relay is this server (its certificate names
    // *.c1.hubble-grpc.cilium.io, so hubble-relay.c1… as well).
    let mesh = serde_json::json!({
        "clusters": [{
            "name": "c1",
            "certs": {"admin_cert": s.client_cert, "admin_key": s.client_key, "ca": s.ca},
            "hubble_relay": tcp,
            "nodes": [{"name": "n1", "hubble_socket": s.socket}, {"name": "n2"}],
        }, {
            "name": "c2",
            "certs": {"admin_cert": "a", "admin_key": "k", "ca": "ca"},
            "nodes": [],
        }]
    });
    std::fs::write(s.dir.path().join("mesh.json"), mesh.to_string())?;
    let dir = path(s.dir.path()).to_owned();
    for extra in [
        &["--cluster", "c1"][..],
        &["--cluster", "c1", "--node", "n1"],
    ] {
        let mut a = args(&["observe", "--dir", &dir, "--last", "1"]);
        a.extend(args(extra));
        let out = cli(a).await;
        assert!(out.status.success(), "{extra:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).lines().count(), 1, "{extra:?}");
    }
    let out = cli(args(&[
        "hubble",
        "status",
        "--dir",
        &dir,
        "--cluster",
        "c1",
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with(&format!("Healthcheck (via tls://{tcp}): Ok\n")));

    // No relay recorded for c2: said so, as a usage error.
    let out = cli(args(&[
        "hubble",
        "status",
        "--dir",
        &dir,
        "--cluster",
        "c2",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("records no Hubble Relay for cluster c2"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_is_unavailable() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("nothing.sock");
    let out = cli(args(&["observe", "--server", path(&sock)])).await;
    assert_eq!(out.status.code(), Some(69));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("cannot connect to unix://{}", sock.display()))
            && err.contains("is the agent running"),
        "{err}"
    );
    Ok(())
}
