//! Policy the way operators write it (issue 18), with real packets on a
//! real two-cluster mesh: egress and ingress both decide a flow across
//! clusters, deny rules win and reopen when removed, CIDR rules with an
//! `except` reach a host outside the mesh, entities, port ranges and ICMP
//! types, and a policy change leaves an established connection alone.
//!
//! Every denial is preceded by the same request succeeding.

use std::{
    io::{BufRead, BufReader, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    time::Duration,
};

use integration::{TestMesh, can_run, wait_for};
use kvstore::{StoreValue, keys, values::PolicyDocument};

/// The network outside the mesh: a namespace behind c1's node.
const EXT_NET: &str = "198.51.100";

fn policy(yaml: &str) -> PolicyDocument {
    PolicyDocument::parse(yaml).unwrap_or_else(|e| panic!("test policy: {e}"))
}

fn apply(mesh: &TestMesh, cluster: &str, doc: &PolicyDocument) {
    mesh.put(cluster, &keys::policies().key(&doc.key()), doc.encode())
        .expect("store the policy");
}

fn remove(mesh: &TestMesh, cluster: &str, doc: &PolicyDocument) {
    mesh.delete(cluster, &keys::policies().key(&doc.key()))
        .expect("delete the policy");
}

/// A host outside the mesh: its own namespace, linked to a node namespace
/// with addresses in [`EXT_NET`], running echo servers. Removed on drop.
struct ExternalHost {
    ns: String,
    servers: Vec<Child>,
}

impl ExternalHost {
    fn start(node_ns: &str, addrs: &[&str], ports: &[u16]) -> anyhow::Result<Self> {
        let tag = format!("{:x}", std::process::id() ^ rand_tag());
        let ns = format!("cmext-{tag}");
        let node_if = format!("cmx{}", &tag[..tag.len().min(8)]);
        let mut host = Self {
            ns: ns.clone(),
            servers: Vec::new(),
        };
        ip(&["netns", "add", &ns])?;
        ip(&[
            "-n", node_ns, "link", "add", &node_if, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ])?;
        ip(&[
            "-n",
            node_ns,
            "addr",
            "add",
            &format!("{EXT_NET}.1/24"),
            "dev",
            &node_if,
        ])?;
        ip(&["-n", node_ns, "link", "set", &node_if, "up"])?;
        for a in addrs {
            ip(&["-n", &ns, "addr", "add", &format!("{a}/24"), "dev", "eth0"])?;
        }
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &format!("{EXT_NET}.1"),
        ])?;
        let bin = localmesh::default_bin_dir().join("clustermesh");
        for port in ports {
            let child = Command::new("ip")
                .args(["netns", "exec", &ns])
                .arg(&bin)
                .args(["tool", "echo-server", "--name", &format!("ext:{port}")])
                .args(["--port", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            host.servers.push(child);
        }
        for port in ports {
            let addr: SocketAddr = format!("{}:{port}", addrs[0]).parse()?;
            let ns = ns.clone();
            wait_for(&format!("echo server {addr} outside the mesh"), || {
                localmesh::in_netns(&ns, move || {
                    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                })
                .unwrap_or(false)
            });
        }
        Ok(host)
    }
}

impl Drop for ExternalHost {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        // The veth goes with the namespace.
        let _ = ip(&["netns", "delete", &self.ns]);
    }
}

fn rand_tag() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// One ping from a pod (1 s timeout).
fn pings(mesh: &TestMesh, cluster: &str, pod: &str, to: IpAddr) -> bool {
    let netns = mesh
        .state
        .endpoint(cluster, pod)
        .expect("endpoint")
        .netns
        .clone();
    Command::new("ip")
        .args(["netns", "exec", &netns, "ping", "-c", "1", "-W", "1"])
        .arg(to.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn ext(host: u8, port: u16) -> SocketAddr {
    format!("{EXT_NET}.{host}:{port}").parse().expect("address")
}

const CLIENT_EGRESS: &str = r#"
kind: CiliumNetworkPolicy
metadata: {name: client-egress, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: [{matchLabels: {app: echo, io.cilium.k8s.policy.cluster: c2}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
"#;

#[test]
fn egress_ingress_deny_cidr_entities_ports_and_icmp_with_real_packets() -> anyhow::Result<()> {
    if !can_run("egress_ingress_deny_cidr_entities_ports_and_icmp_with_real_packets") {
        return Ok(());
    }
    let mesh = TestMesh::up(2, 1)?;
    let node_ns = mesh.node("c1", "n1")?.netns.clone();
    let _ext = ExternalHost::start(
        &node_ns,
        &[&format!("{EXT_NET}.10"), &format!("{EXT_NET}.20")],
        &[8080, 9000],
    )?;
    let c1_echo = mesh.echo_addr("c1", "echo-n1");
    let c2_echo = mesh.echo_addr("c2", "echo-n1");

    // Positive controls: with no policy, c1's client reaches everything
    // denied below.
    wait_for("no policy: c1's client reaches every server", || {
        mesh.reaches("c1", "client", c1_echo)
            && mesh.reaches("c1", "client", c2_echo)
            && mesh.reaches("c1", "client", ext(10, 8080))
            && mesh.reaches("c1", "client", ext(20, 8080))
            && mesh.reaches("c1", "client", ext(10, 9000))
            && mesh.reaches("c2", "client", c2_echo)
    });
    assert!(pings(&mesh, "c1", "client", c2_echo.ip()), "control: ping");

    // 1. Egress: c1's client may reach c2's echo on 8080, nothing else.
    let egress = policy(CLIENT_EGRESS);
    apply(&mesh, "c1", &egress);
    wait_for("egress: c1's echo denied to c1's client", || {
        mesh.denied("c1", "client", c1_echo)
    });
    assert!(
        mesh.reaches("c1", "client", c2_echo),
        "egress allows c2's echo"
    );
    assert!(
        mesh.denied("c1", "client", ext(10, 8080)),
        "the world is denied"
    );
    assert!(
        !pings(&mesh, "c1", "client", c2_echo.ip()),
        "ICMP is not allowed"
    );

    // 2. Both sides decide: c2's echo admits its own clients only, so the
    // egress allow of c1 is not enough; naming c1 admits it.
    apply(&mesh, "c2", &integration::echo_admits_local_clients());
    wait_for("c2's ingress denies c1's client", || {
        mesh.denied("c1", "client", c2_echo)
    });
    assert!(
        mesh.reaches("c2", "client", c2_echo),
        "c2's client admitted"
    );
    let admits_c1 = policy(
        r#"
kind: CiliumNetworkPolicy
metadata: {name: echo-admits-c1, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: echo}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client, io.cilium.k8s.policy.cluster: c1}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
  - fromEndpoints: [{matchLabels: {app: client, io.cilium.k8s.policy.cluster: c1}}]
    icmps: [{fields: [{type: EchoRequest}]}]
"#,
    );
    apply(&mesh, "c2", &admits_c1);
    wait_for("c2's ingress admits c1's client", || {
        mesh.reaches("c1", "client", c2_echo)
    });

    // 3. An established connection survives a policy change that keeps it
    // allowed (the client's policy is rewritten in place).
    let client_ns = mesh.state.endpoint("c1", "client")?.netns.clone();
    let mut conn = localmesh::in_netns(&client_ns, move || {
        TcpStream::connect_timeout(&c2_echo, Duration::from_secs(1))
    })??;
    conn.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut name = String::new();
    reader.read_line(&mut name)?;
    assert_eq!(name.trim(), "c2/echo-n1");
    let egress_icmp = policy(&format!(
        "{CLIENT_EGRESS}  - toEndpoints: [{{matchLabels: {{app: echo, io.cilium.k8s.policy.cluster: c2}}}}]\n    icmps: [{{fields: [{{type: 8}}]}}]\n"
    ));
    apply(&mesh, "c1", &egress_icmp);
    wait_for("the ICMP rule applies: c1's client pings c2's echo", || {
        pings(&mesh, "c1", "client", c2_echo.ip())
    });
    conn.write_all(b"still here\n")?;
    let mut echoed = String::new();
    reader.read_line(&mut echoed)?;
    assert_eq!(
        echoed.trim(),
        "still here",
        "the established connection carried on"
    );

    // 4. Deny wins over allow, and a removed deny reopens.
    let deny = policy(
        r#"
kind: CiliumNetworkPolicy
metadata: {name: no-c2-echo, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egressDeny:
  - toEndpoints: [{matchLabels: {io.cilium.k8s.policy.cluster: c2}}]
    toPorts: [{ports: [{port: "8000", endPort: 8100, protocol: TCP}]}]
"#,
    );
    apply(&mesh, "c1", &deny);
    wait_for("the deny wins over the allow", || {
        mesh.denied("c1", "client", c2_echo)
    });
    assert!(
        pings(&mesh, "c1", "client", c2_echo.ip()),
        "the deny covers TCP 8000-8100 only"
    );
    remove(&mesh, "c1", &deny);
    wait_for("the removed deny reopens", || {
        mesh.reaches("c1", "client", c2_echo)
    });

    // 5. CIDR with an except carves a hole; a port range bounds it.
    let cidr = policy(&format!(
        "{CLIENT_EGRESS}  - toCIDRSet: [{{cidr: {EXT_NET}.0/24, except: [{EXT_NET}.20/32]}}]\n    toPorts: [{{ports: [{{port: \"8000\", endPort: 8999, protocol: TCP}}]}}]\n"
    ));
    apply(&mesh, "c1", &cidr);
    wait_for("the CIDR admits .10", || {
        mesh.reaches("c1", "client", ext(10, 8080))
    });
    assert!(mesh.denied("c1", "client", ext(20, 8080)), "except .20");
    assert!(
        mesh.denied("c1", "client", ext(10, 9000)),
        "outside the range"
    );
    assert!(
        mesh.denied("c1", "client", c1_echo),
        "c1's echo stays denied"
    );

    // 6. Entities: `world` is everything outside the mesh (the CIDR
    // identities included); `cluster` is this cluster only.
    let entities = policy(&format!(
        "{CLIENT_EGRESS}  - toEntities: [world]\n    toPorts: [{{ports: [{{port: \"9000\", protocol: TCP}}]}}]\n  - toEntities: [cluster]\n"
    ));
    apply(&mesh, "c1", &entities);
    wait_for("cluster admits c1's echo", || {
        mesh.reaches("c1", "client", c1_echo)
    });
    assert!(mesh.reaches("c1", "client", ext(20, 9000)), "world on 9000");
    assert!(
        mesh.denied("c1", "client", ext(20, 8080)),
        "world on 9000 only"
    );
    Ok(())
}
