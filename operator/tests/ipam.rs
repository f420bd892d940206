//! Pod CIDR IPAM against a real etcd: distinct CIDRs, racing reconcilers,
//! release and reuse, exhaustion, restarts and the start-of-term clean-up.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{
    InProcess, MODE, assert_ipam_consistent, assignments, cidr_keys, client, cluster, cluster_id,
    config, deregister_node, ipam, metric, register_node, wait_until,
};
use etcd_harness::TestEtcd;
use ipnet::IpNet;
use kvstore::{IdentityCache, IdentityRange, KeyPrefix, StoreValue, keys, values::IpamAssignment};
use operator::{
    AssignmentError, CidrPool, IpFamily, IpamReconciler, OperatorMetrics, get_assignment,
    wait_for_assignment,
};
use tokio::{task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_distinct_cidrs_and_agents_can_wait_for_theirs() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let mut cfg = config(&etcd.endpoint(), "op-a");
    let mut ipam_config = ipam("10.1.0.0/16", 24, Duration::from_secs(30));
    ipam_config.ipv6 = Some(CidrPool::new(IpFamily::V6, net("fd00:5::/48"), 64).unwrap());
    cfg.ipam = Some(ipam_config);
    let op = InProcess::start(cfg).await;

    // An agent waits before its node is even registered.
    let waiter = tokio::spawn({
        let c = c.clone();
        async move { wait_for_assignment(&c, "early").await }
    });
    let names: Vec<String> = (0..20).map(|i| format!("n{i:02}")).collect();
    for n in names.iter().map(String::as_str).chain(["early"]) {
        register_node(&c, n).await;
    }
    wait_until("21 nodes have pod CIDRs", || async {
        assignments(&c).await.len() == 21
    })
    .await;
    assert_ipam_consistent(&c).await;
    let all = assignments(&c).await;
    let v4: BTreeSet<IpNet> = all.values().map(|a| a.ipv4.unwrap()).collect();
    let v6: BTreeSet<IpNet> = all.values().map(|a| a.ipv6.unwrap()).collect();
    let lowest_v4: BTreeSet<IpNet> = (0..21).map(|i| net(&format!("10.1.{i}.0/24"))).collect();
    assert_eq!(v4, lowest_v4, "distinct, and the lowest CIDRs of the pool");
    assert_eq!(v6.len(), 21);
    assert!(
        v6.iter()
            .all(|n| net("fd00:5::/48").contains(n) && n.prefix_len() == 64)
    );

    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiting agent got its assignment")
        .unwrap()
        .unwrap();
    assert_eq!(Some(&got), all.get("early"));
    assert_eq!(
        wait_for_assignment(&c, "n00").await.unwrap(),
        all["n00"],
        "an existing assignment is returned at once"
    );
    assert_eq!(
        get_assignment(&c, "n05").await.unwrap().as_ref(),
        all.get("n05")
    );
    assert_eq!(get_assignment(&c, "unknown").await.unwrap(), None);
    assert!(matches!(
        wait_for_assignment(&c, "a/b").await,
        Err(AssignmentError::InvalidNode(_))
    ));

    wait_until("the metrics count 21 CIDRs per family", || async {
        let m = op.metrics().await;
        metric(
            &m,
            "clustermesh_operator_ipam_cidrs_assigned{family=\"ipv4\"}",
        ) == Some(21.0)
            && metric(&m, "clustermesh_operator_ipam_cidrs_free{family=\"ipv4\"}") == Some(235.0)
            && metric(
                &m,
                "clustermesh_operator_ipam_cidrs_assigned{family=\"ipv6\"}",
            ) == Some(21.0)
    })
    .await;
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_reconcilers_never_assign_a_cidr_twice() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    for i in 0..40 {
        register_node(&c, &format!("n{i:02}")).await;
    }
    // Three reconcilers that all believe they lead (as two operators could
    // for a moment if a lease were revoked under a leader), each with its own
    // client: only the create-only CIDR keys and the conditional writes keep
    // them apart.
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut all_metrics = Vec::new();
    for _ in 0..3 {
        let rc = client(&etcd).await;
        let (cache, _runner) = IdentityCache::local(rc.clone());
        let metrics = OperatorMetrics::new(cache, IdentityRange::allocation(cluster_id(), MODE));
        all_metrics.push(metrics.clone());
        let reconciler = IpamReconciler::new(
            rc,
            cluster(),
            ipam("10.1.0.0/16", 24, Duration::from_secs(30)),
            metrics,
        );
        tasks.spawn(reconciler.run(shutdown.clone()));
    }
    // More nodes arrive while they race.
    for i in 40..60 {
        register_node(&c, &format!("n{i:02}")).await;
    }
    wait_until("60 nodes assigned and no leftover CIDR keys", || async {
        assignments(&c).await.len() == 60 && cidr_keys(&c).await.len() == 60
    })
    .await;
    assert_ipam_consistent(&c).await;
    let used: BTreeSet<IpNet> = assignments(&c)
        .await
        .values()
        .map(|a| a.ipv4.unwrap())
        .collect();
    assert_eq!(used.len(), 60, "no CIDR is held by two nodes");
    let conflicts: u64 = all_metrics
        .iter()
        .map(OperatorMetrics::ipam_conflicts)
        .sum();
    assert!(conflicts > 0, "the reconcilers did race");
    shutdown.cancel();
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_nodes_cidr_is_released_after_the_delay_and_reused_unless_it_returns() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let delay = Duration::from_secs(2);
    let mut cfg = config(&etcd.endpoint(), "op-a");
    cfg.ipam = Some(ipam("10.1.0.0/16", 24, delay));
    let op = InProcess::start(cfg).await;
    for n in ["n1", "n2", "n3"] {
        register_node(&c, n).await;
        wait_until("the node is assigned", || async {
            get_assignment(&c, n).await.unwrap().is_some()
        })
        .await;
    }
    let n2_before = c.get(&keys::ipam_nodes().key("n2")).await.unwrap().unwrap();

    // n2's key vanishes and comes back at once; n3 goes for good, after n2.
    deregister_node(&c, "n2").await;
    register_node(&c, "n2").await;
    deregister_node(&c, "n3").await;
    let gone = Instant::now();
    wait_until("n3's CIDR is released", || async {
        get_assignment(&c, "n3").await.unwrap().is_none()
            && !cidr_keys(&c).await.contains_key("10.1.2.0_24")
    })
    .await;
    assert!(
        gone.elapsed() >= delay,
        "released after {:?}, before the delay of {delay:?}",
        gone.elapsed()
    );
    // n2 vanished earlier than n3 but came back: untouched.
    let n2_after = c.get(&keys::ipam_nodes().key("n2")).await.unwrap().unwrap();
    assert_eq!(n2_after.mod_revision, n2_before.mod_revision);
    assert_eq!(
        get_assignment(&c, "n2").await.unwrap().unwrap().ipv4,
        Some(net("10.1.1.0/24"))
    );

    // The released CIDR is the lowest free one: the next node gets it.
    register_node(&c, "n4").await;
    wait_until("n4 gets n3's old CIDR", || async {
        get_assignment(&c, "n4").await.unwrap().and_then(|a| a.ipv4) == Some(net("10.1.2.0/24"))
    })
    .await;
    assert_ipam_consistent(&c).await;
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_is_reported_and_a_release_serves_the_waiting_node() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let mut cfg = config(&etcd.endpoint(), "op-a");
    // Two /24s only.
    cfg.ipam = Some(ipam("10.1.0.0/23", 24, Duration::from_millis(500)));
    let op = InProcess::start(cfg).await;
    for n in ["n1", "n2", "n3"] {
        register_node(&c, n).await;
    }
    wait_until("the exhaustion is reported", || async {
        let m = op.metrics().await;
        metric(
            &m,
            "clustermesh_operator_ipam_nodes_waiting{family=\"ipv4\"}",
        ) == Some(1.0)
            && metric(
                &m,
                "clustermesh_operator_ipam_exhausted_total{family=\"ipv4\"}",
            ) == Some(1.0)
            && metric(&m, "clustermesh_operator_ipam_cidrs_free{family=\"ipv4\"}") == Some(0.0)
    })
    .await;
    let all = assignments(&c).await;
    assert_eq!(
        all.keys().collect::<Vec<_>>(),
        ["n1", "n2"],
        "served in name order"
    );
    assert!(op.is_leader(), "the operator keeps running");

    deregister_node(&c, "n1").await;
    wait_until("n3 gets n1's CIDR", || async {
        get_assignment(&c, "n3").await.unwrap().and_then(|a| a.ipv4) == Some(net("10.1.0.0/24"))
    })
    .await;
    wait_until("nobody waits any more", || async {
        metric(
            &op.metrics().await,
            "clustermesh_operator_ipam_nodes_waiting{family=\"ipv4\"}",
        ) == Some(0.0)
    })
    .await;
    assert_ipam_consistent(&c).await;
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignments_survive_an_operator_restart() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let cfg = |id: &str| {
        let mut cfg = config(&etcd.endpoint(), id);
        cfg.ipam = Some(ipam("10.1.0.0/16", 24, Duration::from_secs(1)));
        cfg
    };
    let a = InProcess::start(cfg("op-a")).await;
    for i in 0..5 {
        register_node(&c, &format!("n{i}")).await;
    }
    wait_until("5 nodes assigned", || async {
        assignments(&c).await.len() == 5
    })
    .await;
    let (before, _) = c.list(&KeyPrefix::new(keys::IPAM), 100).await.unwrap();
    a.stop().await;

    let b = InProcess::start(cfg("op-b")).await;
    wait_until("the new operator has loaded the IPAM state", || async {
        b.is_leader()
            && metric(
                &b.metrics().await,
                "clustermesh_operator_ipam_cidrs_assigned{family=\"ipv4\"}",
            ) == Some(5.0)
    })
    .await;
    register_node(&c, "n5").await;
    wait_until("n5 assigned", || async {
        get_assignment(&c, "n5").await.unwrap().is_some()
    })
    .await;
    let (after, _) = c.list(&KeyPrefix::new(keys::IPAM), 100).await.unwrap();
    let old: Vec<_> = after
        .iter()
        .filter(|kv| !kv.key.ends_with("/n5") && !kv.key.ends_with("10.1.5.0_24"))
        .cloned()
        .collect();
    assert_eq!(old, before, "no assignment or CIDR key was rewritten");
    assert_eq!(
        get_assignment(&c, "n5").await.unwrap().unwrap().ipv4,
        Some(net("10.1.5.0/24"))
    );
    assert_ipam_consistent(&c).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_cleans_up_what_it_finds() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let put_assignment = |node: &'static str, cidr: &'static str| {
        let c = c.clone();
        async move {
            let a = IpamAssignment {
                node: node.into(),
                ipv4: Some(net(cidr)),
                ipv6: None,
            };
            c.put(&keys::ipam_nodes().key(node), a.encode())
                .await
                .unwrap();
        }
    };
    let put_cidr = |cidr: &'static str, node: &'static str| {
        let c = c.clone();
        async move {
            c.put(&keys::ipam_cidr(&net(cidr)), node).await.unwrap();
        }
    };
    // A node whose assignment was half written (CIDR key, no assignment).
    register_node(&c, "half").await;
    put_cidr("10.1.7.0/24", "half").await;
    // A node with an assignment and a stray second CIDR key.
    register_node(&c, "moved").await;
    put_assignment("moved", "10.1.1.0/24").await;
    put_cidr("10.1.1.0/24", "moved").await;
    put_cidr("10.1.2.0/24", "moved").await;
    // A node that is gone, with its assignment, and a CIDR key of another
    // node that is gone and was never assigned.
    put_assignment("gone", "10.1.0.0/24").await;
    put_cidr("10.1.0.0/24", "gone").await;
    put_cidr("10.1.3.0/24", "never").await;

    let mut cfg = config(&etcd.endpoint(), "op-a");
    cfg.ipam = Some(ipam("10.1.0.0/16", 24, Duration::from_secs(1)));
    let op = InProcess::start(cfg).await;
    wait_until("the leftovers are cleaned up", || async {
        let keys = cidr_keys(&c).await;
        let keys: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        keys == [("10.1.1.0_24", "moved"), ("10.1.7.0_24", "half")]
            && assignments(&c).await.len() == 2
    })
    .await;
    assert_eq!(
        get_assignment(&c, "half").await.unwrap().unwrap().ipv4,
        Some(net("10.1.7.0/24")),
        "a half-done assignment is completed with its CIDR"
    );
    assert_eq!(
        get_assignment(&c, "moved").await.unwrap().unwrap().ipv4,
        Some(net("10.1.1.0/24"))
    );
    register_node(&c, "fresh").await;
    wait_until("a new node gets the lowest freed CIDR", || async {
        get_assignment(&c, "fresh")
            .await
            .unwrap()
            .and_then(|a| a.ipv4)
            == Some(net("10.1.0.0/24"))
    })
    .await;
    assert_ipam_consistent(&c).await;
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_key_with_an_invalid_value_is_still_a_node() {
    let etcd = TestEtcd::start().await.unwrap();
    let c = client(&etcd).await;
    let mut cfg = config(&etcd.endpoint(), "op-a");
    cfg.ipam = Some(ipam("10.1.0.0/16", 24, Duration::from_millis(500)));
    let op = InProcess::start(cfg).await;
    let key = keys::nodes_of(&cluster()).key("odd");
    c.put(&key, "not a node").await.unwrap();
    wait_until("the odd node is assigned", || async {
        get_assignment(&c, "odd").await.unwrap().is_some()
    })
    .await;
    c.delete(&key).await.unwrap();
    wait_until("and released once its key is gone", || async {
        get_assignment(&c, "odd").await.unwrap().is_none() && cidr_keys(&c).await.is_empty()
    })
    .await;
    assert_eq!(
        metric(
            &op.metrics().await,
            "clustermesh_operator_ipam_conflicts_total"
        ),
        Some(0.0),
        "no write was refused: the view and etcd agree on which nodes exist"
    );
    op.stop().await;
}
