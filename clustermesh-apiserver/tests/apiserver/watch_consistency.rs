//! A watch through the apiserver delivers exactly the events of a direct etcd
//! watch, across an etcd restart, and the apiserver hides the restart.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use etcd_client::{Txn, TxnOp};
use etcd_harness::TestEtcd;

use crate::support::{SeenEvent, TestApiserver, current_revision, direct_client, watch_until};

/// Applies `op` until etcd accepts it (it may be restarting) and returns
/// the revision it produced.
async fn write(client: &mut etcd_client::Client, op: &Op) -> i64 {
    for _ in 0..400 {
        let result = match op {
            Op::Put(k, v) => client
                .put(k.as_str(), v.as_str(), None)
                .await
                .map(|r| r.header().unwrap().revision()),
            Op::Delete(k) => client
                .delete(k.as_str(), None)
                .await
                .map(|r| r.header().unwrap().revision()),
            Op::Pair(a, b) => client
                .txn(Txn::new().and_then([
                    TxnOp::put(a.as_str(), "pair", None),
                    TxnOp::put(b.as_str(), "pair", None),
                ]))
                .await
                .map(|r| r.header().unwrap().revision()),
        };
        match result {
            Ok(revision) => return revision,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("etcd did not accept {op:?}");
}

#[derive(Debug)]
enum Op {
    Put(String, String),
    Delete(String),
    /// Two keys in one transaction: two events with one revision.
    Pair(String, String),
}

fn ops(round: usize) -> Vec<Op> {
    let mut ops = Vec::new();
    for i in 0..30 {
        let key = format!("cilium/state/ip/v1/default/10.0.{round}.{}", i % 7);
        ops.push(Op::Put(key.clone(), format!("r{round}-{i}")));
        if i % 5 == 4 {
            ops.push(Op::Delete(key));
        }
        if i % 10 == 0 {
            ops.push(Op::Pair(
                format!("cilium/state/nodes/v1/c1/n{round}-{i}"),
                format!("cilium/state/nodes/v1/c1/m{round}-{i}"),
            ));
        }
        // Outside the watched prefix: must not show up anywhere.
        ops.push(Op::Put(format!("cilium/policies/v1/p{i}"), "x".into()));
    }
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_watch_matches_direct_watch_across_etcd_restart() {
    let mut etcd = TestEtcd::start().await.unwrap();
    let api = TestApiserver::start(&etcd).await;
    let start = current_revision(&etcd).await + 1;
    let last = Arc::new(AtomicI64::new(0));
    let until = |last: Arc<AtomicI64>| move || Some(last.load(Ordering::SeqCst)).filter(|r| *r > 0);

    let direct = tokio::spawn(watch_until(
        direct_client(&etcd).await,
        "cilium/state/",
        start,
        until(last.clone()),
    ));
    let proxied = tokio::spawn(watch_until(
        api.etcd_client("remote-c2").await,
        "cilium/state/",
        start,
        until(last.clone()),
    ));

    let mut writer = direct_client(&etcd).await;
    for op in ops(1) {
        write(&mut writer, &op).await;
    }
    etcd.kill();
    etcd.restart().await.unwrap();
    for op in ops(2) {
        write(&mut writer, &op).await;
    }
    // End with a write inside the prefix, the revision both watches wait for.
    let final_revision = write(
        &mut writer,
        &Op::Put("cilium/state/ip/v1/default/10.9.9.9".into(), "last".into()),
    )
    .await;
    last.store(final_revision, Ordering::SeqCst);

    let (direct, direct_breaks) = direct.await.unwrap().unwrap();
    let (proxied, proxied_breaks) = proxied.await.unwrap().unwrap();
    assert!(direct_breaks >= 1, "the direct watch saw etcd restart");
    assert_eq!(
        proxied_breaks, 0,
        "the apiserver resumed its upstream watch invisibly"
    );
    assert_eq!(proxied.len(), direct.len());
    for (i, (p, d)) in proxied.iter().zip(&direct).enumerate() {
        assert_eq!(p, d, "event {i} differs");
    }
    assert_no_gap_no_duplicate(&direct);
    assert!(direct.iter().all(|e| e.key.starts_with("cilium/state/")));
    assert!(direct.iter().any(|e| e.kind == "DELETE"));
    assert!(
        api.metric("clustermesh_apiserver_upstream_watch_restarts_total", "")
            .await
            >= 1.0
    );
    assert_eq!(direct.last().unwrap().mod_revision, final_revision);
}

fn assert_no_gap_no_duplicate(events: &[SeenEvent]) {
    for pair in events.windows(2) {
        assert!(
            pair[0].mod_revision < pair[1].mod_revision
                || (pair[0].mod_revision == pair[1].mod_revision && pair[0].key != pair[1].key),
            "events out of order or repeated: {pair:?}"
        );
    }
}
