//! Leader election of in-process operators (each with its own etcd client)
//! against a real etcd: one leader at a time, hand-over on stop, crash, lost
//! lease and partition.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::{InProcess, TTL, client, config, metric, wait_until};
use etcd_harness::{TcpProxy, TestEtcd};
use kvstore::{Client, keys};
use operator::OperatorHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Polls the operators' leader flags every millisecond and counts the
/// moments when more than one says it leads.
struct Monitor {
    overlaps: Arc<AtomicUsize>,
    samples: Arc<AtomicUsize>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    fn start(handles: Vec<OperatorHandle>) -> Self {
        let overlaps = Arc::new(AtomicUsize::new(0));
        let samples = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (overlaps, samples, stop) = (overlaps.clone(), samples.clone(), stop.clone());
            async move {
                while !stop.is_cancelled() {
                    let leaders = handles.iter().filter(|h| h.is_leader()).count();
                    if leaders > 1 {
                        overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    samples.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        Self {
            overlaps,
            samples,
            stop,
            task,
        }
    }

    async fn assert_never_two_leaders(self) {
        self.stop.cancel();
        self.task.await.unwrap();
        let samples = self.samples.load(Ordering::SeqCst);
        assert!(samples >= 10, "the monitor ran ({samples} samples)");
        assert_eq!(
            self.overlaps.load(Ordering::SeqCst),
            0,
            "two operators said they lead at the same time"
        );
    }
}

/// The leader key's value (the leader's ID) and lease.
async fn leader_key(c: &Client) -> Option<(String, i64)> {
    c.get(keys::OPERATOR_LEADER)
        .await
        .unwrap()
        .map(|kv| (String::from_utf8(kv.value).unwrap(), kv.lease))
}

async fn one_leader(a: InProcess, b: InProcess) -> (InProcess, InProcess) {
    wait_until("one operator leads", || {
        std::future::ready(a.is_leader() || b.is_leader())
    })
    .await;
    if a.is_leader() { (a, b) } else { (b, a) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_leader_and_a_graceful_hand_over() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let a = InProcess::start(config(&etcd.endpoint(), "op-a")).await;
    let b = InProcess::start(config(&etcd.endpoint(), "op-b")).await;
    let monitor = Monitor::start(vec![a.handle.clone(), b.handle.clone()]);
    let (leader, follower) = one_leader(a, b).await;

    let lease = leader.handle.session().current().lease.unwrap();
    assert_eq!(
        leader_key(&c).await,
        Some((leader.id.clone(), lease.0)),
        "the key names the leader and lives on its session lease"
    );
    wait_until("the follower knows the leader", || {
        std::future::ready(follower.handle.leader().leader() == Some(leader.id.clone()))
    })
    .await;
    let (lh, fh) = (leader.health().await, follower.health().await);
    assert!(lh.leader && !fh.leader);
    assert_eq!(fh.leader_id.as_deref(), Some(leader.id.as_str()));
    assert_eq!(lh.status, "ok");
    assert_eq!(
        metric(&leader.metrics().await, "clustermesh_operator_leader"),
        Some(1.0)
    );
    assert_eq!(
        metric(&follower.metrics().await, "clustermesh_operator_leader"),
        Some(0.0)
    );

    // A graceful stop resigns: the follower takes over without waiting for
    // the lease to expire.
    let leader_id = leader.id.clone();
    let started = Instant::now();
    leader.stop().await;
    wait_until("the follower leads", || {
        std::future::ready(follower.is_leader())
    })
    .await;
    assert!(
        started.elapsed() < TTL,
        "hand-over took {:?}, as long as a lease expiry",
        started.elapsed()
    );
    let (id, _) = leader_key(&c).await.unwrap();
    assert_eq!(id, follower.id);
    assert_ne!(id, leader_id);
    let m = follower.metrics().await;
    assert_eq!(metric(&m, "clustermesh_operator_leader"), Some(1.0));
    assert_eq!(
        metric(
            &m,
            "clustermesh_operator_leader_transitions_total{to=\"leader\"}"
        ),
        Some(1.0)
    );
    monitor.assert_never_two_leaders().await;
    follower.stop().await;
    assert_eq!(
        leader_key(&c).await,
        None,
        "the last leader resigned on stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leader_is_replaced_within_a_lease_ttl() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let a = InProcess::start(config(&etcd.endpoint(), "op-a")).await;
    let b = InProcess::start(config(&etcd.endpoint(), "op-b")).await;
    let monitor = Monitor::start(vec![a.handle.clone(), b.handle.clone()]);
    let (leader, follower) = one_leader(a, b).await;

    let crashed = Instant::now();
    leader.crash().await;
    assert!(!follower.is_leader());
    wait_until("the follower leads", || {
        std::future::ready(follower.is_leader())
    })
    .await;
    let took = crashed.elapsed();
    // The key goes when etcd expires the lease: at most one TTL after the
    // last renewal, plus etcd's expiry check granularity.
    assert!(
        took <= TTL + Duration::from_secs(2),
        "fail-over took {took:?} (TTL {TTL:?})"
    );
    assert_eq!(leader_key(&c).await.unwrap().0, follower.id);
    monitor.assert_never_two_leaders().await;
    follower.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_lease_steps_down_at_once_and_campaigns_again() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let a = InProcess::start(config(&etcd.endpoint(), "op-a")).await;
    wait_until("a leads", || std::future::ready(a.is_leader())).await;
    let lease = a.handle.session().current().lease.unwrap();

    c.revoke_lease(lease).await.unwrap();
    let revoked = Instant::now();
    wait_until("a steps down", || std::future::ready(!a.is_leader())).await;
    assert!(
        revoked.elapsed() < Duration::from_secs(1),
        "stepping down took {:?}",
        revoked.elapsed()
    );
    wait_until("a leads again on a new lease", || {
        std::future::ready(
            a.is_leader()
                && a.handle
                    .session()
                    .current()
                    .lease
                    .is_some_and(|l| l != lease),
        )
    })
    .await;
    let new_lease = a.handle.session().current().lease.unwrap();
    assert_eq!(leader_key(&c).await, Some(("op-a".into(), new_lease.0)));
    let m = a.metrics().await;
    assert_eq!(
        metric(
            &m,
            "clustermesh_operator_leader_transitions_total{to=\"leader\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &m,
            "clustermesh_operator_leader_transitions_total{to=\"follower\"}"
        ),
        Some(1.0)
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_stops_leading_before_another_takes_over() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let target = format!("127.0.0.1:{}", etcd.client_port()).parse().unwrap();
    let proxy = TcpProxy::start(target).await.unwrap();
    let a = InProcess::start(config(&proxy.url(), "op-a")).await;
    wait_until("a leads", || std::future::ready(a.is_leader())).await;
    let b = InProcess::start(config(&etcd.endpoint(), "op-b")).await;
    wait_until("b follows a", || {
        std::future::ready(b.handle.leader().leader().as_deref() == Some("op-a"))
    })
    .await;
    let monitor = Monitor::start(vec![a.handle.clone(), b.handle.clone()]);

    // a can no longer renew its lease; it must stop before etcd expires the
    // lease, which is what lets b win.
    proxy.cut();
    let cut = Instant::now();
    wait_until("b leads", || std::future::ready(b.is_leader())).await;
    assert!(!a.is_leader());
    assert!(
        cut.elapsed() <= TTL + Duration::from_secs(2),
        "b took {:?} to take over",
        cut.elapsed()
    );
    assert_eq!(leader_key(&c).await.unwrap().0, "op-b");

    // Back online, a follows b.
    proxy.restore();
    wait_until("a follows b", || {
        std::future::ready(a.handle.leader().leader().as_deref() == Some("op-b"))
    })
    .await;
    assert!(!a.is_leader());
    monitor.assert_never_two_leaders().await;
    b.stop().await;
    a.stop().await;
}
