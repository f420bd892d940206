//! The DNS proxy's cost (`make bench BENCH=dns`); one JSON object per line
//! on stdout, progress on stderr.
//!
//! The setup is the one of `tests/dns_policy.rs`: a real etcd, one node
//! with a real `clustermesh-agent` (release build), a real dnsmasq on a
//! host outside the mesh, and two pods added through the CNI binary:
//! `client` (`app: client`), whose policy has DNS rules, so its lookups go
//! through the proxy, and `direct` (no policy), whose lookups go straight
//! to dnsmasq along the same path minus the proxy. Lookups are UDP, made
//! from the pods' namespaces by this process.
//!
//! * `dns_added_latency_p50_ms` / `dns_added_latency_p99_ms`: 2,000
//!   sequential lookups of `api.example.test` (selected by `toFQDNs`, so
//!   every answer goes through the control loop before it is released, its
//!   address already known) from `client`, minus the same percentile of
//!   2,000 lookups from `direct`; baselines `direct_lookup_p50_ms` /
//!   `direct_lookup_p99_ms`. Target: p99 ≤ 1 ms added.
//! * `dns_lookups_per_s`: lookups answered per second through the proxy
//!   with 16 concurrent clients for 3 s, the agent confined to one core
//!   (`sched_setaffinity` on all its threads); baseline
//!   `direct_lookups_per_s`: the same load from `direct` (dnsmasq itself,
//!   single-threaded, bounds both).
//! * `dns_answer_to_map_p50_ms` / `dns_answer_to_map_p99_ms`: 1,000
//!   lookups of distinct names `n<k>.wild.example.test`, each resolving to
//!   an address not learned yet: from the proxy reading the answer to its
//!   identity, ipcache and policy entries being written (the agent's
//!   `clustermesh_agent_fqdn_answer_to_map_seconds` histogram, buckets 25 %
//!   apart, read interpolated). Each lookup's address is checked in the
//!   pinned ipcache map right after the answer arrives.
//!
//! Needs root and dnsmasq; without either it says why on stderr and prints
//! nothing.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use bench_report::Better;
use bpf::{IPCACHE_MAP, IpCacheKey, IpCacheMap};
use etcd_harness::TestEtcd;
use kvstore::{Client, ClientConfig, StoreValue, keys, values::PolicyDocument};
use netns::NetNs;
use support::{
    Fabric,
    dns::{
        API, DNS, DNSMASQ, ExternalHost, NODE_IP, POD_CIDR, POLICY, dns_node, lookup_from,
        parse_answer, query_bytes,
    },
    wait_for,
};

const BENCH: bench_report::Bench = bench_report::Bench::new("dns");

const LATENCY_LOOKUPS: usize = 2_000;
const FRESH_NAMES: usize = 1_000;
const CLIENTS: usize = 16;
const RATE_WINDOW: Duration = Duration::from_secs(3);

/// The address of fresh name `k` (not routed anywhere: only learned).
fn fresh_ip(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, (k / 250) as u8, (k % 250 + 1) as u8)
}

fn main() -> Result<()> {
    if !netns::root_or_skip("the dns bench") {
        return Ok(());
    }
    if !Path::new(DNSMASQ).exists() {
        eprintln!("skipping the dns bench: dnsmasq is not installed (scripts/install-deps.sh)");
        return Ok(());
    }
    let started = Instant::now();
    let rt = tokio::runtime::Runtime::new()?;
    let etcd = rt.block_on(TestEtcd::start())?;
    let kv = rt.block_on(Client::connect(&ClientConfig::new([etcd.endpoint()])))?;
    let mut fabric = Fabric::new()?;
    let mut node = dns_node(etcd.endpoint(), &mut fabric)?;
    let metrics_addr = free_local_addr()?;
    node.extra_args = vec!["--health-listen".into(), metrics_addr.to_string()];
    let hosts: String = (0..FRESH_NAMES)
        .map(|k| format!("{} n{k}.wild.example.test\n", fresh_ip(k)))
        .collect();
    let _ext = ExternalHost::start(&mut fabric, POD_CIDR, NODE_IP, &hosts)?;
    node.start_agent()?;
    let client = node.add_pod("client", &[("app", "client")])?;
    let direct = node.add_pod("direct", &[("app", "direct")])?;
    let doc = PolicyDocument::parse(POLICY)?;
    rt.block_on(kv.put(&keys::policies().key(&doc.key()), doc.encode()))?;
    wait_for("the client's lookups to go through the proxy", || {
        let _ = lookup_from(&client.ns, "api.example.test", false);
        forwarded(metrics_addr) > 0.0
    });
    eprintln!("dns bench: set up in {:.1?}", started.elapsed());

    // Added latency.
    let direct_ms = latencies(&direct.ns, LATENCY_LOOKUPS)?;
    let proxy_ms = latencies(&client.ns, LATENCY_LOOKUPS)?;
    for (q, name) in [(0.50, "p50"), (0.99, "p99")] {
        let d = percentile(&direct_ms, q);
        let p = percentile(&proxy_ms, q);
        eprintln!("dns bench: lookup {name}: direct {d:.3} ms, through the proxy {p:.3} ms");
        BENCH.emit(
            &format!("dns_added_latency_{name}_ms"),
            p - d,
            "ms",
            Better::Lower,
            Some((&format!("direct_lookup_{name}_ms"), d)),
        );
    }

    // Throughput with the agent on one core.
    let pid = node.agent_pid().context("the agent runs")?;
    pin_to_one_core(pid)?;
    let direct_rate = rate(&direct.ns)?;
    let proxy_rate = rate(&client.ns)?;
    eprintln!("dns bench: {proxy_rate:.0} lookups/s through the proxy, {direct_rate:.0} direct");
    BENCH.emit(
        "dns_lookups_per_s",
        proxy_rate,
        "1/s",
        Better::Higher,
        Some(("direct_lookups_per_s", direct_rate)),
    );

    // Answer to map, over fresh names.
    let before = histogram(metrics_addr)?;
    let ipcache = IpCacheMap::open_pinned(&node.bpffs, IPCACHE_MAP)?;
    for k in 0..FRESH_NAMES {
        let name = format!("n{k}.wild.example.test");
        let a = lookup_from(&client.ns, &name, false)?;
        ensure!(a.addresses == vec![fresh_ip(k)], "{name}: {a:?}");
        let key = IpCacheKey::host(IpAddr::V4(fresh_ip(k)));
        ensure!(
            ipcache.get(&key)?.is_some(),
            "{name}'s address is not in the ipcache when its answer arrives"
        );
    }
    let after = histogram(metrics_addr)?;
    let diff: Vec<(f64, f64)> = after
        .iter()
        .zip(&before)
        .map(|((le, a), (_, b))| (*le, a - b))
        .collect();
    for (q, name) in [(0.50, "p50"), (0.99, "p99")] {
        let v = histogram_quantile(&diff, q) * 1000.0;
        BENCH.emit(
            &format!("dns_answer_to_map_{name}_ms"),
            v,
            "ms",
            Better::Lower,
            None,
        );
    }
    eprintln!("dns bench: done in {:.1?}", started.elapsed());
    Ok(())
}

fn free_local_addr() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

fn metrics_text(addr: SocketAddr) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: agent\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

/// `clustermesh_agent_dns_proxy_messages_total{outcome="forwarded"}`.
fn forwarded(addr: SocketAddr) -> f64 {
    let Ok(text) = metrics_text(addr) else {
        return 0.0;
    };
    text.lines()
        .find_map(|l| {
            l.strip_prefix("clustermesh_agent_dns_proxy_messages_total{outcome=\"forwarded\"} ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The cumulative buckets (le, count) of the answer-to-map histogram.
fn histogram(addr: SocketAddr) -> Result<Vec<(f64, f64)>> {
    let text = metrics_text(addr)?;
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) =
            line.strip_prefix("clustermesh_agent_fqdn_answer_to_map_seconds_bucket{le=\"")
        else {
            continue;
        };
        let (le, count) = rest.split_once("\"} ").context("a bucket line")?;
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse()?
        };
        out.push((le, count.trim().parse()?));
    }
    if out.is_empty() {
        bail!("no answer-to-map histogram in the agent's metrics");
    }
    Ok(out)
}

/// The `q` quantile of cumulative buckets, linear within a bucket.
fn histogram_quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total == 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return prev.0;
            }
            let within = if count > prev.1 {
                (rank - prev.1) / (count - prev.1)
            } else {
                0.0
            };
            return prev.0 + (le - prev.0) * within;
        }
        prev = (le, count);
    }
    prev.0
}

/// Milliseconds of `n` sequential lookups of api.example.test from `ns`.
fn latencies(ns: &NetNs, n: usize) -> Result<Vec<f64>> {
    let socket = ns.enter(|| UdpSocket::bind("0.0.0.0:0"))??;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    socket.connect(SocketAddr::from((DNS, 53)))?;
    let mut out = Vec::with_capacity(n);
    let mut buf = [0u8; 1500];
    for i in 0..n {
        let id = i as u16;
        let q = query_bytes("api.example.test", id);
        let t = Instant::now();
        socket.send(&q)?;
        loop {
            let got = socket.recv(&mut buf)?;
            if got >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                let a = parse_answer(&buf[..got], SocketAddr::from((DNS, 53)))?;
                ensure!(a.addresses == vec![API], "{a:?}");
                break;
            }
        }
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// Lookups answered per second from `ns` by `CLIENTS` concurrent clients,
/// each with one query outstanding.
fn rate(ns: &NetNs) -> Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for c in 0..CLIENTS {
        let socket = ns.enter(|| UdpSocket::bind("0.0.0.0:0"))??;
        socket.set_read_timeout(Some(Duration::from_millis(500)))?;
        socket.connect(SocketAddr::from((DNS, 53)))?;
        let (stop, answered) = (stop.clone(), answered.clone());
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            let mut id = (c as u16) << 11;
            while !stop.load(Ordering::Relaxed) {
                id = id.wrapping_add(1);
                if socket.send(&query_bytes("api.example.test", id)).is_err() {
                    continue;
                }
                // A lost answer times out and the client asks again.
                while let Ok(n) = socket.recv(&mut buf) {
                    if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                        answered.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }));
    }
    let t = Instant::now();
    let start = answered.load(Ordering::Relaxed);
    std::thread::sleep(RATE_WINDOW);
    let n = answered.load(Ordering::Relaxed) - start;
    let elapsed = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// Confines every thread of process `pid` to CPU 0.
fn pin_to_one_core(pid: u32) -> Result<()> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))?;
    for task in tasks {
        let tid: i32 = task?.file_name().to_string_lossy().parse()?;
        // SAFETY: a zeroed cpu_set_t with one bit set, passed by pointer
        // with its size.
        let rc = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        ensure!(rc == 0, "sched_setaffinity({tid}) failed");
    }
    Ok(())
}
