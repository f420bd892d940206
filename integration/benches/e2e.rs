//! `make bench BENCH=e2e` (root): on a real local mesh (release binaries),
//!
//! - propagation: ipcache entries published in cluster c1 at 1,000 changes/s
//!   until each is in the BPF ipcache map of every node of c2 (maps polled
//!   every 0.5 ms); p50/p99, next to a raw etcd watch on c1 in the same run,
//!   and the change rate the writer achieved;
//! - initial sync: c2 holds 100,000 ipcache entries and 10,000 identities;
//!   time from connecting c1 to c2 until every entry is in the BPF ipcache
//!   map of every node of c1, next to a raw list of the same keys
//!   (identities and ipcache) through the same mutual-TLS apiserver with c1's
//!   remote certificate; the agents' memory per entry;
//! - failover: the global service's last local backend in c1 goes; time until
//!   c1's client gets its first answer from c2 (the clock starts before the
//!   removal, so it includes it), the requests that failed meanwhile, and the
//!   way back.
//!
//! Prints one JSON object per line on stdout; progress on stderr.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bpf::{IPCACHE_MAP, IpCacheKey, IpCacheMap};
use etcd_client::{PutOptions, Txn, TxnOp};
use futures::StreamExt;
use integration::TestMesh;
use kvstore::{Client, Label, Labels, NumericIdentity, StoreValue, keys, values::IpIdentityPair};

const CHANGES_PER_S: u64 = 1_000;
const PROPAGATION_SECONDS: u64 = 10;
const SYNC_ENTRIES: usize = 100_000;
const SYNC_IDENTITIES: usize = 10_000;

const BENCH: bench_report::Bench = bench_report::Bench::new("e2e");

use integration::propagation::ip;

fn identity_labels(cluster: &str, i: usize) -> Labels {
    [
        Label::k8s("app", format!("bench-{i}")),
        Label::k8s(kvstore::CLUSTER_LABEL, cluster),
        Label::k8s(kvstore::NAMESPACE_LABEL, "bench"),
    ]
    .into_iter()
    .collect()
}

async fn put_all(client: &Client, items: Vec<(String, Vec<u8>)>) -> Result<()> {
    let chunks: Vec<Vec<(String, Vec<u8>)>> = items.chunks(128).map(<[_]>::to_vec).collect();
    let mut pending = futures::stream::iter(chunks.into_iter().map(|chunk| {
        let mut kv = client.raw().kv_client();
        async move {
            let ops: Vec<TxnOp> = chunk
                .into_iter()
                .map(|(k, v)| TxnOp::put(k, v, None::<PutOptions>))
                .collect();
            kv.txn(Txn::new().and_then(ops)).await
        }
    }))
    .buffer_unordered(8);
    while let Some(r) = pending.next().await {
        r?;
    }
    Ok(())
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// Propagation from c1's etcd to the BPF maps of c2's nodes.
async fn propagation(mesh: &TestMesh) -> Result<()> {
    let id = NumericIdentity::new(1 << 16 | 300);
    let p =
        integration::propagation::measure(mesh, "c1", "c2", id, CHANGES_PER_S, PROPAGATION_SECONDS)
            .await?;
    eprintln!(
        "  {} observations; raw watch p50 {:.2} ms p99 {:.2} ms",
        p.observations, p.raw_p50_ms, p.raw_p99_ms
    );
    BENCH.emit(
        "propagation_p50_ms",
        p.p50_ms,
        "ms",
        bench_report::Better::Lower,
        Some(("raw_watch_p50_ms", p.raw_p50_ms)),
    );
    BENCH.emit(
        "propagation_p99_ms",
        p.p99_ms,
        "ms",
        bench_report::Better::Lower,
        Some(("raw_watch_p99_ms", p.raw_p99_ms)),
    );
    BENCH.emit(
        "propagation_achieved_changes_per_s",
        p.achieved_per_s,
        "1/s",
        bench_report::Better::Higher,
        Some(("propagation_target_changes_per_s", CHANGES_PER_S as f64)),
    );
    Ok(())
}

/// Initial sync of a large remote.
async fn initial_sync(mesh: &mut TestMesh) -> Result<()> {
    let c2 = mesh.state.cluster("c2")?.clone();
    let client = localmesh::admin_client(&c2).await?;
    eprintln!("  loading {SYNC_IDENTITIES} identities and {SYNC_ENTRIES} ipcache entries into c2");
    let ids: Vec<NumericIdentity> = (0..SYNC_IDENTITIES)
        .map(|i| NumericIdentity::new(2 << 16 | (1000 + i as u32)))
        .collect();
    let masters: Vec<(String, Vec<u8>)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                keys::identity_master(*id),
                identity_labels("c2", i).canonical().into_bytes(),
            )
        })
        .collect();
    put_all(&client, masters).await?;
    let entries: Vec<(String, Vec<u8>)> = (0..SYNC_ENTRIES)
        .map(|i| {
            let mut pair = IpIdentityPair::host(
                ip(10, 100, i),
                ids[i % ids.len()],
                Some("172.16.2.11".parse().unwrap()),
            );
            pair.k8s_namespace = "bench".into();
            pair.k8s_pod_name = format!("pod-{i}");
            (keys::ipcache().key(&pair.key()), pair.encode())
        })
        .collect();
    put_all(&client, entries).await?;
    // The baseline: the same identities and entries listed through c2's
    // apiserver, over mutual TLS with c1's remote certificate, as c1's
    // agents read them.
    let c1 = mesh.state.cluster("c1")?.clone();
    let tls = kvstore::TlsConfig::from_files(
        &c1.certs.ca,
        Some((&c1.certs.remote_cert, &c1.certs.remote_key)),
    )?;
    let remote =
        Client::connect(&kvstore::ClientConfig::new([c2.apiserver_endpoint.clone()]).with_tls(tls))
            .await?;
    let start = Instant::now();
    let listed_ids = remote.list(&keys::identity_masters(), 5_000).await?.0.len();
    let listed = remote.list(&keys::ipcache(), 5_000).await?.0.len();
    let raw_list = start.elapsed().as_secs_f64();
    if listed < SYNC_ENTRIES || listed_ids < SYNC_IDENTITIES {
        bail!("c2's apiserver lists {listed} entries and {listed_ids} identities");
    }
    let wanted: Vec<(IpCacheKey, u32)> = (0..SYNC_ENTRIES)
        .map(|i| (IpCacheKey::host(ip(10, 100, i)), ids[i % ids.len()].get()))
        .collect();

    let nodes = mesh.state.cluster("c1")?.nodes.clone();
    let maps: Vec<IpCacheMap> = nodes
        .iter()
        .map(|n| IpCacheMap::open_pinned(&n.bpffs, IPCACHE_MAP))
        .collect::<Result<_, _>>()?;
    let rss_before: Vec<u64> = nodes
        .iter()
        .map(|n| n.agent.as_ref().map_or(0, |p| rss_bytes(p.pid)))
        .collect();
    eprintln!("  connecting c1 -> c2");
    let start = Instant::now();
    mesh.write_remote_config_unchecked("c1", "c2")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut done_at = vec![None; nodes.len()];
    // Per node, how many of the wanted entries (in order) are known to be in
    // its BPF ipcache map; a node is done when all are.
    let mut found = vec![0usize; nodes.len()];
    while done_at.iter().any(Option::is_none) {
        if Instant::now() > deadline {
            bail!(
                "c1's nodes did not finish syncing: {found:?} of {SYNC_ENTRIES} entries in their maps"
            );
        }
        for (i, map) in maps.iter().enumerate() {
            while found[i] < wanted.len() {
                let (key, id) = &wanted[found[i]];
                if map.get(key)?.is_none_or(|v| v.sec_identity != *id) {
                    break;
                }
                found[i] += 1;
            }
            if done_at[i].is_none() && found[i] == wanted.len() {
                done_at[i] = Some(start.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let sync_s = done_at.iter().flatten().max().expect("nodes").as_secs_f64();
    // Memory per entry: RSS growth of each agent over what it now holds.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let per_entry: Vec<f64> = nodes
        .iter()
        .zip(rss_before)
        .map(|(n, before)| {
            let after = n.agent.as_ref().map_or(0, |p| rss_bytes(p.pid));
            after.saturating_sub(before) as f64 / (SYNC_ENTRIES + SYNC_IDENTITIES) as f64
        })
        .collect();
    let bytes_per_entry = per_entry.iter().copied().fold(0.0, f64::max);
    BENCH.emit(
        "initial_sync_100k_s",
        sync_s,
        "s",
        bench_report::Better::Lower,
        Some(("raw_list_via_apiserver_100k_s", raw_list)),
    );
    BENCH.emit(
        "agent_bytes_per_entry",
        bytes_per_entry,
        "B",
        bench_report::Better::Lower,
        None,
    );
    Ok(())
}

/// Failover of the global service from c1 to c2 and back, as c1's client
/// sees it.
fn failover(mesh: &mut TestMesh) -> Result<()> {
    let frontend: std::net::SocketAddr = localmesh::SERVICE_FRONTEND.parse()?;
    integration::wait_for("the service answers from c1", || {
        mesh.request("c1", "client", frontend, Duration::from_secs(1))
            .is_ok_and(|(s, _)| s.starts_with("c1/"))
    });
    mesh.remove_endpoint("c1", "echo-n1")?;
    let lost = Instant::now();
    mesh.remove_endpoint("c1", "echo-n2")?;
    let over = mesh.switch("c1", "client", frontend, lost, |s| s.starts_with("c2/"));
    let back = Instant::now();
    mesh.add_endpoint(
        "c1",
        "n2",
        "echo-back",
        &[("app", "echo")],
        Some(localmesh::ECHO_PORT),
    )?;
    let back = mesh.switch("c1", "client", frontend, back, |s| s == "c1/echo-back");
    eprintln!("  failover {over:?}, failback {back:?}");
    BENCH.emit(
        "failover_s",
        over.seconds,
        "s",
        bench_report::Better::Lower,
        None,
    );
    BENCH.emit(
        "failover_failed_requests",
        f64::from(over.failed),
        "requests",
        bench_report::Better::Lower,
        None,
    );
    BENCH.emit(
        "failback_s",
        back.seconds,
        "s",
        bench_report::Better::Lower,
        None,
    );
    Ok(())
}

fn main() -> Result<()> {
    if !integration::can_run("the e2e bench") {
        return Ok(());
    }
    integration::require_binaries()?;
    let rt = tokio::runtime::Runtime::new()?;
    eprintln!(
        "e2e bench: propagation at {CHANGES_PER_S} changes/s for {PROPAGATION_SECONDS} s (2 clusters x 2 nodes)"
    );
    {
        let mesh =
            TestMesh::up_with(2, 2, |s| s.workloads = false).context("mesh for propagation")?;
        rt.block_on(propagation(&mesh))?;
    }
    eprintln!("e2e bench: initial sync of {SYNC_ENTRIES} entries");
    let mut mesh = TestMesh::up_with(2, 2, |s| {
        s.workloads = false;
        s.connect = false;
    })
    .context("mesh for initial sync")?;
    rt.block_on(initial_sync(&mut mesh))?;
    drop(mesh);
    eprintln!("e2e bench: global service failover c1 -> c2 and back (2 clusters x 2 nodes)");
    let mut mesh = TestMesh::up(2, 2).context("mesh for failover")?;
    failover(&mut mesh)?;
    Ok(())
}
