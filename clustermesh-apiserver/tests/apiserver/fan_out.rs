//! Watch fan-out: one upstream watch per range, late watchers join from
//! history or through a catch-up without a gap or a duplicate, compaction
//! and progress behave as etcd's.

use std::time::Duration;

use etcd_client::{WatchOptions, WatchResponse, WatchStream};
use etcd_harness::{EtcdOptions, TestEtcd};
use futures::future::join_all;

use crate::support::{
    DEADLINE, SeenEvent, TestApiserver, current_revision, direct_client, eventually,
};

const PREFIX: &str = "cilium/state/ip/v1/";

async fn next(stream: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("a response in time")
        .expect("the stream works")
        .expect("the stream is open")
}

/// Opens a prefix watch and returns it with its `created` response.
async fn watch(
    client: &mut etcd_client::Client,
    options: WatchOptions,
) -> (WatchStream, WatchResponse) {
    let mut stream = client
        .watch(PREFIX, Some(options.with_prefix()))
        .await
        .unwrap();
    let created = next(&mut stream).await;
    assert!(created.created(), "{created:?}");
    (stream, created)
}

/// Reads events until `n` arrived.
async fn events(stream: &mut WatchStream, n: usize) -> Vec<SeenEvent> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let response = next(stream).await;
        assert!(!response.canceled(), "{response:?}");
        seen.extend(response.events().iter().map(SeenEvent::from_etcd));
    }
    assert_eq!(seen.len(), n, "no more events than written");
    seen
}

async fn put_n(client: &mut etcd_client::Client, from: usize, n: usize) {
    for i in from..from + n {
        client
            .put(
                format!("{PREFIX}default/10.0.0.{}", i % 50),
                format!("v{i}"),
                None,
            )
            .await
            .unwrap();
    }
}

async fn etcd_watchers(etcd: &TestEtcd) -> f64 {
    etcd.metric("etcd_debugging_mvcc_watcher_total")
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_of_one_prefix_share_one_upstream_watch() {
    let etcd = TestEtcd::start().await.unwrap();
    let api = TestApiserver::start(&etcd).await;
    let base = etcd_watchers(&etcd).await;
    let mut streams = Vec::new();
    for cn in ["remote-c2", "remote-c3"] {
        let mut client = api.etcd_client(cn).await;
        for _ in 0..10 {
            streams.push(watch(&mut client, WatchOptions::new()).await.0);
        }
    }
    assert_eq!(
        etcd_watchers(&etcd).await,
        base + 1.0,
        "one etcd watch for 20 watchers"
    );
    let stats = api.hub.stats();
    assert_eq!(
        (stats.shared_watches, stats.catch_ups, stats.subscribers),
        (1, 0, 20)
    );
    assert_eq!(
        api.metric("clustermesh_apiserver_downstream_watchers", "")
            .await,
        20.0
    );

    let mut writer = direct_client(&etcd).await;
    put_n(&mut writer, 0, 3).await;
    let all = join_all(streams.iter_mut().map(|s| events(s, 3))).await;
    for seen in &all[1..] {
        assert_eq!(seen, &all[0]);
    }
    assert!(
        api.metric("clustermesh_apiserver_watch_events_sent_total", "")
            .await
            >= 60.0
    );

    drop(streams);
    eventually(
        "the shared watch to close with its last watcher",
        || async {
            (api.hub.stats().shared_watches == 0 && etcd_watchers(&etcd).await == base)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_watcher_gets_history_then_live_events() {
    let etcd = TestEtcd::start().await.unwrap();
    let api = TestApiserver::start(&etcd).await;
    let mut writer = direct_client(&etcd).await;
    let mut client = api.etcd_client("remote-c2").await;
    let start = current_revision(&etcd).await + 1;
    let (mut early, _) = watch(&mut client, WatchOptions::new().with_start_revision(start)).await;
    put_n(&mut writer, 0, 10).await;
    let early_seen = events(&mut early, 10).await;

    // Starts where the early one started: served from the shared history.
    let (mut late, created) =
        watch(&mut client, WatchOptions::new().with_start_revision(start)).await;
    assert!(created.header().unwrap().revision() >= early_seen[9].mod_revision);
    assert_eq!(events(&mut late, 10).await, early_seen);
    assert_eq!(
        api.hub.stats().catch_ups,
        0,
        "no private etcd watch was needed"
    );
    // Then both follow the live stream, once each.
    put_n(&mut writer, 10, 5).await;
    assert_eq!(events(&mut late, 5).await, events(&mut early, 5).await);
    assert_eq!(api.hub.stats().shared_watches, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_older_than_history_catches_up_then_joins() {
    let etcd = TestEtcd::start().await.unwrap();
    let api = TestApiserver::start_with(&etcd, |c| c.watch.history_events = 3).await;
    let base = etcd_watchers(&etcd).await;
    let mut writer = direct_client(&etcd).await;
    let mut client = api.etcd_client("remote-c2").await;
    let start = current_revision(&etcd).await + 1;
    let (mut early, _) = watch(&mut client, WatchOptions::new().with_start_revision(start)).await;
    put_n(&mut writer, 0, 20).await;
    let early_seen = events(&mut early, 20).await;

    // The shared history holds only the last 3 events: the first 17 come
    // from a private etcd watch, the rest from the shared one.
    let (mut late, _) = watch(&mut client, WatchOptions::new().with_start_revision(start)).await;
    assert_eq!(events(&mut late, 20).await, early_seen);
    eventually(
        "the catch-up to hand over and close its etcd watch",
        || async {
            (api.hub.stats().catch_ups == 0 && etcd_watchers(&etcd).await == base + 1.0)
                .then_some(())
        },
    )
    .await;
    put_n(&mut writer, 20, 5).await;
    let live = events(&mut early, 5).await;
    assert_eq!(events(&mut late, 5).await, live);

    // The direct etcd watch from the same revision saw the same.
    let mut direct = direct_client(&etcd).await;
    let (mut reference, _) =
        watch(&mut direct, WatchOptions::new().with_start_revision(start)).await;
    let mut expected = early_seen.clone();
    expected.extend(live);
    assert_eq!(events(&mut reference, 25).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_start_is_canceled_as_etcd_cancels_it() {
    let etcd = TestEtcd::start().await.unwrap();
    let api = TestApiserver::start(&etcd).await;
    let mut writer = direct_client(&etcd).await;
    let first = current_revision(&etcd).await + 1;
    put_n(&mut writer, 0, 5).await;
    let compacted = current_revision(&etcd).await;
    writer.compact(compacted, None).await.unwrap();

    let mut direct = direct_client(&etcd).await;
    let (mut reference, _) =
        watch(&mut direct, WatchOptions::new().with_start_revision(first)).await;
    let expected = next(&mut reference).await;
    assert!(expected.canceled());
    assert_eq!(expected.compact_revision(), compacted);

    let mut client = api.etcd_client("remote-c2").await;
    // First watcher of the range (the shared watch itself hits compaction),
    // then one behind a live watcher (its catch-up hits it).
    let (_live, _) = {
        let (mut stream, created) =
            watch(&mut client, WatchOptions::new().with_start_revision(first)).await;
        let canceled = next(&mut stream).await;
        assert!(canceled.canceled(), "{canceled:?}");
        assert_eq!(canceled.compact_revision(), compacted);
        assert_eq!(canceled.watch_id(), created.watch_id());
        watch(&mut client, WatchOptions::new()).await
    };
    let (mut behind, created) =
        watch(&mut client, WatchOptions::new().with_start_revision(first)).await;
    let canceled = next(&mut behind).await;
    assert!(canceled.canceled(), "{canceled:?}");
    assert_eq!(canceled.compact_revision(), compacted);
    assert_eq!(canceled.watch_id(), created.watch_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_notifications_and_requests() {
    let etcd = TestEtcd::start_with(EtcdOptions {
        extra_args: vec!["--experimental-watch-progress-notify-interval=300ms".into()],
        ..EtcdOptions::default()
    })
    .await
    .unwrap();
    let api = TestApiserver::start(&etcd).await;
    let mut writer = direct_client(&etcd).await;
    let mut client = api.etcd_client("remote-c2").await;
    let (mut stream, created) =
        watch(&mut client, WatchOptions::new().with_progress_notify()).await;
    put_n(&mut writer, 0, 1).await;
    let event = next(&mut stream).await;
    let revision = event.events()[0].kv().unwrap().mod_revision();

    // A quiet watch gets etcd's periodic progress notification.
    let progress = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let r = next(&mut stream).await;
            if r.events().is_empty() && !r.created() && !r.canceled() {
                return r;
            }
        }
    })
    .await
    .expect("a progress notification");
    assert_eq!(progress.watch_id(), created.watch_id());
    assert!(progress.header().unwrap().revision() >= revision);

    // An explicit progress request is answered for the whole stream (-1).
    stream.request_progress().await.unwrap();
    let answer = loop {
        let r = next(&mut stream).await;
        if r.watch_id() == -1 {
            break r;
        }
    };
    assert!(answer.header().unwrap().revision() >= revision);
    assert!(answer.events().is_empty());
}
