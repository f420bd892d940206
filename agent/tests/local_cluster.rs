//! One cluster, two nodes, real etcd, real agents with eBPF in network
//! namespaces, pods added through the CNI binary: policy by identity and
//! port in both directions, policy changes on live endpoints, a service
//! balanced over backends on both nodes, and an agent restart that loses no
//! allowed packet.

mod support;

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use agent::ServiceView;
use anyhow::Result;
use etcd_harness::TestEtcd;
use kvstore::{
    Client, ClientConfig, StoreValue, keys,
    values::{PolicyDocument, ServiceDef},
};
use support::{EchoServer, Fabric, Node, NodeSpec, denied, request, wait_for};

fn policy(yaml: &str) -> PolicyDocument {
    PolicyDocument::parse(yaml).expect("test policy parses")
}

async fn put_policy(c: &Client, doc: &PolicyDocument) {
    c.put(&keys::policies().key(&doc.key()), doc.encode())
        .await
        .unwrap();
}

const ALLOW_CLIENT: &str = r#"
kind: CiliumNetworkPolicy
metadata: {name: echo-ingress, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: echo}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}, {port: "0", protocol: ICMP}]}]
"#;

/// An empty ingress rule: default deny, nothing allowed (Cilium's way to
/// lock an endpoint).
const LOCK_CLIENT: &str = r#"
kind: CiliumNetworkPolicy
metadata: {name: client-ingress, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: client}}
  ingress: [{}]
"#;

#[test]
fn two_nodes_policy_services_and_restart() -> Result<()> {
    if !netns::root_or_skip("two_nodes_policy_services_and_restart") {
        return Ok(());
    }
    let rt = tokio::runtime::Runtime::new()?;
    let etcd = rt.block_on(TestEtcd::start())?;
    let kv = rt.block_on(Client::connect(&ClientConfig::new([etcd.endpoint()])))?;

    let mut fabric = Fabric::new()?;
    let spec = |name: &str, ip: [u8; 4], cidr: &str| NodeSpec {
        cluster: "c1".into(),
        cluster_id: 1,
        name: name.into(),
        ip: ip.into(),
        pod_cidr: cidr.into(),
        etcd: etcd.endpoint(),
        clustermesh_dir: None,
        kubeconfig: None,
    };
    let mut n1 = Node::new(spec("n1", [192, 168, 77, 1], "10.11.1.0/24"), &mut fabric)?;
    let mut n2 = Node::new(spec("n2", [192, 168, 77, 2], "10.11.2.0/24"), &mut fabric)?;
    n1.start_agent()?;
    n2.start_agent()?;
    wait_for("routes between the nodes' pod CIDRs", || {
        n1.ns
            .ip(&["route", "show", "10.11.2.0/24"])
            .is_ok_and(|r| r.contains("via 192.168.77.2"))
            && n2
                .ns
                .ip(&["route", "show", "10.11.1.0/24"])
                .is_ok_and(|r| r.contains("via 192.168.77.1"))
    });

    let client = n1.add_pod("client", &[("app", "client")])?;
    let other = n1.add_pod("other", &[("app", "other")])?;
    let echo1 = n1.add_pod("echo-1", &[("app", "echo")])?;
    let echo2 = n2.add_pod("echo-2", &[("app", "echo")])?;
    assert_eq!(
        echo1.endpoint.identity, echo2.endpoint.identity,
        "same labels, same identity on both nodes"
    );
    assert_ne!(client.endpoint.identity, other.endpoint.identity);
    let s1 = EchoServer::start(&echo1, 8080)?;
    let s1_other_port = EchoServer::start(&echo1, 8081)?;
    let s2 = EchoServer::start(&echo2, 8080)?;
    let on_client = EchoServer::start(&client, 9090)?;
    let t = Duration::from_secs(2);

    // No policy selects anyone: everything is allowed, across nodes too.
    // These are the positive controls of every denial checked below: the
    // same pod reaches the same server while allowed.
    wait_for("client reaches echo-2 on the other node", || {
        request(&client, s2.addr(), t).is_ok()
    });
    for (pod, server) in [
        (&client, &s1),
        (&client, &s1_other_port),
        (&other, &s1),
        (&other, &s2),
        (&echo1, &on_client),
    ] {
        assert!(
            request(pod, server.addr(), t).is_ok(),
            "without a policy {} reaches {}",
            pod.name,
            server.addr()
        );
    }

    rt.block_on(put_policy(&kv, &policy(ALLOW_CLIENT)));
    rt.block_on(put_policy(&kv, &policy(LOCK_CLIENT)));
    wait_for("the policy denies `other`", || {
        denied(&other, s1.addr()) && denied(&other, s2.addr())
    });
    assert_eq!(
        request(&client, s1.addr(), t)?.0,
        "echo-1",
        "allowed identity and port, and its replies pass"
    );
    assert_eq!(
        request(&client, s2.addr(), t)?.0,
        "echo-2",
        "allowed across nodes"
    );
    assert!(
        denied(&client, s1_other_port.addr()),
        "another port is denied"
    );
    assert!(
        denied(&echo1, on_client.addr()),
        "the reverse direction is a new connection and is denied"
    );
    let policy_view: agent::PolicyView =
        n1.api().get(&format!("/v1/policy/{}", echo1.endpoint.id))?;
    assert!(policy_view.enforced);
    assert!(
        policy_view
            .entries
            .iter()
            .any(|e| e.identity == client.endpoint.identity && e.port == 8080)
    );

    // A policy change reaches existing endpoints.
    rt.block_on(put_policy(
        &kv,
        &policy(&ALLOW_CLIENT.replace("app: client", "app: other")),
    ));
    wait_for("the changed policy admits `other`", || {
        request(&other, s1.addr(), t).is_ok()
    });
    wait_for("the changed policy denies `client`", || {
        denied(&client, s1.addr())
    });
    rt.block_on(put_policy(&kv, &policy(ALLOW_CLIENT)));
    wait_for("client admitted again", || {
        request(&client, s1.addr(), t).is_ok() && request(&client, s2.addr(), t).is_ok()
    });

    // A service over backends on both nodes.
    let def = ServiceDef::parse(
        "namespace: default\nname: echo\nfrontend: 10.96.0.10\nports: [{name: http, port: 80, targetPort: 8080}]\nselector: {app: echo}\n",
    )
    .unwrap();
    rt.block_on(kv.put(&keys::service_defs().key(&def.key()), def.encode()))?;
    let frontend: SocketAddr = "10.96.0.10:80".parse()?;
    let mut seen = BTreeSet::new();
    wait_for("the service balances over both nodes' backends", || {
        if let Ok((server, peer)) = request(&client, frontend, t) {
            assert_eq!(peer, frontend, "the client sees the frontend address");
            seen.insert(server);
        }
        seen.len() == 2
    });

    // Removing a backend moves new connections to the other one.
    n2.delete_pod(&echo2)?;
    wait_for("the service drops the removed backend", || {
        n1.api()
            .get::<Vec<ServiceView>>("/v1/services")
            .is_ok_and(|s| s.len() == 1 && s[0].backends.len() == 1)
    });
    for _ in 0..20 {
        assert_eq!(request(&client, frontend, t)?.0, "echo-1");
    }

    // An agent restart under continuous traffic loses no allowed packet.
    // ping runs until interrupted; the restart starts once ping has an answer
    // and ends when the new agent is synced, and ping must still be running
    // and answered after that: the restart happened while ping ran.
    let ping = client.ns.spawn(
        "ping",
        &["-n", "-i", "0.02", "-W", "1", &echo1.ip.to_string()],
    )?;
    let answers = |ping: &netns::Process| ping.stdout_so_far().matches(" bytes from ").count();
    wait_for("ping answered before the restart", || answers(&ping) > 0);
    let old_agent = n1.agent_pid().expect("the agent runs");
    n1.kill_agent();
    n1.start_agent()?; // returns once the new agent is synced
    assert_ne!(n1.agent_pid(), Some(old_agent), "a new agent process");
    let at_ready = answers(&ping);
    wait_for("ping answered after the restarted agent is synced", || {
        answers(&ping) > at_ready
    });
    ping.signal(libc::SIGINT)?;
    let out = ping.wait_timeout(Duration::from_secs(10))?;
    assert!(
        out.stdout.contains(" 0% packet loss"),
        "ping lost packets across the agent restart:\n{}",
        out.stdout
    );
    assert_eq!(
        request(&client, s1.addr(), t)?.0,
        "echo-1",
        "enforcement still right after the restart"
    );
    assert!(denied(&other, s1.addr()));
    let status = n1.status();
    assert_eq!(status.endpoints, 3, "restored endpoints: {status:?}");
    drop((s1, s1_other_port, s2, on_client));
    Ok(())
}
