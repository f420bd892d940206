//! A client given every member of a three-member etcd cluster keeps working
//! when the member it is on dies: unary requests fail over, and watches
//! resume on another member with no missed or repeated event.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::{DEADLINE, Mirror, wait_until};
use etcd_harness::{TestEtcd, TestEtcdCluster};
use kvstore::{Client, ClientConfig, Event, KeyPrefix, RawEntry, WatchStoreConfig};
use tokio_util::sync::CancellationToken;

async fn cluster_client(cluster: &TestEtcdCluster) -> Client {
    let mut config = ClientConfig::new(cluster.endpoints());
    config.request_timeout = Duration::from_secs(5);
    config.keepalive_interval = Duration::from_secs(1);
    config.keepalive_timeout = Duration::from_secs(2);
    Client::connect(&config)
        .await
        .expect("connect to the cluster")
}

#[tokio::test]
async fn unary_requests_fail_over_when_a_member_dies() {
    let mut cluster = TestEtcdCluster::start().await.expect("start etcd cluster");
    let client = cluster_client(&cluster).await;
    // Every member has served this client before the kill, so a connection
    // to the victim exists whichever it is.
    for i in 0..30 {
        client.put(&format!("warm/{i}"), "v").await.expect("put");
    }
    let leader = cluster.leader().await.unwrap();
    cluster.kill(leader);

    // Once the cluster has elected a new leader, every request succeeds:
    // none is sent to the dead member and returned as a failure.
    cluster.leader().await.unwrap();
    wait_until("a put after the kill", || async {
        client.put("after-kill", "v").await.is_ok()
    })
    .await;
    let mut errors = Vec::new();
    for i in 0..60 {
        if let Err(e) = client.put(&format!("k/{i}"), format!("{i}")).await {
            errors.push(format!("put {i}: {}", e.full_message()));
        }
        match client.get(&format!("k/{i}")).await {
            Ok(Some(kv)) => assert_eq!(kv.value, format!("{i}").into_bytes()),
            Ok(None) => errors.push(format!("get {i}: missing")),
            Err(e) => errors.push(format!("get {i}: {}", e.full_message())),
        }
    }
    assert!(
        errors.is_empty(),
        "requests failed after the kill: {errors:#?}"
    );
    let status = client.status().await.expect("status");
    assert_ne!(status.leader, 0);
}

fn watch_config(prefix: &str) -> WatchStoreConfig {
    let mut c = WatchStoreConfig::new(KeyPrefix::new(prefix));
    c.min_backoff = Duration::from_millis(20);
    c.max_backoff = Duration::from_millis(200);
    c
}

/// Writes `seq/<i>` and `counter = i` in one transaction per step, for
/// ever larger `i`, until cancelled; a failed step is written again (a
/// repetition of an applied step changes no value). `written` counts the
/// steps done.
fn start_writer(
    client: Client,
    written: Arc<AtomicUsize>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0usize;
        while !stop.is_cancelled() {
            let batch = vec![
                (format!("w/seq/{i:05}"), Some(format!("{i}").into_bytes())),
                ("w/counter".to_string(), Some(format!("{i}").into_bytes())),
            ];
            match client.write_batch(batch, None).await {
                Ok(()) => {
                    i += 1;
                    written.store(i, Ordering::SeqCst);
                }
                // Waiting out an election: pacing, not a wait for a condition.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
}

/// What the consumer must have seen after `n` steps: each step's two
/// upserts, once, in order.
fn expected_upserts(n: usize) -> Vec<(String, String)> {
    (0..n)
        .flat_map(|i| {
            [
                (format!("seq/{i:05}"), format!("{i}")),
                ("counter".to_string(), format!("{i}")),
            ]
        })
        .collect()
}

fn upserts(mirror: &Mirror<RawEntry>) -> Vec<(String, String)> {
    mirror
        .events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Upsert { key, value } => Some((
                key.clone(),
                String::from_utf8_lossy(&value.value).into_owned(),
            )),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_on_another_member_without_missed_or_repeated_events() {
    let mut cluster = TestEtcdCluster::start().await.expect("start etcd cluster");
    let writer_client = cluster_client(&cluster).await;
    let watcher_client = cluster_client(&cluster).await;
    let mirror = Mirror::<RawEntry>::watch(&watcher_client, watch_config("w"));
    wait_until("synced", || async { mirror.synced() }).await;

    let written = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let writer = start_writer(writer_client, written.clone(), stop.clone());
    let progressed = |from: usize| {
        let written = written.clone();
        async move {
            wait_until("the writer goes on", || async {
                written.load(Ordering::SeqCst) >= from + 20
            })
            .await;
        }
    };

    // Every member dies once (the leader first), while the writes go on:
    // whichever member the watch is on, it loses it.
    let leader = cluster.leader().await.unwrap();
    let order = [leader, (leader + 1) % 3, (leader + 2) % 3];
    for victim in order {
        progressed(written.load(Ordering::SeqCst)).await;
        cluster.kill(victim);
        progressed(written.load(Ordering::SeqCst)).await;
        cluster.restart(victim).await.expect("restart the member");
        cluster.leader().await.unwrap();
    }
    progressed(written.load(Ordering::SeqCst)).await;
    stop.cancel();
    writer.await.unwrap();
    let n = written.load(Ordering::SeqCst);

    let expected = expected_upserts(n);
    wait_until("the consumer saw every step", || async {
        upserts(&mirror).len() >= expected.len()
    })
    .await;
    let seen = upserts(&mirror);
    if seen != expected {
        let first_diff = seen.iter().zip(&expected).position(|(a, b)| a != b);
        panic!(
            "events differ from the writes (first difference at {first_diff:?}): saw {} upserts, \
             expected {}",
            seen.len(),
            expected.len()
        );
    }
    assert_eq!(mirror.duplicate_count(), 0, "no event repeated");
    assert_eq!(
        mirror.stats.lists(),
        1,
        "resumed from its revision, no re-list"
    );
    assert!(mirror.stats.watch_starts() >= 2, "the watch was resumed");
    assert!(n >= 140, "the writes went on through the kills: {n}");
    let _ = DEADLINE;
}

#[tokio::test]
async fn a_hanging_watch_is_noticed_by_an_unanswered_progress_request() {
    let mut etcd = TestEtcd::start().await.unwrap();
    let writer = common::client(&etcd).await;
    // HTTP/2 keep-alive would notice the hang too; make it too slow to, so
    // that only the progress request can.
    let mut config = ClientConfig::new(etcd.endpoints());
    config.keepalive_interval = Duration::from_secs(600);
    config.keepalive_timeout = Duration::from_secs(600);
    let watcher = Client::connect(&config).await.unwrap();
    let mut store_config = watch_config("h");
    store_config.progress_after = Duration::from_millis(300);
    store_config.progress_timeout = Duration::from_secs(1);
    let mirror = Mirror::<RawEntry>::watch(&watcher, store_config);
    wait_until("synced", || async { mirror.synced() }).await;
    writer.put("h/a", "1").await.unwrap();
    wait_until("the first write", || async { mirror.event_count() >= 2 }).await;

    // While etcd answers, quiet periods bring progress requests, not restarts.
    wait_until("three answered progress requests", || async {
        mirror.stats.progress_requests() >= 3
    })
    .await;
    assert_eq!(mirror.stats.watch_starts(), 1, "a live quiet watch is kept");
    assert_eq!(mirror.stats.errors(), 0);

    // etcd stops answering without closing the connection.
    etcd.pause();
    wait_until("the hang noticed", || async { mirror.stats.errors() >= 1 }).await;
    let (_, message) = mirror.stats.last_error().unwrap();
    assert!(message.contains("progress request"), "{message}");
    etcd.resume();

    writer.put("h/b", "2").await.unwrap();
    wait_until("the write after the hang", || async {
        mirror.snapshot().contains_key("b")
    })
    .await;
    assert!(mirror.stats.watch_starts() >= 2, "the watch was resumed");
    assert_eq!(mirror.stats.lists(), 1, "resumed from its revision");
    assert_eq!(
        upserts(&mirror),
        vec![("a".into(), "1".into()), ("b".into(), "2".into())]
    );
}
