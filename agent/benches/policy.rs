//! Policy and conntrack benchmarks; prints one JSON object per line on
//! stdout (progress on stderr):
//!
//! * `policy_recompute_ms` vs `raw_policy_write_ms`: see
//!   `support/policy_recompute.rs`.
//! * `egress_ingress_ns_per_packet` vs `ingress_only_ns_per_packet`: what
//!   the first packet of a new connection costs the datapath when both
//!   directions are enforced vs today's common case, ingress only. Each
//!   figure is the sum of two per-packet costs measured with
//!   `BPF_PROG_TEST_RUN` on the loopback device (ifindex 1, configured as
//!   the endpoint): a TCP SYN the endpoint sends (`cm_from_endpoint`) and a
//!   TCP SYN sent to it (`cm_to_endpoint`). The endpoint's policy holds 100
//!   entries per direction, spread over identities, port blocks and
//!   any-identity entries, among them the allow that decides; the peer is
//!   one of 1,000,000 ipcache entries. Every packet opens a new connection
//!   (its own source port, one run each, the kernel's own timing of the
//!   run): a conntrack entry would short-cut the policy path, so none is hit.
//!   Egress + ingress: both SYNs take the policy path (ipcache, two policy
//!   look-ups, a conntrack entry and a flow event each); ingress only: the
//!   inbound SYN takes it, the outbound one only creates its conntrack
//!   entry. The flow events and conntrack entries are counted after each
//!   round to prove it. Five rounds alternating, medians. A single timed run
//!   carries the test run's own overhead (stderr shows an empty
//!   classifier's, timed the same way), which the ratio does not remove;
//! * `ct_gc_s_1m` vs `raw_dump_s_1m`: one conntrack garbage collection pass
//!   (`ConntrackMap::gc`, Cilium's lifetimes) over a map holding 1,000,000
//!   entries (filled from user space with batched updates; TCP and UDP,
//!   half of them expired) that deletes the expired half, vs the plainest
//!   walk of the same map (batched look-ups, nothing deleted). Three rounds
//!   (the map refilled each time), medians.
//!
//! Needs root (bpffs); without root it says so and prints nothing.

#[path = "support/policy_recompute.rs"]
mod policy_recompute;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    ops::ControlFlow,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use bench_report::Better;
use bpf::{
    CtKey, CtLifetimes, CtScope, CtValue, Datapath, DatapathConfig, Direction, EndpointInfo,
    EndpointKey, EndpointPolicy, FlowReader, IDENTITY_ANY, IpCacheKey, IpCacheValue, L4Match,
    PolicyAction, PolicyKey, PolicyValue, Program, Protocol, Verdict, monotonic_now_ns,
    tcp_syn_frame_from,
};

const BENCH: bench_report::Bench = bench_report::Bench::new("policy");

const IPCACHE_ENTRIES: u32 = 1_000_000;
/// Policy entries of the endpoint's policy, per direction.
const POLICY_ENTRIES: usize = 100;
/// New connections per program, configuration and round.
const CONNECTIONS: u16 = 10_000;
const POLICY_ROUNDS: usize = 5;
const CT_ENTRIES: u32 = 1_000_000;
/// Above the entries it holds: an LRU map evicts before it is full.
const CT_CAPACITY: u32 = 1_200_000;
const CT_ROUNDS: usize = 3;
/// Room for the flow events of a round (72-byte records, 8-byte headers).
const FLOW_RING_BYTES: u32 = 1 << 23;

const ENDPOINT_ID: u32 = 9;
const ENDPOINT_IDENTITY: u32 = 3000;
const POLICY_ID: u32 = 9;
const PORT: u16 = 8080;
const FIRST_SOURCE_PORT: u16 = 20_000;
/// The cookie of the deciding entries (the flow events name it).
const DECIDING_COOKIE: u32 = 4242;

/// The pin directory, removed on drop (also when the bench fails).
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = Datapath::remove_pins(&self.0);
    }
}

fn source(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 + i)
}

fn identity_of(i: u32) -> u32 {
    256 + i % 60_000
}

fn endpoint_ip() -> Ipv4Addr {
    Ipv4Addr::new(10, 200, 1, 2)
}

/// The peer of every measured connection, in the middle of the ipcache.
const PEER_INDEX: u32 = IPCACHE_ENTRIES / 2 + 12_345;

fn main() -> Result<()> {
    if !netns::root_or_skip("the policy bench") {
        return Ok(());
    }
    // `cargo bench --bench policy -- recompute` runs one part: `packet`,
    // `ct-gc` or `recompute` (cargo itself passes `--bench`).
    let parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |part: &str| parts.is_empty() || parts.iter().any(|p| p == part);
    if run("packet") || run("ct-gc") {
        datapath_parts(run("packet"), run("ct-gc"))?;
    }
    if run("recompute") {
        // The agent's own recompute, over a datapath of its own.
        let pins = Pins(PathBuf::from("/sys/fs/bpf").join(netns::unique_name("cmbrec-")));
        policy_recompute::run(&BENCH, &pins.0)?;
    }
    Ok(())
}

/// The per-packet cost and the conntrack GC, over one datapath with a full
/// ipcache.
fn datapath_parts(packet: bool, ct_gc: bool) -> Result<()> {
    let pins = Pins(PathBuf::from("/sys/fs/bpf").join(netns::unique_name("cmbpol-")));
    let dp = Datapath::open(DatapathConfig {
        bpffs_dir: pins.0.clone(),
        ipcache_max_entries: 2 * IPCACHE_ENTRIES,
        conntrack_max_entries: CT_CAPACITY,
        flow_ring_bytes: FLOW_RING_BYTES,
        ..DatapathConfig::default()
    })
    .context("open datapath")?;

    eprintln!("ipcache: {IPCACHE_ENTRIES} entries");
    let entries: Vec<(IpCacheKey, IpCacheValue)> = (0..IPCACHE_ENTRIES)
        .map(|i| {
            (
                IpCacheKey::host(IpAddr::V4(source(i))),
                IpCacheValue::new(identity_of(i)),
            )
        })
        .collect();
    dp.ipcache().batch_upsert(&entries)?;
    drop(entries);

    if packet {
        eprintln!("policy: new connections through BPF_PROG_TEST_RUN");
        let (both, ingress_only) = policy_ns_per_packet(&dp)?;
        BENCH.emit(
            "egress_ingress_ns_per_packet",
            both,
            "ns",
            Better::Lower,
            Some(("ingress_only_ns_per_packet", ingress_only)),
        );
    }
    if ct_gc {
        eprintln!("conntrack: GC passes over {CT_ENTRIES} entries");
        let (gc_s, walk_s) = ct_gc_seconds(&dp)?;
        BENCH.emit(
            "ct_gc_s_1m",
            gc_s,
            "s",
            Better::Lower,
            Some(("raw_dump_s_1m", walk_s)),
        );
    }
    Ok(())
}

/// The endpoint's policy: per direction 100 entries, the deciding allow
/// (the peer's identity, the 64-port block holding 8080) among entries for
/// other identities on other port ranges and any-identity entries on
/// other ports.
fn policy_entries() -> Vec<(PolicyKey, PolicyValue)> {
    let peer_identity = identity_of(PEER_INDEX);
    let mut out = Vec::new();
    for direction in Direction::ALL {
        let mut keys = Vec::new();
        let mut rule = 0u32;
        while keys.len() < POLICY_ENTRIES - 1 {
            let identity = if rule % 10 == 9 {
                IDENTITY_ANY
            } else {
                identity_of(rule * 997 + 11)
            };
            assert_ne!(
                identity, peer_identity,
                "only the deciding entry is the peer's"
            );
            let first = 1000 + 50 * rule as u16;
            for l4 in L4Match::port_range(Protocol::Tcp, first, first + 20) {
                keys.push((PolicyKey::new(POLICY_ID, direction, identity, l4), rule + 1));
            }
            rule += 1;
        }
        keys.truncate(POLICY_ENTRIES - 1);
        let deciding = L4Match::ports(Protocol::Tcp, PORT, 10);
        assert!(deciding.matches(Protocol::Tcp, PORT));
        keys.push((
            PolicyKey::new(POLICY_ID, direction, peer_identity, deciding),
            DECIDING_COOKIE,
        ));
        out.extend(
            keys.into_iter()
                .map(|(k, cookie)| (k, PolicyValue::new(PolicyAction::Allow, &k, cookie))),
        );
    }
    out
}

/// Average kernel-measured ns of one run of `program` over `frames`, each
/// run once (each a new connection).
fn ns_per_new_connection(dp: &Datapath, program: Program, frames: &[Vec<u8>]) -> Result<f64> {
    let mut total = 0u64;
    for frame in frames {
        let run = dp.test_run(program, frame, 1)?;
        if run.retval != 0 {
            bail!("{program:?}: expected TC_ACT_OK (0), got {}", run.retval);
        }
        total += u64::from(run.ns_per_run);
    }
    Ok(total as f64 / frames.len() as f64)
}

/// (egress + ingress, ingress only), per packet.
fn policy_ns_per_packet(dp: &Datapath) -> Result<(f64, f64)> {
    dp.policy().batch_upsert(&policy_entries())?;
    let peer = source(PEER_INDEX);
    let outbound: Vec<Vec<u8>> = (0..CONNECTIONS)
        .map(|i| tcp_syn_frame_from(endpoint_ip(), FIRST_SOURCE_PORT + i, peer, PORT))
        .collect();
    let inbound: Vec<Vec<u8>> = (0..CONNECTIONS)
        .map(|i| tcp_syn_frame_from(peer, FIRST_SOURCE_PORT + i, endpoint_ip(), PORT))
        .collect();
    let mut flows = dp.flow_reader()?;
    let (mut both, mut ingress_only) = (Vec::new(), Vec::new());
    for round in 0..POLICY_ROUNDS {
        for egress in [true, false] {
            dp.endpoints().upsert(
                &EndpointKey { ifindex: 1 },
                &EndpointInfo::new(
                    ENDPOINT_ID,
                    ENDPOINT_IDENTITY,
                    EndpointPolicy {
                        policy_id: POLICY_ID,
                        ingress: true,
                        egress,
                    },
                ),
            )?;
            dp.conntrack().clear()?;
            flows.drain();
            let from = ns_per_new_connection(dp, Program::FromEndpoint, &outbound)?;
            let to = ns_per_new_connection(dp, Program::ToEndpoint, &inbound)?;
            check_round(dp, &mut flows, egress)?;
            eprintln!(
                "  round {round}, {}: {from:.0} ns outbound + {to:.0} ns inbound",
                if egress {
                    "egress + ingress"
                } else {
                    "ingress only"
                }
            );
            if egress {
                both.push(from + to);
            } else {
                ingress_only.push(from + to);
            }
        }
    }
    dp.conntrack().clear()?;
    dp.endpoints().delete(&EndpointKey { ifindex: 1 })?;
    // What a single timed run costs without a program to speak of: the
    // floor under each of the four per-packet figures above.
    let empty = bpf::EmptyClassifier::load().context("load an empty classifier")?;
    let mut total = 0u64;
    for frame in &inbound {
        total += u64::from(empty.test_run(frame, 1)?.ns_per_run);
    }
    eprintln!(
        "  an empty classifier, one run per call: {:.0} ns",
        total as f64 / inbound.len() as f64
    );
    Ok((median(both), median(ingress_only)))
}

/// Every packet of the round opened a connection through the policy path
/// where it is enforced: one conntrack entry each, and one forwarded event
/// naming the deciding entry per policy decision.
fn check_round(dp: &Datapath, flows: &mut FlowReader, egress: bool) -> Result<()> {
    let mut entries = 0usize;
    dp.conntrack().walk(|chunk| {
        entries += chunk.len();
        ControlFlow::Continue(())
    })?;
    ensure!(
        entries == 2 * usize::from(CONNECTIONS),
        "{entries} conntrack entries after {} new connections",
        2 * CONNECTIONS
    );
    let events = flows.drain();
    let decided = |direction: Direction| {
        events
            .iter()
            .filter(|e| {
                e.verdict == Verdict::Forwarded
                    && e.policy
                        .is_some_and(|m| m.direction == direction && m.cookie == DECIDING_COOKIE)
            })
            .count()
    };
    let want_egress = if egress { CONNECTIONS.into() } else { 0 };
    ensure!(
        (decided(Direction::Egress), decided(Direction::Ingress))
            == (want_egress, usize::from(CONNECTIONS)),
        "policy decisions (egress, ingress): ({}, {}), expected ({want_egress}, {CONNECTIONS})",
        decided(Direction::Egress),
        decided(Direction::Ingress)
    );
    Ok(())
}

/// Entry `i` of the filled map: TCP and UDP, egress and ingress; even
/// entries expired under Cilium's lifetimes, odd ones not.
fn ct_entry(i: u32, now: u64) -> (CtKey, CtValue) {
    const MIN: u64 = 60_000_000_000;
    let src = SocketAddr::new(IpAddr::V4(source(i >> 4)), 10_000 + (i & 15) as u16);
    let dst = SocketAddr::new(IpAddr::V4(endpoint_ip()), PORT);
    let (protocol, scope, value) = match i % 4 {
        // idle 2 min: past non-TCP's 60 s
        0 => (
            Protocol::Udp,
            CtScope::Egress,
            CtValue::new(now - 2 * MIN, 5),
        ),
        // fresh UDP
        1 => (Protocol::Udp, CtScope::Ingress, CtValue::new(now, 5)),
        // closing for a minute: past 10 s
        2 => (
            Protocol::Tcp,
            CtScope::Ingress,
            CtValue::new(now - MIN, 5).with_reply_seen().with_closing(),
        ),
        // established, idle for an hour: 5 h to go
        _ => (
            Protocol::Tcp,
            CtScope::Egress,
            CtValue::new(now - 60 * MIN, 5).with_reply_seen(),
        ),
    };
    (CtKey::new(protocol, src, dst, scope), value)
}

/// (GC pass, plain walk) in seconds.
fn ct_gc_seconds(dp: &Datapath) -> Result<(f64, f64)> {
    let ct = dp.conntrack();
    ensure!(
        ct.capacity() >= CT_ENTRIES,
        "the conntrack map holds {} entries at most",
        ct.capacity()
    );
    let lifetimes = CtLifetimes::default();
    let (mut gc, mut walk) = (Vec::new(), Vec::new());
    for round in 0..CT_ROUNDS {
        ct.clear()?;
        let now = monotonic_now_ns();
        let mut chunk = Vec::with_capacity(1 << 16);
        for start in (0..CT_ENTRIES).step_by(1 << 16) {
            chunk.clear();
            chunk.extend((start..CT_ENTRIES.min(start + (1 << 16))).map(|i| ct_entry(i, now)));
            ct.batch_upsert(&chunk)?;
        }

        let started = Instant::now();
        let mut seen = 0usize;
        ct.walk(|chunk| {
            seen += chunk.len();
            ControlFlow::Continue(())
        })?;
        let walk_s = started.elapsed();
        ensure!(
            seen == CT_ENTRIES as usize,
            "{seen} entries after filling {CT_ENTRIES} (evicted?)"
        );

        let started = Instant::now();
        let stats = ct.gc(&lifetimes, monotonic_now_ns())?;
        let gc_s = started.elapsed();
        ensure!(
            (stats.deleted_total(), stats.remaining_total())
                == (CT_ENTRIES as usize / 2, CT_ENTRIES as usize / 2),
            "the pass deleted {} and kept {}",
            stats.deleted_total(),
            stats.remaining_total()
        );
        eprintln!(
            "  round {round}: GC {:.3} s, walk {:.3} s",
            gc_s.as_secs_f64(),
            walk_s.as_secs_f64()
        );
        gc.push(gc_s);
        walk.push(walk_s);
    }
    ct.clear()?;
    let median_s = |mut v: Vec<Duration>| {
        v.sort_unstable();
        v[v.len() / 2].as_secs_f64()
    };
    Ok((median_s(gc), median_s(walk)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_unstable_by(f64::total_cmp);
    v[v.len() / 2]
}
