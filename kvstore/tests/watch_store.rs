//! WatchStore against a real etcd: list-then-watch, canaries, outages,
//! compaction and malformed values.

mod common;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use common::{Mirror, client, client_at, etcd_content, raw_content, wait_until};
use etcd_harness::{TcpProxy, TestEtcd};
use kvstore::{
    DecodeError, Event, InvalidReason, KeyPrefix, ListBudget, NumericIdentity, RawEntry,
    RestartableWatchStore, StoreValue, WatchStore, WatchStoreConfig, keys, values::IpIdentityPair,
};

fn config(prefix: &str) -> WatchStoreConfig {
    let mut c = WatchStoreConfig::new(KeyPrefix::new(prefix));
    c.page_size = 7;
    c.min_backoff = Duration::from_millis(20);
    c.max_backoff = Duration::from_millis(200);
    c
}

/// An etcd, a proxy in front of it that a test can cut, and a client of
/// each.
async fn etcd_behind_proxy() -> (TestEtcd, TcpProxy, kvstore::Client, kvstore::Client) {
    let etcd = TestEtcd::start().await.unwrap();
    let proxy = TcpProxy::start(format!("127.0.0.1:{}", etcd.client_port()).parse().unwrap())
        .await
        .unwrap();
    let direct = client(&etcd).await;
    let through_proxy = client_at(&proxy.url()).await;
    (etcd, proxy, direct, through_proxy)
}

#[tokio::test]
async fn lists_then_watches_in_order() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    for i in 0..40 {
        c.put(&format!("p/k{i:02}"), format!("v{i}")).await.unwrap();
    }
    let mirror = Mirror::<RawEntry>::watch(&c, config("p"));
    wait_until("synced", || async { mirror.synced() }).await;
    {
        let events = mirror.events.lock().unwrap();
        assert_eq!(events.len(), 41, "40 upserts then Synced");
        assert!(matches!(events[40], Event::Synced));
    }
    c.put("p/k00", "changed").await.unwrap();
    c.delete("p/k01").await.unwrap();
    c.put("p/new", "n").await.unwrap();
    wait_until("live changes arrive", || async {
        raw_content(&mirror) == etcd_content(&c, &KeyPrefix::new("p")).await
    })
    .await;
    let events = mirror.events.lock().unwrap().clone();
    assert_eq!(
        events.len(),
        44,
        "exactly one event per change: {:?}",
        &events[41..]
    );
    assert_eq!(events[42], Event::Delete { key: "k01".into() });
    assert_eq!(mirror.stats.entries(), 40);
    assert_eq!(mirror.duplicate_count(), 0);
}

#[tokio::test]
async fn lists_sharing_a_budget_too_small_to_read_ahead_deliver_every_key() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    // 60 values of 200 KB under each of two prefixes: after a first page
    // of 7 keys, pages of about 8 MiB, far more than the budget of 1 MiB.
    let value = "x".repeat(200 << 10);
    for prefix in ["a", "b"] {
        for i in 0..60 {
            c.put(&format!("{prefix}/k{i:02}"), value.clone())
                .await
                .unwrap();
        }
    }
    let budget = ListBudget::new(1 << 20);
    let mirrors: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|p| Mirror::<RawEntry>::watch(&c, config(p).with_list_budget(budget.clone())))
        .collect();
    for (prefix, mirror) in ["a", "b"].into_iter().zip(&mirrors) {
        wait_until("synced", || async { mirror.synced() }).await;
        assert_eq!(
            raw_content(mirror),
            etcd_content(&c, &KeyPrefix::new(prefix)).await
        );
        assert_eq!(
            mirror.events.lock().unwrap().len(),
            61,
            "60 upserts, Synced"
        );
        assert_eq!(mirror.duplicate_count(), 0);
    }
    assert_eq!(budget.available(), 1 << 20, "every page gave its room back");
}

#[tokio::test]
async fn prefix_c1_never_sees_c10() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    c.put("nodes/c1/a", "1").await.unwrap();
    c.put("nodes/c10/a", "10").await.unwrap();
    let mirror = Mirror::<RawEntry>::watch(&c, config("nodes/c1"));
    wait_until("synced", || async { mirror.synced() }).await;
    c.put("nodes/c10/b", "10").await.unwrap();
    c.put("nodes/c1/b", "1").await.unwrap();
    c.put("nodes/c1", "no slash").await.unwrap();
    wait_until("b arrives", || async {
        mirror.snapshot().contains_key("b")
    })
    .await;
    let keys: Vec<String> = mirror.snapshot().into_keys().collect();
    assert_eq!(keys, ["a", "b"]);
}

#[tokio::test]
async fn waits_for_the_canary() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    c.put("p/a", "1").await.unwrap();
    let mirror = Mirror::<RawEntry>::watch(&c, config("p").with_canary("cilium/synced/c1/p"));
    wait_until("the store waits for its canary", || async {
        mirror.stats.is_waiting_for_canary()
    })
    .await;
    assert_eq!(mirror.stats.lists(), 0);
    assert!(!mirror.synced());
    c.put("cilium/synced/c1/p", "2026-11-26T09:00:00Z")
        .await
        .unwrap();
    wait_until("synced after the canary", || async { mirror.synced() }).await;
    assert_eq!(mirror.snapshot().len(), 1);
}

#[tokio::test]
async fn survives_etcd_kill_and_restart_with_changes_in_between() {
    let (mut etcd, proxy, direct, through_proxy) = etcd_behind_proxy().await;
    for i in 0..50 {
        direct
            .put(&format!("p/k{i:02}"), format!("v{i}"))
            .await
            .unwrap();
    }
    let mirror = Mirror::<RawEntry>::watch(&through_proxy, config("p"));
    wait_until("synced", || async { mirror.synced() }).await;

    // The watcher stays cut off until the changes are done.
    proxy.cut();
    etcd.kill();
    etcd.restart().await.unwrap();
    for i in 0..10 {
        direct.delete(&format!("p/k{i:02}")).await.unwrap();
        direct
            .put(&format!("p/k{:02}", 10 + i), "updated")
            .await
            .unwrap();
        direct.put(&format!("p/new{i}"), "new").await.unwrap();
    }
    proxy.restore();

    let prefix = KeyPrefix::new("p");
    wait_until("the store converges to etcd's state", || async {
        raw_content(&mirror) == etcd_content(&direct, &prefix).await
    })
    .await;
    assert_eq!(
        mirror.stats.lists(),
        1,
        "resumed from its revision, no re-list"
    );
    assert!(mirror.stats.watch_starts() >= 2, "the watch was restarted");
    assert!(mirror.stats.errors() >= 1);
    assert_eq!(mirror.duplicate_count(), 0, "no event repeated");
    assert_eq!(mirror.snapshot().len(), 50);
}

#[tokio::test]
async fn a_retry_signal_cuts_the_backoff_short() {
    let (_etcd, proxy, direct, through_proxy) = etcd_behind_proxy().await;
    direct.put("r/before", "v").await.unwrap();
    // A backoff far beyond the test's deadline: only the signal can bring
    // the store back in time.
    let mut c = config("r");
    c.min_backoff = Duration::from_secs(600);
    c.max_backoff = Duration::from_secs(600);
    let signal = tokio::sync::watch::Sender::new(0u64);
    let mirror = Mirror::<RawEntry>::watch(&through_proxy, c.with_retry_signal(signal.subscribe()));
    wait_until("synced", || async { mirror.synced() }).await;

    proxy.cut();
    wait_until("the store noticed the cut", || async {
        mirror.stats.errors() >= 1
    })
    .await;
    direct.put("r/during", "v").await.unwrap();
    proxy.restore();
    signal.send_modify(|n| *n += 1);

    wait_until("the store is back and delivered the change", || async {
        mirror.snapshot().contains_key("during")
    })
    .await;
    assert!(mirror.stats.watch_starts() >= 2, "the watch was restarted");
}

#[tokio::test]
async fn relists_after_compaction_past_its_revision() {
    let (_etcd, proxy, direct, through_proxy) = etcd_behind_proxy().await;
    for i in 0..30 {
        direct
            .put(&format!("p/k{i:02}"), format!("v{i}"))
            .await
            .unwrap();
    }
    let mirror = Mirror::<RawEntry>::watch(&through_proxy, config("p"));
    wait_until("synced", || async { mirror.synced() }).await;

    proxy.cut();
    for i in 0..10 {
        direct.delete(&format!("p/k{i:02}")).await.unwrap();
        direct
            .put(&format!("p/k{:02}", 10 + i), "updated")
            .await
            .unwrap();
    }
    direct.put("p/new", "new").await.unwrap();
    let revision = direct.status().await.unwrap().revision;
    direct.compact(revision).await.unwrap();
    proxy.restore();

    let prefix = KeyPrefix::new("p");
    wait_until("the store converges after a re-list", || async {
        raw_content(&mirror) == etcd_content(&direct, &prefix).await
    })
    .await;
    assert_eq!(
        mirror.stats.lists(),
        2,
        "compaction forced exactly one re-list"
    );
    assert_eq!(
        mirror.duplicate_count(),
        0,
        "the re-list repeated no unchanged value"
    );
    let deletes = mirror
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, Event::Delete { .. }))
        .count();
    assert_eq!(deletes, 10, "the sweep reported each vanished key once");
    assert_eq!(
        mirror
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, Event::Synced))
            .count(),
        1
    );
}

#[tokio::test]
async fn a_thousand_malformed_values_do_not_stop_the_watch() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let prefix = keys::ipcache();
    let valid = |i: u32| {
        IpIdentityPair::host(
            format!("10.0.{}.{}", i / 250, i % 250 + 1).parse().unwrap(),
            NumericIdentity::new(65536 + 256 + i),
            None,
        )
    };
    for i in 0..50 {
        let v = valid(i);
        c.put(&prefix.key(&v.key()), v.encode()).await.unwrap();
    }
    for i in 0..500 {
        c.put(
            &prefix.key(&format!("10.9.{}.{}", i / 200, i % 200)),
            "{not json",
        )
        .await
        .unwrap();
    }
    let mirror = Mirror::<IpIdentityPair>::watch(&c, WatchStoreConfig::new(prefix.clone()));
    wait_until("synced", || async { mirror.synced() }).await;
    assert_eq!(mirror.snapshot().len(), 50);

    // 500 more while watching, interleaved with valid ones.
    for i in 500..1000 {
        c.put(
            &prefix.key(&format!("10.9.{}.{}", i / 200, i % 200)),
            r#"{"IP":"1.2.3.4","ID":7}"#,
        )
        .await
        .unwrap();
        if i % 10 == 0 {
            let v = valid(i);
            c.put(&prefix.key(&v.key()), v.encode()).await.unwrap();
        }
    }
    // The last write is an invalid one: wait for it to be seen too.
    wait_until(
        "every valid value arrives and every invalid one is counted",
        || async { mirror.snapshot().len() == 100 && mirror.stats.invalid() >= 1000 },
    )
    .await;
    assert_eq!(
        mirror.stats.invalid(),
        1000,
        "each invalid value counted once"
    );
    let by_reason = mirror.stats.invalid_by_reason();
    assert_eq!(by_reason.get(&InvalidReason::Malformed), Some(&500));
    assert_eq!(by_reason.get(&InvalidReason::KeyMismatch), Some(&500));

    // A valid entry overwritten with garbage is withdrawn, not kept stale.
    let v = valid(0);
    c.put(&prefix.key(&v.key()), "garbage").await.unwrap();
    wait_until("the entry is withdrawn", || async {
        !mirror.snapshot().contains_key(&v.key())
    })
    .await;
    assert_eq!(mirror.stats.invalid(), 1001);
}

/// Refuses the value `2` as out of range.
fn refuse_two() -> kvstore::Validator<RawEntry> {
    Arc::new(|key: &str, value: &RawEntry| {
        if value.value == b"2" {
            Err(DecodeError::new(
                "value",
                key,
                InvalidReason::IdentityOutOfRange,
                "two is out of range",
            ))
        } else {
            Ok(())
        }
    })
}

#[tokio::test]
async fn validator_refusals_are_counted() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    c.put("p/good", "1").await.unwrap();
    c.put("p/bad", "2").await.unwrap();
    let (store, rx) = WatchStore::<RawEntry>::new(c.clone(), config("p"));
    let store = store.with_validator(refuse_two());
    let mirror = Mirror::start(store, rx);
    wait_until("synced", || async { mirror.synced() }).await;
    let keys: Vec<String> = mirror.snapshot().into_keys().collect();
    assert_eq!(keys, ["good"]);
    assert_eq!(
        mirror.stats.invalid_by_reason(),
        BTreeMap::from([(InvalidReason::IdentityOutOfRange, 1)])
    );
}

#[tokio::test]
async fn expired_leases_become_deletes() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let lease = c.grant_lease(Duration::from_secs(2)).await.unwrap();
    c.put_leased("p/leased", "1", lease).await.unwrap();
    c.put("p/kept", "1").await.unwrap();
    let mirror = Mirror::<RawEntry>::watch(&c, config("p"));
    wait_until("synced", || async { mirror.synced() }).await;
    assert_eq!(mirror.snapshot().len(), 2);
    wait_until("the lease expires", || async {
        !mirror.snapshot().contains_key("leased")
    })
    .await;
    assert!(mirror.snapshot().contains_key("kept"));
}

#[tokio::test]
async fn stops_when_the_consumer_goes_away() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let (store, rx) = WatchStore::<RawEntry>::new(c.clone(), config("p"));
    drop(rx);
    c.put("p/a", "1").await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::time::timeout(Duration::from_secs(10), store.run(shutdown))
        .await
        .expect("the store stops on its own")
        .unwrap();
}

#[tokio::test]
async fn relists_when_etcd_lost_its_data() {
    let mut etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    for i in 0..20 {
        c.put(&format!("p/k{i:02}"), "old").await.unwrap();
    }
    let mirror = Mirror::<RawEntry>::watch(&c, config("p"));
    wait_until("synced", || async { mirror.synced() }).await;

    // A fresh etcd on the same address, holding fewer keys and at a lower
    // revision than the watcher has seen.
    etcd.wipe_and_restart().await.unwrap();
    c.put("p/k00", "old").await.unwrap();
    c.put("p/k01", "new").await.unwrap();
    c.put("p/fresh", "new").await.unwrap();

    let prefix = KeyPrefix::new("p");
    wait_until("the store converges to the new etcd", || async {
        raw_content(&mirror) == etcd_content(&c, &prefix).await
    })
    .await;
    assert!(mirror.stats.lists() >= 2, "data loss forced a re-list");
    assert_eq!(mirror.duplicate_count(), 0);
}

#[tokio::test]
async fn keeps_entries_lost_with_the_data_when_asked_until_a_watched_delete() {
    let mut etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    for i in 0..20 {
        c.put(&format!("p/k{i:02}"), "old").await.unwrap();
    }
    let mirror = Mirror::<RawEntry>::watch(&c, config("p").keeping_entries_on_data_loss());
    let mut losses = mirror.stats.data_losses();
    wait_until("synced", || async { mirror.synced() }).await;
    let before = raw_content(&mirror);
    assert_eq!(before.len(), 20);

    etcd.wipe_and_restart().await.unwrap();
    c.put("p/k01", "new").await.unwrap();
    c.put("p/fresh", "new").await.unwrap();
    tokio::time::timeout(common::DEADLINE, losses.wait_for(|n| *n == 1))
        .await
        .expect("the data loss is signalled")
        .unwrap();

    // Everything the lost data held stays; the new etcd's writes apply.
    let mut expected = before;
    expected.insert("k01".into(), b"new".to_vec());
    expected.insert("fresh".into(), b"new".to_vec());
    wait_until("kept entries plus the new etcd's writes", || async {
        raw_content(&mirror) == expected
    })
    .await;
    assert!(
        mirror.stats.kept_after_data_loss() >= 18,
        "k02..k19 were kept: {}",
        mirror.stats.kept_after_data_loss()
    );
    assert!(
        !mirror
            .events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Event::Delete { .. })),
        "no delete for what the data loss took"
    );

    // A watched delete still removes a kept entry (once re-created) and a
    // new one.
    c.put("p/k05", "again").await.unwrap();
    c.delete("p/k05").await.unwrap();
    c.delete("p/fresh").await.unwrap();
    expected.remove("k05");
    expected.remove("fresh");
    wait_until("watched deletes apply", || async {
        raw_content(&mirror) == expected
    })
    .await;
    assert_eq!(mirror.duplicate_count(), 0);
}

/// Runs one connection of a restartable store until its list is complete;
/// returns the store (for the next connection) and the events it sent.
async fn one_connection(
    mut store: RestartableWatchStore<RawEntry>,
    rx: &mut tokio::sync::mpsc::Receiver<Event<RawEntry>>,
    client: kvstore::Client,
) -> (RestartableWatchStore<RawEntry>, Vec<Event<RawEntry>>) {
    let token = tokio_util::sync::CancellationToken::new();
    let running = {
        let token = token.clone();
        tokio::spawn(async move {
            store.watch(&client, &token).await;
            store
        })
    };
    let mut events = Vec::new();
    tokio::time::timeout(common::DEADLINE, async {
        while let Some(event) = rx.recv().await {
            let done = event == Event::Synced;
            events.push(event);
            if done {
                break;
            }
        }
    })
    .await
    .expect("the list completes");
    token.cancel();
    (running.await.expect("store task"), events)
}

fn raw(key: &str, value: &str) -> Event<RawEntry> {
    Event::Upsert {
        key: key.into(),
        value: RawEntry {
            key: key.into(),
            value: value.as_bytes().to_vec(),
        },
    }
}

#[tokio::test]
async fn restartable_store_delivers_only_the_difference_on_reconnect() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    for key in ["a", "b", "c"] {
        c.put(&format!("p/{key}"), "1").await.unwrap();
    }
    let (store, mut rx) = RestartableWatchStore::<RawEntry>::new(config("p"));
    let (store, first) = one_connection(store, &mut rx, c.clone()).await;
    assert_eq!(
        first,
        [raw("a", "1"), raw("b", "1"), raw("c", "1"), Event::Synced]
    );

    // While disconnected: one changed, one deleted, one added, one kept.
    c.put("p/a", "2").await.unwrap();
    c.delete("p/b").await.unwrap();
    c.put("p/d", "1").await.unwrap();
    let reconnected = client_at(&etcd.endpoint()).await;
    let (mut store, second) = one_connection(store, &mut rx, reconnected).await;
    assert_eq!(
        second,
        [
            raw("a", "2"),
            raw("d", "1"),
            Event::Delete { key: "b".into() },
            Event::Synced
        ],
        "only the difference, stale keys deleted once the list is complete"
    );
    assert_eq!(store.stats().entries(), 3);

    // Drained: the consumer is told to forget everything, and the next
    // connection delivers everything again.
    store.drain().await;
    let mut drained = Vec::new();
    while let Ok(event) = rx.try_recv() {
        drained.push(event);
    }
    drained.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        drained,
        ["a", "c", "d"].map(|k| Event::Delete { key: k.into() })
    );
    assert_eq!(store.stats().entries(), 0);
    let (_, third) = one_connection(store, &mut rx, c.clone()).await;
    assert_eq!(
        third,
        [raw("a", "2"), raw("c", "1"), raw("d", "1"), Event::Synced]
    );
}

#[tokio::test]
async fn restartable_store_judges_every_value_again_with_a_new_validator() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    c.put("p/one", "1").await.unwrap();
    c.put("p/two", "2").await.unwrap();
    let (store, mut rx) = RestartableWatchStore::<RawEntry>::new(config("p"));
    let (mut store, first) = one_connection(store, &mut rx, c.clone()).await;
    assert_eq!(first.len(), 3, "both values, then Synced: {first:?}");
    store.set_validator(refuse_two());
    let (store, second) = one_connection(store, &mut rx, c.clone()).await;
    assert_eq!(
        second,
        [Event::Delete { key: "two".into() }, Event::Synced],
        "the unchanged value the new validator refuses is withdrawn"
    );
    assert_eq!(store.stats().invalid(), 1);
}

#[tokio::test]
async fn restartable_store_moved_to_another_prefix_delivers_only_the_difference() {
    // The same entries, once under the remote's own prefix and once under a
    // cache of it (as an agent switching to kvstoremesh reads them).
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    for (key, value) in [("state/n/c2/a", "1"), ("state/n/c2/b", "1")] {
        c.put(key, value).await.unwrap();
    }
    c.put("state/n/c3/x", "1").await.unwrap();
    for (key, value) in [
        ("cache/n/c2/a", "1"),
        ("cache/n/c2/b", "2"),
        ("cache/n/c2/c", "1"),
    ] {
        c.put(key, value).await.unwrap();
    }
    let config = kvstore::WatchStoreConfig::new(kvstore::KeyPrefix::new("state/n/c2"))
        .relative_to(kvstore::KeyPrefix::new("state/n"));
    let (store, mut rx) = RestartableWatchStore::<RawEntry>::new(config);
    let (mut store, first) = one_connection(store, &mut rx, c.clone()).await;
    assert_eq!(
        first,
        [raw("c2/a", "1"), raw("c2/b", "1"), Event::Synced],
        "keys relative to the shorter prefix, nothing of c3"
    );
    store.set_prefix(
        kvstore::KeyPrefix::new("cache/n/c2"),
        Some(kvstore::KeyPrefix::new("cache/n")),
    );
    let (_, second) = one_connection(store, &mut rx, c.clone()).await;
    assert_eq!(
        second,
        [raw("c2/b", "2"), raw("c2/c", "1"), Event::Synced],
        "the unchanged entry is not delivered again"
    );
}
