//! `make bench BENCH=scale` (root): how the agent's cost grows with the
//! mesh, as curves. Every simulated cluster is a real etcd and a real
//! `clustermesh-apiserver` (release binary) on 127.0.0.1; only the workloads
//! are synthetic entries written into its etcd. One real agent (its own
//! etcd, eBPF maps, a node namespace) connects to them through its
//! clustermesh config directory ([`integration::scale`]).
//!
//! - **clusters**: 8, 32, 128 and 255 remotes of 1,000 ipcache entries and
//!   100 identities each: time from the config files to every remote ready
//!   and every entry in the BPF ipcache map (baseline: a raw paginated list
//!   of the same keys from every etcd at once), agent RSS, TCP connections,
//!   CPU while idle (10 s). Goals: 255 in ≤ 10 s, idle ≤ 2 % of a core.
//! - **entries**: 100k, 300k and 1M entries over 8 remotes (10 % as many
//!   identities): the same sync time and baseline, agent bytes per entry
//!   (RSS growth), and the BPF map's own memory. Goals: 1M in ≤ 5 s,
//!   ≤ 200 B per entry.
//! - **churn**: 1k, 5k and 10k new entries a second over 8 remotes, 5 s
//!   each: each from its remote etcd's commit to the agent's BPF map, p50 and
//!   p99 (baseline: raw watches on the same etcds), the rate achieved and
//!   the agent's CPU. Goal: p99 ≤ 50 ms at 10k/s.
//! - **recovery**: one remote of 100k entries behind a TCP proxy, cut for
//!   60 s while 100k changes (50k updates, 25k deletes, 25k adds) land in
//!   it; from the repair until the map is exactly the remote's state
//!   (baseline: a raw list of the final state). Goal: ≤ 5 s.
//! - **fanout**: 1,000 and 5,000 watchers of the ipcache prefix on one
//!   apiserver, each a lightweight etcd `Watch` client on a mutual-TLS
//!   connection of its own, while 1,000 puts a second land in its etcd for
//!   10 s: delivery p50 and p99 (put sent → event received, from a timestamp
//!   in the value), the apiserver's RSS and CPU, the watches it holds on its
//!   etcd, the rate achieved (baseline: as many watchers, each on its own
//!   mutual-TLS connection, straight on an etcd serving TLS, same writes,
//!   same clock). Goals: p99 ≤ 100 ms at 5,000 watchers, one upstream watch
//!   per prefix. A watcher that misses an event fails the curve.
//!
//! stdout: one JSON line per figure. stderr: progress, and the results
//! directory (every line again in `results.jsonl`, and a PNG per curve).
//! `SCALE_CURVES=clusters,entries` runs some curves only;
//! `SCALE_CLUSTER_POINTS=128`, `SCALE_ENTRY_POINTS=1000000` and
//! `SCALE_FANOUT_POINTS=1000` pick points; `SCALE_IDLE_S=60` makes the idle
//! window longer (room for a profiler), `SCALE_HOLD_S=60` keeps each
//! entries point's agent running that long after its figures (room to
//! inspect its memory), and `SCALE_AGENT_WRAP="heaptrack -o /tmp/agent"`
//! runs the agent under a tool.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use bench_report::{
    Better::{self, Higher, Lower},
    plot::{Chart, Series},
};
use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use etcd_harness::{
    EtcdOptions, ServerTls, TcpProxy, TestEtcd,
    watch_load::{self, Tally, Target},
};
use futures::StreamExt;
use integration::{
    proc_stats::{cpu_seconds, rss_bytes, settled_rss_bytes, tcp_connections},
    propagation::{self, Source},
    scale::{
        self, ENTRIES_PER_IDENTITY, Pki, Remote, ScaleAgent, all_in_map, none_in_map, stride_for,
    },
};
use kvstore::{StoreValue, keys};

const BENCH: bench_report::Bench = bench_report::Bench::new("scale");

const CLUSTER_POINTS: [usize; 4] = [8, 32, 128, 255];
const ENTRIES_PER_CLUSTER: usize = 1_000;
const ENTRY_POINTS: [usize; 3] = [100_000, 300_000, 1_000_000];
const ENTRY_CLUSTERS: usize = 8;
const CHURN_RATES: [u64; 3] = [1_000, 5_000, 10_000];
const CHURN_SECONDS: u64 = 5;
const RECOVERY_ENTRIES: usize = 100_000;
const PARTITION: Duration = Duration::from_secs(60);
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// The agent's memory after a sync is read once it stopped dropping for
/// this long (it gives freed memory back a second after the last store
/// synced; read earlier, the figure depended on the race).
const RSS_QUIET: Duration = Duration::from_millis(1_500);
const RSS_DEADLINE: Duration = Duration::from_secs(10);
const FANOUT_POINTS: [usize; 2] = [1_000, 5_000];
const FANOUT_PER_S: u64 = 1_000;
const FANOUT_SECONDS: u64 = 10;
/// Each put's value: about an ipcache entry's size.
const FANOUT_VALUE_BYTES: usize = 200;
/// Watcher connections (TCP + TLS handshakes) being set up at once.
const FANOUT_CONNECTING: usize = 64;
/// How long the watchers may go without receiving anything after the last
/// put before the events they lack count as missing (a backlog still
/// draining is slow, not lost)…
const FANOUT_STALL: Duration = Duration::from_secs(15);
/// …and how long the drain may take in all.
const FANOUT_DRAIN: Duration = Duration::from_secs(600);
const FANOUT_GOAL_MS: f64 = 100.0;
/// Room for a million remote entries and the local ones.
const BIG_IPCACHE: u32 = 2 * 1024 * 1024;

/// Prints a figure and keeps it for `results.jsonl`.
struct Out {
    dir: PathBuf,
    lines: Vec<String>,
}

impl Out {
    fn emit(
        &mut self,
        metric: &str,
        value: f64,
        unit: &str,
        better: Better,
        base: Option<(&str, f64)>,
    ) {
        let line = BENCH.line(metric, value, unit, better, base);
        println!("{line}");
        self.lines.push(line);
        let _ = fs::write(self.dir.join("results.jsonl"), self.lines.join("\n") + "\n");
    }

    fn plot(&self, file: &str, chart: Chart) {
        let path = self.dir.join(file);
        match chart.draw(&path) {
            Ok(()) => eprintln!("  plot: {}", path.display()),
            Err(e) => eprintln!("  plot {file} failed: {e}"),
        }
    }
}

/// `1m`, `300k`, `1k`: the suffix of a metric name.
fn short(n: usize) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}m", n / 1_000_000)
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

/// The points of a curve: `default`, or those `var` lists (comma-separated,
/// for a look at one point).
fn points(var: &str, default: &[usize]) -> Result<Vec<usize>> {
    match std::env::var(var) {
        Ok(list) => list
            .split(',')
            .map(|p| {
                p.trim()
                    .parse()
                    .with_context(|| format!("{var}: {p:?} is not a number"))
            })
            .collect(),
        Err(_) => Ok(default.to_vec()),
    }
}

fn results_dir() -> Result<PathBuf> {
    let base = std::env::var_os("SCALE_RESULTS_DIR").map_or_else(
        || {
            localmesh::default_bin_dir().parent().map_or_else(
                || PathBuf::from("bench-results"),
                |t| t.join("bench-results"),
            )
        },
        PathBuf::from,
    );
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let dir = base.join(format!("scale-{stamp}"));
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

fn main() -> Result<()> {
    if !integration::can_run("the scale bench") {
        return Ok(());
    }
    integration::require_binaries()?;
    let files = scale::raise_nofile_limit()?;
    if files < 8_192 {
        bail!("the open-file limit is {files}; 255 clusters need at least 8192 (ulimit -Hn)");
    }
    // Every apiserver watches its certificate files with an inotify
    // instance of its own: 255 of them, and the agent's, exceed Debian's
    // default of 128 per user. Raised for the run, restored after.
    let inotify = InotifyLimit::raise(1024)?;
    let curves = std::env::var("SCALE_CURVES")
        .unwrap_or_else(|_| "clusters,entries,churn,recovery,fanout".into());
    let dir = results_dir()?;
    eprintln!("scale bench: results and plots in {}", dir.display());
    let mut out = Out {
        dir: dir.clone(),
        lines: Vec::new(),
    };
    let bin = localmesh::default_bin_dir();
    let work = tempfile::Builder::new().prefix("cmscale-").tempdir()?;
    let pki = Pki::new(&work.path().join("pki"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    for curve in curves.split(',') {
        let started = Instant::now();
        match curve.trim() {
            "clusters" => rt.block_on(clusters(&mut out, &pki, &bin, work.path()))?,
            "entries" => rt.block_on(entries(&mut out, &pki, &bin, work.path()))?,
            "churn" => rt.block_on(churn(&mut out, &pki, &bin, work.path()))?,
            "recovery" => rt.block_on(recovery(&mut out, &pki, &bin, work.path()))?,
            "fanout" => rt.block_on(fanout(&mut out, &pki, &bin, work.path()))?,
            other => bail!(
                "unknown curve {other:?} in SCALE_CURVES (clusters, entries, churn, recovery, fanout)"
            ),
        }
        eprintln!(
            "scale bench: {curve} done in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    eprintln!("scale bench: results and plots in {}", dir.display());
    drop(inotify);
    Ok(())
}

/// `fs.inotify.max_user_instances`, raised while the bench runs.
struct InotifyLimit {
    before: Option<String>,
}

const INOTIFY_INSTANCES: &str = "/proc/sys/fs/inotify/max_user_instances";

impl InotifyLimit {
    fn raise(to: u64) -> Result<Self> {
        let before = fs::read_to_string(INOTIFY_INSTANCES)?;
        if before.trim().parse::<u64>().unwrap_or(0) >= to {
            return Ok(Self { before: None });
        }
        fs::write(INOTIFY_INSTANCES, to.to_string())
            .with_context(|| format!("raise {INOTIFY_INSTANCES} to {to}"))?;
        eprintln!(
            "scale bench: fs.inotify.max_user_instances {} -> {to} for the run",
            before.trim()
        );
        Ok(Self {
            before: Some(before),
        })
    }
}

impl Drop for InotifyLimit {
    fn drop(&mut self) {
        if let Some(before) = &self.before {
            let _ = fs::write(INOTIFY_INSTANCES, before.trim());
        }
    }
}

/// Connects a fresh agent to `remotes` and times it until every remote is
/// ready and `entries` more addresses (seeded with `stride`) are in its
/// map. Returns the agent (still connected), the seconds, and its RSS
/// before connecting.
async fn sync(
    remotes: &[Remote],
    pki: &Pki,
    bin: &Path,
    entries: usize,
    stride: usize,
    ipcache_max: u32,
) -> Result<(ScaleAgent, f64, u64)> {
    let mut agent = ScaleAgent::start(bin, ipcache_max).await?;
    let base = agent.status()?.maps.get("ipcache").copied().unwrap_or(0);
    let rss_before = rss_bytes(agent.pid())?;
    let started = Instant::now();
    for r in remotes {
        agent.connect(r, pki, r.listen)?;
    }
    let n = remotes.len();
    agent
        .wait_for(&format!("{entries} entries of {n} remotes"), |s| {
            s.maps.get("ipcache").copied().unwrap_or(0) >= base + entries
        })
        .await?;
    // Timed: the last entry of every remote in the kernel's map with its
    // identity (the agent's count comes from its tables). The remotes'
    // `ready` flags are refreshed once a second, so they are waited for
    // after the clock.
    let map = agent.ipcache()?;
    let per = entries / n;
    let identities = per.div_ceil(ENTRIES_PER_IDENTITY);
    let sample: Vec<(std::net::IpAddr, u32)> = remotes
        .iter()
        .map(|r| {
            let p = r.pair(stride, per - 1, identities, 0);
            (p.prefix().addr(), p.id.get())
        })
        .collect();
    while !all_in_map(&map, sample.iter().copied()) {
        if started.elapsed() > scale::DEADLINE {
            let missing: Vec<String> = sample
                .iter()
                .filter(|e| !all_in_map(&map, [**e]))
                .map(|(ip, id)| format!("{ip} (identity {id})"))
                .collect();
            bail!(
                "the agent counts {entries} entries, but {} of the remotes' last entries are not in the BPF map: {}\n{}",
                missing.len(),
                missing.join(", "),
                agent.warnings(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    agent
        .wait_for(&format!("{n} remotes ready"), |s| {
            s.remotes.iter().filter(|r| r.ready).count() == n
        })
        .await?;
    Ok((agent, seconds, rss_before))
}

async fn clusters(out: &mut Out, pki: &Pki, bin: &Path, work: &Path) -> Result<()> {
    let stride = stride_for(ENTRIES_PER_CLUSTER);
    let mut remotes: Vec<Remote> = Vec::new();
    let (mut agent_s, mut raw_s, mut rss_mb, mut conns, mut idle) =
        (vec![], vec![], vec![], vec![], vec![]);
    for n in points("SCALE_CLUSTER_POINTS", &CLUSTER_POINTS)? {
        eprintln!(
            "clusters: starting remotes {}..{n} (etcd + apiserver each)",
            remotes.len()
        );
        let started = Instant::now();
        let new = scale::start_remotes(remotes.len()..n, work, pki, bin).await?;
        for r in &new {
            r.seed(0..ENTRIES_PER_CLUSTER, stride).await?;
        }
        remotes.extend(new);
        eprintln!(
            "  {n} remotes up and seeded in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let clients: Vec<_> = remotes.iter().map(|r| r.client.clone()).collect();
        let (keys_read, raw) =
            scale::raw_list(&clients, &[keys::ipcache(), keys::identities()]).await?;
        let (agent, seconds, _) = sync(
            &remotes,
            pki,
            bin,
            n * ENTRIES_PER_CLUSTER,
            stride,
            bpf::DEFAULT_IPCACHE_MAX_ENTRIES,
        )
        .await?;
        let pid = agent.pid();
        let rss = settled_rss_bytes(pid, RSS_QUIET, RSS_DEADLINE).await? as f64 / (1024.0 * 1024.0);
        let connections = tcp_connections(pid)?;
        let cpu0 = cpu_seconds(pid)?;
        let idle_window = std::env::var("SCALE_IDLE_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(IDLE_WINDOW, Duration::from_secs);
        tokio::time::sleep(idle_window).await;
        let idle_pct = (cpu_seconds(pid)? - cpu0) / idle_window.as_secs_f64() * 100.0;
        eprintln!(
            "  {n} clusters: agent synced in {seconds:.2} s (raw list of {keys_read} keys: {raw:.2} s), \
             RSS {rss:.0} MiB, {connections} TCP connections, idle CPU {idle_pct:.2} %"
        );
        drop(agent);
        out.emit(
            &format!("sync_{n}_clusters_s"),
            seconds,
            "s",
            Lower,
            Some((&format!("raw_list_{n}_clusters_s"), raw)),
        );
        out.emit(
            &format!("agent_rss_mib_{n}_clusters"),
            rss,
            "MiB",
            Lower,
            None,
        );
        out.emit(
            &format!("agent_connections_{n}_clusters"),
            connections as f64,
            "connections",
            Lower,
            None,
        );
        out.emit(
            &format!("agent_idle_cpu_pct_{n}_clusters"),
            idle_pct,
            "%",
            Lower,
            None,
        );
        agent_s.push((n as f64, seconds));
        raw_s.push((n as f64, raw));
        rss_mb.push((n as f64, rss));
        conns.push((n as f64, connections as f64));
        idle.push((n as f64, idle_pct));
    }
    drop(remotes);
    out.plot(
        "clusters_sync.png",
        Chart {
            title: "Initial sync vs remote clusters (1,000 entries, 100 identities each)".into(),
            x_label: "remote clusters".into(),
            y_label: "seconds".into(),
            series: vec![
                Series::new("agent: config → BPF map", agent_s),
                Series::new("raw paginated list (baseline)", raw_s),
            ],
            goal: Some(("≤ 10 s at 255".into(), 10.0)),
            log_x: true,
        },
    );
    out.plot(
        "clusters_idle_cpu.png",
        Chart {
            title: "Agent CPU while idle vs remote clusters".into(),
            x_label: "remote clusters".into(),
            y_label: "% of a core".into(),
            series: vec![Series::new("agent", idle)],
            goal: Some(("≤ 2 %".into(), 2.0)),
            log_x: true,
        },
    );
    out.plot(
        "clusters_rss.png",
        Chart {
            title: "Agent RSS vs remote clusters".into(),
            x_label: "remote clusters".into(),
            y_label: "MiB".into(),
            series: vec![Series::new("agent RSS", rss_mb)],
            goal: None,
            log_x: true,
        },
    );
    out.plot(
        "clusters_connections.png",
        Chart {
            title: "Agent TCP connections vs remote clusters".into(),
            x_label: "remote clusters".into(),
            y_label: "connections".into(),
            series: vec![Series::new("agent", conns)],
            goal: None,
            log_x: true,
        },
    );
    Ok(())
}

async fn entries(out: &mut Out, pki: &Pki, bin: &Path, work: &Path) -> Result<()> {
    let mut entry_points = points("SCALE_ENTRY_POINTS", &ENTRY_POINTS)?;
    entry_points.sort_unstable();
    let max = *entry_points.last().context("SCALE_ENTRY_POINTS is empty")?;
    let stride = stride_for(max / ENTRY_CLUSTERS);
    eprintln!("entries: starting {ENTRY_CLUSTERS} remotes");
    let remotes = scale::start_remotes(0..ENTRY_CLUSTERS, work, pki, bin).await?;
    let clients: Vec<_> = remotes.iter().map(|r| r.client.clone()).collect();
    let (mut agent_s, mut raw_s, mut per_entry, mut map_per_entry) =
        (vec![], vec![], vec![], vec![]);
    let mut seeded = 0;
    for total in entry_points {
        let per = total / ENTRY_CLUSTERS;
        let started = Instant::now();
        for r in &remotes {
            r.seed(seeded..per, stride).await?;
        }
        seeded = per;
        eprintln!(
            "  seeded {total} entries in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let (keys_read, raw) =
            scale::raw_list(&clients, &[keys::ipcache(), keys::identities()]).await?;
        let (agent, seconds, rss0) = sync(&remotes, pki, bin, total, stride, BIG_IPCACHE).await?;
        let rss1 = settled_rss_bytes(agent.pid(), RSS_QUIET, RSS_DEADLINE).await?;
        let bytes = rss1.saturating_sub(rss0) as f64 / total as f64;
        let map_bytes = agent.ipcache_map_bytes()? as f64 / total as f64;
        eprintln!(
            "  {total} entries: agent synced in {seconds:.2} s (raw list of {keys_read} keys: {raw:.2} s), \
             {bytes:.0} B/entry in the agent, BPF ipcache map {map_bytes:.0} B/entry (memlock)"
        );
        if let Some(hold) = std::env::var("SCALE_HOLD_S")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            eprintln!("  holding the agent (pid {}) for {hold} s", agent.pid());
            tokio::time::sleep(Duration::from_secs(hold)).await;
        }
        drop(agent);
        let s = short(total);
        out.emit(
            &format!("sync_{s}_entries_s"),
            seconds,
            "s",
            Lower,
            Some((&format!("raw_list_{s}_entries_s"), raw)),
        );
        out.emit(
            &format!("agent_bytes_per_entry_{s}"),
            bytes,
            "B",
            Lower,
            None,
        );
        out.emit(
            &format!("bpf_ipcache_bytes_per_entry_{s}"),
            map_bytes,
            "B",
            Lower,
            None,
        );
        agent_s.push((total as f64, seconds));
        raw_s.push((total as f64, raw));
        per_entry.push((total as f64, bytes));
        map_per_entry.push((total as f64, map_bytes));
    }
    out.plot(
        "entries_sync.png",
        Chart {
            title: format!("Initial sync vs remote entries ({ENTRY_CLUSTERS} clusters)"),
            x_label: "remote ipcache entries".into(),
            y_label: "seconds".into(),
            series: vec![
                Series::new("agent: config → BPF map", agent_s),
                Series::new("raw paginated list (baseline)", raw_s),
            ],
            goal: Some(("≤ 5 s at 1M".into(), 5.0)),
            log_x: true,
        },
    );
    out.plot(
        "entries_memory.png",
        Chart {
            title: "Memory per remote entry".into(),
            x_label: "remote ipcache entries".into(),
            y_label: "bytes per entry".into(),
            series: vec![
                Series::new("agent RSS growth", per_entry),
                Series::new("BPF ipcache map (memlock)", map_per_entry),
            ],
            goal: Some(("≤ 200 B in the agent".into(), 200.0)),
            log_x: true,
        },
    );
    Ok(())
}

async fn churn(out: &mut Out, pki: &Pki, bin: &Path, work: &Path) -> Result<()> {
    // Room per remote for the base entries and every change of every rate.
    let changes: u64 = CHURN_RATES.iter().map(|r| r * CHURN_SECONDS).sum();
    let stride = stride_for(ENTRIES_PER_CLUSTER + changes as usize / ENTRY_CLUSTERS + 1);
    eprintln!("churn: starting {ENTRY_CLUSTERS} remotes");
    let remotes = scale::start_remotes(0..ENTRY_CLUSTERS, work, pki, bin).await?;
    for r in &remotes {
        r.seed(0..ENTRIES_PER_CLUSTER, stride).await?;
    }
    let (agent, _, _) = sync(
        &remotes,
        pki,
        bin,
        ENTRY_CLUSTERS * ENTRIES_PER_CLUSTER,
        stride,
        bpf::DEFAULT_IPCACHE_MAX_ENTRIES,
    )
    .await?;
    let (mut p50, mut p99, mut raw99) = (vec![], vec![], vec![]);
    let mut next = ENTRIES_PER_CLUSTER;
    for &rate in &CHURN_RATES {
        let sources: Vec<Source> = remotes
            .iter()
            .map(|r| {
                let (index, id, node) = (r.index, r.id, r.node_ip());
                let first = next;
                let count = remotes.len();
                Source {
                    client: r.client.clone(),
                    entry: Box::new(move |n| {
                        // Change n goes to remote n % count: its (n / count)-th new entry.
                        let j = first + n / count;
                        kvstore::values::IpIdentityPair::host(
                            scale::entry_ip(index, stride, j),
                            scale::identity(id, 0),
                            Some(node),
                        )
                    }),
                }
            })
            .collect();
        next += (rate * CHURN_SECONDS) as usize / remotes.len() + 1;
        let cpu0 = cpu_seconds(agent.pid())?;
        let started = Instant::now();
        let m = propagation::measure_sources(sources, vec![agent.ipcache()?], rate, CHURN_SECONDS)
            .await?;
        let cpu_pct = (cpu_seconds(agent.pid())? - cpu0) / started.elapsed().as_secs_f64() * 100.0;
        eprintln!(
            "  {rate}/s: p50 {:.2} ms p99 {:.2} ms (raw watch p50 {:.2} p99 {:.2}), achieved {:.0}/s, agent CPU {cpu_pct:.1} %",
            m.p50_ms, m.p99_ms, m.raw_p50_ms, m.raw_p99_ms, m.achieved_per_s
        );
        let s = short(rate as usize);
        out.emit(
            &format!("propagation_p50_ms_{s}_per_s"),
            m.p50_ms,
            "ms",
            Lower,
            Some((&format!("raw_watch_p50_ms_{s}_per_s"), m.raw_p50_ms)),
        );
        out.emit(
            &format!("propagation_p99_ms_{s}_per_s"),
            m.p99_ms,
            "ms",
            Lower,
            Some((&format!("raw_watch_p99_ms_{s}_per_s"), m.raw_p99_ms)),
        );
        out.emit(
            &format!("churn_achieved_per_s_{s}_per_s"),
            m.achieved_per_s,
            "1/s",
            Higher,
            Some((&format!("churn_target_per_s_{s}_per_s"), rate as f64)),
        );
        out.emit(
            &format!("agent_cpu_pct_{s}_per_s"),
            cpu_pct,
            "%",
            Lower,
            None,
        );
        p50.push((rate as f64, m.p50_ms));
        p99.push((rate as f64, m.p99_ms));
        raw99.push((rate as f64, m.raw_p99_ms));
    }
    out.plot(
        "churn_propagation.png",
        Chart {
            title: format!(
                "Propagation remote etcd → BPF map vs change rate ({ENTRY_CLUSTERS} clusters)"
            ),
            x_label: "changes per second".into(),
            y_label: "milliseconds".into(),
            series: vec![
                Series::new("agent p99", p99),
                Series::new("agent p50", p50),
                Series::new("raw etcd watch p99 (baseline)", raw99),
            ],
            goal: Some(("p99 ≤ 50 ms at 10k/s".into(), 50.0)),
            log_x: false,
        },
    );
    Ok(())
}

async fn recovery(out: &mut Out, pki: &Pki, bin: &Path, work: &Path) -> Result<()> {
    let partition = std::env::var("SCALE_PARTITION_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(PARTITION, Duration::from_secs);
    let n = RECOVERY_ENTRIES;
    let stride = stride_for(n + n / 4);
    eprintln!("recovery: one remote of {n} entries behind a proxy");
    let remotes = scale::start_remotes(0..1, work, pki, bin).await?;
    let remote = &remotes[0];
    remote.seed(0..n, stride).await?;
    let identities = n / ENTRIES_PER_IDENTITY;
    let proxy = TcpProxy::start(remote.listen).await?;
    let mut agent = ScaleAgent::start(bin, bpf::DEFAULT_IPCACHE_MAX_ENTRIES).await?;
    let base = agent.status()?.maps.get("ipcache").copied().unwrap_or(0);
    agent.connect(remote, pki, proxy.addr())?;
    agent
        .wait_for("the remote's entries", |s| {
            s.remotes.iter().any(|r| r.ready)
                && s.maps.get("ipcache").copied().unwrap_or(0) >= base + n
        })
        .await?;
    proxy.cut();
    let cut = Instant::now();
    // 100k changes while cut: 50k entries move to another identity, 25k
    // are deleted, 25k are new.
    let (updated, deleted, added) = (0..n / 2, n / 2..n * 3 / 4, n..n + n / 4);
    let mut ops: Vec<(String, Option<Vec<u8>>)> = Vec::with_capacity(n);
    for j in updated.clone() {
        let p = remote.pair(stride, j, identities, 1);
        ops.push((keys::ipcache().key(&p.key()), Some(p.encode())));
    }
    for j in deleted.clone() {
        let p = remote.pair(stride, j, identities, 0);
        ops.push((keys::ipcache().key(&p.key()), None));
    }
    for j in added.clone() {
        let p = remote.pair(stride, j, identities, 0);
        ops.push((keys::ipcache().key(&p.key()), Some(p.encode())));
    }
    let changes = ops.len();
    remote.write_ops(ops).await?;
    eprintln!(
        "  {changes} changes written {:.1} s into the partition; repairing it after {} s",
        cut.elapsed().as_secs_f64(),
        partition.as_secs()
    );
    // The partition lasts its full length (a scenario, not a wait for a condition).
    tokio::time::sleep(partition.saturating_sub(cut.elapsed())).await;
    let map = agent.ipcache()?;
    if !none_in_map(&map, [scale::entry_ip(0, stride, n)]) {
        bail!("the agent saw a change through the cut proxy");
    }
    proxy.restore();
    let repaired = Instant::now();
    let expect = |j: usize, shift: usize| {
        let p = remote.pair(stride, j, identities, shift);
        (p.prefix().addr(), p.id.get())
    };
    let converged = loop {
        let pass = Instant::now();
        // Cheap probes first: the last of each kind of change.
        let last = all_in_map(&map, [expect(updated.end - 1, 1), expect(added.end - 1, 0)])
            && none_in_map(&map, [expect(deleted.end - 1, 0).0]);
        if last
            && all_in_map(&map, updated.clone().map(|j| expect(j, 1)))
            && all_in_map(&map, (deleted.end..n).map(|j| expect(j, 0)))
            && all_in_map(&map, added.clone().map(|j| expect(j, 0)))
            && none_in_map(&map, deleted.clone().map(|j| expect(j, 0).0))
        {
            break pass.duration_since(repaired).as_secs_f64();
        }
        if repaired.elapsed() > scale::DEADLINE {
            bail!(
                "the agent did not converge within {:?} of the repair",
                scale::DEADLINE
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (_, raw) = scale::raw_list(
        std::slice::from_ref(&remote.client),
        &[keys::ipcache(), keys::identities()],
    )
    .await?;
    eprintln!(
        "  converged exactly {converged:.2} s after the repair (raw list of the final state: {raw:.2} s)"
    );
    out.emit(
        &format!("recovery_{}_changes_s", short(changes)),
        converged,
        "s",
        Lower,
        Some((&format!("raw_list_{}_final_state_s", short(n)), raw)),
    );
    drop(agent);
    Ok(())
}

/// What one side of a fan-out point measured.
#[derive(Debug)]
struct FanoutRun {
    p50_ms: f64,
    p99_ms: f64,
    /// Events some watcher did not receive (see [`FANOUT_STALL`]).
    missing_events: u64,
    /// Watchers that missed at least one event.
    short_watchers: usize,
    /// Watch streams the server ended before the bench stopped them.
    disconnected: usize,
    /// Watches the server's etcd holds for the watchers (etcd's
    /// `etcd_debugging_mvcc_watcher_total`, minus before they connected).
    etcd_watchers: f64,
    /// The serving process's CPU over the writes and the drain, % of a core.
    cpu_pct: f64,
    /// Its RSS with every watcher connected, after the drain.
    rss_mib: f64,
    achieved_per_s: f64,
}

/// Where the fan-out watchers connect, and how the writer reaches the etcd.
struct FanoutSide<'a> {
    name: &'a str,
    target: Target,
    /// The etcd written to and whose watchers are counted.
    etcd: &'a TestEtcd,
    /// TLS for the writer's connection to `etcd` (`None`: plain).
    etcd_tls: Option<TlsOptions>,
    /// The process serving the watchers (the apiserver, or the etcd).
    pid: u32,
}

async fn fanout(out: &mut Out, pki: &Pki, bin: &Path, work: &Path) -> Result<()> {
    let prefix = keys::ipcache().as_str().to_owned();
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(fs::read(&pki.ca_file)?))
        .identity(Identity::from_pem(
            fs::read(&pki.client.cert)?,
            fs::read(&pki.client.key)?,
        ));
    // The clock the values carry starts now.
    watch_load::now_ns();
    eprintln!(
        "fanout: one remote (etcd + apiserver), and an etcd serving mutual TLS for the baseline"
    );
    let remotes = scale::start_remotes(0..1, work, pki, bin).await?;
    let remote = &remotes[0];
    let apiserver_pid = remote.apiserver_pid().context("the apiserver runs")?;
    let raw = TestEtcd::start_with(EtcdOptions {
        tls: Some(ServerTls {
            cert: pki.server.cert.clone(),
            key: pki.server.key.clone(),
            client_ca: Some(pki.ca_file.clone()),
        }),
        ..EtcdOptions::default()
    })
    .await
    .context("the baseline's etcd")?;
    let raw_pid = raw.pid().context("the baseline's etcd runs")?;
    let (mut p99, mut p50, mut raw99, mut cpu, mut raw_cpu, mut rss) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut failures = Vec::new();
    for n in points("SCALE_FANOUT_POINTS", &FANOUT_POINTS)? {
        let ours = fanout_run(
            &FanoutSide {
                name: "apiserver",
                target: Target::Tls {
                    url: format!("https://{}", remote.listen),
                    tls: tls.clone(),
                },
                etcd: &remote.etcd,
                etcd_tls: None,
                pid: apiserver_pid,
            },
            &prefix,
            n,
        )
        .await?;
        // The baseline may not hold up (at 5,000 TLS watchers a plain etcd
        // stops answering the writer): its figures are then left out, and
        // said so, instead of losing the apiserver's.
        let direct = fanout_run(
            &FanoutSide {
                name: "raw etcd",
                target: Target::Tls {
                    url: raw.endpoint(),
                    tls: tls.clone(),
                },
                etcd: &raw,
                etcd_tls: Some(tls.clone()),
                pid: raw_pid,
            },
            &prefix,
            n,
        )
        .await
        .inspect_err(|e| {
            eprintln!("  [raw etcd] {n} watchers: the baseline failed, no figures: {e:#}");
        })
        .ok();
        let direct = direct.as_ref();
        let w = format!("{n}_watchers");
        type Figure = fn(&FanoutRun) -> f64;
        let lines: [(&str, Figure, &str, Better, Option<&str>); 7] = [
            (
                "fanout_p50_ms",
                |r| r.p50_ms,
                "ms",
                Lower,
                Some("raw_etcd_watch_p50_ms"),
            ),
            (
                "fanout_p99_ms",
                |r| r.p99_ms,
                "ms",
                Lower,
                Some("raw_etcd_watch_p99_ms"),
            ),
            (
                "fanout_apiserver_rss_mib",
                |r| r.rss_mib,
                "MiB",
                Lower,
                None,
            ),
            (
                "fanout_apiserver_cpu_pct",
                |r| r.cpu_pct,
                "%",
                Lower,
                Some("raw_etcd_cpu_pct"),
            ),
            (
                "fanout_upstream_etcd_watchers",
                |r| r.etcd_watchers,
                "watchers",
                Lower,
                Some("raw_etcd_watchers"),
            ),
            (
                "fanout_achieved_per_s",
                |r| r.achieved_per_s,
                "1/s",
                Higher,
                Some("raw_etcd_achieved_per_s"),
            ),
            (
                "fanout_missing_events",
                |r| r.missing_events as f64,
                "events",
                Lower,
                Some("raw_etcd_missing_events"),
            ),
        ];
        for (metric, figure, unit, better, baseline) in lines {
            let baseline = baseline
                .zip(direct)
                .map(|(b, d)| (format!("{b}_{w}"), figure(d)));
            out.emit(
                &format!("{metric}_{w}"),
                figure(&ours),
                unit,
                better,
                baseline.as_ref().map(|(b, v)| (b.as_str(), *v)),
            );
        }
        for (side, run) in [("the apiserver", Some(&ours)), ("raw etcd", direct)] {
            let Some(run) = run else { continue };
            if run.missing_events > 0 || run.disconnected > 0 {
                failures.push(format!(
                    "{n} watchers on {side}: {} watchers missed {} events in all, {} streams ended by the server",
                    run.short_watchers, run.missing_events, run.disconnected
                ));
            }
        }
        p99.push((n as f64, ours.p99_ms));
        p50.push((n as f64, ours.p50_ms));
        if let Some(direct) = direct {
            raw99.push((n as f64, direct.p99_ms));
            raw_cpu.push((n as f64, direct.cpu_pct));
        }
        cpu.push((n as f64, ours.cpu_pct));
        rss.push((n as f64, ours.rss_mib));
    }
    out.plot(
        "fanout_delivery.png",
        Chart {
            title: format!(
                "Watch delivery vs watchers on one apiserver ({FANOUT_PER_S} puts/s, a mutual-TLS connection per watcher)"
            ),
            x_label: "watchers".into(),
            y_label: "milliseconds".into(),
            series: vec![
                Series::new("apiserver p99", p99),
                Series::new("apiserver p50", p50),
                Series::new("raw etcd watch p99 (baseline)", raw99),
            ],
            goal: Some((
                format!("p99 ≤ {FANOUT_GOAL_MS} ms at 5,000"),
                FANOUT_GOAL_MS,
            )),
            log_x: false,
        },
    );
    out.plot(
        "fanout_cpu.png",
        Chart {
            title: format!("CPU serving the watchers vs watchers ({FANOUT_PER_S} puts/s)"),
            x_label: "watchers".into(),
            y_label: "% of a core".into(),
            series: vec![
                Series::new("apiserver", cpu),
                Series::new("raw etcd (baseline)", raw_cpu),
            ],
            goal: None,
            log_x: false,
        },
    );
    out.plot(
        "fanout_rss.png",
        Chart {
            title: "Apiserver RSS vs watchers".into(),
            x_label: "watchers".into(),
            y_label: "MiB".into(),
            series: vec![Series::new("apiserver RSS", rss)],
            goal: None,
            log_x: false,
        },
    );
    if !failures.is_empty() {
        bail!(
            "watchers missed events, the fan-out figures are not valid: {}",
            failures.join("; ")
        );
    }
    Ok(())
}

/// `n` watchers of `prefix` on `side`, each on a connection of its own,
/// while the writer puts [`FANOUT_PER_S`] values a second for
/// [`FANOUT_SECONDS`] into the side's etcd.
async fn fanout_run(side: &FanoutSide<'_>, prefix: &str, n: usize) -> Result<FanoutRun> {
    let name = side.name;
    let puts = FANOUT_PER_S * FANOUT_SECONDS;
    let watchers_metric = "etcd_debugging_mvcc_watcher_total";
    let etcd_watchers_before = side.etcd.metric(watchers_metric).await?;
    eprintln!(
        "fanout: [{name}] connecting {n} watchers, {FANOUT_CONNECTING} connections at a time"
    );
    let started = Instant::now();
    let tally = Tally::new(n);
    let stop = tokio_util::sync::CancellationToken::new();
    let mut watchers = tokio::task::JoinSet::new();
    let mut channels = futures::stream::iter(0..n)
        .map(|i| async move {
            let mut attempt = 0;
            loop {
                match watch_load::connect(&side.target).await {
                    Ok(channel) => return Ok((i, channel)),
                    Err(e) if attempt < 3 => {
                        attempt += 1;
                        eprintln!("  [{name}] watcher {i}: {e:#}; again");
                        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                    }
                    Err(e) => return Err(e.context(format!("connect watcher {i} to {name}"))),
                }
            }
        })
        .buffer_unordered(FANOUT_CONNECTING);
    let mut connected = 0;
    while let Some(result) = channels.next().await {
        let (i, channel) = result?;
        watchers.spawn(watch_load::watcher(
            channel,
            prefix.to_owned(),
            Arc::clone(&tally),
            i,
            stop.clone(),
            puts as usize,
        ));
        connected += 1;
        if connected % 500 == 0 || connected == n {
            eprintln!(
                "  [{name}] {connected}/{n} connected ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
        }
    }
    drop(channels);
    let created = Instant::now();
    while tally.created() < n {
        if created.elapsed() > Duration::from_secs(120) {
            bail!(
                "[{name}] only {} of {n} watches were created within 120 s",
                tally.created()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // etcd registers its watchers asynchronously to the created responses.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let etcd_watchers = side.etcd.metric(watchers_metric).await? - etcd_watchers_before;
    eprintln!(
        "  [{name}] {n} watches created in {:.1} s; the etcd holds {etcd_watchers} watchers for them; \
         writing {puts} puts at {FANOUT_PER_S}/s",
        started.elapsed().as_secs_f64()
    );

    let cpu0 = cpu_seconds(side.pid)?;
    let window = Instant::now();
    let (written, write_s) =
        fanout_write(side.etcd.endpoints(), side.etcd_tls.clone(), prefix).await?;
    let expected = written * n as u64;
    let drain = Instant::now();
    let (mut seen, mut progress) = (tally.total(), Instant::now());
    while seen < expected && drain.elapsed() < FANOUT_DRAIN && progress.elapsed() < FANOUT_STALL {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = tally.total();
        if now > seen {
            (seen, progress) = (now, Instant::now());
        }
    }
    let cpu_pct = (cpu_seconds(side.pid)? - cpu0) / window.elapsed().as_secs_f64() * 100.0;
    let rss_mib = rss_bytes(side.pid)? as f64 / (1024.0 * 1024.0);
    let got = tally.total();
    let short_watchers = tally.short_of(written);
    if got < expected {
        eprintln!(
            "  [{name}] only {got} of {expected} events arrived ({short_watchers} watchers short; \
             nothing for {FANOUT_STALL:?}, or {FANOUT_DRAIN:?} since the last put)"
        );
    }
    stop.cancel();
    let (latencies, disconnected) = watch_load::gather(&mut watchers, expected as usize).await?;
    let run = FanoutRun {
        p50_ms: watch_load::percentile_ms(&latencies, 0.50),
        p99_ms: watch_load::percentile_ms(&latencies, 0.99),
        missing_events: expected.saturating_sub(got),
        short_watchers,
        disconnected,
        etcd_watchers,
        cpu_pct,
        rss_mib,
        achieved_per_s: written as f64 / write_s,
    };
    drop(latencies);
    eprintln!(
        "  [{name}] {n} watchers: p50 {:.1} ms p99 {:.1} ms, drained {:.1} s after the last put, \
         {:.0} puts/s, CPU {:.0} %, RSS {:.0} MiB, {} streams ended by the server",
        run.p50_ms,
        run.p99_ms,
        drain.elapsed().as_secs_f64(),
        run.achieved_per_s,
        run.cpu_pct,
        run.rss_mib,
        run.disconnected
    );
    // The watchers' connections are closed: let the etcd drop their
    // watches before the next run counts its own.
    let settle = Instant::now();
    while side.etcd.metric(watchers_metric).await? > etcd_watchers_before {
        if settle.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "  [{name}] the etcd still holds watches of these watchers 30 s after they left; \
                 the next point's figures include them"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(run)
}

/// Puts [`FANOUT_PER_S`] × [`FANOUT_SECONDS`] time-stamped values under
/// `prefix` into the etcd at `endpoints`, from a thread and a runtime of
/// their own (so that the watchers' work does not slow the writes down).
/// Returns the puts done and the seconds they took.
async fn fanout_write(
    endpoints: Vec<String>,
    tls: Option<TlsOptions>,
    prefix: &str,
) -> Result<(u64, f64)> {
    let prefix = prefix.to_owned();
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let run = || -> Result<(u64, f64)> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let options = tls.map(|tls| ConnectOptions::new().with_tls(tls));
                let client = etcd_client::Client::connect(endpoints, options).await?;
                let started = Instant::now();
                let written = watch_load::write(
                    &client,
                    FANOUT_PER_S * FANOUT_SECONDS,
                    FANOUT_PER_S,
                    FANOUT_VALUE_BYTES,
                    // A key of its own per put (10.200.0.0 onwards).
                    |i| {
                        format!(
                            "{prefix}10.{}.{}.{}",
                            200 + i / 65_536,
                            (i / 256) % 256,
                            i % 256
                        )
                    },
                )
                .await?;
                Ok((written, started.elapsed().as_secs_f64()))
            })
        };
        let _ = done.send(run());
    });
    result.await.context("the writer's thread ended")?
}
