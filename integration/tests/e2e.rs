//! End-to-end (issue 9): the demo's scenarios as assertions, a partition
//! between clusters and its healing, a rejoin after a long outage with
//! changes made meanwhile, and `clustermesh connect` refusing a wrong CA and
//! a wrong cluster ID. The CLI is exercised as a user runs it.

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use integration::{TestMesh, can_run, wait_for};
use kvstore::{keys, values::PolicyDocument};

fn remote_ready(mesh: &TestMesh, cluster: &str, remote: &str) -> bool {
    mesh.status(cluster, "n1")
        .remotes
        .iter()
        .any(|r| r.name == remote && r.ready)
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the agent's health port");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn etcd_outage_keeps_traffic_and_status_says_why() -> anyhow::Result<()> {
    if !can_run("etcd_outage_keeps_traffic_and_status_says_why") {
        return Ok(());
    }
    let mut mesh = TestMesh::up(2, 2)?;
    let echo = mesh.echo_addr("c2", "echo-n1");
    let frontend: SocketAddr = localmesh::SERVICE_FRONTEND.parse()?;
    wait_for("c1 reaches c2", || mesh.reaches("c1", "client", echo));
    let status = mesh.cli(&["status"]);
    assert!(
        status.status.success(),
        "{}",
        integration::output_text(&status)
    );
    assert!(
        integration::output_text(&status)
            .contains("4/4 agents synced, 4/4 remote connections ready"),
        "{}",
        integration::output_text(&status)
    );

    // The agent's metrics say the same.
    let metrics = http_get(&mesh.node("c1", "n1")?.health, "/metrics");
    for series in [
        "clustermesh_agent_remote_cluster_readiness_status{cluster=\"c2\"} 1",
        "clustermesh_agent_propagation_delay_seconds_count{cluster=\"c2\"}",
        "clustermesh_agent_map_capacity{map=\"ipcache\"} 524288",
        "clustermesh_agent_endpoints 2",
        // The client certificate c1's agents present to c2.
        "clustermesh_tls_certificate_expiry_seconds{role=\"remote-cluster-c2\",kind=\"cert\"",
        "clustermesh_build_info{binary=\"clustermesh-agent\"",
    ] {
        assert!(
            metrics.contains(series),
            "metrics have {series}:\n{metrics}"
        );
    }

    mesh.stop_etcd("c2")?;
    for _ in 0..20 {
        assert!(
            mesh.reaches("c1", "client", echo),
            "traffic to c2 stopped with its etcd"
        );
        assert!(
            mesh.reaches("c1", "client", frontend),
            "the service stopped with c2's etcd"
        );
    }
    wait_for("status shows c2 degraded", || {
        let t = integration::output_text(&mesh.cli(&["status"]));
        t.contains("remote c2: NOT READY")
            && t.contains(
                "why: remote-etcd-unreachable: the remote apiserver answers but its etcd does not",
            )
    });
    let waited = mesh.cli(&["status", "--wait", "--wait-duration", "2s"]);
    assert!(
        !waited.status.success(),
        "status --wait must not report ready: {}",
        integration::output_text(&waited)
    );
    assert!(
        integration::output_text(&waited).contains("still waiting for"),
        "says what it waits for: {}",
        integration::output_text(&waited)
    );

    mesh.start_etcd("c2")?;
    let waited = mesh.cli(&["status", "--wait", "--wait-duration", "60s"]);
    assert!(
        waited.status.success(),
        "{}",
        integration::output_text(&waited)
    );
    assert!(mesh.reaches("c1", "client", echo));
    Ok(())
}

#[test]
fn partition_between_clusters_and_its_healing() -> anyhow::Result<()> {
    if !can_run("partition_between_clusters_and_its_healing") {
        return Ok(());
    }
    let mut mesh = TestMesh::up(2, 1)?;
    let echo2 = mesh.echo_addr("c2", "echo-n1");
    let echo1 = mesh.echo_addr("c1", "echo-n1");
    let frontend: SocketAddr = localmesh::SERVICE_FRONTEND.parse()?;
    wait_for("c1 reaches c2", || mesh.reaches("c1", "client", echo2));

    mesh.cut("c1", "c2")?;
    wait_for("both sides see the partition", || {
        !remote_ready(&mesh, "c1", "c2") && !remote_ready(&mesh, "c2", "c1")
    });
    assert!(
        mesh.denied("c1", "client", echo2),
        "the partition cuts the data plane too (c1's client reached echo2 before it)"
    );
    assert!(
        mesh.reaches("c1", "client", echo1),
        "traffic inside a cluster is untouched"
    );
    assert!(
        mesh.request("c1", "client", frontend, Duration::from_secs(1))?
            .0
            .starts_with("c1/"),
        "the service answers locally"
    );
    let entries_during = mesh.programmed("c1", "n1", "10.2.");
    assert!(
        !entries_during.is_empty(),
        "c2's entries are kept during the partition"
    );

    mesh.heal("c1", "c2")?;
    wait_for("both sides ready again", || {
        remote_ready(&mesh, "c1", "c2") && remote_ready(&mesh, "c2", "c1")
    });
    wait_for("traffic flows again", || {
        mesh.reaches("c1", "client", echo2)
    });
    Ok(())
}

#[test]
fn rejoin_after_a_long_outage_with_changes_converges_exactly() -> anyhow::Result<()> {
    if !can_run("rejoin_after_a_long_outage_with_changes_converges_exactly") {
        return Ok(());
    }
    let mut mesh = TestMesh::up(2, 2)?;
    wait_for("c1 has c2's state", || {
        mesh.programmed_from("c1", "n1", "c2") == mesh.published("c2")
    });
    mesh.cut("c1", "c2")?;
    wait_for("c1 sees the partition", || !remote_ready(&mesh, "c1", "c2"));
    // Meanwhile in c2: workloads come and go, a policy appears.
    mesh.remove_endpoint("c2", "echo-n1")?;
    mesh.remove_endpoint("c2", "client")?;
    for i in 0..3 {
        mesh.add_endpoint(
            "c2",
            "n2",
            &format!("new-{i}"),
            &[("app", "new"), ("gen", &i.to_string())],
            None,
        )?;
    }
    let policy = PolicyDocument::parse("kind: CiliumNetworkPolicy\nmetadata: {name: lock, namespace: demo}\nspec:\n  endpointSelector: {matchLabels: {app: new}}\n").unwrap();
    mesh.apply_policy("c2", &policy)?;
    // A long outage: longer than the remote's reconnect backoff grows to.
    std::thread::sleep(Duration::from_secs(15));
    mesh.heal("c1", "c2")?;
    wait_for("c1 converges to exactly c2's ipcache", || {
        mesh.programmed_from("c1", "n1", "c2") == mesh.published("c2")
    });
    // Identities come through their own store: they may follow the ipcache
    // entries that name them.
    let c1_identities = || -> Vec<agent::IdentityView> {
        mesh.agent_api("c1", "n1")
            .and_then(|api| Ok(api.get("/v1/identities")?))
            .expect("c1's identities")
    };
    wait_for("c2's three new identities arrive in c1", || {
        let identities = c1_identities();
        (0..3).all(|i| {
            identities.iter().any(|id| {
                id.labels.contains(&format!("gen={i}")) && id.labels.contains("cluster=c2")
            })
        })
    });
    let identities = c1_identities();
    // c1 holds exactly the identities c2 publishes: the removed client's is
    // gone from c1 once c2 no longer has it, and kept while c2 still does
    // (its master key lives until c2's identity GC).
    let published_identities = || -> BTreeSet<u32> {
        mesh.list("c2", &keys::identity_masters())
            .expect("list c2's identities")
            .iter()
            .filter_map(|kv| keys::parse_identity_master(keys::identity_masters().strip(&kv.key)?))
            .map(|id| id.get())
            .collect()
    };
    let c2_identities_in_c1 = || -> BTreeSet<u32> {
        c1_identities()
            .into_iter()
            .filter(|id| id.labels.contains("io.cilium.k8s.policy.cluster=c2;"))
            .map(|id| id.id)
            .collect()
    };
    wait_for("c1 holds exactly c2's published identities", || {
        c2_identities_in_c1() == published_identities()
    });
    let client_published = mesh
        .list("c2", &keys::identity_masters())?
        .iter()
        .any(|kv| String::from_utf8_lossy(&kv.value).contains("app=client;"));
    let client_in_c1 = identities
        .iter()
        .any(|id| id.labels.contains("app=client;") && id.labels.contains("cluster=c2;"));
    eprintln!(
        "c2's removed client identity: published by c2 {client_published}, held by c1 at convergence {client_in_c1}"
    );
    Ok(())
}

#[test]
fn connect_refuses_a_wrong_ca_and_a_wrong_cluster_id() -> anyhow::Result<()> {
    if !can_run("connect_refuses_a_wrong_ca_and_a_wrong_cluster_id") {
        return Ok(());
    }
    let mut mesh = TestMesh::up_with(3, 1, |s| {
        s.connect = false;
        s.workloads = false;
    })?;
    // A working connect prints what it checked.
    let ok = mesh.cli(&["connect", "--from", "c1", "--to", "c2"]);
    assert!(ok.status.success(), "{}", integration::output_text(&ok));
    for check in [
        "distinct",
        "mutual TLS",
        "do not overlap",
        "headroom",
        // measured: both sides' cluster-config and the agents' real map size
        "max-connected-clusters is 255 on c1 and 255 on c2 (their cluster-config)",
        "entries of 524288 (smallest of 1 c1 agents: n1)",
    ] {
        assert!(
            integration::output_text(&ok).contains(check),
            "connect checks {check}: {}",
            integration::output_text(&ok)
        );
    }
    mesh.cli(&["disconnect", "--from", "c1", "--to", "c2"]);

    // c2's apiserver now presents a certificate of another CA.
    let other = certs::Ca::generate("another CA", certs::Validity::days(30)?)?;
    let c2 = mesh.state.cluster("c2")?.clone();
    let cert = other.issue_server(
        &certs::CertName::new("impostor")?,
        &[],
        &[c2.cp_ip.into()],
        certs::Validity::days(10)?,
    )?;
    cert.write_to(&c2.certs.server_cert, &c2.certs.server_key)?;
    let refused = {
        let mut out = mesh.cli(&["connect", "--from", "c1", "--to", "c2"]);
        // The apiserver reloads its certificate within a moment.
        for _ in 0..50 {
            if !out.status.success() {
                break;
            }
            mesh.cli(&["disconnect", "--from", "c1", "--to", "c2"]);
            std::thread::sleep(Duration::from_millis(200));
            out = mesh.cli(&["connect", "--from", "c1", "--to", "c2"]);
        }
        out
    };
    assert!(
        !refused.status.success(),
        "connect with a server of an unknown CA must fail: {}",
        integration::output_text(&refused)
    );
    assert!(
        integration::output_text(&refused).contains("unknown-ca")
            || integration::output_text(&refused).contains("UnknownIssuer"),
        "{}",
        integration::output_text(&refused)
    );
    assert!(integration::output_text(&refused).contains("nothing was changed"));
    assert!(
        !mesh
            .state
            .node("c1", "n1")?
            .clustermesh_dir
            .join("c2")
            .exists(),
        "no remote config written"
    );

    // c3's apiserver claims c1's own ID.
    mesh.restart_apiserver_with_id("c3", 1)?;
    let refused = mesh.cli(&["connect", "--from", "c1", "--to", "c3"]);
    assert!(
        !refused.status.success(),
        "{}",
        integration::output_text(&refused)
    );
    assert!(
        integration::output_text(&refused).contains("cluster ID 1"),
        "{}",
        integration::output_text(&refused)
    );
    assert!(
        !mesh
            .state
            .node("c1", "n1")?
            .clustermesh_dir
            .join("c3")
            .exists()
    );
    Ok(())
}
