//! Session and SyncStore against a real etcd: keys on the session lease,
//! canaries, re-creation after loss and after deletes behind its back.

mod common;

use std::time::Duration;

use common::{client, wait_until};
use etcd_harness::TestEtcd;
use kvstore::{
    Client, ClusterName, KeyPrefix, NumericIdentity, Session, SessionHandle, StoreValue, SyncStore,
    SyncStoreConfig, keys, values::IpIdentityPair,
};
use tokio_util::sync::CancellationToken;

fn entry(i: u8) -> IpIdentityPair {
    IpIdentityPair::host(
        format!("10.1.0.{i}").parse().unwrap(),
        NumericIdentity::new(65536 + 300 + i as u32),
        Some("192.168.0.1".parse().unwrap()),
    )
}

struct Running {
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            t.await.unwrap();
        }
    }
}

fn start_session(
    c: &Client,
    ttl: Duration,
    revoke: bool,
    shutdown: &CancellationToken,
) -> (SessionHandle, tokio::task::JoinHandle<()>) {
    let (session, handle) = Session::new(c.clone(), ttl);
    let session = session.revoke_on_shutdown(revoke);
    let token = shutdown.clone();
    (
        handle,
        tokio::spawn(async move { session.run(token).await.unwrap() }),
    )
}

fn start_store(
    c: &Client,
    ttl: Duration,
    canary: Option<String>,
) -> (SyncStore<IpIdentityPair>, SessionHandle, Running) {
    let shutdown = CancellationToken::new();
    let (handle, session_task) = start_session(c, ttl, false, &shutdown);
    let mut config = SyncStoreConfig::new(keys::ipcache());
    config.canary = canary;
    let (store, runner) = SyncStore::new(c.clone(), handle.clone(), config);
    let token = shutdown.clone();
    let runner_task = tokio::spawn(async move { runner.run(token).await.unwrap() });
    (
        store,
        handle,
        Running {
            shutdown,
            tasks: vec![session_task, runner_task],
        },
    )
}

async fn stored(c: &Client, e: &IpIdentityPair) -> Option<IpIdentityPair> {
    let kv = c.get(&keys::ipcache().key(&e.key())).await.unwrap()?;
    Some(IpIdentityPair::decode(&e.key(), &kv.value).unwrap())
}

#[tokio::test]
async fn writes_on_the_session_lease_and_sets_the_canary_after_the_initial_set() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let c1 = ClusterName::new("c1").unwrap();
    let canary = keys::canary(&c1, keys::IPCACHE_STORE);
    let (store, session, running) = start_store(&c, Duration::from_secs(30), Some(canary.clone()));

    for i in 1..=20 {
        store.upsert(&entry(i));
    }
    assert!(store.flushed().await);
    assert!(
        c.get(&canary).await.unwrap().is_none(),
        "no canary before synced()"
    );
    store.synced();
    assert!(store.flushed().await);
    let canary_kv = c.get(&canary).await.unwrap().expect("canary written");
    assert!(kvstore::values::Timestamp::decode("", &canary_kv.value).is_ok());
    assert_eq!(c.count(&keys::ipcache()).await.unwrap(), 20);

    let lease = session.current().lease.unwrap();
    let kv = c
        .get(&keys::ipcache().key(&entry(1).key()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kv.lease, lease.0, "keys carry the session lease");
    assert_eq!(canary_kv.lease, lease.0);

    // Updates and deletes.
    let mut changed = entry(2);
    changed.id = NumericIdentity::new(65536 + 999);
    store.upsert(&changed);
    store.delete(&entry(3).key());
    assert!(store.flushed().await);
    assert_eq!(stored(&c, &changed).await.unwrap().id, changed.id);
    assert!(stored(&c, &entry(3)).await.is_none());
    assert_eq!(store.status().keys, 19);

    // An unchanged upsert writes nothing.
    let revision = c.status().await.unwrap().revision;
    store.upsert(&changed);
    assert!(store.flushed().await);
    assert_eq!(c.status().await.unwrap().revision, revision);
    running.stop().await;
}

#[tokio::test]
async fn rewrites_keys_deleted_or_changed_behind_its_back() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let (store, _session, running) = start_store(&c, Duration::from_secs(30), None);
    store.upsert(&entry(1));
    store.upsert(&entry(2));
    assert!(store.flushed().await);

    c.delete(&keys::ipcache().key(&entry(1).key()))
        .await
        .unwrap();
    let mut tampered = entry(2);
    tampered.id = NumericIdentity::new(2);
    c.put(&keys::ipcache().key(&tampered.key()), tampered.encode())
        .await
        .unwrap();
    // A key someone else owns under the same prefix is left alone.
    c.put(&keys::ipcache().key(&entry(9).key()), entry(9).encode())
        .await
        .unwrap();

    wait_until("deleted key re-created", || async {
        stored(&c, &entry(1)).await.is_some()
    })
    .await;
    wait_until("changed key restored", || async {
        stored(&c, &entry(2)).await == Some(entry(2))
    })
    .await;
    assert_eq!(stored(&c, &entry(9)).await, Some(entry(9)));
    running.stop().await;
}

#[tokio::test]
async fn session_loss_is_detected_and_keys_are_recreated_on_a_new_lease() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let c1 = ClusterName::new("c1").unwrap();
    let canary = keys::canary(&c1, keys::IPCACHE_STORE);
    let (store, session, running) = start_store(&c, Duration::from_secs(3), Some(canary.clone()));
    store.upsert(&entry(1));
    store.synced();
    assert!(store.flushed().await);
    let first = session.current();

    // The lease is lost (as if it had expired while etcd was unreachable).
    c.revoke_lease(first.lease.unwrap()).await.unwrap();
    // Revoking deleted the key; the store may have put it back already (a
    // write on the revoked lease makes the session check it at once).
    assert!(
        c.get(&keys::ipcache().key(&entry(1).key()))
            .await
            .unwrap()
            .is_none_or(|kv| Some(kv.lease) != first.lease.map(|l| l.0)),
        "not on the revoked lease"
    );

    wait_until("a new lease replaces the lost one", || async {
        session.current().generation > first.generation && session.current().lease.is_some()
    })
    .await;
    let second = session.current().lease.unwrap();
    assert_ne!(Some(second), first.lease);
    wait_until("keys re-created on the new lease", || async {
        c.get(&keys::ipcache().key(&entry(1).key()))
            .await
            .unwrap()
            .is_some_and(|kv| kv.lease == second.0)
    })
    .await;
    wait_until("canary re-created", || async {
        c.get(&canary)
            .await
            .unwrap()
            .is_some_and(|kv| kv.lease == second.0)
    })
    .await;
    running.stop().await;
}

#[tokio::test]
async fn session_keeps_its_lease_alive_across_an_etcd_restart() {
    let mut etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let shutdown = CancellationToken::new();
    let (session, task) = start_session(&c, Duration::from_secs(3), true, &shutdown);
    let lease = session.lease().await;
    c.put_leased("k", "v", lease).await.unwrap();

    etcd.kill();
    etcd.restart().await.unwrap();
    // The client reconnects to the restarted etcd; from then on every read
    // must answer and find the key (an error is a failure, not a pass).
    wait_until("the client reads from the restarted etcd", || async {
        c.get("k").await.is_ok()
    })
    .await;
    // Outlive the TTL several times: the keep-alive must carry the lease.
    let until = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < until {
        let kv = c.get("k").await.expect("the restarted etcd answers");
        assert!(kv.is_some(), "leased key vanished");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        session.current().lease,
        Some(lease),
        "same lease, never lost"
    );

    // revoke_on_shutdown removes the keys at once.
    shutdown.cancel();
    task.await.unwrap();
    assert!(c.get("k").await.unwrap().is_none());
    let _ = KeyPrefix::new("unused");
}

#[tokio::test]
async fn a_wiped_etcd_gets_the_keys_back_on_a_new_lease_long_before_the_ttl() {
    let mut etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    // Keep-alives every 200 s: only a fast detection re-creates the keys
    // within the deadline.
    let (store, session, running) = start_store(&c, Duration::from_secs(600), None);
    store.upsert(&entry(1));
    assert!(store.flushed().await);
    let first = session.current();
    assert!(stored(&c, &entry(1)).await.is_some());

    etcd.wipe_and_restart().await.unwrap();
    let c = client(&etcd).await;
    wait_until(
        "a new lease replaces the one the wiped etcd forgot",
        || async {
            session.current().generation > first.generation && session.current().lease.is_some()
        },
    )
    .await;
    let second = session.current().lease.unwrap();
    wait_until("the key is back on the new lease", || async {
        c.get(&keys::ipcache().key(&entry(1).key()))
            .await
            .ok()
            .flatten()
            .is_some_and(|kv| kv.lease == second.0)
    })
    .await;
    running.stop().await;
}

#[tokio::test]
async fn gated_keys_wait_for_the_gate_on_every_new_lease() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let shutdown = CancellationToken::new();
    let (session, session_task) = start_session(&c, Duration::from_secs(5), false, &shutdown);
    let (gate, gate_rx) = tokio::sync::watch::channel(0u64);
    let (store, runner) = SyncStore::<IpIdentityPair>::new(
        c.clone(),
        session.clone(),
        SyncStoreConfig::new(keys::ipcache()).after(gate_rx),
    );
    let runner_task = tokio::spawn({
        let token = shutdown.clone();
        async move { runner.run(token).await.unwrap() }
    });
    let first = session.lease().await;
    store.upsert(&entry(1));
    // Shown first: the same write goes through once the gate is open.
    let (control, control_runner) = SyncStore::<IpIdentityPair>::new(
        c.clone(),
        session.clone(),
        SyncStoreConfig::new(keys::ipcache()),
    );
    let control_task = tokio::spawn({
        let token = shutdown.clone();
        async move { control_runner.run(token).await.unwrap() }
    });
    control.upsert(&entry(2));
    assert!(control.flushed().await);
    assert!(stored(&c, &entry(2)).await.is_some(), "ungated: written");
    assert!(
        stored(&c, &entry(1)).await.is_none(),
        "gated: not written while the gate is below the lease's generation"
    );
    gate.send_replace(session.current().generation);
    assert!(store.flushed().await);
    assert!(stored(&c, &entry(1)).await.is_some());

    // A lost lease: the gated key comes back only after the gate follows.
    c.revoke_lease(first).await.unwrap();
    wait_until("a new lease", || async {
        session.current().lease.is_some_and(|l| l != first)
    })
    .await;
    wait_until("the ungated key is back", || async {
        stored(&c, &entry(2)).await.is_some()
    })
    .await;
    assert!(
        stored(&c, &entry(1)).await.is_none(),
        "the gated key waits for the gate"
    );
    gate.send_replace(session.current().generation);
    wait_until("the gated key is back", || async {
        stored(&c, &entry(1)).await.is_some()
    })
    .await;
    shutdown.cancel();
    for t in [session_task, runner_task, control_task] {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn an_exclusive_store_sweeps_what_it_does_not_own_before_its_canary() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let c2 = ClusterName::new("c2").unwrap();
    let prefix = keys::cache_of("ip", &c2);
    let canary = keys::canary(&c2, "cilium/cache/ip/v1");
    // What an earlier run left: two keys the new run still has, one it
    // does not, and a key beside the prefix that is not the store's.
    for i in 1..=3 {
        c.put(&prefix.key(&entry(i).key()), entry(i).encode())
            .await
            .unwrap();
    }
    let beside = keys::cache_of("ip", &ClusterName::new("c3").unwrap()).key("10.9.0.1");
    c.put(&beside, b"x".to_vec()).await.unwrap();

    let shutdown = CancellationToken::new();
    let (handle, session_task) = start_session(&c, Duration::from_secs(30), false, &shutdown);
    let config = SyncStoreConfig::new(prefix.clone())
        .with_canary(canary.clone())
        .exclusive();
    let (store, runner) = SyncStore::<IpIdentityPair>::new(c.clone(), handle, config);
    let token = shutdown.clone();
    let runner_task = tokio::spawn(async move { runner.run(token).await.unwrap() });
    let running = Running {
        shutdown,
        tasks: vec![session_task, runner_task],
    };

    store.upsert(&entry(1));
    store.upsert(&entry(2));
    assert!(store.flushed().await);
    assert!(
        c.get(&prefix.key(&entry(3).key())).await.unwrap().is_some(),
        "nothing is swept before the initial set is complete"
    );
    store.synced();
    wait_until("the canary", || async {
        c.get(&canary).await.unwrap().is_some()
    })
    .await;
    assert!(
        c.get(&prefix.key(&entry(3).key())).await.unwrap().is_none(),
        "the stale key is gone once the canary is there"
    );
    assert_eq!(c.count(&prefix).await.unwrap(), 2);
    assert!(
        c.get(&beside).await.unwrap().is_some(),
        "outside the prefix"
    );

    // A key that appears later is not the store's either.
    let intruder = prefix.key(&entry(7).key());
    c.put(&intruder, entry(7).encode()).await.unwrap();
    wait_until("the intruder is deleted", || async {
        c.get(&intruder).await.unwrap().is_none()
    })
    .await;
    // Its own keys are kept (and upserted ones are not swept).
    store.upsert(&entry(3));
    assert!(store.flushed().await);
    assert_eq!(c.count(&prefix).await.unwrap(), 3);
    running.stop().await;
}
