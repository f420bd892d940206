//! Hubble benchmarks; prints one JSON object per line on stdout (progress
//! on stderr):
//!
//! * `flows_ingested_per_s` vs `raw_ring_reads_per_s`: 1,000,000 policy
//!   drops put into a real datapath's flow ring buffer (`BPF_PROG_TEST_RUN`
//!   of the ingress program), then turned into buffered Hubble flows by the
//!   agent's flow reader (`FlowIngestor::drain`: decode, both ends described
//!   from a directory of 10,000 identities and pods, metrics, a buffer of
//!   2^20 - 1 flows that is already full) vs only read and decoded from the
//!   ring (`FlowReader::try_next`); alternating, five rounds, medians.
//!   `flows_ingested_cpu_s` vs `raw_ring_reads_cpu_s`: the reading thread's
//!   CPU seconds per million flows;
//! * `tcp_throughput_gbps_observer_on` vs `tcp_throughput_gbps_observer_off`:
//!   iperf3 (four streams, 5 s) between two pod namespaces through a node
//!   namespace, both endpoints' programs attached (policy enforced, allowed),
//!   with the agent's flow reader running on a thread (its loop: wait for
//!   events, turn them into flows) vs without; alternating, five rounds,
//!   medians;
//! * `relay_last_10k_flows_s` vs `direct_last_10k_flows_s`: four Hubble
//!   servers (12,000 flows each, interleaved in time across nodes), a Peer
//!   service listing them and a relay over mutual TLS; the time for
//!   `GetFlows` with `number: 2500` through the relay until the stream ends
//!   (`number` is per node: 10,000 flows in all) vs the same request to the
//!   four servers at once, without the relay. `relay_last_10k_per_node_flows_s`
//!   vs `direct_last_10k_per_node_flows_s`: the same with `number: 10000`
//!   (40,000 flows). Five rounds alternating, medians.
//!
//! Needs root (bpffs, namespaces); without root it says so and prints
//! nothing.

use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use agent::FlowIngestor;
use anyhow::{Context, Result, ensure};
use bench_report::Better;
use bpf::{
    Datapath, DatapathConfig, EndpointAttach, EndpointInfo, EndpointKey, IpCacheKey, IpCacheValue,
    L4Match, PolicyKey, PolicyValue, Program, Protocol,
};
use futures::{StreamExt, future::try_join_all};
use hubble::{
    Event, FlowBuffer, LocalObserver,
    client::{Address, ClientTls},
    names::{node_fullname, tls_server_name},
    peer::{PeerInfo, PeerService, Peers},
    pki::{HubblePki, RELAY_SERVER_NAME},
    ring::Capacity,
    server::{HubbleServer, Listen, TcpListen},
    time::timestamp,
};
use hubble_api::{
    flow::{
        DropReason, Endpoint, Flow, FlowType, Ip, IpVersion, Layer4, Tcp, TcpFlags,
        TraceObservationPoint, TrafficDirection, Verdict, layer4,
    },
    observer::{
        GetFlowsRequest, get_flows_response::ResponseTypes, observer_client::ObserverClient,
    },
};
use kvstore::{CLUSTER_LABEL, Label, Labels, NAMESPACE_LABEL};
use netns::{RoutedPair, iperf::Iperf, unique_name};
use relay::{PeerAddress, Relay, RelayConfig, Security};
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::Channel;

const BENCH: bench_report::Bench = bench_report::Bench::new("hubble");

/// Drops per ingest measurement.
const FLOWS: u32 = 1_000_000;
/// Room for every event of a measurement (72 bytes each with its header).
const FLOW_RING_BYTES: u32 = 1 << 27;
/// The Hubble buffer the ingest measurement fills.
const INGEST_CAPACITY: usize = (1 << 20) - 1;
/// Identities and pods the directory knows besides the measured ones.
const DIRECTORY_ENTRIES: u32 = 10_000;
const INGEST_ROUNDS: usize = 5;

const IPERF_PORT: u16 = 5201;
const IPERF_SECONDS: u32 = 5;
const IPERF_STREAMS: u32 = 4;
const THROUGHPUT_ROUNDS: usize = 5;

const CLUSTER: &str = "c1";
const NODES: usize = 4;
/// Flows each node holds (more than the 10,000 asked for).
const FLOWS_PER_NODE: u32 = 12_000;
const RELAY_ROUNDS: usize = 5;
/// How long the relay may take to connect to every node.
const RELAY_READY: Duration = Duration::from_secs(30);

fn main() -> Result<()> {
    if !netns::root_or_skip("the hubble bench") {
        return Ok(());
    }

    eprintln!("ingest: {FLOWS} kernel events into Hubble flows, {INGEST_ROUNDS} rounds");
    let ingest = ingest()?;
    BENCH.emit(
        "flows_ingested_per_s",
        ingest.ingested.rate(),
        "1/s",
        Better::Higher,
        Some(("raw_ring_reads_per_s", ingest.raw.rate())),
    );
    BENCH.emit(
        "flows_ingested_cpu_s",
        ingest.ingested.cpu_per_million(),
        "s/1M flows",
        Better::Lower,
        Some(("raw_ring_reads_cpu_s", ingest.raw.cpu_per_million())),
    );

    eprintln!("throughput: iperf3 through the datapath, flow reader on and off");
    let (on, off) = throughput()?;
    BENCH.emit(
        "tcp_throughput_gbps_observer_on",
        median(on),
        "Gbit/s",
        Better::Higher,
        Some(("tcp_throughput_gbps_observer_off", median(off))),
    );

    eprintln!("relay: the last flows of {NODES} nodes, through the relay and directly");
    let runtime = tokio::runtime::Runtime::new()?;
    let relay = runtime.block_on(relay_last_flows())?;
    BENCH.emit(
        "relay_last_10k_flows_s",
        relay.relay_10k,
        "s",
        Better::Lower,
        Some(("direct_last_10k_flows_s", relay.direct_10k)),
    );
    BENCH.emit(
        "relay_last_10k_per_node_flows_s",
        relay.relay_per_node,
        "s",
        Better::Lower,
        Some(("direct_last_10k_per_node_flows_s", relay.direct_per_node)),
    );
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A datapath pinned in a fresh bpffs directory, unpinned on drop (also
/// when the bench fails).
struct PinnedDatapath {
    dp: Datapath,
    dir: PathBuf,
}

impl PinnedDatapath {
    fn open(tag: &str, flow_ring_bytes: u32) -> Result<Self> {
        let dir = PathBuf::from("/sys/fs/bpf").join(unique_name(&format!("cmh{tag}-")));
        let dp = Datapath::open(DatapathConfig {
            bpffs_dir: dir.clone(),
            flow_ring_bytes,
            ..DatapathConfig::default()
        })
        .context("open the datapath")?;
        Ok(Self { dp, dir })
    }
}

impl Drop for PinnedDatapath {
    fn drop(&mut self) {
        let _ = Datapath::remove_pins(&self.dir);
    }
}

/// Labels of a pod identity.
fn pod_labels(app: &str, namespace: &str, cluster: &str) -> Labels {
    [
        Label::new("k8s", "app", app),
        Label::new("k8s", "tier", "backend"),
        Label::new("k8s", NAMESPACE_LABEL, namespace),
        Label::new("k8s", CLUSTER_LABEL, cluster),
        Label::new("k8s", "io.cilium.k8s.policy.serviceaccount", "default"),
    ]
    .into_iter()
    .collect()
}

/// The directory of a node in a mesh: the two ends of the measured flows
/// (a pod of a remote cluster calling a local one) among many others.
fn describe(ingestor: &FlowIngestor, src: Ipv4Addr, src_id: u32, dst: Ipv4Addr, dst_id: u32) {
    for i in 0..DIRECTORY_ENTRIES {
        let ns = format!("ns-{}", i % 50);
        ingestor.describe_identity(70_000 + i, &pod_labels(&format!("app-{i}"), &ns, "c3"));
        let ip = Ipv4Addr::from(0x0a64_0000 + i);
        ingestor.describe_pod(IpAddr::V4(ip), &ns, &format!("app-{i}-5d8f7c9b4-x2k8q"));
    }
    ingestor.describe_identity(src_id, &pod_labels("client", "shop", "c2"));
    ingestor.describe_identity(dst_id, &pod_labels("server", "shop", CLUSTER));
    ingestor.describe_pod(IpAddr::V4(src), "shop", "client-7d9f8b6c5-abcde");
    ingestor.describe_pod(IpAddr::V4(dst), "shop", "server-0");
}

/// Wall-clock and thread CPU time of one measurement.
#[derive(Clone, Copy)]
struct Timed {
    n: usize,
    wall: Duration,
    cpu: Duration,
}

impl Timed {
    fn of(f: impl FnOnce() -> usize) -> Self {
        let (cpu, start) = (thread_cpu(), Instant::now());
        let n = f();
        Self {
            n,
            wall: start.elapsed(),
            cpu: thread_cpu().saturating_sub(cpu),
        }
    }

    fn rate(&self) -> f64 {
        self.n as f64 / self.wall.as_secs_f64()
    }

    fn cpu_per_million(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.n as f64
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// The median round of each way of reading (by rate).
struct Ingest {
    ingested: Timed,
    raw: Timed,
}

fn ingest() -> Result<Ingest> {
    let pinned = PinnedDatapath::open("i", FLOW_RING_BYTES)?;
    let dp = &pinned.dp;
    // Test runs use the loopback device (ifindex 1): an endpoint that
    // enforces policy and allows nothing, so every SYN is a policy drop.
    let (src, dst, src_id, dst_id) = (
        Ipv4Addr::new(10, 9, 0, 1),
        Ipv4Addr::new(10, 9, 0, 2),
        2 << 16 | 300,
        3000,
    );
    dp.endpoints().upsert(
        &EndpointKey { ifindex: 1 },
        &EndpointInfo::new(9, dst_id, bpf::EndpointPolicy::ingress(9)),
    )?;
    dp.ipcache().upsert(
        &IpCacheKey::host(IpAddr::V4(src)),
        &IpCacheValue::new(src_id),
    )?;
    let syn = bpf::tcp_syn_frame(src, dst, 80);
    let mut reader = dp.flow_reader()?;
    let mut ingestor = FlowIngestor::new(Capacity::new(INGEST_CAPACITY)?, CLUSTER, "n1");
    describe(&ingestor, src, src_id, dst, dst_id);
    let lost_before = reader.lost_total()?;
    let flood = || -> Result<()> {
        let run = dp.test_run(Program::ToEndpoint, &syn, FLOWS)?;
        ensure!(run.retval == 2, "dropped (TC_ACT_SHOT), got {}", run.retval);
        Ok(())
    };

    // A first round fills the buffer: later ones overwrite, as a running
    // agent's do.
    flood()?;
    let warm = ingestor.drain(&mut reader);
    ensure!(warm == FLOWS as usize, "read {warm} of {FLOWS} events");
    let newest = ingestor.newest_flow().context("a buffered flow")?;
    let (s, d) = (
        newest.source.clone().unwrap_or_default(),
        newest.destination.clone().unwrap_or_default(),
    );
    eprintln!(
        "  a flow: {}/{} ({}) -> {}/{} ({}), {:?}",
        s.namespace,
        s.pod_name,
        s.cluster_name,
        d.namespace,
        d.pod_name,
        d.cluster_name,
        newest.verdict()
    );
    ensure!(
        s.pod_name.starts_with("client-") && d.cluster_name == CLUSTER,
        "both ends described"
    );

    let (mut raws, mut ingested) = (Vec::new(), Vec::new());
    for round in 0..INGEST_ROUNDS {
        flood()?;
        let raw = Timed::of(|| {
            std::iter::from_fn(|| reader.try_next())
                .map(black_box)
                .count()
        });
        flood()?;
        let ing = Timed::of(|| ingestor.drain(&mut reader));
        eprintln!(
            "  round {round}: raw {:.0}/s ({:.3} CPU s), ingested {:.0}/s ({:.3} CPU s)",
            raw.rate(),
            raw.cpu.as_secs_f64(),
            ing.rate(),
            ing.cpu.as_secs_f64()
        );
        for t in [&raw, &ing] {
            ensure!(t.n == FLOWS as usize, "read {} of {FLOWS} events", t.n);
        }
        raws.push(raw);
        ingested.push(ing);
    }
    let lost = reader.lost_total()? - lost_before;
    ensure!(lost == 0, "the kernel ring lost {lost} events");
    let median = |mut v: Vec<Timed>| {
        v.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
        v[v.len() / 2]
    };
    Ok(Ingest {
        ingested: median(ingested),
        raw: median(raws),
    })
}

/// The agent's flow reader on a thread of its own, until dropped.
struct FlowReaderThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<usize>>>,
}

impl FlowReaderThread {
    fn start(dp: &Datapath, directory: impl FnOnce(&FlowIngestor)) -> Result<Self> {
        let mut reader = dp.flow_reader()?;
        let mut ingestor = FlowIngestor::new(Capacity::DEFAULT, CLUSTER, "n1");
        directory(&ingestor);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !stopped.load(Ordering::Relaxed) {
                n += ingestor.poll(&mut reader)?;
            }
            Ok(n)
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the reader; returns how many events it read.
    fn stop(mut self) -> Result<usize> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().context("running")?;
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("the flow reader panicked"))?
    }
}

impl Drop for FlowReaderThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Gbit/s per round with the flow reader on, and off.
fn throughput() -> Result<(Vec<f64>, Vec<f64>)> {
    let pair = RoutedPair::create()?;
    let iperf = Iperf {
        client: &pair.client,
        server: &pair.server,
        server_addr: RoutedPair::SERVER_ADDR,
        port: IPERF_PORT,
        seconds: IPERF_SECONDS,
    };
    let mut pinned = PinnedDatapath::open("t", DatapathConfig::default().flow_ring_bytes)?;
    let dp = &mut pinned.dp;
    let (client_id, server_id) = (2 << 16 | 1001, 2000);
    for (ip, id) in [
        (RoutedPair::CLIENT_ADDR, client_id),
        (RoutedPair::SERVER_ADDR, server_id),
    ] {
        dp.ipcache()
            .upsert(&IpCacheKey::host(ip.parse()?), &IpCacheValue::new(id))?;
    }
    dp.policy().upsert(
        &PolicyKey::ingress(2, client_id, L4Match::Port(Protocol::Tcp, IPERF_PORT)),
        &PolicyValue::ALLOW,
    )?;
    for (ifname, endpoint_id, identity) in [
        (pair.client_veth(), 1, client_id),
        (pair.server_veth(), 2, server_id),
    ] {
        dp.attach_endpoint(&EndpointAttach {
            ifname: ifname.to_owned(),
            netns: Some(pair.node.path().to_owned()),
            endpoint_id,
            identity,
            policy: bpf::EndpointPolicy::ingress(endpoint_id),
        })?;
    }
    let directory = |ingestor: &FlowIngestor| {
        let (client, server): (Ipv4Addr, Ipv4Addr) = (
            RoutedPair::CLIENT_ADDR.parse().expect("an address"),
            RoutedPair::SERVER_ADDR.parse().expect("an address"),
        );
        describe(ingestor, client, client_id, server, server_id);
    };

    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..THROUGHPUT_ROUNDS {
        // Which goes first alternates, so that drift favours neither.
        for observer in [round % 2 == 0, round % 2 != 0] {
            if observer {
                let reader = FlowReaderThread::start(dp, directory)?;
                on.push(iperf.tcp_gbps(IPERF_STREAMS)?);
                let flows = reader.stop()?;
                eprintln!(
                    "  round {round}: observer on  {:.2} Gbit/s ({flows} flows read)",
                    on[round]
                );
            } else {
                off.push(iperf.tcp_gbps(IPERF_STREAMS)?);
                eprintln!("  round {round}: observer off {:.2} Gbit/s", off[round]);
            }
        }
    }
    Ok((on, off))
}

/// Four Hubble servers over rings of ready-made flows, each announcing all
/// four through its Peer service; stopped on drop.
struct Nodes {
    /// `(node, TCP address)`.
    nodes: Vec<(String, SocketAddr)>,
    /// What the Peer services announce.
    peers: Option<watch::Sender<Peers>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.tasks.close();
    }
}

impl Nodes {
    async fn start(pki: &HubblePki, dir: &std::path::Path) -> Result<Self> {
        let (peers, _) = watch::channel(Peers::new());
        let mut nodes = Self {
            nodes: Vec::new(),
            peers: None,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        let server_tls = certs::ServerTls::load(pki.node_server.clone(), h2())?;
        let base = SystemTime::now() - Duration::from_secs(3600);
        for k in 0..NODES {
            let node = format!("n{k}");
            let fullname = node_fullname(CLUSTER, &node);
            let buffer = Arc::new(FlowBuffer::new(Capacity::new((1 << 14) - 1)?));
            // Node k's flow i is at 4i + k ms: interleaved across nodes.
            buffer.push_batch((0..FLOWS_PER_NODE).map(|i| {
                let t = base + Duration::from_millis(u64::from(i) * NODES as u64 + k as u64);
                Event::Flow(flow(&fullname, k, i, t))
            }));
            let observer = Arc::new(LocalObserver::new(buffer, fullname, "0.1.0".into()));
            let server = HubbleServer::bind(
                Listen {
                    unix_socket: dir.join(format!("{node}.sock")),
                    tcp: Some(TcpListen {
                        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                        acceptor: server_tls.acceptor(),
                        on_handshake_failure: Arc::new(|_| {}),
                    }),
                },
                observer,
                PeerService::new(peers.subscribe()),
            )
            .await?;
            let addr = server.tcp_addr().context("a TCP listener")?;
            nodes.tasks.spawn(server.run(nodes.shutdown.clone()));
            nodes.nodes.push((node, addr));
        }
        peers.send_replace(
            nodes
                .nodes
                .iter()
                .map(|(node, addr)| {
                    let name = node_fullname(CLUSTER, node);
                    let info = PeerInfo {
                        name: name.clone(),
                        address: addr.to_string(),
                        tls_server_name: Some(tls_server_name(node, CLUSTER)),
                    };
                    (name, info)
                })
                .collect(),
        );
        nodes.peers = Some(peers);
        Ok(nodes)
    }
}

fn h2() -> certs::Config {
    certs::Config {
        alpn_protocols: vec![b"h2".to_vec()],
        ..Default::default()
    }
}

/// Flow `i` of node `k` at `t`: a TCP connection between pods of two
/// clusters, as an agent reports it (every fifth one a policy drop).
#[allow(deprecated)] // `Summary` is still read by the CLI
fn flow(node_name: &str, k: usize, i: u32, t: SystemTime) -> Flow {
    let dropped = i.is_multiple_of(5);
    let endpoint = |identity: u32, ip_pod: &str, app: &str, cluster: &str| Endpoint {
        id: if cluster == CLUSTER {
            100 + identity % 50
        } else {
            0
        },
        identity,
        cluster_name: cluster.into(),
        namespace: "shop".into(),
        labels: [
            format!("k8s:app={app}"),
            format!("k8s:{CLUSTER_LABEL}={cluster}"),
            format!("k8s:{NAMESPACE_LABEL}=shop"),
        ]
        .into(),
        pod_name: ip_pod.into(),
        workloads: Vec::new(),
    };
    Flow {
        time: Some(timestamp(t)),
        verdict: if dropped {
            Verdict::Dropped
        } else {
            Verdict::Forwarded
        }
        .into(),
        drop_reason_desc: if dropped {
            DropReason::PolicyDenied.into()
        } else {
            0
        },
        ip: Some(Ip {
            source: format!("10.2.{}.{}", i / 250 % 250, i % 250),
            destination: format!("10.1.{k}.10"),
            ip_version: IpVersion::IPv4.into(),
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(layer4::Protocol::Tcp(Tcp {
                source_port: 30_000 + i % 30_000,
                destination_port: 8080,
                flags: Some(TcpFlags {
                    syn: true,
                    ..Default::default()
                }),
            })),
        }),
        source: Some(endpoint(
            70_000 + i % 100,
            &format!("client-{}", i % 100),
            "client",
            "c2",
        )),
        destination: Some(endpoint(
            3000 + k as u32,
            &format!("server-{k}"),
            "server",
            CLUSTER,
        )),
        r#type: FlowType::L3L4.into(),
        node_name: node_name.into(),
        traffic_direction: TrafficDirection::Ingress.into(),
        trace_observation_point: TraceObservationPoint::ToEndpoint.into(),
        is_reply: Some(false),
        summary: "TCP Flags: SYN".into(),
        ..Default::default()
    }
}

/// Median seconds of each query.
struct RelayTimes {
    relay_10k: f64,
    direct_10k: f64,
    relay_per_node: f64,
    direct_per_node: f64,
}

async fn relay_last_flows() -> Result<RelayTimes> {
    let dir = tempfile::tempdir()?;
    let pki = HubblePki::issue(dir.path(), CLUSTER)?;
    let nodes = Nodes::start(&pki, dir.path()).await?;

    let (first, first_addr) = &nodes.nodes[0];
    let mut config = RelayConfig::new(
        first_addr.to_string().parse::<PeerAddress>()?,
        Security::Tls {
            server_name: tls_server_name(first, CLUSTER),
        },
        "relay-node",
    );
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    config.listen = local;
    config.health_listen = None;
    config.server_tls = Some(pki.relay_server.clone());
    config.client_tls = Some(pki.relay_client.clone());
    let (relay, handle) = Relay::new(config)?;
    let shutdown = CancellationToken::new();
    let _stop_relay = shutdown.clone().drop_guard();
    let relay_task = tokio::spawn(relay.run(shutdown.clone()));
    let addrs = tokio::time::timeout(RELAY_READY, handle.bound())
        .await?
        .context("the relay stopped before binding")?;
    let ready = tokio::time::timeout(
        RELAY_READY,
        handle
            .pool()
            .wait_for(|s| s.peers.len() == NODES && s.peers.values().all(|p| p.is_available())),
    )
    .await;
    ensure!(
        matches!(ready, Ok(Some(_))),
        "the relay did not connect to every node: {:#?}",
        handle.pool().list()
    );

    let user = certs::ClientTls::load(pki.user.clone(), h2())?;
    let channel = |host_port: String, server_name: String| {
        let connector = user.connector();
        async move {
            let tls = ClientTls {
                connector,
                server_name,
            };
            let address = Address::Tcp {
                host_port,
                tls: true,
            };
            anyhow::Ok(hubble::client::connect(&address, Some(tls)).await?)
        }
    };
    let to_relay = channel(addrs.grpc.to_string(), RELAY_SERVER_NAME.into()).await?;
    let mut to_nodes = Vec::new();
    for (node, addr) in &nodes.nodes {
        to_nodes.push(channel(addr.to_string(), tls_server_name(node, CLUSTER)).await?);
    }

    let mut times = [(); 4].map(|()| Vec::new());
    for round in 0..RELAY_ROUNDS {
        for (i, number) in [2_500, 10_000].into_iter().enumerate() {
            let expected = number as usize * NODES;
            let (relay_s, n) = timed_flows(std::slice::from_ref(&to_relay), number).await?;
            ensure!(
                n == expected,
                "the relay returned {n} flows, not {expected}"
            );
            let (direct_s, n) = timed_flows(&to_nodes, number).await?;
            ensure!(
                n == expected,
                "the nodes returned {n} flows, not {expected}"
            );
            eprintln!(
                "  round {round}: number {number} ({expected} flows): relay {relay_s:.3} s, direct {direct_s:.3} s"
            );
            times[2 * i].push(relay_s);
            times[2 * i + 1].push(direct_s);
        }
    }
    shutdown.cancel();
    let _ = relay_task.await;
    drop(nodes);
    let [relay_10k, direct_10k, relay_per_node, direct_per_node] = times.map(median);
    Ok(RelayTimes {
        relay_10k,
        direct_10k,
        relay_per_node,
        direct_per_node,
    })
}

/// `GetFlows` with `number` to every server of `channels` at once, each
/// read until its stream ends: seconds, and flows received.
async fn timed_flows(channels: &[Channel], number: u64) -> Result<(f64, usize)> {
    let start = Instant::now();
    let counts = try_join_all(channels.iter().map(|channel| async move {
        let mut client = ObserverClient::new(channel.clone()).max_decoding_message_size(usize::MAX);
        let mut stream = client
            .get_flows(GetFlowsRequest {
                number,
                ..Default::default()
            })
            .await?
            .into_inner();
        let mut flows = 0;
        while let Some(response) = stream.next().await {
            if let Some(ResponseTypes::Flow(flow)) = response?.response_types {
                black_box(flow);
                flows += 1;
            }
        }
        anyhow::Ok(flows)
    }))
    .await?;
    Ok((start.elapsed().as_secs_f64(), counts.iter().sum()))
}
