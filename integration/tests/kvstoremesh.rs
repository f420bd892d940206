//! kvstoremesh (issue 17) on a real local mesh of three clusters, each with
//! its kvstoremesh: agents read every remote from their own apiserver, and
//! the mesh behaves exactly as with direct connections (cross-cluster
//! policy, global service failover), a cut keeps the cached state and heals
//! exactly, a kvstoremesh restart deletes nothing, a wiped remote is swept,
//! a removed remote is drained, and no agent ever connects to a remote
//! apiserver (the remotes' own connection metrics say so).

use std::{net::SocketAddr, time::Duration};

use integration::{TestMesh, can_run, wait_for};
use kvstore::{
    StoreValue,
    keys::{self, StateKind},
    values::{PolicyDocument, RemoteClusterRecord},
};

const FRONTEND: &str = "10.96.0.10:80";
const CLUSTERS: [&str; 3] = ["c1", "c2", "c3"];
const NODES: [&str; 2] = ["n1", "n2"];

/// The value of `name{labels}` in Prometheus text, if present.
fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    let wanted = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&wanted))
        .and_then(|v| v.trim().parse().ok())
}

/// Every agent of `cluster` has the other clusters' ipcache entries exactly
/// as they publish them.
fn converged(mesh: &TestMesh, cluster: &str) -> bool {
    CLUSTERS.iter().filter(|o| **o != cluster).all(|other| {
        let published = mesh.published(other);
        !published.is_empty()
            && NODES
                .iter()
                .all(|n| mesh.programmed_from(cluster, n, other) == published)
    })
}

/// The deletions c1's agents received from each remote, by kind.
fn deletes(mesh: &TestMesh) -> Vec<(String, String, std::collections::BTreeMap<String, u64>)> {
    NODES
        .iter()
        .flat_map(|n| {
            mesh.status("c1", n)
                .remotes
                .into_iter()
                .map(move |r| (n.to_string(), r.name, r.deletes))
        })
        .collect()
}

#[test]
fn kvstoremesh_mesh_works_as_direct_and_agents_talk_to_their_own_cluster_only() -> anyhow::Result<()>
{
    if !can_run("kvstoremesh_mesh_works_as_direct_and_agents_talk_to_their_own_cluster_only") {
        return Ok(());
    }
    let mut mesh = TestMesh::up_with(3, 2, |s| s.kvstoremesh = true)?;

    // Every agent reads both remotes through its cluster's kvstoremesh.
    for c in CLUSTERS {
        for n in NODES {
            let remotes = mesh.status(c, n).remotes;
            assert_eq!(remotes.len(), 2, "{c}/{n}: {remotes:?}");
            for r in &remotes {
                assert!(r.ready, "{c}/{n} -> {}: {r:?}", r.name);
                assert_eq!(
                    r.via.as_deref(),
                    Some("kvstoremesh"),
                    "{c}/{n} -> {}",
                    r.name
                );
            }
        }
        let status = mesh.kvstoremesh_status(c)?.expect("a kvstoremesh");
        assert_eq!(status["ready"], true, "{c}: {status}");
        assert_eq!(status["remotes"].as_array().map(Vec::len), Some(2));
        wait_for(&format!("{c}'s agents have the remotes' entries"), || {
            converged(&mesh, c)
        });
    }

    // No agent connects to a remote apiserver: each cluster's apiserver
    // has one connection per remote cluster (its kvstoremesh), and its own
    // agents' cache readers.
    for c in CLUSTERS {
        let text = mesh.apiserver_metrics(c)?;
        for other in CLUSTERS.iter().filter(|o| **o != c) {
            assert_eq!(
                metric(
                    &text,
                    "clustermesh_apiserver_connections",
                    &format!("client=\"remote-{other}\"")
                ),
                Some(1.0),
                "{c}'s apiserver: connections of {other}"
            );
        }
        assert_eq!(
            metric(
                &text,
                "clustermesh_apiserver_connections",
                &format!("client=\"local-{c}\"")
            ),
            Some((NODES.len() * 2) as f64),
            "{c}'s apiserver: one cache reader per agent and remote"
        );
    }

    // Cross-cluster policy, decided on identities mirrored by kvstoremesh.
    let echo = mesh.echo_addr("c2", "echo-n1");
    wait_for("no policy: c1's and c3's clients reach c2's echo", || {
        mesh.reaches("c1", "client", echo) && mesh.reaches("c3", "client", echo)
    });
    let policy = PolicyDocument::parse(
        r#"
kind: CiliumNetworkPolicy
metadata: {name: echo-ingress, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: echo}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client, io.cilium.k8s.policy.cluster: c1}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
"#,
    )?;
    mesh.apply_policy("c2", &policy)?;
    wait_for("c3's client denied", || mesh.denied("c3", "client", echo));
    assert!(mesh.reaches("c1", "client", echo), "c1's client admitted");
    mesh.delete("c2", &keys::policies().key(&policy.key()))?;

    // Global service failover to the remotes, and back.
    let frontend: SocketAddr = FRONTEND.parse()?;
    let answered_by = |mesh: &TestMesh| {
        mesh.request("c1", "client", frontend, Duration::from_secs(1))
            .map(|(s, _)| s)
    };
    wait_for("answered in c1", || {
        answered_by(&mesh).is_ok_and(|s| s.starts_with("c1/"))
    });
    mesh.remove_endpoint("c1", "echo-n1")?;
    let lost = std::time::Instant::now();
    mesh.remove_endpoint("c1", "echo-n2")?;
    let failover = mesh.switch("c1", "client", frontend, lost, |s| !s.starts_with("c1/"));
    eprintln!(
        "failover through kvstoremesh: {:.3} s, {} requests failed",
        failover.seconds, failover.failed
    );
    let back = std::time::Instant::now();
    mesh.add_endpoint(
        "c1",
        "n1",
        "echo-back",
        &[("app", "echo")],
        Some(localmesh::ECHO_PORT),
    )?;
    mesh.switch("c1", "client", frontend, back, |s| s == "c1/echo-back");

    // c1 cut off from c2: the cache is kept, agents say why c2 is not
    // ready as kvstoremesh sees it, and the heal converges exactly.
    let before = mesh.programmed("c1", "n1", "10.2.");
    mesh.cut("c1", "c2")?;
    wait_for("c1's agents see c2 unreachable through kvstoremesh", || {
        NODES.iter().all(|n| {
            mesh.status("c1", n).remotes.iter().any(|r| {
                r.name == "c2"
                    && !r.ready
                    && r.last_error
                        .as_deref()
                        .is_some_and(|e| e.starts_with("as seen by kvstoremesh"))
            })
        })
    });
    mesh.add_endpoint("c2", "n2", "late", &[("app", "late")], None)?;
    assert_eq!(
        mesh.programmed("c1", "n1", "10.2."),
        before,
        "the cached state is kept while c2 is cut off"
    );
    mesh.heal("c1", "c2")?;
    wait_for("c1 converges to exactly c2's state", || {
        converged(&mesh, "c1")
    });
    assert_eq!(mesh.programmed("c1", "n1", "10.2.").len(), before.len() + 1);
    mesh.wait_ready(integration::DEADLINE)?;

    // kvstoremesh restarted while the agents run, with a change in c2
    // meanwhile: the agents receive no deletion, and the change arrives.
    let deleted_before = deletes(&mesh);
    mesh.stop_kvstoremesh("c1")?;
    mesh.add_endpoint("c2", "n1", "during-restart", &[("app", "late")], None)?;
    mesh.start_kvstoremesh("c1")?;
    wait_for("c1 converges after the kvstoremesh restart", || {
        converged(&mesh, "c1")
    });
    mesh.wait_ready(integration::DEADLINE)?;
    assert_eq!(
        deletes(&mesh),
        deleted_before,
        "a kvstoremesh restart deletes nothing in the agents"
    );

    // The connections came through the records `connect` stored: each
    // kvstoremesh mirrored them (it alone reaches the remotes), each agent a
    // file naming its own apiserver, and no node holds a remote-<c> key.
    for c in CLUSTERS {
        let cluster = mesh.state.cluster(c)?.clone();
        let k = cluster.kvstoremesh.clone().expect("a kvstoremesh");
        for other in CLUSTERS.iter().filter(|o| **o != c) {
            let text = std::fs::read_to_string(k.config_dir.join(other))?;
            assert!(
                RemoteClusterRecord::is_mirrored(&text),
                "{c}'s kvstoremesh file for {other}: {text}"
            );
            for n in NODES {
                let dir = mesh.node(c, n)?.clustermesh_dir.clone();
                let text = std::fs::read_to_string(dir.join(other))?;
                assert!(
                    RemoteClusterRecord::is_mirrored(&text)
                        && text.contains(&cluster.apiserver_endpoint),
                    "{c}/{n}'s file for {other} names its own apiserver: {text}"
                );
                assert!(!dir.join(".clustermesh-mirror").join(other).exists());
            }
        }
    }

    // c2's etcd wiped: its components publish again, and c1's cache (and
    // agents) are swept to exactly the new state.
    mesh.wipe_etcd("c2")?;
    wait_for("c1 converges to c2's state after the wipe", || {
        converged(&mesh, "c1")
    });

    // c1 stops following c3: its agents drain c3, kvstoremesh drops c3's
    // cluster config at once and its cache after the drain delay.
    mesh.disconnect("c1", "c3", false)?;
    wait_for("c1's agents drained c3", || {
        NODES
            .iter()
            .all(|n| mesh.programmed("c1", n, "10.3.").is_empty())
    });
    let c3 = kvstore::ClusterName::new("c3")?;
    wait_for("c1's kvstoremesh removed c3's cache", || {
        let config = mesh.list("c1", &kvstore::KeyPrefix::new(keys::CLUSTER_CONFIG));
        let cached: usize = StateKind::ALL
            .iter()
            .map(|k| {
                mesh.list("c1", &k.prefix(&c3, keys::Source::Cache))
                    .map_or(usize::MAX, |v| v.len())
            })
            .sum();
        config.is_ok_and(|kvs| !kvs.iter().any(|kv| kv.key.ends_with("/c3"))) && cached == 0
    });
    assert!(converged_pair(&mesh, "c1", "c2"), "c2 is still followed");
    Ok(())
}

/// c1's agents have `other`'s entries exactly.
fn converged_pair(mesh: &TestMesh, cluster: &str, other: &str) -> bool {
    let published = mesh.published(other);
    NODES
        .iter()
        .all(|n| mesh.programmed_from(cluster, n, other) == published)
}
