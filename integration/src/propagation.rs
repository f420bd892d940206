//! Propagation of ipcache changes across the mesh, for the benchmarks: a
//! writer publishes host entries in one or more clusters' etcds at a steady
//! rate (one transaction per cluster every 10 ms), and each entry is timed
//! until it is in the BPF ipcache maps watched (polled every 0.5 ms); raw
//! etcd watches on the writers' etcds, in the same run, are the baseline.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use bpf::{IPCACHE_MAP, IpCacheKey, IpCacheMap};
use etcd_client::WatchOptions;
use kvstore::{NumericIdentity, StoreValue, keys, values::IpIdentityPair};

use crate::TestMesh;

/// Transactions the writer has in flight at most.
const MAX_TXNS_IN_FLIGHT: usize = 64;

/// What a run measured (latencies in milliseconds).
#[derive(Debug, Clone, Copy)]
pub struct Propagation {
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The raw watch on the writer's etcd.
    pub raw_p50_ms: f64,
    pub raw_p99_ms: f64,
    /// The change rate the writer achieved.
    pub achieved_per_s: f64,
    /// Entry × node observations.
    pub observations: usize,
}

/// The `p` quantile (0..=1) of sorted values (NaN when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// An IP for index `i` in a /16 block starting at `a.b.0.0`.
pub fn ip(a: u8, b: u8, i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        a,
        b + (i >> 16) as u8,
        (i >> 8) as u8,
        i as u8,
    ))
}

/// Where changes are written: a cluster's etcd, and the entry its `n`-th
/// change (counted over all sources) publishes.
pub struct Source {
    pub client: kvstore::Client,
    pub entry: Box<dyn Fn(usize) -> IpIdentityPair + Send + Sync>,
}

/// Publishes `rate × seconds` host entries (in `10.150.0.0/16` and up,
/// under identity `id`) in `from`'s etcd, `rate / 100` every 10 ms in one
/// transaction, without waiting for the earlier ones, and times each from
/// the moment its transaction is sent until every node of `to` has it.
pub async fn measure(
    mesh: &TestMesh,
    from: &str,
    to: &str,
    id: NumericIdentity,
    rate: u64,
    seconds: u64,
) -> Result<Propagation> {
    let source = mesh.state.cluster(from)?.clone();
    let client = localmesh::admin_client(&source).await?;
    let maps: Vec<IpCacheMap> = mesh
        .state
        .cluster(to)?
        .nodes
        .iter()
        .map(|n| IpCacheMap::open_pinned(&n.bpffs, IPCACHE_MAP))
        .collect::<Result<_, _>>()?;
    let node_ip: IpAddr = source
        .nodes
        .first()
        .map_or(IpAddr::from([127, 0, 0, 1]), |n| IpAddr::V4(n.ip));
    let source = Source {
        client,
        entry: Box::new(move |i| IpIdentityPair::host(ip(10, 150, i), id, Some(node_ip))),
    };
    measure_sources(vec![source], maps, rate, seconds).await
}

/// Publishes `rate × seconds` changes spread over `sources` (change `n`
/// goes to source `n % sources.len()`): every 10 ms, `rate / 100` changes,
/// one transaction per source, without waiting for the earlier ones. Each
/// is timed from the moment its transaction is sent until every map of
/// `maps` holds its entry with its identity; raw etcd watches on the
/// sources, in the same run, are the baseline.
pub async fn measure_sources(
    sources: Vec<Source>,
    maps: Vec<IpCacheMap>,
    rate: u64,
    seconds: u64,
) -> Result<Propagation> {
    let prefix = keys::ipcache();
    let mut watches = Vec::new();
    for source in &sources {
        let mut watch = source
            .client
            .raw()
            .watch_client()
            .watch(
                prefix.as_str(),
                Some(WatchOptions::new().with_range(prefix.range_end())),
            )
            .await?;
        watch.message().await?;
        watches.push(watch);
    }
    let total = (rate * seconds) as usize;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(IpIdentityPair, Instant)>();
    let writer = tokio::spawn(async move {
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let per_tick = (rate / 100).max(1) as usize;
        // Each tick's entries go out in one transaction per source (one
        // etcd commit each), on schedule, without waiting for the earlier
        // ones.
        let mut in_flight = tokio::task::JoinSet::new();
        let mut n = 0;
        while n < total {
            tick.tick().await;
            let mut batches: Vec<Vec<(String, Option<Vec<u8>>)>> = vec![Vec::new(); sources.len()];
            for i in n..(n + per_tick).min(total) {
                let s = i % sources.len();
                let pair = (sources[s].entry)(i);
                let _ = tx.send((pair.clone(), Instant::now()));
                batches[s].push((prefix.key(&pair.key()), Some(pair.encode())));
            }
            n = (n + per_tick).min(total);
            for (s, batch) in batches.into_iter().enumerate() {
                if batch.is_empty() {
                    continue;
                }
                while in_flight.len() >= MAX_TXNS_IN_FLIGHT {
                    in_flight.join_next().await.expect("writes in flight")??;
                }
                let client = sources[s].client.clone();
                in_flight.spawn(async move { client.write_batch(batch, None).await });
            }
        }
        while let Some(write) = in_flight.join_next().await {
            write??;
        }
        anyhow::Ok(total as f64 / started.elapsed().as_secs_f64())
    });
    // Each raw watch reports arrivals as they come; they are stopped once
    // every change reached the maps (they see them sooner).
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut raw = tokio::task::JoinSet::new();
    for mut watch in watches {
        let arrived_tx = arrived_tx.clone();
        raw.spawn(async move {
            while let Ok(Some(resp)) = watch.message().await {
                for e in resp.events() {
                    if let Some(kv) = e.kv() {
                        let key = String::from_utf8_lossy(kv.key()).into_owned();
                        let _ = arrived_tx.send((key, Instant::now()));
                    }
                }
            }
        });
    }
    drop(arrived_tx);
    let mut pending: Vec<(IpAddr, u32, Instant, Vec<bool>)> = Vec::new();
    let mut latencies = Vec::with_capacity(total * maps.len());
    let mut written_at = HashMap::new();
    // Every entry has until 30 s after the last one was written.
    let mut deadline = Instant::now() + Duration::from_secs(seconds + 30);
    let mut received = 0;
    while (received < total || !pending.is_empty()) && Instant::now() < deadline {
        if received < total {
            deadline = Instant::now() + Duration::from_secs(30);
        }
        while let Ok((pair, at)) = rx.try_recv() {
            let addr = pair.prefix().addr();
            pending.push((addr, pair.id.get(), at, vec![false; maps.len()]));
            written_at.insert(keys::ipcache().key(&pair.key()), at);
            received += 1;
        }
        pending.retain_mut(|(addr, id, at, done)| {
            for (i, map) in maps.iter().enumerate() {
                if !done[i]
                    && map
                        .get(&IpCacheKey::host(*addr))
                        .ok()
                        .flatten()
                        .is_some_and(|v| v.sec_identity == *id)
                {
                    done[i] = true;
                    latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                }
            }
            !done.iter().all(|d| *d)
        });
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let achieved_per_s = writer.await??;
    if !pending.is_empty() {
        bail!("{} entries never reached the maps", pending.len());
    }
    raw.abort_all();
    let mut raw_latencies = Vec::new();
    while let Ok((key, t)) = arrived.try_recv() {
        if let Some(w) = written_at.get(&key) {
            raw_latencies.push(t.duration_since(*w).as_secs_f64() * 1000.0);
        }
    }
    latencies.sort_by(f64::total_cmp);
    raw_latencies.sort_by(f64::total_cmp);
    Ok(Propagation {
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        raw_p50_ms: percentile(&raw_latencies, 0.5),
        raw_p99_ms: percentile(&raw_latencies, 0.99),
        achieved_per_s,
        observations: latencies.len(),
    })
}
