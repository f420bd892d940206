//! Watch fan-out benchmark: 500 watchers of `cilium/state/ip/v1/` while a
//! writer puts 1,000 values a second for 10 s, connected three ways in the
//! same run, with the same clients (10 HTTP/2 connections × 50 watch
//! streams):
//!
//! 1. straight to etcd (the baseline for etcd's load),
//! 2. through `clustermesh-apiserver` (mutual TLS, per-cluster
//!    authorization, one shared upstream watch), run as a child process,
//! 3. through `etcd grpc-proxy` (plain TCP, no authorization; it also
//!    coalesces watches), the peer to beat.
//!
//! Measured per setup: delivery latency (put sent → event received, from a
//! timestamp in the value), etcd's own watcher count, etcd's CPU time and the
//! proxy's CPU time (from /proc) over the write window plus the drain. The
//! etcd CPU spent on watches is measured in the same etcd process of each
//! setup: the same puts are first written with no watcher connected, and
//! that CPU is subtracted from the CPU of the puts with the watchers. A
//! setup that misses an event fails the benchmark (after its lines are
//! printed).
//! stdout carries only JSON lines; progress goes to stderr.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use certs::{Ca, CertName, Validity};
use etcd_harness::{
    TestEtcd, free_port,
    watch_load::{self, RequestCodec, Tally, Target, connect, percentile_ms, watcher},
};
use tokio::{io::AsyncReadExt, io::AsyncWriteExt, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tonic::{
    Request,
    client::Grpc,
    codegen::http::uri::PathAndQuery,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

const PREFIX: &str = "cilium/state/ip/v1/";
const CONNECTIONS: usize = 10;
const STREAMS_PER_CONNECTION: usize = 50;
const WATCHERS: usize = CONNECTIONS * STREAMS_PER_CONNECTION;
const PUTS_PER_SECOND: u64 = 1_000;
const WRITE_SECONDS: u64 = 10;
const PUTS: u64 = PUTS_PER_SECOND * WRITE_SECONDS;
/// Size of each value: an ipcache entry is about this big.
const VALUE_BYTES: usize = 200;
/// How long after the last put every event must have arrived.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

/// What one setup measured.
#[derive(Debug, Default)]
struct Outcome {
    etcd_watchers: f64,
    etcd_cpu_s: f64,
    /// etcd's CPU for the same puts before any watcher connected (same
    /// process).
    etcd_writes_only_cpu_s: f64,
    proxy_cpu_s: Option<f64>,
    p50_ms: f64,
    p99_ms: f64,
    missing_events: u64,
    write_rate: f64,
    /// The benchmark process's own CPU (writer and watchers).
    client_cpu_s: f64,
    /// Watch streams the server ended during the run.
    disconnected_watchers: usize,
}

async fn run() -> Result<()> {
    // The clock the values carry starts now.
    watch_load::now_ns();
    let dir = tempfile::tempdir()?;
    let pki = Pki::new(dir.path())?;
    let server = pki.server()?;
    let tls = pki.client_tls("remote-c2")?;

    // Each setup gets a fresh etcd, so that none inherits another's garbage
    // or backlog; the direct one, which saturates etcd, runs last.
    let (ours, idle_watchers) = {
        let etcd = start_etcd().await?;
        let apiserver = start_apiserver(&etcd, &server, dir.path()).await?;
        // Its own watch: the cluster-config store's.
        let idle = etcd.metric("etcd_debugging_mvcc_watcher_total").await?;
        let target = Target::Tls {
            url: format!("https://{}", apiserver.addr),
            tls: tls.clone(),
        };
        let pid = apiserver.child.id();
        (
            measure("clustermesh-apiserver", &etcd, target, Some(pid)).await?,
            idle,
        )
    };
    let peer = {
        let etcd = start_etcd().await?;
        let proxy = start_grpc_proxy(&etcd, dir.path(), None, &pki).await?;
        let target = Target::Plain(format!("http://{}", proxy.addr));
        measure("etcd grpc-proxy", &etcd, target, Some(proxy.child.id())).await?
    };
    let peer_tls = {
        let etcd = start_etcd().await?;
        let proxy = start_grpc_proxy(&etcd, dir.path(), Some(&server), &pki).await?;
        let target = Target::Tls {
            url: format!("https://{}", proxy.addr),
            tls: tls.clone(),
        };
        measure(
            "etcd grpc-proxy with mutual TLS",
            &etcd,
            target,
            Some(proxy.child.id()),
        )
        .await?
    };
    let direct = {
        let etcd = start_etcd().await?;
        measure("direct", &etcd, Target::Plain(etcd.endpoint()), None).await?
    };

    let cpu = |o: &Outcome| o.proxy_cpu_s.unwrap_or_default();
    BENCH.emit(
        "proxy_upstream_etcd_watchers",
        ours.etcd_watchers,
        "watchers",
        bench_report::Better::Lower,
        Some(("direct_etcd_watchers", direct.etcd_watchers)),
    );
    BENCH.emit(
        "proxy_idle_etcd_watchers",
        idle_watchers,
        "watchers",
        bench_report::Better::Lower,
        None,
    );
    BENCH.emit(
        "grpc_proxy_upstream_etcd_watchers",
        peer.etcd_watchers,
        "watchers",
        bench_report::Better::Lower,
        None,
    );
    BENCH.emit(
        "etcd_cpu_s",
        ours.etcd_cpu_s,
        "s",
        bench_report::Better::Lower,
        Some(("etcd_cpu_s_direct", direct.etcd_cpu_s)),
    );
    BENCH.emit(
        "etcd_cpu_s_writes_only",
        ours.etcd_writes_only_cpu_s,
        "s",
        bench_report::Better::Lower,
        Some((
            "etcd_cpu_s_writes_only_direct",
            direct.etcd_writes_only_cpu_s,
        )),
    );
    let watch_cpu = |o: &Outcome| o.etcd_cpu_s - o.etcd_writes_only_cpu_s;
    BENCH.emit(
        "etcd_watch_cpu_s",
        watch_cpu(&ours),
        "s",
        bench_report::Better::Lower,
        Some(("etcd_watch_cpu_s_direct", watch_cpu(&direct))),
    );
    BENCH.emit(
        "grpc_proxy_etcd_cpu_s",
        peer.etcd_cpu_s,
        "s",
        bench_report::Better::Lower,
        Some(("etcd_cpu_s_direct", direct.etcd_cpu_s)),
    );
    BENCH.emit(
        "delivery_p50_ms",
        ours.p50_ms,
        "ms",
        bench_report::Better::Lower,
        Some(("grpc_proxy_delivery_p50_ms", peer.p50_ms)),
    );
    BENCH.emit(
        "delivery_p99_ms",
        ours.p99_ms,
        "ms",
        bench_report::Better::Lower,
        Some(("grpc_proxy_delivery_p99_ms", peer.p99_ms)),
    );
    BENCH.emit(
        "delivery_p99_ms_vs_mtls",
        ours.p99_ms,
        "ms",
        bench_report::Better::Lower,
        Some(("grpc_proxy_mtls_delivery_p99_ms", peer_tls.p99_ms)),
    );
    BENCH.emit(
        "direct_delivery_p50_ms",
        direct.p50_ms,
        "ms",
        bench_report::Better::Lower,
        None,
    );
    BENCH.emit(
        "direct_delivery_p99_ms",
        direct.p99_ms,
        "ms",
        bench_report::Better::Lower,
        None,
    );
    BENCH.emit(
        "proxy_cpu_s",
        cpu(&ours),
        "s",
        bench_report::Better::Lower,
        Some(("grpc_proxy_cpu_s", cpu(&peer))),
    );
    BENCH.emit(
        "proxy_cpu_s_vs_mtls",
        cpu(&ours),
        "s",
        bench_report::Better::Lower,
        Some(("grpc_proxy_mtls_cpu_s", cpu(&peer_tls))),
    );
    for (name, outcome) in [
        ("direct", &direct),
        ("proxy", &ours),
        ("grpc_proxy", &peer),
        ("grpc_proxy_mtls", &peer_tls),
    ] {
        BENCH.emit(
            &format!("{name}_client_cpu_s"),
            outcome.client_cpu_s,
            "s",
            bench_report::Better::Lower,
            None,
        );
        BENCH.emit(
            &format!("{name}_missing_events"),
            outcome.missing_events as f64,
            "events",
            bench_report::Better::Lower,
            None,
        );
        BENCH.emit(
            &format!("{name}_disconnected_watchers"),
            outcome.disconnected_watchers as f64,
            "watchers",
            bench_report::Better::Lower,
            None,
        );
        BENCH.emit(
            &format!("{name}_write_rate"),
            outcome.write_rate,
            "puts/s",
            bench_report::Better::Higher,
            None,
        );
    }
    // A comparison peer that loses events under load is a finding about the
    // peer (its `*_missing_events` line says how many); ours or the direct
    // baseline losing any makes every figure of the run invalid.
    for (name, o) in [
        ("etcd grpc-proxy", &peer),
        ("etcd grpc-proxy with mutual TLS", &peer_tls),
    ] {
        if o.missing_events > 0 {
            eprintln!(
                "note: {name} lost {} events; its latency figures count only what arrived",
                o.missing_events
            );
        }
    }
    let missing: Vec<String> = [("direct", &direct), ("clustermesh-apiserver", &ours)]
        .iter()
        .filter(|(_, o)| o.missing_events > 0)
        .map(|(name, o)| format!("{name}: {} events missing", o.missing_events))
        .collect();
    if !missing.is_empty() {
        bail!(
            "events went missing, the figures above are not valid: {}",
            missing.join(", ")
        );
    }
    Ok(())
}

async fn start_etcd() -> Result<TestEtcd> {
    TestEtcd::start().await.context("start etcd")
}

/// etcd's CPU for the puts alone, before any watcher of the setup connects.
async fn measure_writes_only(name: &str, etcd: &TestEtcd) -> Result<f64> {
    eprintln!("[{name}] writes only: {PUTS} puts at {PUTS_PER_SECOND}/s with no watcher");
    let before = etcd.metric("process_cpu_seconds_total").await?;
    write(etcd).await?;
    let cpu = etcd.metric("process_cpu_seconds_total").await? - before;
    eprintln!("[{name}] writes only: etcd used {cpu:.2} s of CPU");
    Ok(cpu)
}

const BENCH: bench_report::Bench = bench_report::Bench::new("apiserver");

/// One setup: connect the watchers, write, wait for every event, measure.
async fn measure(
    name: &str,
    etcd: &TestEtcd,
    target: Target,
    proxy_pid: Option<u32>,
) -> Result<Outcome> {
    let etcd_writes_only_cpu_s = measure_writes_only(name, etcd).await?;
    let pid = proxy_pid.map_or_else(String::new, |pid| format!(" (proxy pid {pid})"));
    eprintln!("[{name}] connecting {WATCHERS} watchers over {CONNECTIONS} connections{pid}");
    let baseline_watchers = etcd.metric("etcd_debugging_mvcc_watcher_total").await?;
    let stop = CancellationToken::new();
    let tally = Tally::new(WATCHERS);
    let mut watchers = JoinSet::new();
    for c in 0..CONNECTIONS {
        let channel = connect(&target).await?;
        for s in 0..STREAMS_PER_CONNECTION {
            let index = c * STREAMS_PER_CONNECTION + s;
            watchers.spawn(watcher(
                channel.clone(),
                PREFIX.to_owned(),
                tally.clone(),
                index,
                stop.clone(),
                PUTS as usize,
            ));
        }
    }
    wait_until(Duration::from_secs(60), || tally.created() == WATCHERS)
        .await
        .context("watchers were not created")?;
    // etcd registers its watchers asynchronously to the created responses.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let etcd_watchers = etcd.metric("etcd_debugging_mvcc_watcher_total").await? - baseline_watchers;
    eprintln!(
        "[{name}] all created; etcd holds {etcd_watchers} watchers for them; writing {PUTS} puts at {PUTS_PER_SECOND}/s"
    );

    let etcd_cpu_before = etcd.metric("process_cpu_seconds_total").await?;
    let proxy_cpu_before = proxy_pid.map(process_cpu_seconds).transpose()?;
    let client_cpu_before = own_cpu_seconds();
    let write_started = Instant::now();
    let written = write(etcd).await?;
    let write_rate = written as f64 / write_started.elapsed().as_secs_f64();
    let expected = written * WATCHERS as u64;
    let drained = wait_until(DRAIN_TIMEOUT, || tally.total() >= expected).await;
    let etcd_cpu_s = etcd.metric("process_cpu_seconds_total").await? - etcd_cpu_before;
    let proxy_cpu_s = match (proxy_pid, proxy_cpu_before) {
        (Some(pid), Some(before)) => Some(process_cpu_seconds(pid)? - before),
        _ => None,
    };
    let client_cpu_s = own_cpu_seconds() - client_cpu_before;
    let got = tally.total();
    if drained.is_err() {
        eprintln!("[{name}] only {got} of {expected} events arrived within {DRAIN_TIMEOUT:?}");
    }
    stop.cancel();
    let (latencies, disconnected_watchers) =
        watch_load::gather(&mut watchers, expected as usize).await?;
    let percentile = |p: f64| percentile_ms(&latencies, p);
    let outcome = Outcome {
        etcd_watchers,
        etcd_cpu_s,
        etcd_writes_only_cpu_s,
        proxy_cpu_s,
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        missing_events: expected.saturating_sub(got),
        write_rate,
        client_cpu_s,
        disconnected_watchers,
    };
    eprintln!("[{name}] {outcome:?}");
    // The watchers' connections are closed: wait for etcd to drop their
    // watches before the next setup.
    let settle = Instant::now();
    while etcd.metric("etcd_debugging_mvcc_watcher_total").await? > baseline_watchers
        && settle.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(outcome)
}

async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Puts `PUTS` values at `PUTS_PER_SECOND`, each carrying its send time.
async fn write(etcd: &TestEtcd) -> Result<u64> {
    let client = etcd_client::Client::connect(etcd.endpoints(), None).await?;
    watch_load::write(&client, PUTS, PUTS_PER_SECOND, VALUE_BYTES, |i| {
        format!("{PREFIX}default/10.0.{}.{}", (i % 1000) / 250, i % 250)
    })
    .await
}

/// CPU time (user + system) of a process so far, from /proc.
fn process_cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); the slice starts at field 3.
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks as f64 / hz)
}

/// CPU time (user + system) of this process so far.
fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// The mesh CA, the apiserver's server certificate and client certificates.
struct Pki {
    dir: std::path::PathBuf,
    ca: Ca,
}

impl Pki {
    fn new(dir: &Path) -> Result<Self> {
        let dir = dir.join("pki");
        let ca = Ca::generate("bench-ca", Validity::days(2)?)?;
        ca.write(&dir)?;
        Ok(Self { dir, ca })
    }

    fn server(&self) -> Result<certs::TlsFiles> {
        Ok(self
            .ca
            .issue_server(
                &CertName::new("apiserver")?,
                &["localhost".to_owned()],
                &[std::net::Ipv4Addr::LOCALHOST.into()],
                Validity::days(1)?,
            )?
            .write(&self.dir)?)
    }

    fn client_tls(&self, cn: &str) -> Result<ClientTlsConfig> {
        let issued = self
            .ca
            .issue_client(&CertName::new(cn)?, Validity::days(1)?)?;
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca.cert_pem()))
            .identity(Identity::from_pem(issued.cert_pem(), issued.key_pem())))
    }
}

/// A child process killed on drop.
struct Proxy {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_apiserver(etcd: &TestEtcd, server: &certs::TlsFiles, dir: &Path) -> Result<Proxy> {
    let (port, health) = (free_port(), free_port());
    let log = std::fs::File::create(dir.join("apiserver.log"))?;
    let child = Command::new(env!("CARGO_BIN_EXE_clustermesh-apiserver"))
        .args(["--cluster-name=c1", "--cluster-id=1"])
        .arg(format!("--etcd-endpoints={}", etcd.endpoint()))
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg(format!("--health-listen=127.0.0.1:{health}"))
        .arg(format!("--tls-cert={}", server.cert.display()))
        .arg(format!("--tls-key={}", server.key.display()))
        .arg(format!("--tls-client-ca={}", server.ca_bundle.display()))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("run clustermesh-apiserver")?;
    let proxy = Proxy {
        child,
        addr: format!("127.0.0.1:{port}").parse()?,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if http_status(health, "/readyz").await == Some(200) {
            return Ok(proxy);
        }
        if Instant::now() > deadline {
            bail!(
                "clustermesh-apiserver did not become ready; log:\n{}",
                std::fs::read_to_string(dir.join("apiserver.log")).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `etcd grpc-proxy` in front of `etcd`; with `tls`, it serves TLS and
/// requires client certificates signed by the mesh CA.
async fn start_grpc_proxy(
    etcd: &TestEtcd,
    dir: &Path,
    tls: Option<&certs::TlsFiles>,
    pki: &Pki,
) -> Result<Proxy> {
    let port = free_port();
    let name = if tls.is_some() {
        "grpc-proxy-tls"
    } else {
        "grpc-proxy"
    };
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let mut cmd = Command::new("etcd");
    cmd.args(["grpc-proxy", "start"])
        .arg(format!("--endpoints=127.0.0.1:{}", etcd.client_port()))
        .arg(format!("--listen-addr=127.0.0.1:{port}"))
        .arg(format!("--advertise-client-url=127.0.0.1:{port}"))
        .arg(format!("--data-dir={}", dir.join(name).display()));
    if let Some(tls) = tls {
        cmd.arg(format!("--cert-file={}", tls.cert.display()))
            .arg(format!("--key-file={}", tls.key.display()))
            .arg(format!("--trusted-ca-file={}", tls.ca_bundle.display()));
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("run etcd grpc-proxy")?;
    let proxy = Proxy {
        child,
        addr: format!("127.0.0.1:{port}").parse()?,
    };
    let target = match tls {
        Some(_) => Target::Tls {
            url: format!("https://127.0.0.1:{port}"),
            tls: pki.client_tls("remote-c2")?,
        },
        None => Target::Plain(format!("http://127.0.0.1:{port}")),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(channel) = connect(&target).await
            && probe(channel).await.is_ok()
        {
            return Ok(proxy);
        }
        if Instant::now() > deadline {
            bail!(
                "etcd grpc-proxy did not answer; log:\n{}",
                std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One range request, to see that a server answers.
async fn probe(channel: Channel) -> Result<()> {
    let mut grpc = Grpc::new(channel);
    grpc.ready().await?;
    let request = etcd_client::proto::PbRangeRequest {
        key: b"probe".to_vec(),
        ..Default::default()
    };
    grpc.unary(
        Request::new(request),
        PathAndQuery::from_static("/etcdserverpb.KV/Range"),
        RequestCodec::<etcd_client::proto::PbRangeRequest>::new(),
    )
    .await?;
    Ok(())
}

async fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
