//! Datapath benchmarks; prints one JSON object per line on stdout
//! (progress on stderr):
//!
//! * `ipcache_1m_batch_insert_s` vs `ipcache_1m_single_insert_s`: 1,000,000
//!   /32 ipcache entries written with `BPF_MAP_UPDATE_BATCH` vs one
//!   `BPF_MAP_UPDATE_ELEM` each, each into a fresh map;
//! * `ingress_ns_per_packet_1m` vs `ingress_ns_per_packet_empty_program`: the
//!   ingress program (`cm_to_endpoint`) on a TCP SYN from a source among the
//!   1M ipcache entries, through `BPF_PROG_TEST_RUN`, on the full policy path
//!   (two conntrack misses, the LPM look-up, six policy look-ups, a drop and
//!   its flow event), next to the same packets through an empty classifier.
//!   The flow ring buffer is sized for every event of a run and drained after
//!   each; `flow_events_lost` counts the drops whose event did not arrive;
//! * `ingress_allowed_ns_per_packet_1m`: the allowed path, a conntrack hit;
//! * `tcp_throughput_gbps` vs `tcp_throughput_gbps_no_program`: iperf3 (four
//!   streams, 5 s) over veths between two pod namespaces through a node
//!   namespace, with both endpoints' programs attached (policy enforced,
//!   allowed by identity and port) vs without programs, alternating in the
//!   same run, three rounds; `tcp_throughput_spread_pct*` is (max - min) /
//!   mean over the rounds;
//! * `small_udp_pps` vs `small_udp_pps_no_program`: 64-byte UDP datagrams
//!   received per second (iperf3, unlimited rate), the same way.
//!
//! Needs root (bpffs, namespaces); without root it says so and prints
//! nothing.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::Instant,
};

use anyhow::{Context, Result, bail};
use bpf::{
    Datapath, DatapathConfig, EndpointAttach, EndpointInfo, EndpointKey, EndpointPolicy,
    IpCacheKey, IpCacheValue, L4Match, PolicyKey, PolicyValue, Program, Protocol,
};
use netns::{RoutedPair, iperf::Iperf, unique_name};

const ENTRIES: u32 = 1_000_000;
const IPERF_SECONDS: u32 = 5;
const IPERF_STREAMS: u32 = 4;
/// The small UDP datagrams' size.
const SMALL_UDP_BYTES: u32 = 64;
const IPERF_PORT: u16 = 5201;
const ROUNDS: usize = 3;
/// Packets per `BPF_PROG_TEST_RUN` call, and calls per measurement.
const REPEAT: u32 = 200_000;
const RUNS: usize = 5;
/// Room for every flow event of one call (64-byte records and their 8-byte
/// headers), as a power of two.
const FLOW_RING_BYTES: u32 = 1 << 25;
/// The identity the measured endpoint admits (TCP 8080).
const ALLOWED_IDENTITY: u32 = 5;

/// One result line, fields in the documented order.
const BENCH: bench_report::Bench = bench_report::Bench::new("datapath");

/// Pin directories removed on drop (also when the bench fails).
struct Pins(Vec<PathBuf>);

impl Pins {
    fn open(&mut self, tag: &str) -> Result<Datapath> {
        let dir = PathBuf::from("/sys/fs/bpf").join(unique_name(&format!("cmb{tag}-")));
        self.0.push(dir.clone());
        Datapath::open(DatapathConfig {
            bpffs_dir: dir,
            ipcache_max_entries: 2 * ENTRIES,
            conntrack_max_entries: 16 * 1024,
            flow_ring_bytes: FLOW_RING_BYTES,
            ..DatapathConfig::default()
        })
        .context("open datapath")
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = Datapath::remove_pins(dir);
        }
    }
}

fn source(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 + i)
}

fn main() -> Result<()> {
    if !netns::root_or_skip("the datapath bench") {
        return Ok(());
    }
    let mut pins = Pins(Vec::new());
    let entries: Vec<(IpCacheKey, IpCacheValue)> = (0..ENTRIES)
        .map(|i| {
            (
                IpCacheKey::host(IpAddr::V4(source(i))),
                IpCacheValue::new(256 + i % 60_000),
            )
        })
        .collect();

    eprintln!("ipcache: {ENTRIES} single inserts");
    let single = pins.open("s")?;
    let start = Instant::now();
    for (k, v) in &entries {
        single.ipcache().upsert(k, v)?;
    }
    let single_s = start.elapsed().as_secs_f64();
    drop(single);
    let _ = Datapath::remove_pins(&pins.0[0]);

    eprintln!("ipcache: {ENTRIES} batched inserts");
    let dp = pins.open("b")?;
    let start = Instant::now();
    dp.ipcache().batch_upsert(&entries)?;
    let batch_s = start.elapsed().as_secs_f64();
    BENCH.emit(
        "ipcache_1m_batch_insert_s",
        batch_s,
        "s",
        bench_report::Better::Lower,
        Some(("ipcache_1m_single_insert_s", single_s)),
    );

    eprintln!("ingress program: BPF_PROG_TEST_RUN on a 1M-entry ipcache");
    let ingress = ingress_ns_per_packet(&dp)?;
    BENCH.emit(
        "ingress_ns_per_packet_1m",
        ingress.denied_ns,
        "ns",
        bench_report::Better::Lower,
        Some(("ingress_ns_per_packet_empty_program", ingress.empty_ns)),
    );
    BENCH.emit(
        "flow_events_lost",
        ingress.events_lost as f64,
        "events",
        bench_report::Better::Lower,
        None,
    );
    BENCH.emit(
        "ingress_allowed_ns_per_packet_1m",
        ingress.allowed_ns,
        "ns",
        bench_report::Better::Lower,
        Some(("ingress_ns_per_packet_empty_program", ingress.empty_ns)),
    );
    drop(dp);

    eprintln!("throughput: iperf3 over veths, with and without programs");
    let t = throughput(&mut pins)?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let spread = |v: &[f64]| {
        let (min, max) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        100.0 * (max - min) / mean(v)
    };
    BENCH.emit(
        "tcp_throughput_gbps",
        mean(&t.tcp_with),
        "Gbit/s",
        bench_report::Better::Higher,
        Some(("tcp_throughput_gbps_no_program", mean(&t.tcp_without))),
    );
    BENCH.emit(
        "tcp_throughput_spread_pct",
        spread(&t.tcp_with),
        "%",
        bench_report::Better::Lower,
        Some((
            "tcp_throughput_spread_pct_no_program",
            spread(&t.tcp_without),
        )),
    );
    BENCH.emit(
        "small_udp_pps",
        mean(&t.udp_with),
        "1/s",
        bench_report::Better::Higher,
        Some(("small_udp_pps_no_program", mean(&t.udp_without))),
    );
    Ok(())
}

/// Per-packet costs of the ingress program and of an empty classifier.
struct Ingress {
    denied_ns: f64,
    allowed_ns: f64,
    empty_ns: f64,
    events_lost: u64,
}

fn median(mut v: Vec<u32>) -> f64 {
    v.sort_unstable();
    f64::from(v[v.len() / 2])
}

/// An Ethernet/IPv4/TCP SYN from `src` to 10.200.1.2:8080.
fn syn_packet(src: Ipv4Addr) -> Vec<u8> {
    bpf::tcp_syn_frame(src, Ipv4Addr::new(10, 200, 1, 2), 8080)
}

fn ingress_ns_per_packet(dp: &Datapath) -> Result<Ingress> {
    // BPF_PROG_TEST_RUN runs on the loopback device (ifindex 1): configure
    // it as a policy-enforced endpoint that allows another identity only.
    dp.endpoints().upsert(
        &EndpointKey { ifindex: 1 },
        &EndpointInfo::new(9, 3000, EndpointPolicy::ingress(9)),
    )?;
    dp.policy().upsert(
        &PolicyKey::ingress(9, ALLOWED_IDENTITY, L4Match::Port(Protocol::Tcp, 8080)),
        &PolicyValue::ALLOW,
    )?;
    let denied = syn_packet(source(ENTRIES / 2 + 12_345));
    let mut flows = dp.flow_reader()?;
    flows.drain();
    let (mut runs, mut events_lost) = (Vec::new(), 0u64);
    for _ in 0..RUNS {
        let run = dp.test_run(Program::ToEndpoint, &denied, REPEAT)?;
        if run.retval != 2 {
            bail!("expected TC_ACT_SHOT (2), got {}", run.retval);
        }
        runs.push(run.ns_per_run);
        // The ring holds every event of the call; each drop has one.
        let arrived = flows
            .drain()
            .into_iter()
            .filter(|e| e.verdict == bpf::Verdict::Dropped && e.dst_identity == 3000)
            .count() as u64;
        events_lost += u64::from(REPEAT).saturating_sub(arrived);
    }
    let denied_ns = median(runs);

    // The allowed path: a source of the admitted identity, whose first SYN
    // creates the conntrack entry every later run hits.
    let allowed_source = source(ENTRIES / 2 + 777);
    dp.ipcache().upsert(
        &IpCacheKey::host(IpAddr::V4(allowed_source)),
        &IpCacheValue::new(ALLOWED_IDENTITY),
    )?;
    let allowed = syn_packet(allowed_source);
    let first = dp.test_run(Program::ToEndpoint, &allowed, 1)?;
    if first.retval != 0 {
        bail!(
            "expected TC_ACT_OK (0) for the allowed source, got {}",
            first.retval
        );
    }
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        let run = dp.test_run(Program::ToEndpoint, &allowed, REPEAT)?;
        if run.retval != 0 {
            bail!("expected TC_ACT_OK (0), got {}", run.retval);
        }
        runs.push(run.ns_per_run);
    }
    let allowed_ns = median(runs);
    let forwarded = flows
        .drain()
        .into_iter()
        .filter(|e| e.verdict == bpf::Verdict::Forwarded)
        .count();
    if forwarded != 1 {
        bail!("expected one forwarded event (the first SYN), got {forwarded}: conntrack missed");
    }

    let empty = bpf::EmptyClassifier::load().context("load an empty classifier")?;
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        let run = empty
            .test_run(&denied, REPEAT)
            .context("test run the empty classifier")?;
        if run.retval != 0 {
            bail!("the empty classifier returned {}", run.retval);
        }
        runs.push(run.ns_per_run);
    }
    Ok(Ingress {
        denied_ns,
        allowed_ns,
        empty_ns: median(runs),
        events_lost,
    })
}

/// Per round, with and without programs.
struct Throughput {
    tcp_with: Vec<f64>,
    tcp_without: Vec<f64>,
    udp_with: Vec<f64>,
    udp_without: Vec<f64>,
}

fn throughput(pins: &mut Pins) -> Result<Throughput> {
    let pair = RoutedPair::create()?;
    let (hc, hs) = (pair.client_veth().to_owned(), pair.server_veth().to_owned());
    let iperf = Iperf {
        client: &pair.client,
        server: &pair.server,
        server_addr: RoutedPair::SERVER_ADDR,
        port: IPERF_PORT,
        seconds: IPERF_SECONDS,
    };

    let mut dp = pins.open("t")?;
    for (ip, id) in [
        (RoutedPair::CLIENT_ADDR, 1001),
        (RoutedPair::SERVER_ADDR, 2000),
    ] {
        dp.ipcache()
            .upsert(&IpCacheKey::host(ip.parse()?), &IpCacheValue::new(id))?;
    }
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        dp.policy().upsert(
            &PolicyKey::ingress(2, 1001, L4Match::Port(protocol, IPERF_PORT)),
            &PolicyValue::ALLOW,
        )?;
    }

    let mut t = Throughput {
        tcp_with: Vec::new(),
        tcp_without: Vec::new(),
        udp_with: Vec::new(),
        udp_without: Vec::new(),
    };
    for round in 0..ROUNDS {
        t.tcp_without.push(iperf.tcp_gbps(IPERF_STREAMS)?);
        t.udp_without.push(iperf.udp_pps(SMALL_UDP_BYTES)?);
        eprintln!(
            "  round {round}: without programs {:.2} Gbit/s, {:.0} small UDP packets/s",
            t.tcp_without[round], t.udp_without[round]
        );
        for (ifname, endpoint_id, identity) in [(&hc, 1, 1001), (&hs, 2, 2000)] {
            dp.attach_endpoint(&EndpointAttach {
                ifname: ifname.clone(),
                netns: Some(pair.node.path().to_owned()),
                endpoint_id,
                identity,
                policy: EndpointPolicy::ingress(endpoint_id),
            })?;
        }
        t.tcp_with.push(iperf.tcp_gbps(IPERF_STREAMS)?);
        t.udp_with.push(iperf.udp_pps(SMALL_UDP_BYTES)?);
        eprintln!(
            "  round {round}: with programs {:.2} Gbit/s, {:.0} small UDP packets/s",
            t.tcp_with[round], t.udp_with[round]
        );
        for ifname in [&hc, &hs] {
            dp.detach_endpoint(&bpf::EndpointDetach {
                ifname: ifname.clone(),
                netns: Some(pair.node.path().to_owned()),
            })?;
        }
    }
    Ok(t)
}
