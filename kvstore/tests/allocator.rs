//! The identity allocator and its garbage collector against a real etcd.

mod common;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use common::{client, wait_until};
use etcd_harness::TestEtcd;
use futures::StreamExt;
use kvstore::{
    Allocator, AllocatorConfig, AllocatorError, Client, ClusterId, ClusterName, IdentityCache,
    IdentityGc, IdentityGcConfig, IdentityRange, Label, Labels, MaxConnectedClusters,
    NumericIdentity, Session, SessionHandle, keys,
};
use rand::seq::SliceRandom;
use tokio_util::sync::CancellationToken;

const MODE: MaxConnectedClusters = MaxConnectedClusters::C255;

fn cluster(id: u32) -> ClusterId {
    ClusterId::new(id, MODE).unwrap()
}

fn labels(i: usize) -> Labels {
    [
        Label::k8s("app", format!("app-{i}")),
        Label::k8s(kvstore::CLUSTER_LABEL, "c5"),
        Label::k8s(kvstore::NAMESPACE_LABEL, "default"),
    ]
    .into_iter()
    .collect()
}

/// One node: its own client, session, identity cache and allocator.
struct Node {
    allocator: Arc<Allocator>,
    session: SessionHandle,
    cache: IdentityCache,
    client: Client,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Node {
    async fn start(
        etcd: &TestEtcd,
        name: &str,
        configure: impl FnOnce(&mut AllocatorConfig),
    ) -> Self {
        let client = client(etcd).await;
        let shutdown = CancellationToken::new();
        let (session, session_handle) = Session::new(client.clone(), Duration::from_secs(10));
        let (cache, cache_runner) = IdentityCache::local(client.clone());
        let mut config = AllocatorConfig::new(cluster(5), MODE, name);
        configure(&mut config);
        let (allocator, runner) = Allocator::new(
            client.clone(),
            session_handle.clone(),
            cache.clone(),
            config,
        );
        let tasks = vec![
            tokio::spawn({
                let t = shutdown.clone();
                async move { session.run(t).await.unwrap() }
            }),
            tokio::spawn({
                let t = shutdown.clone();
                async move { cache_runner.run(t).await.unwrap() }
            }),
            tokio::spawn({
                let t = shutdown.clone();
                async move { runner.run(t).await.unwrap() }
            }),
        ];
        cache.wait_synced().await;
        Self {
            allocator,
            session: session_handle,
            cache,
            client,
            shutdown,
            tasks,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            t.await.unwrap();
        }
    }
}

async fn slave_ids(c: &Client, l: &Labels) -> Vec<String> {
    let (kvs, _) = c
        .list(&keys::identity_slaves_of(&l.canonical()), 100)
        .await
        .unwrap();
    kvs.into_iter()
        .map(|kv| String::from_utf8(kv.value).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_nodes_agree_on_2000_label_sets() {
    let etcd = TestEtcd::start().await.unwrap();
    let mut nodes = Vec::new();
    for n in 0..8 {
        nodes.push(Node::start(&etcd, &format!("10.0.0.{n}"), |_| {}).await);
    }
    let sets: Vec<Labels> = (0..2000).map(labels).collect();
    let results = futures::future::join_all(nodes.iter().enumerate().map(|(n, node)| {
        let mut order: Vec<usize> = (0..sets.len()).collect();
        order.shuffle(&mut rand::rng());
        let sets = &sets;
        async move {
            let ids: BTreeMap<usize, NumericIdentity> = futures::stream::iter(order)
                .map(|i| async move {
                    (
                        i,
                        node.allocator
                            .allocate(&sets[i])
                            .await
                            .unwrap_or_else(|e| panic!("node {n}: {e}"))
                            .id,
                    )
                })
                .buffer_unordered(32)
                .collect()
                .await;
            ids
        }
    }))
    .await;

    let first = &results[0];
    for (n, r) in results.iter().enumerate() {
        assert_eq!(r, first, "node {n} disagrees");
    }
    let distinct: std::collections::BTreeSet<_> = first.values().collect();
    assert_eq!(distinct.len(), 2000, "different labels, different IDs");
    let range = IdentityRange::allocation(cluster(5), MODE);
    assert!(
        first.values().all(|id| range.contains(*id)),
        "all in cluster 5's range {range}"
    );
    let c = &nodes[0].client;
    assert_eq!(
        c.count(&keys::identity_masters()).await.unwrap(),
        2000,
        "exactly one master per label set"
    );
    assert_eq!(c.count(&keys::identity_slaves()).await.unwrap(), 16_000);
    let created: u64 = nodes
        .iter()
        .map(|n| {
            n.allocator
                .stats()
                .created
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    assert_eq!(created, 2000);
    for i in [0, 999, 1999] {
        let ids = slave_ids(c, &sets[i]).await;
        assert_eq!(ids.len(), 8);
        assert!(ids.iter().all(|id| *id == first[&i].to_string()));
    }
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test]
async fn refcounts_and_release() {
    let etcd = TestEtcd::start().await.unwrap();
    let node = Node::start(&etcd, "n1", |_| {}).await;
    let l = labels(1);
    let a = node.allocator.allocate(&l).await.unwrap();
    assert!(a.created && !a.cached);
    let b = node.allocator.allocate(&l).await.unwrap();
    assert_eq!(b.id, a.id);
    assert!(b.cached, "second reference is local");
    assert!(
        !node.allocator.release(&l).await.unwrap(),
        "one reference left"
    );
    assert_eq!(slave_ids(&node.client, &l).await.len(), 1);
    assert!(node.allocator.release(&l).await.unwrap(), "last reference");
    assert!(
        slave_ids(&node.client, &l).await.is_empty(),
        "slave key deleted"
    );
    assert!(
        node.client
            .get(&keys::identity_master(a.id))
            .await
            .unwrap()
            .is_some(),
        "agents never delete masters"
    );

    // Allocating again revives the same identity while its master exists.
    wait_until("cache has the master", || async {
        node.cache.contains(a.id)
    })
    .await;
    let c = node.allocator.allocate(&l).await.unwrap();
    assert_eq!(c.id, a.id);
    assert!(!c.created);
    assert!(matches!(
        node.allocator.allocate(&Labels::new()).await,
        Err(AllocatorError::EmptyLabels)
    ));
    node.stop().await;
}

#[tokio::test]
async fn exhausting_the_range_is_a_clear_error() {
    let etcd = TestEtcd::start().await.unwrap();
    let base = 5 << 16 | 1000;
    let node = Node::start(&etcd, "n1", |c| {
        c.range = Some(IdentityRange {
            min: base,
            max: base + 4,
        })
    })
    .await;
    for i in 0..5 {
        let id = node.allocator.allocate(&labels(i)).await.unwrap().id;
        assert!((base..=base + 4).contains(&id.get()));
    }
    wait_until("cache knows all five", || async { node.cache.len() == 5 }).await;
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        node.allocator.allocate(&labels(99)),
    )
    .await
    .expect("exhaustion does not hang")
    .unwrap_err();
    assert!(matches!(err, AllocatorError::Exhausted { .. }), "{err}");
    assert!(err.to_string().contains("exhausted"), "{err}");
    node.stop().await;
}

#[tokio::test]
async fn node_death_then_gc_after_two_rounds_but_never_a_used_identity() {
    let etcd = TestEtcd::start().await.unwrap();
    let alive = Node::start(&etcd, "alive", |_| {}).await;
    let doomed = Node::start(&etcd, "doomed", |_| {}).await;
    let shared = labels(1);
    let only_doomed = labels(2);
    let id_shared = alive.allocator.allocate(&shared).await.unwrap().id;
    assert_eq!(
        doomed.allocator.allocate(&shared).await.unwrap().id,
        id_shared
    );
    let id_only = doomed.allocator.allocate(&only_doomed).await.unwrap().id;

    // The doomed node dies: its lease goes, and with it its slave keys.
    let lease = doomed.session.current().lease.unwrap();
    doomed.stop().await;
    alive.client.revoke_lease(lease).await.unwrap();
    assert!(slave_ids(&alive.client, &only_doomed).await.is_empty());
    assert_eq!(slave_ids(&alive.client, &shared).await.len(), 1);

    let mut gc = IdentityGc::new(
        alive.client.clone(),
        IdentityGcConfig::new(IdentityRange::allocation(cluster(5), MODE)),
    );
    let r1 = gc.run_round().await.unwrap();
    assert_eq!(
        (r1.masters, r1.in_use, r1.marked, r1.deleted),
        (2, 1, 1, 0),
        "round 1 only marks"
    );
    let r2 = gc.run_round().await.unwrap();
    assert_eq!(r2.deleted, 1, "round 2 deletes the unused master");
    assert!(
        alive
            .client
            .get(&keys::identity_master(id_only))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        alive
            .client
            .get(&keys::identity_master(id_shared))
            .await
            .unwrap()
            .is_some(),
        "a used identity survives"
    );
    let r3 = gc.run_round().await.unwrap();
    assert_eq!((r3.masters, r3.in_use, r3.deleted), (1, 1, 0));
    alive.stop().await;
}

#[tokio::test]
async fn gc_never_deletes_an_identity_revived_between_rounds() {
    let etcd = TestEtcd::start().await.unwrap();
    let node = Node::start(&etcd, "n1", |_| {}).await;
    let l = labels(7);
    let id = node.allocator.allocate(&l).await.unwrap().id;
    node.allocator.release(&l).await.unwrap();
    let mut gc = IdentityGc::new(
        node.client.clone(),
        IdentityGcConfig::new(IdentityRange::allocation(cluster(5), MODE)),
    );
    assert_eq!(gc.run_round().await.unwrap().marked, 1);
    // Revived after the mark: the master is unchanged, but a slave exists now.
    assert_eq!(node.allocator.allocate(&l).await.unwrap().id, id);
    let r = gc.run_round().await.unwrap();
    assert_eq!(r.deleted, 0);
    assert!(
        node.client
            .get(&keys::identity_master(id))
            .await
            .unwrap()
            .is_some()
    );
    node.stop().await;
}

#[tokio::test]
async fn gc_leaves_other_clusters_ranges_alone_and_cleans_stale_locks() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let foreign = NumericIdentity::new(7 << 16 | 300);
    c.put(&keys::identity_master(foreign), labels(1).canonical())
        .await
        .unwrap();
    c.put(&keys::identity_locks().key("k8s:app=x;/694d7b4c"), "")
        .await
        .unwrap();
    let mut gc = IdentityGc::new(
        c.clone(),
        IdentityGcConfig::new(IdentityRange::allocation(cluster(5), MODE)),
    );
    let r1 = gc.run_round().await.unwrap();
    assert_eq!((r1.out_of_range, r1.locks_deleted), (1, 0));
    let r2 = gc.run_round().await.unwrap();
    assert_eq!((r2.deleted, r2.locks_deleted), (0, 1));
    assert!(
        c.get(&keys::identity_master(foreign))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn lost_session_and_deleted_master_are_repaired() {
    let etcd = TestEtcd::start().await.unwrap();
    let node = Node::start(&etcd, "n1", |c| {
        c.resync_interval = Duration::from_millis(300)
    })
    .await;
    let l = labels(3);
    let id = node.allocator.allocate(&l).await.unwrap().id;

    let first = node.session.current();
    node.client
        .revoke_lease(first.lease.unwrap())
        .await
        .unwrap();
    wait_until("slave re-created on a new lease", || async {
        let current = node.session.current();
        match (
            current.lease,
            node.client
                .get(&keys::identity_slaves_of(&l.canonical()).key("n1"))
                .await
                .unwrap(),
        ) {
            (Some(lease), Some(kv)) => current.generation > first.generation && kv.lease == lease.0,
            _ => false,
        }
    })
    .await;

    node.client
        .delete(&keys::identity_master(id))
        .await
        .unwrap();
    wait_until("master restored", || async {
        node.client
            .get(&keys::identity_master(id))
            .await
            .unwrap()
            .is_some_and(|kv| kv.value == l.canonical().as_bytes())
    })
    .await;
    assert_eq!(node.allocator.held(&l), Some(id), "same identity kept");
    node.stop().await;
}

#[tokio::test]
async fn a_wiped_etcd_gets_the_same_identities_back_before_the_gate_opens() {
    let mut etcd = TestEtcd::start().await.unwrap();
    let node = Node::start(&etcd, "n1", |_| {}).await;
    let held: Vec<(Labels, NumericIdentity)> = {
        let mut v = Vec::new();
        for i in 0..5 {
            let l = labels(i);
            let id = node.allocator.allocate(&l).await.unwrap().id;
            v.push((l, id));
        }
        v
    };
    let restored = node.allocator.restored();
    let first = node.session.current().generation;
    assert_eq!(*restored.borrow(), first);

    // The etcd loses everything: masters, slaves and the lease.
    etcd.wipe_and_restart().await.unwrap();
    let mut restored = node.allocator.restored();
    tokio::time::timeout(common::DEADLINE, restored.wait_for(|g| *g > first))
        .await
        .expect("the restore completes in time")
        .unwrap();
    // When the gate opens, every identity exists again with the same ID.
    let c = client(&etcd).await;
    for (l, id) in &held {
        let master = c.get(&keys::identity_master(*id)).await.unwrap();
        assert_eq!(
            master.map(|kv| kv.value),
            Some(l.canonical().into_bytes()),
            "{id} is back with its labels"
        );
        assert_eq!(node.allocator.held(l), Some(*id), "same identity kept");
        assert_eq!(slave_ids(&c, l).await, vec![id.to_string()]);
    }
    node.stop().await;
}

#[tokio::test]
async fn remote_cache_accepts_only_valid_identities() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let c3 = ClusterName::new("c3").unwrap();
    let with_cluster = |cluster: &str| -> String {
        [
            Label::k8s("app", "x"),
            Label::k8s(kvstore::CLUSTER_LABEL, cluster),
        ]
        .into_iter()
        .collect::<Labels>()
        .canonical()
    };
    c.put(
        &keys::identity_master(NumericIdentity::new(3 << 16 | 300)),
        with_cluster("c3"),
    )
    .await
    .unwrap();
    c.put(
        &keys::identity_master(NumericIdentity::new(4 << 16 | 300)),
        with_cluster("c3"),
    )
    .await
    .unwrap();
    c.put(
        &keys::identity_master(NumericIdentity::new(3 << 16 | 301)),
        with_cluster("c4"),
    )
    .await
    .unwrap();
    c.put(
        &keys::identity_master(NumericIdentity::new(3 << 16 | 302)),
        "not;labels=;;=",
    )
    .await
    .unwrap();
    c.put(
        &keys::canary(&c3, keys::IDENTITIES_STORE),
        "2026-11-26T09:00:00Z",
    )
    .await
    .unwrap();

    let (cache, runner) = IdentityCache::remote(c.clone(), &c3, cluster(3), MODE);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(shutdown.clone()));
    cache.wait_synced().await;
    assert_eq!(cache.len(), 1);
    assert!(cache.contains(NumericIdentity::new(3 << 16 | 300)));
    assert_eq!(cache.stats().invalid(), 3);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
