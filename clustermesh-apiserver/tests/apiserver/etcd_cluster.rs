//! The apiserver in front of a three-member etcd cluster: its upstream
//! watches survive the loss of the member they are on, and quiet watches
//! (its own upstream ones and its clients') are kept across progress checks.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use etcd_client::{EventType, WatchOptions};
use etcd_harness::{TestEtcd, TestEtcdCluster};
use kvstore::{ClientConfig, Event, KeyPrefix, RawEntry, WatchStore, WatchStoreConfig};
use tokio_util::sync::CancellationToken;

use crate::support::{DEADLINE, TestApiserver, eventually};

const PREFIX: &str = "cilium/state/ip/v1/";

fn key(i: usize) -> String {
    format!(
        "{PREFIX}default/10.{}.{}.{}",
        i / 65536,
        (i / 256) % 256,
        i % 256
    )
}

/// Creates `key(i)` for ever larger `i` until cancelled, each exactly once
/// in etcd's history: a failed creation is tried again, and one that finds
/// its key was applied before its answer was lost. `written` counts them.
fn start_writer(
    client: kvstore::Client,
    written: Arc<AtomicUsize>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0;
        while !stop.is_cancelled() {
            match client.create(&key(i), format!("v{i}"), None).await {
                // `false`: an earlier attempt created it.
                Ok(_) => {
                    i += 1;
                    written.store(i, Ordering::SeqCst);
                }
                // Waiting out an election: pacing, not a wait for a condition.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
}

async fn wait_for_more(written: &AtomicUsize, n: usize) {
    let from = written.load(Ordering::SeqCst);
    etcd_harness::wait_until("the writer goes on", DEADLINE, || async {
        written.load(Ordering::SeqCst) >= from + n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_through_the_apiserver_survive_losing_etcd_members() {
    let mut cluster = TestEtcdCluster::start().await.expect("start etcd cluster");
    let api = TestApiserver::start_on(cluster.endpoints(), |config| {
        config.etcd.keepalive_interval = Duration::from_secs(1);
        config.etcd.keepalive_timeout = Duration::from_secs(2);
        config.etcd.request_timeout = Duration::from_secs(5);
    })
    .await;
    let mut writer_config = ClientConfig::new(cluster.endpoints());
    writer_config.request_timeout = Duration::from_secs(5);
    let writer_client = kvstore::Client::connect(&writer_config).await.unwrap();

    // A client watching through the apiserver from the start of the writes.
    let mut client = api.etcd_client("remote-c2").await;
    let start = writer_client.status().await.unwrap().revision + 1;
    let mut stream = client
        .watch(
            PREFIX,
            Some(WatchOptions::new().with_prefix().with_start_revision(start)),
        )
        .await
        .unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(String, i64)>::new()));
    let reader = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(response) = stream.message().await.expect("the client's stream") {
                assert!(!response.canceled(), "{response:?}");
                let mut seen = seen.lock().unwrap();
                for event in response.events() {
                    assert_eq!(event.event_type(), EventType::Put);
                    let kv = event.kv().unwrap();
                    seen.push((kv.key_str().unwrap().to_string(), kv.mod_revision()));
                }
            }
        })
    };

    let written = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let writer = start_writer(writer_client, written.clone(), stop.clone());
    // Every member dies once, the leader first, while the writes go on:
    // whichever member the apiserver's upstream watch is on, it loses it.
    let leader = cluster.leader().await.unwrap();
    for victim in [leader, (leader + 1) % 3, (leader + 2) % 3] {
        wait_for_more(&written, 20).await;
        cluster.kill(victim);
        wait_for_more(&written, 20).await;
        cluster.restart(victim).await.expect("restart the member");
        cluster.leader().await.unwrap();
    }
    wait_for_more(&written, 20).await;
    stop.cancel();
    writer.await.unwrap();
    let n = written.load(Ordering::SeqCst);

    eventually("the client saw every key", || async {
        (seen.lock().unwrap().len() >= n).then_some(())
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    let keys: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    let expected: Vec<String> = (0..n).map(key).collect();
    if keys != expected {
        let first = keys.iter().zip(&expected).position(|(a, b)| a != b);
        panic!(
            "the client saw {} events for {n} keys; first difference at {first:?}",
            keys.len()
        );
    }
    assert!(
        seen.windows(2).all(|w| w[0].1 < w[1].1),
        "revisions increase strictly"
    );
    let restarts = api
        .metric("clustermesh_apiserver_upstream_watch_restarts_total", "")
        .await;
    assert!(
        restarts >= 1.0,
        "the upstream watch was resumed: {restarts}"
    );
    reader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_watch_through_the_apiserver_is_kept_across_progress_checks() {
    let etcd = TestEtcd::start().await.unwrap();
    let api = TestApiserver::start_with(&etcd, |config| {
        config.watch.progress_after = Duration::from_millis(200);
        config.watch.progress_timeout = Duration::from_secs(2);
    })
    .await;
    let writer = kvstore::Client::connect(&ClientConfig::new(etcd.endpoints()))
        .await
        .unwrap();
    writer.put(&key(0), "v0").await.unwrap();

    // An agent's watch store through the apiserver, asking for progress
    // after every 200 ms of quiet.
    let through_api = api.client("remote-c2").await.unwrap();
    let mut store_config = WatchStoreConfig::new(KeyPrefix::new(PREFIX));
    store_config.progress_after = Duration::from_millis(200);
    store_config.progress_timeout = Duration::from_secs(2);
    let (store, mut rx) = WatchStore::<RawEntry>::new(through_api, store_config);
    let stats = store.stats();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(store.run(shutdown.clone()));
    let first = tokio::time::timeout(DEADLINE, rx.recv()).await.unwrap();
    assert!(matches!(first, Some(Event::Upsert { .. })), "{first:?}");

    eventually("ten progress checks of the quiet watch", || async {
        (stats.progress_requests() >= 10).then_some(())
    })
    .await;
    assert_eq!(stats.watch_starts(), 1, "the client's watch was kept");
    assert!(
        api.metrics()
            .await
            .contains("clustermesh_apiserver_upstream_watch_restarts_total"),
        "the restarts are counted"
    );
    assert_eq!(stats.errors(), 0, "{:?}", stats.last_error());
    assert_eq!(
        api.metric("clustermesh_apiserver_upstream_watch_restarts_total", "")
            .await,
        0.0,
        "the apiserver's upstream watch was kept"
    );

    // And it still delivers.
    writer.put(&key(1), "v1").await.unwrap();
    let mut next = tokio::time::timeout(DEADLINE, rx.recv()).await.unwrap();
    while matches!(next, Some(Event::Synced)) {
        next = tokio::time::timeout(DEADLINE, rx.recv()).await.unwrap();
    }
    match next {
        Some(Event::Upsert { key: k, value }) => {
            assert_eq!(format!("{PREFIX}{k}"), key(1));
            assert_eq!(value.value, b"v1");
        }
        other => panic!("{other:?}"),
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_upstream_watch_is_noticed_and_resumed() {
    let mut etcd = TestEtcd::start().await.unwrap();
    let api = TestApiserver::start_with(&etcd, |config| {
        // HTTP/2 keep-alive would notice the hang too; make it too slow to,
        // so that only the progress request can.
        config.etcd.keepalive_interval = Duration::from_secs(600);
        config.etcd.keepalive_timeout = Duration::from_secs(600);
        config.watch.progress_after = Duration::from_millis(300);
        config.watch.progress_timeout = Duration::from_secs(1);
    })
    .await;
    let writer = kvstore::Client::connect(&ClientConfig::new(etcd.endpoints()))
        .await
        .unwrap();
    let mut client = api.etcd_client("remote-c2").await;
    let mut stream = client
        .watch(PREFIX, Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let created = tokio::time::timeout(DEADLINE, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(created.created());
    writer.put(&key(0), "v0").await.unwrap();

    // etcd stops answering without closing the connection.
    etcd.pause();
    eventually(
        "the apiserver resumes its hanging upstream watch",
        || async {
            let restarts = api
                .metric("clustermesh_apiserver_upstream_watch_restarts_total", "")
                .await;
            (restarts >= 1.0).then_some(())
        },
    )
    .await;
    etcd.resume();
    writer.put(&key(1), "v1").await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let response = tokio::time::timeout(DEADLINE, stream.message())
            .await
            .expect("events in time")
            .unwrap()
            .unwrap();
        assert!(!response.canceled(), "{response:?}");
        seen.extend(
            response
                .events()
                .iter()
                .map(|e| e.kv().unwrap().key_str().unwrap().to_string()),
        );
    }
    assert_eq!(seen, vec![key(0), key(1)], "each event once, in order");
}
