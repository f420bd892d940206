//! Policy the way operators write it (issue 18), with real packets on a
//! real two-cluster mesh: egress and ingress both decide a flow across
//! clusters, deny rules win and reopen when removed, CIDR rules with an
//! `except` reach a host outside the mesh, entities, port ranges and ICMP
//! types, egress rules naming a port that remote pods declare, and a
//! policy change leaves an established connection alone.
//!
//! Every check runs over IPv4 and IPv6; every denial is preceded by the
//! same request succeeding.

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
const EXT_NET6: &str = "2001:db8:100:";

fn policy(yaml: &str) -> PolicyDocument {
    PolicyDocument::parse(yaml).unwrap_or_else(|e| panic!("test policy: {e}"))
}

fn apply(mesh: &TestMesh, cluster: &str, doc: &PolicyDocument) {
    mesh.apply_policy(cluster, doc).expect("store the policy");
}

fn remove(mesh: &TestMesh, cluster: &str, doc: &PolicyDocument) {
    mesh.delete(cluster, &keys::policies().key(&doc.key()))
        .expect("delete the policy");
}

/// A host outside the mesh: its own namespace, linked to a node namespace
/// with addresses in [`EXT_NET`] and [`EXT_NET6`], running echo servers.
/// Removed on drop.
struct ExternalHost {
    ns: String,
    servers: Vec<Child>,
}

impl ExternalHost {
    fn start(node_ns: &str, hosts: &[u8], ports: &[u16]) -> anyhow::Result<Self> {
        let tag = format!("{:x}", std::process::id() ^ rand_tag());
        let ns = format!("cmext-{tag}");
        let node_if = format!("cmx{}", &tag[..tag.len().min(8)]);
        let mut host = Self {
            ns: ns.clone(),
            servers: Vec::new(),
        };
        ip(&["netns", "add", &ns])?;
        let veth = [
            "-n", node_ns, "link", "add", &node_if, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ];
        ip(&veth)?;
        let gw4 = format!("{EXT_NET}.1");
        let gw6 = format!("{EXT_NET6}:1");
        for (ns_, dev, addr) in [
            (node_ns, node_if.as_str(), format!("{gw4}/24")),
            (node_ns, node_if.as_str(), format!("{gw6}/64")),
        ]
        .into_iter()
        .chain(hosts.iter().flat_map(|h| {
            [
                (ns.as_str(), "eth0", format!("{EXT_NET}.{h}/24")),
                (ns.as_str(), "eth0", format!("{EXT_NET6}:{h}/64")),
            ]
        })) {
            ip(&["-n", ns_, "addr", "add", &addr, "dev", dev, "nodad"])?;
        }
        for (ns_, dev) in [(node_ns, node_if.as_str()), (&ns, "eth0"), (&ns, "lo")] {
            ip(&["-n", ns_, "link", "set", dev, "up"])?;
        }
        ip(&["-n", &ns, "route", "add", "default", "via", &gw4])?;
        ip(&["-n", &ns, "-6", "route", "add", "default", "via", &gw6])?;
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
            for v6 in [false, true] {
                let addr = ext(v6, hosts[0], *port);
                let ns = ns.clone();
                wait_for(&format!("echo server {addr} outside the mesh"), || {
                    localmesh::in_netns(&ns, move || {
                        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                    })
                    .unwrap_or(false)
                });
            }
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

/// `host` outside the mesh, over IPv4 or IPv6.
fn ext(v6: bool, host: u8, port: u16) -> SocketAddr {
    let ip: IpAddr = if v6 {
        format!("{EXT_NET6}:{host}")
    } else {
        format!("{EXT_NET}.{host}")
    }
    .parse()
    .expect("address");
    SocketAddr::new(ip, port)
}

/// A workload's echo server over each family.
fn echo(mesh: &TestMesh, cluster: &str, pod: &str) -> [SocketAddr; 2] {
    let v4 = mesh.echo_addr(cluster, pod);
    let e = mesh.state.endpoint(cluster, pod).expect("endpoint");
    let v6 = e.ipv6.expect("a dual-stack pod");
    [v4, SocketAddr::new(v6.into(), v4.port())]
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
    let _ext = ExternalHost::start(&node_ns, &[10, 20], &[8080, 9000])?;
    let c1_echo = echo(&mesh, "c1", "echo-n1");
    let c2_echo = echo(&mesh, "c2", "echo-n1");
    let reaches = |to: SocketAddr| mesh.reaches("c1", "client", to);
    let denied = |to: SocketAddr| mesh.denied("c1", "client", to);
    let both = [false, true];

    // Positive controls: with no policy, c1's client reaches everything
    // denied below, over both families.
    wait_for("no policy: c1's client reaches every server", || {
        c1_echo.iter().chain(&c2_echo).all(|a| reaches(*a))
            && both.iter().all(|v6| {
                reaches(ext(*v6, 10, 8080))
                    && reaches(ext(*v6, 20, 8080))
                    && reaches(ext(*v6, 10, 9000))
            })
            && c2_echo.iter().all(|a| mesh.reaches("c2", "client", *a))
    });
    for a in c2_echo {
        assert!(pings(&mesh, "c1", "client", a.ip()), "control: ping {a}");
    }

    // 1. Egress: c1's client may reach c2's echo on 8080, nothing else.
    let egress = policy(CLIENT_EGRESS);
    apply(&mesh, "c1", &egress);
    wait_for("egress: c1's echo denied to c1's client", || {
        c1_echo.iter().all(|a| denied(*a))
    });
    for a in c2_echo {
        assert!(reaches(a), "egress allows c2's echo {a}");
        assert!(!pings(&mesh, "c1", "client", a.ip()), "no ICMP to {a}");
    }
    for v6 in both {
        assert!(denied(ext(v6, 10, 8080)), "the world is denied (v6 {v6})");
    }

    // 2. Both sides decide: c2's echo admits its own clients only, so the
    // egress allow of c1 is not enough; naming c1 admits it.
    apply(&mesh, "c2", &integration::echo_admits_local_clients());
    wait_for("c2's ingress denies c1's client", || {
        c2_echo.iter().all(|a| denied(*a))
    });
    for a in c2_echo {
        assert!(mesh.reaches("c2", "client", a), "c2's client admitted {a}");
    }
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
    icmps: [{fields: [{type: EchoRequest}, {type: EchoRequest, family: IPv6}]}]
"#,
    );
    apply(&mesh, "c2", &admits_c1);
    wait_for("c2's ingress admits c1's client", || {
        c2_echo.iter().all(|a| reaches(*a))
    });

    // 3. An established connection survives a policy change that keeps it
    // allowed (the client's policy is rewritten in place).
    let client_ns = mesh.state.endpoint("c1", "client")?.netns.clone();
    let mut open = Vec::new();
    for to in c2_echo {
        let conn = localmesh::in_netns(&client_ns, move || {
            TcpStream::connect_timeout(&to, Duration::from_secs(1))
        })??;
        conn.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut name = String::new();
        reader.read_line(&mut name)?;
        assert_eq!(name.trim(), "c2/echo-n1");
        open.push((conn, reader));
    }
    let egress_icmp = policy(&format!(
        "{CLIENT_EGRESS}  - toEndpoints: [{{matchLabels: {{app: echo, io.cilium.k8s.policy.cluster: c2}}}}]\n    icmps: [{{fields: [{{type: 8}}, {{type: 128, family: IPv6}}]}}]\n"
    ));
    apply(&mesh, "c1", &egress_icmp);
    wait_for("the ICMP rule applies: c1's client pings c2's echo", || {
        c2_echo.iter().all(|a| pings(&mesh, "c1", "client", a.ip()))
    });
    for (mut conn, mut reader) in open {
        conn.write_all(b"still here\n")?;
        let mut echoed = String::new();
        reader.read_line(&mut echoed)?;
        assert_eq!(
            echoed.trim(),
            "still here",
            "the established connection carried on"
        );
    }

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
        c2_echo.iter().all(|a| denied(*a))
    });
    for a in c2_echo {
        assert!(
            pings(&mesh, "c1", "client", a.ip()),
            "the deny covers TCP 8000-8100 only ({a})"
        );
    }
    remove(&mesh, "c1", &deny);
    wait_for("the removed deny reopens", || {
        c2_echo.iter().all(|a| reaches(*a))
    });

    // 5. CIDR with an except carves a hole; a port range bounds it.
    let cidr = policy(&format!(
        "{CLIENT_EGRESS}  - toCIDRSet:\n    - {{cidr: {EXT_NET}.0/24, except: [{EXT_NET}.20/32]}}\n    - {{cidr: \"{EXT_NET6}:/64\", except: [\"{EXT_NET6}:20/128\"]}}\n    toPorts: [{{ports: [{{port: \"8000\", endPort: 8999, protocol: TCP}}]}}]\n"
    ));
    apply(&mesh, "c1", &cidr);
    wait_for("the CIDR admits .10", || {
        both.iter().all(|v6| reaches(ext(*v6, 10, 8080)))
    });
    for v6 in both {
        assert!(denied(ext(v6, 20, 8080)), "except .20 (v6 {v6})");
        assert!(denied(ext(v6, 10, 9000)), "outside the range (v6 {v6})");
    }
    for a in c1_echo {
        assert!(denied(a), "c1's echo stays denied ({a})");
    }

    // 6. Entities: `world` is everything outside the mesh (the CIDR
    // identities included); `cluster` is this cluster only.
    let entities = policy(&format!(
        "{CLIENT_EGRESS}  - toEntities: [world]\n    toPorts: [{{ports: [{{port: \"9000\", protocol: TCP}}]}}]\n  - toEntities: [cluster]\n"
    ));
    apply(&mesh, "c1", &entities);
    wait_for("cluster admits c1's echo", || {
        c1_echo.iter().all(|a| reaches(*a))
    });
    for v6 in both {
        assert!(reaches(ext(v6, 20, 9000)), "world on 9000 (v6 {v6})");
        assert!(denied(ext(v6, 20, 8080)), "world on 9000 only (v6 {v6})");
    }

    // 7. Egress by port name: a name stands for the ports the mesh's
    // endpoints declare (c2's echo pods declare `http` = 8080 in their
    // ipcache entries); a name nobody declares admits nothing.
    for a in c2_echo {
        assert!(reaches(a), "control: c2's echo by number {a}");
    }
    let by_name = |name: &str| {
        policy(&CLIENT_EGRESS.replace(r#"port: "8080""#, &format!(r#"port: "{name}""#)))
    };
    apply(&mesh, "c1", &by_name("metrics"));
    wait_for("an undeclared port name admits nothing", || {
        c2_echo.iter().all(|a| denied(*a))
    });
    apply(&mesh, "c1", &by_name("http"));
    wait_for("`http` admits c2's echo on 8080", || {
        c2_echo.iter().all(|a| reaches(*a))
    });
    Ok(())
}
