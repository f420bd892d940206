//! What the leader does, end to end through the operator: identity garbage
//! collection and the heartbeat.

mod common;

use std::{sync::Arc, time::Duration};

use common::{InProcess, MODE, client, cluster_id, config, metric, wait_for, wait_until};
use etcd_harness::TestEtcd;
use kvstore::{
    Allocator, AllocatorConfig, Client, ClusterId, IdentityCache, Label, Labels, NumericIdentity,
    Session, SessionHandle, StoreValue, keys, values::Timestamp,
};
use tokio_util::sync::CancellationToken;

fn labels(app: &str) -> Labels {
    [
        Label::k8s("app", app),
        Label::k8s(kvstore::CLUSTER_LABEL, "c5"),
        Label::k8s(kvstore::NAMESPACE_LABEL, "default"),
    ]
    .into_iter()
    .collect()
}

/// A node of the cluster: its own client, session, identity cache and allocator.
struct AgentNode {
    allocator: Arc<Allocator>,
    session: SessionHandle,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl AgentNode {
    async fn start(etcd: &TestEtcd, name: &str, cluster: ClusterId) -> Self {
        let c = client(etcd).await;
        let shutdown = CancellationToken::new();
        let (session, session_handle) = Session::new(c.clone(), Duration::from_secs(30));
        let (cache, cache_runner) = IdentityCache::local(c.clone());
        let (allocator, runner) = Allocator::new(
            c.clone(),
            session_handle.clone(),
            cache.clone(),
            AllocatorConfig::new(cluster, MODE, name),
        );
        let t = shutdown.clone();
        let tasks = vec![
            tokio::spawn({
                let t = t.clone();
                async move { session.run(t).await.unwrap() }
            }),
            tokio::spawn({
                let t = t.clone();
                async move { cache_runner.run(t).await.unwrap() }
            }),
            tokio::spawn(async move { runner.run(t).await.unwrap() }),
        ];
        cache.wait_synced().await;
        Self {
            allocator,
            session: session_handle,
            shutdown,
            tasks,
        }
    }

    async fn allocate(&self, app: &str) -> NumericIdentity {
        self.allocator.allocate(&labels(app)).await.unwrap().id
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            t.await.unwrap();
        }
    }
}

async fn master_exists(c: &Client, id: NumericIdentity) -> bool {
    c.get(&keys::identity_master(id)).await.unwrap().is_some()
}

async fn gc_rounds(op: &InProcess) -> f64 {
    metric(
        &op.metrics().await,
        "clustermesh_operator_identity_gc_rounds_total",
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_a_dead_nodes_identities_after_two_rounds_but_never_a_used_one() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let alive = AgentNode::start(&etcd, "10.0.0.1", cluster_id()).await;
    let doomed = AgentNode::start(&etcd, "10.0.0.2", cluster_id()).await;
    let shared = alive.allocate("shared").await;
    assert_eq!(doomed.allocate("shared").await, shared);
    let only_doomed = doomed.allocate("only-doomed").await;
    let only_alive = alive.allocate("only-alive").await;
    // An identity of another cluster's range in the same etcd: not ours to collect.
    let foreign_cluster = ClusterId::new(6, MODE).unwrap();
    let foreign = AgentNode::start(&etcd, "10.0.6.1", foreign_cluster).await;
    let foreign_id = foreign.allocate("foreign").await;
    let foreign_lease = foreign.session.current().lease.unwrap();
    foreign.stop().await;
    c.revoke_lease(foreign_lease).await.unwrap();

    let mut cfg = config(&etcd.endpoint(), "op-a");
    cfg.identity_gc_interval = Duration::from_millis(500);
    let op = InProcess::start(cfg).await;
    wait_until("the operator leads", || std::future::ready(op.is_leader())).await;
    wait_until("the operator counts three local identities", || async {
        metric(&op.metrics().await, "clustermesh_operator_identities") == Some(3.0)
    })
    .await;

    // The doomed node dies: its lease goes, and its slave keys with it.
    let lease = doomed.session.current().lease.unwrap();
    doomed.stop().await;
    c.revoke_lease(lease).await.unwrap();
    let rounds_at_death = gc_rounds(&op).await;
    // The first round that completes after the death can only mark it.
    let rounds = wait_for("a GC round after the death", || async {
        let r = gc_rounds(&op).await;
        (r > rounds_at_death).then_some(r)
    })
    .await;
    if rounds == rounds_at_death + 1.0 {
        assert!(
            master_exists(&c, only_doomed).await,
            "one round only marks an unused identity"
        );
    }
    wait_until("the dead node's identity is collected", || async {
        !master_exists(&c, only_doomed).await
    })
    .await;
    // A few more rounds: what a live node uses stays, and so does another
    // cluster's identity.
    let now = gc_rounds(&op).await;
    wait_until("three more GC rounds", || async {
        gc_rounds(&op).await >= now + 3.0
    })
    .await;
    for id in [shared, only_alive, foreign_id] {
        assert!(master_exists(&c, id).await, "identity {id} must survive");
    }
    let m = op.metrics().await;
    assert_eq!(
        metric(&m, "clustermesh_operator_identity_gc_deletions_total"),
        Some(1.0)
    );
    assert_eq!(metric(&m, "clustermesh_operator_identities"), Some(2.0));
    assert_eq!(
        metric(&m, "clustermesh_operator_identity_gc_failures_total"),
        Some(0.0)
    );
    // The live node can still use (and re-allocate) its identities.
    assert_eq!(alive.allocate("shared").await, shared);
    op.stop().await;
    alive.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_collects() {
    let etcd = TestEtcd::start().await.unwrap();
    let a = InProcess::start(config(&etcd.endpoint(), "op-a")).await;
    wait_until("a leads", || std::future::ready(a.is_leader())).await;
    let b = InProcess::start(config(&etcd.endpoint(), "op-b")).await;
    wait_until("b follows", || {
        std::future::ready(b.handle.leader().leader().as_deref() == Some("op-a"))
    })
    .await;
    let leader_rounds = gc_rounds(&a).await;
    wait_until("the leader runs two more rounds", || async {
        gc_rounds(&a).await >= leader_rounds + 2.0
    })
    .await;
    let m = b.metrics().await;
    assert_eq!(
        metric(&m, "clustermesh_operator_identity_gc_rounds_total"),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, "clustermesh_operator_heartbeat_writes_total"),
        Some(0.0)
    );
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_is_written_on_the_leaders_lease_and_refreshed() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let op = InProcess::start(config(&etcd.endpoint(), "op-a")).await;
    wait_until("the operator leads", || std::future::ready(op.is_leader())).await;
    let lease = op.handle.session().current().lease.unwrap();

    let first = wait_for("the heartbeat", || async {
        c.get(keys::HEARTBEAT).await.unwrap()
    })
    .await;
    assert_eq!(
        first.lease, lease.0,
        "the heartbeat lives on the session lease"
    );
    let t1 = Timestamp::decode(keys::HEARTBEAT, &first.value).expect("an RFC 3339 time");
    assert!(
        t1.age() < Duration::from_secs(5),
        "the heartbeat is current: {}",
        t1.to_rfc3339()
    );
    // Rewritten every interval (1 s here) with a later time.
    wait_until("the heartbeat is refreshed", || async {
        let kv = c.get(keys::HEARTBEAT).await.unwrap().unwrap();
        let t = Timestamp::decode(keys::HEARTBEAT, &kv.value).unwrap();
        kv.mod_revision > first.mod_revision && t > t1
    })
    .await;
    let writes = metric(
        &op.metrics().await,
        "clustermesh_operator_heartbeat_writes_total",
    )
    .unwrap();
    assert!(writes >= 2.0, "{writes} heartbeat writes");
    op.stop().await;
}
