//! `make bench BENCH=allocator`: new-identity allocations per second with 16
//! and 64 concurrent allocations, next to raw create-only transactions per
//! second on the same etcd in the same run, and cached allocations per second.
//!
//! Prints one JSON object per line on stdout; progress goes to stderr.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use etcd_harness::TestEtcd;
use futures::StreamExt;
use kvstore::{
    Allocator, AllocatorConfig, Client, ClientConfig, ClusterId, IdentityCache, Label, Labels,
    MaxConnectedClusters, Session,
};
use tokio_util::sync::CancellationToken;

const PER_RUN: usize = 4_000;
const CACHED: usize = 1_000_000;

const BENCH: bench_report::Bench = bench_report::Bench::new("allocator");

fn labels(run: &str, i: usize) -> Labels {
    [
        Label::k8s("app", format!("{run}-{i}")),
        Label::k8s(kvstore::CLUSTER_LABEL, "c1"),
        Label::k8s(kvstore::NAMESPACE_LABEL, "bench"),
    ]
    .into_iter()
    .collect()
}

async fn raw_creates(c: &Client, run: &str, concurrency: usize) -> Result<f64> {
    let start = Instant::now();
    let created: Vec<bool> = futures::stream::iter(0..PER_RUN)
        .map(|i| async move { c.create(&format!("bench/raw/{run}/{i}"), "1", None).await })
        .buffer_unordered(concurrency)
        .map(|r| r.expect("create"))
        .collect()
        .await;
    if !created.iter().all(|c| *c) {
        bail!("raw create lost a key");
    }
    Ok(PER_RUN as f64 / start.elapsed().as_secs_f64())
}

async fn allocations(a: &Allocator, run: &str, concurrency: usize) -> Result<f64> {
    let sets: Vec<Labels> = (0..PER_RUN).map(|i| labels(run, i)).collect();
    let start = Instant::now();
    let results: Vec<_> = futures::stream::iter(&sets)
        .map(|l| a.allocate(l))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = start.elapsed();
    for r in results {
        if !r?.created {
            bail!("expected new identities");
        }
    }
    Ok(PER_RUN as f64 / elapsed.as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<()> {
    eprintln!("allocator bench: starting etcd");
    let etcd = TestEtcd::start().await?;
    let client = Client::connect(&ClientConfig::new([etcd.endpoint()])).await?;
    let shutdown = CancellationToken::new();
    let (session, handle) = Session::new(client.clone(), Duration::from_secs(60));
    let (cache, cache_runner) = IdentityCache::local(client.clone());
    let mode = MaxConnectedClusters::C255;
    let config = AllocatorConfig::new(ClusterId::new(1, mode)?, mode, "10.0.0.1");
    let (allocator, runner) = Allocator::new(client.clone(), handle, cache.clone(), config);
    let tasks = vec![
        tokio::spawn(session.run(shutdown.clone())),
        tokio::spawn(cache_runner.run(shutdown.clone())),
        tokio::spawn(runner.run(shutdown.clone())),
    ];
    cache.wait_synced().await;
    let allocator: Arc<Allocator> = allocator;

    for concurrency in [16, 64] {
        eprintln!(
            "allocator bench: {PER_RUN} allocations and raw creates at concurrency {concurrency}"
        );
        // Alternate and keep the best of two runs each, so neither side gets
        // a warmer etcd.
        let mut raw_best = 0f64;
        let mut alloc_best = 0f64;
        for round in 0..2 {
            raw_best = raw_best
                .max(raw_creates(&client, &format!("c{concurrency}r{round}"), concurrency).await?);
            alloc_best = alloc_best.max(
                allocations(&allocator, &format!("c{concurrency}r{round}"), concurrency).await?,
            );
        }
        BENCH.emit(
            &format!("allocations_per_s_c{concurrency}"),
            alloc_best,
            "1/s",
            bench_report::Better::Higher,
            Some((&format!("raw_create_txn_per_s_c{concurrency}"), raw_best)),
        );
    }

    eprintln!("allocator bench: {CACHED} cached allocations");
    let held = labels("c16r0", 0);
    let start = Instant::now();
    for _ in 0..CACHED {
        allocator.allocate(&held).await?;
    }
    BENCH.emit(
        "cached_allocations_per_s",
        CACHED as f64 / start.elapsed().as_secs_f64(),
        "1/s",
        bench_report::Better::Higher,
        None,
    );

    shutdown.cancel();
    for t in tasks {
        t.await??;
    }
    Ok(())
}
