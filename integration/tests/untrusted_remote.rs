//! A remote cluster is untrusted input (issue 23): cluster c2 plays a
//! malicious or broken peer by writing into its own etcd, on a real local
//! mesh. Each denial is shown after the same request succeeds when allowed.

use std::{net::IpAddr, process::Command};

use integration::{TestMesh, can_run, wait_for};
use ipnet::IpNet;
use kvstore::{
    ClusterName, Labels, NumericIdentity, StoreValue, keys,
    values::{IpIdentityPair, Node, NodeAddress, NodeCidr, PolicyDocument},
};

/// c1's echo servers admit c1's own client only.
fn echo_admits_local_client() -> PolicyDocument {
    PolicyDocument::parse(
        r#"
kind: CiliumNetworkPolicy
metadata: {name: echo-ingress, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: echo}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}, {port: "0", protocol: ICMP}]}]
"#,
    )
    .unwrap()
}

fn invalid(mesh: &TestMesh, reason: &str) -> u64 {
    mesh.status("c1", "n1")
        .remotes
        .iter()
        .find(|r| r.name == "c2")
        .and_then(|r| r.invalid.get(reason).copied())
        .unwrap_or(0)
}

#[test]
fn reserved_identities_from_a_remote_never_open_a_local_policy() -> anyhow::Result<()> {
    if !can_run("reserved_identities_from_a_remote_never_open_a_local_policy") {
        return Ok(());
    }
    let mut mesh = TestMesh::up(2, 1)?;
    mesh.add_endpoint("c2", "n1", "evil", &[("app", "evil")], None)?;
    let echo = mesh.echo_addr("c1", "echo-n1");
    wait_for("without a policy, c2's evil reaches c1's echo", || {
        mesh.reaches("c2", "evil", echo)
    });
    let doc = echo_admits_local_client();
    mesh.apply_policy("c1", &doc)?;
    wait_for("the policy denies c2's evil", || {
        !mesh.reaches("c2", "evil", echo)
    });
    wait_for("the policy admits c1's client", || {
        mesh.reaches("c1", "client", echo)
    });

    // The labels of c1's client identity, as c1's agent has them.
    let identities: Vec<agent::IdentityView> = mesh.agent_api("c1", "n1")?.get("/v1/identities")?;
    let client = identities
        .iter()
        .find(|i| i.labels.contains("k8s:app=client;") && i.labels.contains("cluster=c1;"))
        .expect("c1's client identity")
        .labels
        .clone();
    let world_before = identities
        .iter()
        .find(|i| i.id == NumericIdentity::WORLD.get())
        .expect("world")
        .labels
        .clone();

    // c2's agent stops (its datapath keeps forwarding), so nothing rewrites
    // what the attacker puts into c2's etcd: reserved identities 2 and 200
    // with the labels of c1's client, and evil's address pointing at 200.
    mesh.kill_agent("c2", "n1")?;
    let labels = Labels::parse_canonical(&client).map_err(|e| anyhow::anyhow!("{e}"))?;
    for id in [NumericIdentity::WORLD, NumericIdentity::new(200)] {
        mesh.put(
            "c2",
            &keys::identity_master(id),
            labels.canonical().into_bytes(),
        )?;
    }
    let evil = mesh.state.endpoint("c2", "evil")?.ip;
    let host = mesh.node("c2", "n1")?.ip;
    let pair = IpIdentityPair::host(
        IpAddr::V4(evil),
        NumericIdentity::new(200),
        Some(IpAddr::V4(host)),
    );
    mesh.put("c2", &keys::ipcache().key(&pair.key()), pair.encode())?;

    wait_for("c1 counts the reserved identities it refused", || {
        invalid(&mesh, "reserved-identity") >= 3
    });
    let identities: Vec<agent::IdentityView> = mesh.agent_api("c1", "n1")?.get("/v1/identities")?;
    assert!(!identities.iter().any(|i| i.id == 200), "200 not accepted");
    assert_eq!(
        identities
            .iter()
            .find(|i| i.id == NumericIdentity::WORLD.get())
            .map(|i| i.labels.clone()),
        Some(world_before.clone()),
        "world keeps its labels"
    );
    let evil_prefix = format!("{evil}/32");
    assert!(
        !mesh
            .ipcache("c1", "n1")
            .iter()
            .any(|e| e.prefix == evil_prefix && e.identity == 200),
        "evil's address never points at 200"
    );
    assert!(!mesh.reaches("c2", "evil", echo), "evil stays denied");
    assert!(
        mesh.reaches("c1", "client", echo),
        "the client still gets in"
    );

    // Deleting the keys removes nothing of c1's own.
    for id in [NumericIdentity::WORLD, NumericIdentity::new(200)] {
        mesh.delete("c2", &keys::identity_master(id))?;
    }
    mesh.delete("c2", &keys::ipcache().key(&pair.key()))?;
    wait_for("c1 still knows world after the deletes", || {
        mesh.agent_api("c1", "n1")
            .and_then(|a| Ok(a.get::<Vec<agent::IdentityView>>("/v1/identities")?))
            .is_ok_and(|ids| {
                ids.iter()
                    .any(|i| i.id == NumericIdentity::WORLD.get() && i.labels == world_before)
            })
    });
    assert!(mesh.reaches("c1", "client", echo));
    Ok(())
}

/// `(destination, gateway)` of the routes in a node's namespace.
fn routes(netns: &str) -> Vec<(String, Option<String>)> {
    let out = Command::new("ip")
        .args(["-n", netns, "-j", "-4", "route", "show"])
        .output()
        .expect("ip route");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["dst"].as_str().unwrap_or_default().to_string(),
                r["gateway"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn hostile_node(name: &str, via: IpAddr, cidr: &str) -> anyhow::Result<(String, Vec<u8>)> {
    let c2 = ClusterName::new("c2")?;
    let mut node = Node::new(&c2, name, 2);
    node.ip_addresses.push(NodeAddress {
        kind: NodeAddress::INTERNAL_IP.into(),
        ip: via,
    });
    node.ipv4_alloc_cidr = Some(NodeCidr::from_net(cidr.parse()?));
    Ok((keys::nodes().key(&node.key()), node.encode()))
}

#[test]
fn a_remote_node_cannot_route_local_address_space_through_itself() -> anyhow::Result<()> {
    if !can_run("a_remote_node_cannot_route_local_address_space_through_itself") {
        return Ok(());
    }
    let mesh = TestMesh::up(2, 2)?;
    let n1 = mesh.node("c1", "n1")?.clone();
    let c2_gateway = IpAddr::V4(mesh.node("c2", "n1")?.ip);
    let n2_cidr = mesh
        .status("c1", "n2")
        .pod_cidr
        .expect("c1/n2 has a pod CIDR");
    let echo_n2 = mesh.echo_addr("c1", "echo-n2");
    wait_for("c1's client reaches the echo on c1/n2", || {
        mesh.reaches("c1", "client", echo_n2)
    });

    // Allowed: a new node of c2 inside c2's pool is routed through it.
    let (key, value) = hostile_node("extra", c2_gateway, "10.2.200.0/24")?;
    mesh.put("c2", &key, value)?;
    let gw = c2_gateway.to_string();
    wait_for("c1/n1 routes c2's new node CIDR", || {
        routes(&n1.netns).contains(&("10.2.200.0/24".into(), Some(gw.clone())))
    });

    // Refused: c1/n2's CIDR, a default-like prefix, c1's pool, the fabric.
    let fabric = format!("172.{}.0.0/16", 16 + mesh.state.subnet);
    let hostile = [
        ("steal-n2", n2_cidr.as_str(), "route-overlaps-local-pods"),
        ("half-world", "0.0.0.0/1", "route-too-wide"),
        ("pool", "10.1.128.0/17", "route-overlaps-local-pods"),
        ("fabric", fabric.as_str(), "route-overlaps-host-network"),
    ];
    for (name, cidr, _) in hostile {
        let (key, value) = hostile_node(name, c2_gateway, cidr)?;
        mesh.put("c2", &key, value)?;
    }
    // And a node whose name has a '/'.
    let mut slash = Node::new(&ClusterName::new("c2")?, "a/b", 2);
    slash.ip_addresses.push(NodeAddress {
        kind: NodeAddress::INTERNAL_IP.into(),
        ip: c2_gateway,
    });
    mesh.put("c2", &keys::nodes().key("c2/a/b"), slash.encode())?;

    wait_for("c1/n1 refuses every hostile claim, with its reason", || {
        let s = mesh.status("c1", "n1");
        let Some(r) = s.remotes.iter().find(|r| r.name == "c2") else {
            return false;
        };
        hostile.iter().all(|(node, cidr, reason)| {
            let cidr = cidr.parse::<IpNet>().map(|c| c.trunc().to_string());
            r.refused_routes
                .iter()
                .any(|x| x.node == *node && Ok(&x.cidr) == cidr.as_ref() && x.reason == *reason)
        }) && r.invalid.get("invalid-name").copied().unwrap_or(0) >= 1
    });
    let table = routes(&n1.netns);
    let n2_ip = mesh.node("c1", "n2")?.ip.to_string();
    assert!(
        table.contains(&(n2_cidr.clone(), Some(n2_ip))),
        "c1/n2's CIDR still routes to c1/n2: {table:?}"
    );
    for (_, cidr, _) in hostile {
        let cidr = cidr.parse::<IpNet>()?.trunc().to_string();
        assert!(
            !table.contains(&(cidr.clone(), Some(gw.clone()))),
            "{cidr} is not routed through c2: {table:?}"
        );
    }
    assert!(
        mesh.reaches("c1", "client", echo_n2),
        "local traffic keeps flowing"
    );

    // ipcache: an address of c2's pool is taken; the same entry for an
    // address of c1's pool is refused and counted.
    let (_, c2_id) = mesh.published("c2")[0].clone();
    for ip in ["10.2.250.1", "10.1.250.1"] {
        let pair = IpIdentityPair::host(ip.parse()?, NumericIdentity::new(c2_id), Some(c2_gateway));
        mesh.put("c2", &keys::ipcache().key(&pair.key()), pair.encode())?;
    }
    wait_for("c1/n1 programs c2's own address", || {
        mesh.ipcache("c1", "n1")
            .iter()
            .any(|e| e.prefix == "10.2.250.1/32")
    });
    wait_for("c1/n1 refuses c2's claim on c1's pool", || {
        invalid(&mesh, "ipcache-in-local-pod-space") >= 1
    });
    assert!(
        !mesh
            .ipcache("c1", "n1")
            .iter()
            .any(|e| e.prefix == "10.1.250.1/32"),
        "a local address never gets a remote identity"
    );
    Ok(())
}

#[test]
fn a_wiped_remote_etcd_is_noticed_and_converges_exactly() -> anyhow::Result<()> {
    if !can_run("a_wiped_remote_etcd_is_noticed_and_converges_exactly") {
        return Ok(());
    }
    let mut mesh = TestMesh::up(2, 1)?;
    wait_for("c1 has c2's entries", || {
        !mesh.published("c2").is_empty()
            && mesh.programmed_from("c1", "n1", "c2") == mesh.published("c2")
    });
    // A key nobody re-creates after the wipe: c1 must sweep it then.
    let (_, some_id) = mesh.published("c2")[0].clone();
    let ghost = IpIdentityPair::host(
        "10.2.250.1".parse()?,
        NumericIdentity::new(some_id),
        Some(IpAddr::V4(mesh.node("c2", "n1")?.ip)),
    );
    mesh.put("c2", &keys::ipcache().key(&ghost.key()), ghost.encode())?;
    wait_for("c1 programs the ghost entry", || {
        mesh.ipcache("c1", "n1")
            .iter()
            .any(|e| e.prefix == "10.2.250.1/32")
    });
    let before = mesh.published("c2");

    // c2's etcd loses everything and comes back with the same cluster ID,
    // its revision back at 1.
    mesh.wipe_etcd("c2")?;

    // c2's own agent notices its lost lease, re-allocates the identities of
    // its endpoints and re-announces them; its apiserver publishes the
    // cluster config again.
    wait_for("c2's cluster config is back", || {
        mesh.list("c2", &kvstore::KeyPrefix::new(keys::CLUSTER_CONFIG))
            .is_ok_and(|kvs| !kvs.is_empty())
    });
    wait_for("c2's endpoints are re-announced", || {
        mesh.published("c2").len() == before.len() - 1
    });
    let masters = mesh.list("c2", &keys::identity_masters())?;
    for (prefix, id) in mesh.published("c2") {
        let id = NumericIdentity::new(id);
        if !id.is_reserved() {
            assert!(
                masters.iter().any(|kv| kv.key == keys::identity_master(id)),
                "{prefix}'s identity {id} exists in c2's etcd"
            );
        }
    }
    // c1 converges to exactly what c2 now has, and follows new changes.
    wait_for(
        "c1 converges to the wiped c2 exactly (the ghost swept)",
        || mesh.programmed_from("c1", "n1", "c2") == mesh.published("c2"),
    );
    assert!(
        !mesh
            .ipcache("c1", "n1")
            .iter()
            .any(|e| e.prefix == "10.2.250.1/32")
    );
    // The wipe took c2's stored record of its connection to c1 too: c2's
    // agent kept the mirrored config and stored the record again.
    let record = keys::remote_cluster_record(&kvstore::ClusterName::new("c1")?);
    wait_for("c2's agent stores its record of c1 again", || {
        mesh.list("c2", &keys::remote_cluster_records())
            .is_ok_and(|kvs| kvs.iter().any(|kv| kv.key == record))
    });
    mesh.add_endpoint("c2", "n1", "after-wipe", &[("app", "late")], None)?;
    let late = format!("{}/32", mesh.state.endpoint("c2", "after-wipe")?.ip);
    wait_for("c1 learns c2's endpoint created after the wipe", || {
        mesh.ipcache("c1", "n1").iter().any(|e| e.prefix == late)
    });
    mesh.wait_ready(integration::DEADLINE)?;
    Ok(())
}
