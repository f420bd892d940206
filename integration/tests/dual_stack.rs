//! Dual-stack workloads on a real local mesh of two clusters: every pod has
//! an IPv4 and an IPv6 address; IPv6 pings and TCP connections cross
//! clusters through the IPv6 routes; a cross-cluster ingress policy holds on
//! IPv6 exactly as on IPv4; an IPv6 service frontend balances over the IPv6
//! backends of both clusters; a mixed-family service is refused where it is
//! defined, and a remote cluster's backends of the wrong family are skipped
//! with the reason; a restarted agent keeps its IPv6 pod CIDR and its pods'
//! addresses, and a partition cuts IPv6 as IPv4.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    process::{Command, Output},
    time::Duration,
};

use integration::{TestMesh, can_run, wait_for};
use kvstore::{
    ClusterName, StoreValue, keys,
    values::{ClusterService, L4Addr, PolicyDocument, ServiceDef},
};

/// The IPv6 frontend of the test's service (`demo/echo6`).
const FRONTEND_V6: &str = "[fd96::10]:80";

/// Applies a service definition through the CLI, as a user does.
fn service_apply(mesh: &TestMesh, cluster: &str, yaml: &str) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("service.yaml");
    std::fs::write(&file, yaml).expect("write the service");
    mesh.cli(&[
        "service",
        "apply",
        "-f",
        &file.to_string_lossy(),
        "--cluster",
        cluster,
    ])
}

/// A pod's IPv6 address, as its CNI result gave it.
fn ipv6(mesh: &TestMesh, cluster: &str, pod: &str) -> Ipv6Addr {
    mesh.state
        .endpoint(cluster, pod)
        .expect("endpoint")
        .ipv6
        .unwrap_or_else(|| panic!("{cluster}/{pod} has no IPv6 address"))
}

fn echo_v6(mesh: &TestMesh, cluster: &str, pod: &str) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(ipv6(mesh, cluster, pod)), localmesh::ECHO_PORT)
}

/// Whether one IPv6 ping from `cluster/pod` to `to` is answered.
fn ping6(mesh: &TestMesh, cluster: &str, pod: &str, to: Ipv6Addr) -> bool {
    let netns = &mesh.state.endpoint(cluster, pod).expect("endpoint").netns;
    Command::new("ip")
        .args([
            "netns", "exec", netns, "ping", "-6", "-n", "-c", "1", "-W", "1",
        ])
        .arg(to.to_string())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// c2's echo servers admit clients of c1 only, on 8080 (ICMP not at all).
fn echo_admits_c1_clients() -> PolicyDocument {
    PolicyDocument::parse(
        r#"
kind: CiliumNetworkPolicy
metadata: {name: echo-ingress, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: echo}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client, io.cilium.k8s.policy.cluster: c1}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
"#,
    )
    .expect("a valid policy")
}

#[test]
fn dual_stack_pods_routes_policy_and_services_across_clusters() -> anyhow::Result<()> {
    if !can_run("dual_stack_pods_routes_policy_and_services_across_clusters") {
        return Ok(());
    }
    let mut mesh = TestMesh::up(2, 2)?;
    mesh.add_endpoint("c1", "n1", "other", &[("app", "other")], None)?;

    // Pods have both addresses: IPv4 from 10.I.0.0/16, IPv6 from fd10:I::/48,
    // on the pod's interface, in the agent's view and published in etcd.
    for (cluster, pod) in [("c1", "client"), ("c1", "echo-n1"), ("c2", "echo-n1")] {
        let e = mesh.state.endpoint(cluster, pod)?.clone();
        let v6 = ipv6(&mesh, cluster, pod);
        let id = &cluster[1..];
        assert!(e.ip.to_string().starts_with(&format!("10.{id}.")), "{e:?}");
        assert!(v6.to_string().starts_with(&format!("fd10:{id}:")), "{v6}");
        let addrs = Command::new("ip")
            .args([
                "netns", "exec", &e.netns, "ip", "-6", "addr", "show", "dev", "eth0",
            ])
            .output()?;
        assert!(
            integration::output_text(&addrs).contains(&format!("{v6}/128")),
            "{cluster}/{pod}'s eth0 has {v6}: {}",
            integration::output_text(&addrs)
        );
        let endpoints: Vec<agent::Endpoint> =
            mesh.agent_api(cluster, &e.node)?.get("/v1/endpoints")?;
        assert!(
            endpoints.iter().any(|x| x.ip == e.ip && x.ipv6 == Some(v6)),
            "the agent shows both addresses: {endpoints:?}"
        );
    }
    let published = mesh.published("c2");
    let identity_of = |addr: String| {
        published
            .iter()
            .find(|(prefix, _)| prefix.split('/').next() == Some(addr.as_str()))
            .map(|(_, id)| *id)
    };
    let echo2 = mesh.state.endpoint("c2", "echo-n1")?.clone();
    let echo2_v6 = ipv6(&mesh, "c2", "echo-n1");
    assert!(
        identity_of(echo2_v6.to_string()).is_some()
            && identity_of(echo2_v6.to_string()) == identity_of(echo2.ip.to_string()),
        "c2 publishes echo's IPv6 address with its identity: {published:?}"
    );
    wait_for("c1's datapath has c2's entries of both families", || {
        mesh.programmed_from("c1", "n1", "c2") == mesh.published("c2")
    });
    assert!(
        mesh.programmed("c1", "n1", "fd10:2:")
            .iter()
            .any(|(p, _)| p == &format!("{echo2_v6}/128")),
        "c2's echo's IPv6 address is in c1's BPF ipcache"
    );

    // IPv6 across clusters: ping and TCP, both ways.
    let client1_v6 = ipv6(&mesh, "c1", "client");
    wait_for("a v6 ping from c1's client to c2's echo", || {
        ping6(&mesh, "c1", "client", echo2_v6)
    });
    wait_for("a v6 ping from c2's client to c1's client", || {
        ping6(&mesh, "c2", "client", client1_v6)
    });
    let echo2_addr_v6 = echo_v6(&mesh, "c2", "echo-n1");
    let echo2_addr_v4 = mesh.echo_addr("c2", "echo-n1");
    wait_for("c1's client connects to c2's echo over v6 and v4", || {
        mesh.reaches("c1", "client", echo2_addr_v6) && mesh.reaches("c1", "client", echo2_addr_v4)
    });
    let (server, peer) = mesh.request("c1", "client", echo2_addr_v6, Duration::from_secs(2))?;
    assert_eq!(server, "c2/echo-n1");
    assert_eq!(peer, echo2_addr_v6, "a real IPv6 connection");

    // A restarted agent comes back with the same IPv6 pod CIDR (kept in its
    // state directory) and its pods keep their IPv6 addresses and traffic.
    let cidr_v6 = mesh.status("c2", "n1").pod_cidr_v6;
    assert!(
        cidr_v6
            .as_deref()
            .is_some_and(|c| c.starts_with("fd10:2:") && c.ends_with("/64")),
        "{cidr_v6:?}"
    );
    mesh.kill_agent("c2", "n1")?;
    mesh.start_agent("c2", "n1")?;
    assert_eq!(mesh.status("c2", "n1").pod_cidr_v6, cidr_v6);
    let endpoints: Vec<agent::Endpoint> = mesh.agent_api("c2", "n1")?.get("/v1/endpoints")?;
    assert!(
        endpoints.iter().any(|e| e.ipv6 == Some(echo2_v6)),
        "restored with its IPv6 address: {endpoints:?}"
    );
    assert!(
        mesh.reaches("c1", "client", echo2_addr_v6),
        "v6 traffic survives the restart"
    );
    wait_for("c2's client connects to c1's echo over v6", || {
        mesh.reaches("c2", "client", echo_v6(&mesh, "c1", "echo-n1"))
    });
    // Inside a cluster, between its two nodes, through the local v6 route.
    wait_for(
        "c1's client (n1) connects to c1's echo on n2 over v6",
        || mesh.reaches("c1", "client", echo_v6(&mesh, "c1", "echo-n2")),
    );

    // An IPv6 service frontend over the IPv6 backends of both clusters.
    let echo6 = format!(
        "namespace: demo\nname: echo6\nfrontend: \"{}\"\nports: [{{name: http, port: 80, targetPort: {}}}]\nselector: {{app: echo}}\nglobal: true\n",
        FRONTEND_V6
            .trim_start_matches('[')
            .split(']')
            .next()
            .unwrap(),
        localmesh::ECHO_PORT
    );
    for cluster in ["c1", "c2"] {
        let out = service_apply(&mesh, cluster, &echo6);
        assert!(out.status.success(), "{}", integration::output_text(&out));
    }
    let frontend_v6: SocketAddr = FRONTEND_V6.parse()?;
    let mut answered = BTreeSet::new();
    wait_for(
        "the v6 frontend answers from both clusters' backends",
        || {
            if let Ok((server, _)) =
                mesh.request("c1", "client", frontend_v6, Duration::from_millis(800))
            {
                answered.insert(server);
            }
            answered.contains("c1/echo-n1") && answered.contains("c2/echo-n1")
        },
    );
    let services: Vec<agent::ServiceView> = mesh.agent_api("c1", "n1")?.get("/v1/services")?;
    let fe = services
        .iter()
        .find(|s| s.name == "demo/echo6")
        .expect("c1 programs demo/echo6");
    assert_eq!(fe.frontend, FRONTEND_V6);
    assert!(
        fe.backends.iter().all(|b| b.address.starts_with("[fd10:")),
        "an IPv6 frontend has IPv6 backends only: {fe:?}"
    );

    // Cross-cluster ingress policy, IPv6 exactly as IPv4. Positive controls
    // first: the client denied below reaches the same server on both
    // families while no policy selects it.
    wait_for("c1's other reaches c2's echo on both families", || {
        mesh.reaches("c1", "other", echo2_addr_v6) && mesh.reaches("c1", "other", echo2_addr_v4)
    });
    let policy = echo_admits_c1_clients();
    mesh.apply_policy("c2", &policy)?;
    wait_for("c1's other is dropped over v6", || {
        mesh.denied("c1", "other", echo2_addr_v6)
    });
    assert!(mesh.denied("c1", "other", echo2_addr_v4), "and over v4");
    assert!(
        mesh.reaches("c1", "client", echo2_addr_v6),
        "c1's client is admitted over v6"
    );
    assert!(mesh.reaches("c1", "client", echo2_addr_v4), "and over v4");

    // A mixed-family service is refused where it is defined, with its reason.
    let mixed = "namespace: demo\nname: mixed\nfrontend: 10.96.0.30\nports: [{name: http, port: 80}]\nselector: {}\nbackends: [10.1.0.99, \"fd10:1::99\"]\n";
    let refused = service_apply(&mesh, "c1", mixed);
    assert_eq!(
        refused.status.code(),
        Some(64),
        "{}",
        integration::output_text(&refused)
    );
    assert!(
        integration::output_text(&refused)
            .contains("mixed-family service: backend fd10:1::99 is IPv6"),
        "{}",
        integration::output_text(&refused)
    );
    assert!(
        !mesh
            .list("c1", &keys::service_defs())?
            .iter()
            .any(|kv| kv.key.ends_with("demo/mixed")),
        "nothing was stored"
    );

    // A remote cluster offering backends of a family the local service has
    // no frontend for: skipped with the reason, never programmed.
    let v4_only = "namespace: demo\nname: legacy\nfrontend: 10.96.0.40\nports: [{name: http, port: 80, targetPort: 8080}]\nselector: {app: nothing}\nglobal: true\n";
    let out = service_apply(&mesh, "c1", v4_only);
    assert!(out.status.success(), "{}", integration::output_text(&out));
    let mut offered = ClusterService::new(&ClusterName::new("c2")?, 2, "demo", "legacy");
    offered.shared = true;
    let port = || {
        [(
            "http".to_string(),
            L4Addr {
                protocol: "TCP".into(),
                port: 8080,
            },
        )]
        .into_iter()
        .collect()
    };
    offered.frontends.insert("10.96.0.40".into(), port());
    offered.backends.insert(echo2.ip.to_string(), port());
    offered.backends.insert(echo2_v6.to_string(), port());
    mesh.put(
        "c2",
        &keys::services().key(&offered.key()),
        offered.encode(),
    )?;
    wait_for(
        "c1 skips c2's IPv6 backend of the IPv4-only service",
        || {
            let services: Vec<agent::ServiceView> = mesh
                .agent_api("c1", "n1")
                .and_then(|a| Ok(a.get("/v1/services")?))
                .unwrap_or_default();
            services.iter().any(|s| {
                s.name == "demo/legacy"
                    && s.backends
                        .iter()
                        .any(|b| b.address == echo2_addr_v4.to_string())
                    && s.skipped.iter().any(|k| {
                        k.reason == "mixed-family"
                            && k.address == echo2_addr_v6.to_string()
                            && k.detail.contains("no IPv6 frontend")
                    })
            })
        },
    );
    let debug = Command::new(localmesh::default_bin_dir().join("clustermesh-agent"))
        .args(["debug", "--api-socket"])
        .arg(&mesh.node("c1", "n1")?.api_socket)
        .arg("services")
        .output()?;
    assert!(
        integration::output_text(&debug).contains("mixed-family"),
        "`debug services` says why: {}",
        integration::output_text(&debug)
    );
    assert!(
        mesh.reaches("c1", "client", echo2_addr_v4),
        "nothing else changed"
    );
    let _ = ServiceDef::parse(&echo6).expect("the test's v6 service is valid");

    // A partition cuts IPv6 as it cuts IPv4 (c1's client reached echo2 on
    // both families just above), and healing restores both.
    mesh.cut("c1", "c2")?;
    assert!(
        mesh.denied("c1", "client", echo2_addr_v6),
        "the partition drops IPv6"
    );
    assert!(mesh.denied("c1", "client", echo2_addr_v4), "and IPv4");
    mesh.heal("c1", "c2")?;
    wait_for("v6 flows again after healing", || {
        mesh.reaches("c1", "client", echo2_addr_v6)
    });
    Ok(())
}
