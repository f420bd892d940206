//! Remote clusters (issue 8) on a real local mesh: cross-cluster policy,
//! validation of remote values, restarts under traffic, convergence after an
//! outage, removal, ID conflicts, and global service failover.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use integration::{Pinger, TestMesh, can_run, wait_for};
use kvstore::{
    Label, Labels, NumericIdentity, StoreValue, keys,
    values::{IpIdentityPair, PolicyDocument},
};

const FRONTEND: &str = "10.96.0.10:80";

fn echo_policy(extra_selector: &str) -> PolicyDocument {
    PolicyDocument::parse(&format!(
        r#"
kind: CiliumNetworkPolicy
metadata: {{name: echo-ingress, namespace: demo}}
spec:
  endpointSelector: {{matchLabels: {{app: echo}}}}
  ingress:
  - fromEndpoints: [{{matchLabels: {{app: client{extra_selector}}}}}]
    toPorts: [{{ports: [{{port: "8080", protocol: TCP}}, {{port: "0", protocol: ICMP}}]}}]
"#
    ))
    .unwrap()
}

fn apply(mesh: &TestMesh, cluster: &str, doc: &PolicyDocument) {
    mesh.apply_policy(cluster, doc).unwrap();
}

#[test]
fn cross_cluster_policy_admits_the_selected_remote_identity_only() -> anyhow::Result<()> {
    if !can_run("cross_cluster_policy_admits_the_selected_remote_identity_only") {
        return Ok(());
    }
    let mut mesh = TestMesh::up(2, 2)?;
    mesh.add_endpoint("c1", "n2", "other", &[("app", "other")], None)?;
    let echo = mesh.echo_addr("c2", "echo-n1");
    // Positive controls: every client denied below reaches the same server
    // while no policy selects it.
    wait_for(
        "no policy: c1's client, c1's other and c2's client reach echo",
        || {
            mesh.reaches("c1", "client", echo)
                && mesh.reaches("c1", "other", echo)
                && mesh.reaches("c2", "client", echo)
        },
    );

    // Without a cluster label the rule admits c2's own clients only.
    apply(&mesh, "c2", &echo_policy(""));
    wait_for("c1's client denied", || mesh.denied("c1", "client", echo));
    // Naming c1 admits c1's client, and only it.
    apply(
        &mesh,
        "c2",
        &echo_policy(", io.cilium.k8s.policy.cluster: c1"),
    );
    wait_for("c1's client admitted", || {
        mesh.reaches("c1", "client", echo)
    });
    assert!(
        mesh.denied("c1", "other", echo),
        "another identity of c1 stays denied"
    );
    assert!(
        mesh.denied("c2", "client", echo),
        "c2's own client is not named any more"
    );
    Ok(())
}

#[test]
fn invalid_remote_values_are_ignored_and_counted() -> anyhow::Result<()> {
    if !can_run("invalid_remote_values_are_ignored_and_counted") {
        return Ok(());
    }
    let mesh = TestMesh::up(2, 1)?;
    let labels = |cluster: &str| -> Labels {
        [
            Label::k8s("app", "evil"),
            Label::k8s(kvstore::CLUSTER_LABEL, cluster),
            Label::k8s(kvstore::NAMESPACE_LABEL, "demo"),
        ]
        .into_iter()
        .collect()
    };
    // In c2's etcd: an identity of c3's range, one with c3's label, and an
    // ipcache entry naming an identity outside c2's range.
    let outside = NumericIdentity::new(3 << 16 | 500);
    let wrong_label = NumericIdentity::new(2 << 16 | 501);
    mesh.put(
        "c2",
        &keys::identity_master(outside),
        labels("c2").canonical().into_bytes(),
    )?;
    mesh.put(
        "c2",
        &keys::identity_master(wrong_label),
        labels("c3").canonical().into_bytes(),
    )?;
    let pair = IpIdentityPair::host(
        "10.2.200.1".parse()?,
        NumericIdentity::new(5 << 16 | 300),
        None,
    );
    mesh.put("c2", &keys::ipcache().key(&pair.key()), pair.encode())?;

    wait_for("c1 counts the invalid values", || {
        let s = mesh.status("c1", "n1");
        let r = s.remotes.iter().find(|r| r.name == "c2");
        r.is_some_and(|r| {
            r.invalid.get("identity-out-of-range").copied().unwrap_or(0) >= 2
                && r.invalid.get("invalid-labels").copied().unwrap_or(0) >= 1
        })
    });
    let identities: Vec<agent::IdentityView> = mesh.agent_api("c1", "n1")?.get("/v1/identities")?;
    assert!(
        !identities
            .iter()
            .any(|i| i.id == outside.get() || i.id == wrong_label.get()),
        "invalid identities were not accepted"
    );
    assert!(
        !mesh
            .ipcache("c1", "n1")
            .iter()
            .any(|e| e.prefix == "10.2.200.1/32"),
        "invalid ipcache entry was not programmed"
    );
    let s = mesh.status("c1", "n1");
    assert!(
        s.remotes.iter().all(|r| r.ready),
        "the remote stays ready: {:?}",
        s.remotes
    );
    Ok(())
}

/// c2's echo servers admit c1's client only; returns the echo address and
/// the client's namespace once the policy is in force.
fn admit_c1_client(mesh: &TestMesh) -> anyhow::Result<(SocketAddr, String)> {
    apply(
        mesh,
        "c2",
        &echo_policy(", io.cilium.k8s.policy.cluster: c1"),
    );
    let echo = mesh.echo_addr("c2", "echo-n1");
    wait_for("policy admits c1's client", || {
        mesh.reaches("c1", "client", echo)
    });
    Ok((echo, mesh.state.endpoint("c1", "client")?.netns.clone()))
}

#[test]
fn restarts_under_cross_cluster_traffic_lose_no_allowed_packet() -> anyhow::Result<()> {
    if !can_run("restarts_under_cross_cluster_traffic_lose_no_allowed_packet") {
        return Ok(());
    }
    let mut mesh = TestMesh::up(2, 2)?;
    let (echo, client_ns) = admit_c1_client(&mesh)?;
    // Each restart is pinged across until the mesh is ready again (for an
    // agent: its re-list and the sweep of stale entries after it).
    let mut across = |what: &str,
                      restart: &mut dyn FnMut(&mut TestMesh) -> anyhow::Result<()>|
     -> anyhow::Result<()> {
        let pinger = Pinger::start(&client_ns, echo.ip())?;
        restart(&mut mesh)?;
        mesh.wait_ready(integration::DEADLINE)?;
        let (sent, lost) = pinger.stop();
        assert!(sent > 15, "pinged across {what}");
        assert!(
            lost.is_empty(),
            "pings lost across {what}: icmp_seq {lost:?} of {sent}"
        );
        Ok(())
    };

    // The agent that enforces the policy must keep c1's identities until
    // it has re-listed them.
    across("an agent restart", &mut |m| {
        m.kill_agent("c2", "n1")?;
        m.start_agent("c2", "n1")
    })?;
    across("a remote apiserver restart", &mut |m| {
        m.stop_apiserver("c2")?;
        m.start_apiserver("c2")
    })?;
    across("a remote etcd restart", &mut |m| {
        m.stop_etcd("c2")?;
        m.start_etcd("c2")
    })?;
    assert!(mesh.reaches("c1", "client", echo));
    Ok(())
}

#[test]
fn a_remote_that_was_away_while_things_changed_converges_exactly() -> anyhow::Result<()> {
    if !can_run("a_remote_that_was_away_while_things_changed_converges_exactly") {
        return Ok(());
    }
    let mut mesh = TestMesh::up(2, 2)?;
    wait_for("c1 has c2's entries", || {
        mesh.programmed_from("c1", "n1", "c2") == mesh.published("c2")
            && !mesh.published("c2").is_empty()
    });
    mesh.stop_apiserver("c2")?;
    wait_for("c1 sees c2 unreachable", || {
        mesh.status("c1", "n1")
            .remotes
            .iter()
            .any(|r| r.name == "c2" && !r.ready)
    });
    let before = mesh.programmed("c1", "n1", "10.2.");
    mesh.remove_endpoint("c2", "echo-n2")?;
    mesh.add_endpoint("c2", "n2", "late-1", &[("app", "late")], None)?;
    mesh.add_endpoint("c2", "n1", "late-2", &[("app", "late")], None)?;
    assert_eq!(
        mesh.programmed("c1", "n1", "10.2."),
        before,
        "state is kept while the remote is away"
    );
    mesh.start_apiserver("c2")?;
    wait_for("c1 converges to exactly c2's state", || {
        mesh.programmed_from("c1", "n1", "c2") == mesh.published("c2")
    });
    assert_eq!(mesh.programmed("c1", "n1", "10.2.").len(), before.len() + 1);
    Ok(())
}

#[test]
fn removing_a_remote_config_withdraws_its_entries() -> anyhow::Result<()> {
    if !can_run("removing_a_remote_config_withdraws_its_entries") {
        return Ok(());
    }
    let mut mesh = TestMesh::up(2, 1)?;
    wait_for("c1 has c2's entries", || {
        !mesh.programmed("c1", "n1", "10.2.").is_empty()
    });
    mesh.disconnect("c1", "c2", false)?;
    // Ready means the configured state: c1's agent no longer has c2.
    mesh.wait_ready(integration::DEADLINE)?;
    assert!(
        mesh.status("c1", "n1").remotes.is_empty(),
        "ready while c1 still had the disconnected c2"
    );
    wait_for("c2's entries withdrawn from c1", || {
        mesh.programmed("c1", "n1", "10.2.").is_empty()
    });
    let identities: Vec<agent::IdentityView> = mesh.agent_api("c1", "n1")?.get("/v1/identities")?;
    assert!(
        !identities.iter().any(|i| i.labels.contains("cluster=c2")),
        "c2's identities drained"
    );
    assert!(mesh.status("c1", "n1").remotes.is_empty());
    Ok(())
}

#[test]
fn two_remotes_claiming_one_cluster_id_second_is_refused() -> anyhow::Result<()> {
    if !can_run("two_remotes_claiming_one_cluster_id_second_is_refused") {
        return Ok(());
    }
    let mut mesh = TestMesh::up_with(3, 1, |s| s.connect = false)?;
    mesh.connect("c1", "c2", false)?;
    mesh.wait_ready(integration::DEADLINE)?;
    // c3's apiserver now claims c2's ID.
    mesh.restart_apiserver_with_id("c3", 2)?;
    mesh.write_remote_config_unchecked("c1", "c3")?;
    wait_for("c3 refused with an ID conflict", || {
        mesh.status("c1", "n1").remotes.iter().any(|r| {
            r.name == "c3"
                && !r.ready
                && r.last_error_kind.as_deref() == Some("id-conflict")
                && r.last_error.as_deref().is_some_and(|e| e.contains("c2"))
        })
    });
    let s = mesh.status("c1", "n1");
    assert!(
        s.remotes.iter().any(|r| r.name == "c2" && r.ready),
        "the first remote keeps working: {:?}",
        s.remotes
    );
    Ok(())
}

#[test]
fn global_service_fails_over_to_the_remote_cluster_and_back() -> anyhow::Result<()> {
    if !can_run("global_service_fails_over_to_the_remote_cluster_and_back") {
        return Ok(());
    }
    let mut mesh = TestMesh::up(2, 2)?;
    let frontend: SocketAddr = FRONTEND.parse()?;
    let answered_by = |mesh: &TestMesh| {
        mesh.request("c1", "client", frontend, Duration::from_secs(1))
            .map(|(s, peer)| {
                assert_eq!(peer, frontend, "the client sees the frontend");
                s
            })
    };
    wait_for("answered in c1", || {
        answered_by(&mesh).is_ok_and(|s| s.starts_with("c1/"))
    });
    for _ in 0..10 {
        assert!(
            answered_by(&mesh)?.starts_with("c1/"),
            "affinity local keeps traffic in c1"
        );
    }
    mesh.remove_endpoint("c1", "echo-n1")?;
    // The clock starts before the last local backend goes: the time printed
    // includes its removal.
    let lost = Instant::now();
    mesh.remove_endpoint("c1", "echo-n2")?;
    let failover = mesh.switch("c1", "client", frontend, lost, |s| s.starts_with("c2/"));
    eprintln!(
        "failover: {:.3} s from the loss of the last local backend to c2's first answer, \
         {} requests failed meanwhile",
        failover.seconds, failover.failed
    );
    for _ in 0..10 {
        assert!(answered_by(&mesh)?.starts_with("c2/"), "failover completed");
    }
    let back = Instant::now();
    mesh.add_endpoint(
        "c1",
        "n2",
        "echo-back",
        &[("app", "echo")],
        Some(localmesh::ECHO_PORT),
    )?;
    let failback = mesh.switch("c1", "client", frontend, back, |s| s == "c1/echo-back");
    eprintln!(
        "failback: {:.3} s from adding a local backend to its first answer, {} requests \
         failed and {} were answered by c2 meanwhile",
        failback.seconds, failback.failed, failback.other_answers
    );
    for _ in 0..10 {
        assert_eq!(answered_by(&mesh)?, "c1/echo-back", "failback completed");
    }
    Ok(())
}

#[test]
fn service_cache_ttl_moves_traffic_off_an_unreachable_cluster() -> anyhow::Result<()> {
    if !can_run("service_cache_ttl_moves_traffic_off_an_unreachable_cluster") {
        return Ok(());
    }
    // c1 has no backends of its own; c2 and c3 serve its global service.
    let mut mesh = TestMesh::up(3, 1)?;
    mesh.remove_endpoint("c1", "echo-n1")?;
    mesh.set_service_cache_ttl("c1", "c2", "2s")?;
    mesh.set_service_cache_ttl("c1", "c3", "2s")?;
    mesh.wait_ready(integration::DEADLINE)?;
    let frontend: SocketAddr = FRONTEND.parse()?;
    let mut seen = std::collections::BTreeSet::new();
    wait_for("both remote clusters answer", || {
        if let Ok((server, _)) = mesh.request("c1", "client", frontend, Duration::from_secs(1)) {
            seen.insert(server.split('/').next().unwrap_or_default().to_string());
        }
        seen.contains("c2") && seen.contains("c3")
    });

    // c2 becomes unreachable: once its cache TTL passes, c1 stops sending
    // new connections there, and every request is answered by c3.
    mesh.cut("c1", "c2")?;
    wait_for("twenty requests in a row answered by c3", || {
        (0..20).all(|_| {
            mesh.request("c1", "client", frontend, Duration::from_millis(500))
                .is_ok_and(|(s, _)| s.starts_with("c3/"))
        })
    });

    // Healed, c2's services come back with the re-list.
    mesh.heal("c1", "c2")?;
    wait_for("c2 answers again", || {
        mesh.request("c1", "client", frontend, Duration::from_secs(1))
            .is_ok_and(|(s, _)| s.starts_with("c2/"))
    });
    Ok(())
}

#[test]
fn agent_restarted_while_its_etcd_is_down_keeps_policy_and_traffic() -> anyhow::Result<()> {
    if !can_run("agent_restarted_while_its_etcd_is_down_keeps_policy_and_traffic") {
        return Ok(());
    }
    let mut mesh = TestMesh::up(2, 2)?;
    mesh.add_endpoint("c1", "n2", "other", &[("app", "other")], None)?;
    let echo = mesh.echo_addr("c2", "echo-n1");
    wait_for(
        "positive control: without a policy c1's other reaches echo",
        || mesh.reaches("c1", "other", echo),
    );
    let (echo, client_ns) = admit_c1_client(&mesh)?;
    wait_for("policy denies c1's other", || {
        mesh.denied("c1", "other", echo)
    });

    // c2's etcd is down, and c2/n1's agent restarts: it cannot read the
    // policy, its endpoints' identities or anything of its own cluster.
    let endpoints = mesh.status("c2", "n1").endpoints;
    mesh.stop_etcd("c2")?;
    let pinger = Pinger::start(&client_ns, echo.ip())?;
    mesh.kill_agent("c2", "n1")?;
    mesh.start_agent("c2", "n1")?;
    // Past the sync timeout the agent works with what it has; the policy
    // it cannot see stays enforced as it was.
    wait_for("c2/n1's sync times out", || {
        mesh.status("c2", "n1").sync_timed_out
    });
    let s = mesh.status("c2", "n1");
    assert!(!s.synced, "c2/n1 cannot be synced without its etcd");
    assert_eq!(s.endpoints, endpoints, "the endpoints were restored");
    assert!(
        mesh.reaches("c1", "client", echo),
        "the admitted client still reaches echo"
    );
    assert!(
        mesh.denied("c1", "other", echo),
        "enforcement was not dropped while the policy is unreadable"
    );
    let (sent, lost) = pinger.stop();
    assert!(sent >= 100, "pinged across the restart ({sent} sent)");
    assert!(
        lost.is_empty(),
        "pings lost across the restart: icmp_seq {lost:?} of {sent}"
    );

    // The etcd returns: the agent syncs and the policy is still exact.
    mesh.start_etcd("c2")?;
    wait_for("c2/n1 synced", || mesh.status("c2", "n1").synced);
    mesh.wait_ready(integration::DEADLINE)?;
    assert!(mesh.reaches("c1", "client", echo));
    assert!(mesh.denied("c1", "other", echo));
    // An endpoint created after the etcd returned gets an identity too.
    mesh.add_endpoint("c2", "n1", "late", &[("app", "late")], None)?;
    let late = format!("{}/32", mesh.state.endpoint("c2", "late")?.ip);
    wait_for("c1 learns c2's new endpoint", || {
        mesh.ipcache("c1", "n1")
            .iter()
            .any(|e| e.prefix == late && e.identity >> 16 == 2)
    });
    Ok(())
}
