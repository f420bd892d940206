//! `make bench BENCH=kvstoremesh` (root): a real local mesh of 3 clusters × 4
//! nodes (release binaries), once with direct connections (the baseline)
//! and once with kvstoremesh, measuring on cluster c1's side:
//!
//! - `remote_apiserver_connections`: connections the other clusters hold on
//!   c1's apiserver, per remote cluster (goal: one);
//! - `remote_apiserver_watches`: watch requests they made there, per remote
//!   cluster, from start to ready;
//! - `remote_etcd_cpu_s`: CPU seconds of c1's etcd (and, as
//!   `remote_apiserver_cpu_s`, of its apiserver) while 10,000 ipcache changes
//!   are published in c1 at 1,000 changes/s and reach the other clusters;
//! - `propagation_p99_ms` / `propagation_p50_ms`: each of those changes from
//!   c1's etcd until it is in the BPF ipcache map of every node of c2.
//!
//! Prints one JSON object per line on stdout; progress on stderr.

use std::time::Duration;

use anyhow::{Context, Result};
use integration::{TestMesh, proc_stats::cpu_seconds, propagation::Propagation};
use kvstore::NumericIdentity;

const CLUSTERS: u8 = 3;
const NODES: u8 = 4;
const CHANGES_PER_S: u64 = 1_000;
const SECONDS: u64 = 10;
const REMOTES: f64 = (CLUSTERS - 1) as f64;

const BENCH: bench_report::Bench = bench_report::Bench::new("kvstoremesh");

/// What one mesh measured.
struct Run {
    connections_per_remote: f64,
    watches_per_remote: f64,
    etcd_cpu_s: f64,
    apiserver_cpu_s: f64,
    propagation: Propagation,
}

/// The sum of the samples of `family` whose labels contain every one of
/// `labels` (Prometheus text).
fn sum_metric(text: &str, family: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(family)?.strip_prefix('{'))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum()
}

fn run(rt: &tokio::runtime::Runtime, kvstoremesh: bool) -> Result<Run> {
    let mode = if kvstoremesh { "kvstoremesh" } else { "direct" };
    eprintln!("kvstoremesh bench: {CLUSTERS} clusters x {NODES} nodes, {mode}");
    let mesh = TestMesh::up_with(CLUSTERS, NODES, |s| {
        s.workloads = false;
        s.kvstoremesh = kvstoremesh;
    })
    .with_context(|| format!("mesh ({mode})"))?;
    let metrics = mesh.apiserver_metrics("c1")?;
    let connections = sum_metric(
        &metrics,
        "clustermesh_apiserver_connections",
        &["client=\"remote-"],
    );
    let watches = sum_metric(
        &metrics,
        "clustermesh_apiserver_requests_total",
        &["client=\"remote-", "method=\"Watch\""],
    );
    let c1 = mesh.state.cluster("c1")?;
    let etcd = c1.etcd.as_ref().context("c1's etcd runs")?.pid;
    let apiserver = c1.apiserver.as_ref().context("c1's apiserver runs")?.pid;
    let (etcd_before, apiserver_before) = (cpu_seconds(etcd)?, cpu_seconds(apiserver)?);
    let propagation = rt.block_on(integration::propagation::measure(
        &mesh,
        "c1",
        "c2",
        NumericIdentity::new(1 << 16 | 300),
        CHANGES_PER_S,
        SECONDS,
    ))?;
    // Every other cluster has the changes by now; a moment more lets the
    // last watch events leave.
    std::thread::sleep(Duration::from_secs(1));
    let run = Run {
        connections_per_remote: connections / REMOTES,
        watches_per_remote: watches / REMOTES,
        etcd_cpu_s: cpu_seconds(etcd)? - etcd_before,
        apiserver_cpu_s: cpu_seconds(apiserver)? - apiserver_before,
        propagation,
    };
    eprintln!(
        "  {mode}: {:.1} connections and {:.1} watches per remote cluster on c1's apiserver; \
         c1 etcd {:.2} CPU s, apiserver {:.2} CPU s; propagation p50 {:.2} ms p99 {:.2} ms \
         ({} observations, {:.0} changes/s; raw watch p99 {:.2} ms)",
        run.connections_per_remote,
        run.watches_per_remote,
        run.etcd_cpu_s,
        run.apiserver_cpu_s,
        run.propagation.p50_ms,
        run.propagation.p99_ms,
        run.propagation.observations,
        run.propagation.achieved_per_s,
        run.propagation.raw_p99_ms
    );
    Ok(run)
}

fn main() -> Result<()> {
    if !integration::can_run("the kvstoremesh bench") {
        return Ok(());
    }
    integration::require_binaries()?;
    let rt = tokio::runtime::Runtime::new()?;
    let direct = run(&rt, false)?;
    let cached = run(&rt, true)?;
    use bench_report::Better::{Higher, Lower};
    for (metric, unit, value, baseline_metric, baseline) in [
        (
            "remote_apiserver_connections",
            "connections",
            cached.connections_per_remote,
            "direct_remote_apiserver_connections",
            direct.connections_per_remote,
        ),
        (
            "remote_apiserver_watches",
            "watches",
            cached.watches_per_remote,
            "direct_remote_apiserver_watches",
            direct.watches_per_remote,
        ),
        (
            "remote_etcd_cpu_s",
            "s",
            cached.etcd_cpu_s,
            "direct_remote_etcd_cpu_s",
            direct.etcd_cpu_s,
        ),
        (
            "remote_apiserver_cpu_s",
            "s",
            cached.apiserver_cpu_s,
            "direct_remote_apiserver_cpu_s",
            direct.apiserver_cpu_s,
        ),
        (
            "propagation_p50_ms",
            "ms",
            cached.propagation.p50_ms,
            "direct_propagation_p50_ms",
            direct.propagation.p50_ms,
        ),
        (
            "propagation_p99_ms",
            "ms",
            cached.propagation.p99_ms,
            "direct_propagation_p99_ms",
            direct.propagation.p99_ms,
        ),
    ] {
        BENCH.emit(
            metric,
            value,
            unit,
            Lower,
            Some((baseline_metric, baseline)),
        );
    }
    BENCH.emit(
        "propagation_achieved_changes_per_s",
        cached.propagation.achieved_per_s,
        "1/s",
        Higher,
        Some(("propagation_target_changes_per_s", CHANGES_PER_S as f64)),
    );
    Ok(())
}
