//! Real Hubble servers (each in a runtime of its own, so that killing one
//! drops its sockets like a crashed agent), a real relay over mutual TLS,
//! and certificates made for the test.

use std::{
    future::Future,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result};
use certs::TlsFiles;
use futures::StreamExt;
use hubble::{
    Event, FlowBuffer, LocalObserver,
    client::{Address, ClientTls},
    names::tls_server_name,
    peer::{PeerInfo, PeerService, Peers},
    pki::HubblePki,
    ring::Capacity,
    server::{HubbleServer, Listen, TcpListen},
    time::timestamp,
};
use hubble_api::{
    flow::{Endpoint, Flow, Verdict},
    observer::{
        GetFlowsResponse, get_flows_response::ResponseTypes, observer_client::ObserverClient,
    },
    relay::{NodeState, NodeStatusEvent},
};
use relay::{BoundAddrs, PeerAddress, Relay, RelayConfig, RelayHandle, Security};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tonic::{Streaming, transport::Channel};

/// Every wait of these tests ends by then.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// The cluster of the test nodes.
pub(crate) const CLUSTER: &str = "c1";

/// The relay's TLS server name (its certificate is `*.hubble-relay.cilium.io`,
/// as Cilium's).
pub(crate) const RELAY_SERVER_NAME: &str = hubble::pki::RELAY_SERVER_NAME;

/// The capacity of every node's ring.
pub(crate) const RING: usize = 63;

/// The test's CA and certificates ([`HubblePki`]), in a temporary directory.
pub(crate) struct Pki {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) ca: PathBuf,
    /// The Hubble servers' (`*.c1.hubble-grpc.cilium.io`).
    pub(crate) node_server: TlsFiles,
    /// The relay's, towards the nodes.
    pub(crate) relay_client: TlsFiles,
    /// The relay's own listener's.
    pub(crate) relay_server: TlsFiles,
    /// A user's (the CLI), towards the relay.
    pub(crate) user: TlsFiles,
}

impl Pki {
    pub(crate) fn new() -> Result<Self> {
        // RUST_LOG=relay=debug shows what the relay does.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir()?;
        let HubblePki {
            ca,
            node_server,
            relay_client,
            relay_server,
            user,
        } = HubblePki::issue(dir.path(), CLUSTER)?;
        Ok(Self {
            dir,
            ca,
            node_server,
            relay_client,
            relay_server,
            user,
        })
    }
}

pub(crate) fn h2() -> certs::Config {
    certs::Config {
        alpn_protocols: vec![b"h2".to_vec()],
        ..Default::default()
    }
}

/// One node's Hubble server: a ring of ready-made flows, the Peer service
/// over the peers the test sets, on a unix socket and on TCP with mutual
/// TLS.
pub(crate) struct Node {
    /// `c1/<node>`.
    pub(crate) name: String,
    pub(crate) node: String,
    pub(crate) buffer: Arc<FlowBuffer<Flow>>,
    pub(crate) tcp: SocketAddr,
    pub(crate) socket: PathBuf,
    peers: watch::Sender<Peers>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Node {
    pub(crate) async fn start(pki: &Pki, node: &str) -> Result<Self> {
        let name = hubble::names::node_fullname(CLUSTER, node);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("hubble-{node}"))
            .enable_all()
            .build()?;
        let buffer = Arc::new(FlowBuffer::new(Capacity::new(RING)?));
        let observer = Arc::new(LocalObserver::new(
            buffer.clone(),
            name.clone(),
            "0.1.0".into(),
        ));
        let (peers, peers_rx) = watch::channel(Peers::new());
        let socket = pki.dir.path().join(format!("{node}.sock"));
        let server_tls = certs::ServerTls::load(pki.node_server.clone(), h2())?;
        let listen = Listen {
            unix_socket: socket.clone(),
            tcp: Some(TcpListen {
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                acceptor: server_tls.acceptor(),
                on_handshake_failure: Arc::new(|_| {}),
            }),
        };
        // Bound and run inside the node's runtime: its sockets belong to it
        // and die with it.
        let (bound, bound_rx) = oneshot::channel();
        runtime.spawn(async move {
            let server =
                match HubbleServer::bind(listen, observer, PeerService::new(peers_rx)).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = bound.send(Err(anyhow::Error::new(e)));
                        return;
                    }
                };
            let _ = bound.send(server.tcp_addr().context("tcp address"));
            let _ = server.run(CancellationToken::new()).await;
        });
        let tcp = bound_rx.await??;
        Ok(Self {
            name,
            node: node.to_owned(),
            buffer,
            tcp,
            socket,
            peers,
            runtime: Some(runtime),
        })
    }

    /// How the Peer service announces this node.
    pub(crate) fn peer_info(&self) -> PeerInfo {
        PeerInfo {
            name: self.name.clone(),
            address: self.tcp.to_string(),
            tls_server_name: Some(tls_server_name(&self.node, CLUSTER)),
        }
    }

    /// What this node's Peer service announces from now on.
    pub(crate) fn announce(&self, peers: impl IntoIterator<Item = PeerInfo>) {
        self.peers
            .send_replace(peers.into_iter().map(|p| (p.name.clone(), p)).collect());
    }

    /// `count` flows at `base + offsets`, from pods `<node>-p<i>`.
    pub(crate) fn push(
        &self,
        base: SystemTime,
        offsets: impl IntoIterator<Item = (u32, Duration)>,
    ) {
        self.buffer.push_batch(
            offsets
                .into_iter()
                .map(|(i, offset)| Event::Flow(flow(&self.name, &self.node, i, base + offset))),
        );
    }

    /// Ends the node at once, as a crash would: every task and socket of its
    /// runtime is dropped.
    pub(crate) fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Flow `i` of `node` at `t`.
pub(crate) fn flow(name: &str, node: &str, i: u32, t: SystemTime) -> Flow {
    Flow {
        time: Some(timestamp(t)),
        verdict: Verdict::Forwarded.into(),
        node_name: name.to_owned(),
        source: Some(Endpoint {
            identity: 1000 + i,
            namespace: format!("ns-{node}"),
            pod_name: format!("{node}-p{i}"),
            cluster_name: CLUSTER.into(),
            ..Default::default()
        }),
        destination: Some(Endpoint {
            identity: 2000,
            namespace: "srv".into(),
            pod_name: "server".into(),
            cluster_name: CLUSTER.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Each node's Peer service announces all of `nodes` (and `extra`).
pub(crate) fn announce_all(nodes: &[&Node], extra: &[PeerInfo]) {
    let all: Vec<PeerInfo> = nodes
        .iter()
        .map(|n| n.peer_info())
        .chain(extra.iter().cloned())
        .collect();
    for n in nodes {
        n.announce(all.clone());
    }
}

/// A running relay, stopped on drop.
pub(crate) struct RunningRelay {
    pub(crate) handle: RelayHandle,
    pub(crate) addrs: BoundAddrs,
    shutdown: CancellationToken,
}

impl Drop for RunningRelay {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A relay following `node`'s Peer service over mutual TLS (the node's own
/// server name, as our agents serve it); see [`start_relay`].
pub(crate) async fn start_relay_via(pki: &Pki, node: &Node) -> Result<RunningRelay> {
    let target: PeerAddress = node.tcp.to_string().parse()?;
    let security = Security::Tls {
        server_name: tls_server_name(&node.node, CLUSTER),
    };
    start_relay(pki, target, security).await
}

/// A relay following the Peer service at `target`, serving mutual TLS on
/// 127.0.0.1 (health and metrics too, plaintext), with the timings
/// shortened for tests.
pub(crate) async fn start_relay(
    pki: &Pki,
    target: PeerAddress,
    security: Security,
) -> Result<RunningRelay> {
    let mut config = RelayConfig::new(target, security, "relay-node");
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    config.listen = local;
    config.health_listen = Some(local);
    config.metrics_listen = Some(local);
    config.server_tls = Some(pki.relay_server.clone());
    config.client_tls = Some(pki.relay_client.clone());
    config.tls_reload = h2();
    config.pool.retry_timeout = Duration::from_millis(300);
    config.pool.backoff_min = Duration::from_millis(100);
    config.pool.backoff_max = Duration::from_secs(1);
    config.observer.peer_update_interval = Duration::from_millis(200);
    config.observer.sort_buffer_drain_timeout = Duration::from_millis(200);
    config.observer.error_aggregation_window = Duration::from_millis(300);
    config.observer.peer_request_timeout = Duration::from_secs(3);
    config.keepalive_interval = Duration::from_secs(1);
    config.keepalive_timeout = Duration::from_secs(1);
    config.health_check_interval = Duration::from_millis(200);
    let (relay, handle) = Relay::new(config)?;
    let shutdown = CancellationToken::new();
    tokio::spawn(relay.run(shutdown.clone()));
    let addrs = tokio::time::timeout(DEADLINE, handle.bound())
        .await?
        .context("the relay stopped before binding")?;
    Ok(RunningRelay {
        handle,
        addrs,
        shutdown,
    })
}

/// A channel to the relay with the user's certificate.
pub(crate) async fn relay_channel(pki: &Pki, relay: &RunningRelay) -> Result<Channel> {
    let tls = certs::ClientTls::load(pki.user.clone(), h2())?;
    Ok(hubble::client::connect(
        &Address::Tcp {
            host_port: relay.addrs.grpc.to_string(),
            tls: true,
        },
        Some(ClientTls {
            connector: tls.connector(),
            server_name: RELAY_SERVER_NAME.into(),
        }),
    )
    .await?)
}

pub(crate) async fn relay_client(
    pki: &Pki,
    relay: &RunningRelay,
) -> Result<ObserverClient<Channel>> {
    Ok(ObserverClient::new(relay_channel(pki, relay).await?))
}

/// Polls `check` until it gives a value, failing after [`DEADLINE`].
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the relay's pool has exactly `available` available peers of
/// `total`.
pub(crate) async fn wait_for_peers(relay: &RunningRelay, available: usize, total: usize) {
    let pool = relay.handle.pool().clone();
    let waited = tokio::time::timeout(
        DEADLINE,
        pool.wait_for(|s| {
            s.peers.len() == total
                && s.peers.values().filter(|p| p.is_available()).count() == available
        }),
    )
    .await;
    assert!(
        matches!(waited, Ok(Some(_))),
        "waiting for {available}/{total} available peers; the pool is {:#?}",
        relay.handle.pool().list()
    );
}

/// The next response of `stream`, failing after [`DEADLINE`].
pub(crate) async fn next(
    stream: &mut Streaming<GetFlowsResponse>,
) -> Result<Option<GetFlowsResponse>> {
    let item = tokio::time::timeout(DEADLINE, stream.next())
        .await
        .context("no response in time")?;
    Ok(item.transpose()?)
}

/// Every response until the stream ends.
pub(crate) async fn all(stream: &mut Streaming<GetFlowsResponse>) -> Result<Vec<GetFlowsResponse>> {
    let mut out = Vec::new();
    while let Some(r) = next(stream).await? {
        out.push(r);
    }
    Ok(out)
}

/// Responses until one satisfies `done`, which is returned last.
pub(crate) async fn until(
    stream: &mut Streaming<GetFlowsResponse>,
    mut done: impl FnMut(&GetFlowsResponse) -> bool,
) -> Result<Vec<GetFlowsResponse>> {
    let mut out = Vec::new();
    loop {
        let r = next(stream)
            .await?
            .with_context(|| format!("the stream ended; got {out:#?}"))?;
        let last = done(&r);
        out.push(r);
        if last {
            return Ok(out);
        }
    }
}

pub(crate) fn status_event(r: &GetFlowsResponse) -> Option<(NodeState, &NodeStatusEvent)> {
    match &r.response_types {
        Some(ResponseTypes::NodeStatus(e)) => Some((e.state_change(), e)),
        _ => None,
    }
}

pub(crate) fn flow_of(r: &GetFlowsResponse) -> Option<&Flow> {
    match &r.response_types {
        Some(ResponseTypes::Flow(f)) => Some(f),
        _ => None,
    }
}

/// The source pods of the flows among `responses`.
pub(crate) fn pods(responses: &[GetFlowsResponse]) -> Vec<String> {
    responses
        .iter()
        .filter_map(flow_of)
        .filter_map(|f| Some(f.source.as_ref()?.pod_name.clone()))
        .collect()
}

pub(crate) fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

/// A TCP forwarder to `target` that can be cut: after [`Cut::cut`], bytes
/// stop flowing both ways but every socket stays open, as when a network
/// path is cut (no FIN, no RST); new connections are accepted and hang.
pub(crate) struct Cut {
    pub(crate) addr: SocketAddr,
    cut: CancellationToken,
}

impl Cut {
    pub(crate) async fn start(target: SocketAddr) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let cut = CancellationToken::new();
        let token = cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(
                        forward(cr, sw, token.clone()),
                        forward(sr, cw, token.clone())
                    );
                });
            }
        });
        Ok(Self { addr, cut })
    }

    pub(crate) fn cut(&self) {
        self.cut.cancel();
    }
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: CancellationToken,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = tokio::select! {
            () = cut.cancelled() => break,
            n = from.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    // Cut: hold both sockets open and silent for the rest of the test.
    std::future::pending::<()>().await;
    drop((from, to));
}
