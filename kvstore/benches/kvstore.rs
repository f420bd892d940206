//! `make bench BENCH=kvstore`: initial sync of 100,000 ipcache keys into a
//! `WatchStore` next to a raw paginated range over the same keys (same page
//! size, same decoding into the same table, timed the same way in the same
//! kind of child process) and next to `etcdctl get --prefix` on the same
//! etcd, the store's peak memory, and steady watch throughput next to a raw
//! etcd watch.
//!
//! Prints one JSON object per line on stdout; progress goes to stderr.

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use etcd_client::{GetOptions, PutOptions, Txn, TxnOp, WatchOptions};
use etcd_harness::TestEtcd;
use kvstore::{
    Client, ClientConfig, Event, KeyPrefix, NumericIdentity, StoreValue, WatchStore,
    WatchStoreConfig, keys, values::IpIdentityPair,
};
use tokio_util::sync::CancellationToken;

const SYNC_KEYS: usize = 100_000;
const WATCH_EVENTS: usize = 50_000;
const RUNS: usize = 3;

const BENCH: bench_report::Bench = bench_report::Bench::new("kvstore");

fn entry(i: usize) -> IpIdentityPair {
    let mut e = IpIdentityPair::host(
        format!("10.{}.{}.{}", i >> 16, (i >> 8) & 0xff, i & 0xff)
            .parse()
            .unwrap(),
        NumericIdentity::new(65536 + 256 + (i % 60_000) as u32),
        Some(
            format!("192.168.{}.{}", (i >> 8) & 0xff, i % 250 + 1)
                .parse()
                .unwrap(),
        ),
    );
    e.k8s_namespace = "default".into();
    e.k8s_pod_name = format!("pod-{i}");
    e
}

async fn client(endpoint: &str) -> Result<Client> {
    Ok(Client::connect(&ClientConfig::new([endpoint])).await?)
}

/// Writes `n` entries starting at `offset` in transactions of 128 puts.
async fn load(c: &Client, offset: usize, n: usize, tag: &str) -> Result<()> {
    let prefix = keys::ipcache();
    let chunks: Vec<Vec<usize>> = (offset..offset + n)
        .collect::<Vec<_>>()
        .chunks(128)
        .map(<[usize]>::to_vec)
        .collect();
    let mut pending = futures::stream::iter(chunks.into_iter().map(|chunk| {
        let mut kv = c.raw().kv_client();
        let prefix = prefix.clone();
        let tag = tag.to_string();
        async move {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|&i| {
                    let mut e = entry(i);
                    e.metadata = tag.clone();
                    TxnOp::put(prefix.key(&e.key()), e.encode(), None::<PutOptions>)
                })
                .collect();
            kv.txn(Txn::new().and_then(ops)).await
        }
    }))
    .buffer_unordered(8);
    use futures::StreamExt;
    while let Some(r) = pending.next().await {
        r?;
    }
    Ok(())
}

fn etcdctl_get_prefix(etcd: &TestEtcd) -> Result<Duration> {
    let start = Instant::now();
    let status = etcd
        .etcdctl()
        .args(["get", "--prefix", keys::ipcache().as_str()])
        .stdout(Stdio::null())
        .status()
        .context("run etcdctl")?;
    if !status.success() {
        bail!("etcdctl failed: {status}");
    }
    Ok(start.elapsed())
}

/// Child process: sync the prefix into a WatchStore (entries kept in a map, as
/// an agent would) and print `<seconds> <entries> <peak RSS kB>`.
async fn child_sync(endpoint: &str) -> Result<()> {
    let c = client(endpoint).await?;
    let start = Instant::now();
    let (store, mut rx) =
        WatchStore::<IpIdentityPair>::new(c, WatchStoreConfig::new(keys::ipcache()));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(store.run(shutdown.clone()));
    let mut table = HashMap::new();
    while let Some(event) = rx.recv().await {
        match event {
            Event::Upsert { key, value } => {
                table.insert(key, value);
            }
            Event::Delete { key } => {
                table.remove(&key);
            }
            Event::Synced => break,
        }
    }
    let elapsed = start.elapsed();
    shutdown.cancel();
    task.await??;
    let status = std::fs::read_to_string("/proc/self/status")?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    println!("{} {} {}", elapsed.as_secs_f64(), table.len(), hwm);
    Ok(())
}

/// Child process, the baseline: the same keys through bare etcd range calls
/// with the WatchStore's page size at one revision, each value decoded
/// (`IpIdentityPair::decode`, as the store does) into the same kind of table;
/// prints what [`child_sync`] prints.
async fn child_raw_range(endpoint: &str) -> Result<()> {
    let c = client(endpoint).await?;
    let prefix = keys::ipcache();
    let page = WatchStoreConfig::new(prefix.clone()).page_size as i64;
    let start = Instant::now();
    let mut kv = c.raw().kv_client();
    let mut table = HashMap::new();
    let mut next = prefix.as_str().as_bytes().to_vec();
    let mut revision = 0;
    loop {
        let mut options = GetOptions::new()
            .with_range(prefix.range_end())
            .with_limit(page);
        if revision != 0 {
            options = options.with_revision(revision);
        }
        let resp = kv.get(next.clone(), Some(options)).await?;
        if revision == 0 {
            revision = resp.header().context("range header")?.revision();
        }
        for item in resp.kvs() {
            let key = prefix
                .strip(item.key_str()?)
                .context("key outside the prefix")?;
            let value = IpIdentityPair::decode(key, item.value())?;
            table.insert(key.to_string(), value);
        }
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                next = last.key().to_vec();
                next.push(0);
            }
            _ => break,
        }
    }
    let elapsed = start.elapsed();
    let status = std::fs::read_to_string("/proc/self/status")?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    println!("{} {} {}", elapsed.as_secs_f64(), table.len(), hwm);
    Ok(())
}

/// Runs `--child-sync` or `--child-raw-range` in a fresh process.
fn run_child(mode: &str, endpoint: &str) -> Result<(f64, usize, f64)> {
    let out = Command::new(std::env::current_exe()?)
        .args([mode, endpoint])
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("sync child failed: {}", out.status);
    }
    let text = String::from_utf8(out.stdout)?;
    let mut parts = text.split_whitespace();
    let secs: f64 = parts.next().context("seconds")?.parse()?;
    let entries: usize = parts.next().context("entries")?.parse()?;
    let kb: f64 = parts.next().context("rss")?.parse()?;
    Ok((secs, entries, kb / 1024.0))
}

/// Events per second delivered by a WatchStore while `n` updates are written.
async fn watch_store_throughput(c: &Client, writer: &Client, tag: &str) -> Result<f64> {
    let (store, mut rx) =
        WatchStore::<IpIdentityPair>::new(c.clone(), WatchStoreConfig::new(keys::ipcache()));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(store.run(shutdown.clone()));
    while let Some(event) = rx.recv().await {
        if matches!(event, Event::Synced) {
            break;
        }
    }
    let start = Instant::now();
    let writer = writer.clone();
    let tag = tag.to_string();
    let write = tokio::spawn(async move { load(&writer, 0, WATCH_EVENTS, &tag).await });
    let mut seen = 0;
    while seen < WATCH_EVENTS {
        match rx.recv().await {
            Some(Event::Upsert { .. }) => seen += 1,
            Some(_) => {}
            None => bail!("watch store stopped"),
        }
    }
    let rate = seen as f64 / start.elapsed().as_secs_f64();
    write.await??;
    shutdown.cancel();
    task.await??;
    Ok(rate)
}

/// The same with a bare etcd watch (no decoding, no bookkeeping).
async fn raw_watch_throughput(c: &Client, writer: &Client, tag: &str) -> Result<f64> {
    let prefix: KeyPrefix = keys::ipcache();
    let mut wc = c.raw().watch_client().max_decoding_message_size(256 << 20);
    let mut stream = wc
        .watch(
            prefix.as_str(),
            Some(WatchOptions::new().with_range(prefix.range_end())),
        )
        .await?;
    stream.message().await?; // created
    let start = Instant::now();
    let writer = writer.clone();
    let tag = tag.to_string();
    let write = tokio::spawn(async move { load(&writer, 0, WATCH_EVENTS, &tag).await });
    let mut seen = 0;
    while seen < WATCH_EVENTS {
        let resp = stream.message().await?.context("watch closed")?;
        seen += resp.events().len();
    }
    let rate = seen as f64 / start.elapsed().as_secs_f64();
    write.await??;
    Ok(rate)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child-sync") {
        return child_sync(&args[i + 1]).await;
    }
    if let Some(i) = args.iter().position(|a| a == "--child-raw-range") {
        return child_raw_range(&args[i + 1]).await;
    }

    eprintln!("kvstore bench: starting etcd and loading {SYNC_KEYS} ipcache entries");
    let etcd = TestEtcd::start().await?;
    let c = client(&etcd.endpoint()).await?;
    load(&c, 0, SYNC_KEYS, "initial").await?;
    let count = c.count(&keys::ipcache()).await?;
    if count as usize != SYNC_KEYS {
        bail!("loaded {count} keys, expected {SYNC_KEYS}");
    }

    let mut etcdctl_best = f64::MAX;
    let mut raw_best = f64::MAX;
    let mut store_best = f64::MAX;
    let mut rss_mb = 0.0f64;
    for run in 0..RUNS {
        let t = etcdctl_get_prefix(&etcd)?.as_secs_f64();
        etcdctl_best = etcdctl_best.min(t);
        let (raw, raw_entries, _) = run_child("--child-raw-range", &etcd.endpoint())?;
        if raw_entries != SYNC_KEYS {
            bail!("raw range decoded {raw_entries} entries, expected {SYNC_KEYS}");
        }
        raw_best = raw_best.min(raw);
        let (secs, entries, mb) = run_child("--child-sync", &etcd.endpoint())?;
        if entries != SYNC_KEYS {
            bail!("watch store synced {entries} entries, expected {SYNC_KEYS}");
        }
        store_best = store_best.min(secs);
        rss_mb = rss_mb.max(mb);
        eprintln!(
            "  run {run}: etcdctl {t:.3}s, raw range + decode {raw:.3}s, watch store {secs:.3}s, \
             peak RSS {mb:.1} MB"
        );
    }
    BENCH.emit(
        "watchstore_sync_s",
        store_best,
        "s",
        bench_report::Better::Lower,
        Some(("raw_range_decode_s", raw_best)),
    );
    BENCH.emit(
        "watchstore_sync_keys_per_s",
        SYNC_KEYS as f64 / store_best,
        "1/s",
        bench_report::Better::Higher,
        Some(("raw_range_decode_keys_per_s", SYNC_KEYS as f64 / raw_best)),
    );
    BENCH.emit(
        "watchstore_sync_keys_per_s_vs_etcdctl",
        SYNC_KEYS as f64 / store_best,
        "1/s",
        bench_report::Better::Higher,
        Some((
            "etcdctl_get_prefix_keys_per_s",
            SYNC_KEYS as f64 / etcdctl_best,
        )),
    );
    BENCH.emit(
        "watchstore_peak_rss_mb",
        rss_mb,
        "MB",
        bench_report::Better::Lower,
        None,
    );

    eprintln!("kvstore bench: steady watch, {WATCH_EVENTS} updates");
    let writer = client(&etcd.endpoint()).await?;
    let raw = raw_watch_throughput(&c, &writer, "raw").await?;
    let ours = watch_store_throughput(&c, &writer, "store").await?;
    BENCH.emit(
        "watch_events_per_s",
        ours,
        "1/s",
        bench_report::Better::Higher,
        Some(("raw_etcd_watch_events_per_s", raw)),
    );
    Ok(())
}
