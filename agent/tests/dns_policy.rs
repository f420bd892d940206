//! DNS-aware policy (`toFQDNs`) with real parts: an agent with eBPF in a
//! node namespace, a pod added through the CNI binary, and a real DNS
//! server (Debian's dnsmasq) on a host outside the mesh that serves names
//! whose addresses are servers on that host.
//!
//! The pod's lookups go through the agent's DNS proxy (its policy has DNS
//! rules): an allowed name resolves and connects; a lookup no DNS rule
//! allows gets REFUSED; a name the lookups allow but no `toFQDNs` selects
//! resolves and stays unreachable even when dialled directly; wildcards;
//! TCP DNS; a name whose address changes is followed after its TTL; an
//! agent restart keeps what was learned.

mod support;

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use agent::FqdnView;
use anyhow::{Context, Result};
use etcd_harness::TestEtcd;
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use kvstore::{Client, ClientConfig, StoreValue, keys, values::PolicyDocument};
use netns::{NetNs, Process};
use support::{Fabric, Node, NodeSpec, Pod, denied, request, wait_for};

const DNS: Ipv4Addr = Ipv4Addr::new(192, 168, 78, 50);
const API: Ipv4Addr = Ipv4Addr::new(192, 168, 78, 51);
const OTHER: Ipv4Addr = Ipv4Addr::new(192, 168, 78, 52);
const WILD: Ipv4Addr = Ipv4Addr::new(192, 168, 78, 53);
const API_MOVED: Ipv4Addr = Ipv4Addr::new(192, 168, 78, 54);
const PORT: u16 = 8080;

const POLICY: &str = r#"
kind: CiliumNetworkPolicy
metadata: {name: client-fqdn, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toCIDR: [192.168.78.50/32]
    toPorts:
    - ports: [{port: "53", protocol: ANY}]
      rules: {dns: [{matchPattern: "*.example.test"}, {matchPattern: "*.wild.example.test"}]}
  - toFQDNs: [{matchName: api.example.test}, {matchPattern: "*.wild.example.test"}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
"#;

/// A host outside the mesh on the fabric: dnsmasq on `DNS`, and a TCP
/// server answering its own address on every other address.
struct ExternalHost {
    ns: NetNs,
    dir: tempfile::TempDir,
    dnsmasq: Option<Process>,
    servers: Vec<LineServer>,
}

impl ExternalHost {
    fn start(fabric: &mut Fabric, pod_cidr: &str, node_ip: Ipv4Addr) -> Result<Self> {
        let ns = NetNs::unique("cmext")?;
        fabric.plug(&ns, DNS)?;
        for ip in [API, OTHER, WILD, API_MOVED] {
            ns.add_addr("fab0", &format!("{ip}/32"))?.keep();
        }
        ns.ip(&["route", "add", pod_cidr, "via", &node_ip.to_string()])?;
        let dir = tempfile::tempdir()?;
        std::fs::write(
            dir.path().join("hosts"),
            format!("{API} api.example.test\n"),
        )?;
        let mut host = Self {
            ns,
            dir,
            dnsmasq: None,
            servers: Vec::new(),
        };
        for ip in [API, OTHER, WILD, API_MOVED] {
            host.servers.push(LineServer::start(&host.ns, ip)?);
        }
        host.start_dnsmasq()?;
        Ok(host)
    }

    fn start_dnsmasq(&mut self) -> Result<()> {
        let hosts = self.dir.path().join("hosts");
        let pid = self.dir.path().join("dnsmasq.pid");
        let args = [
            "-k".to_string(),
            "--conf-file=/dev/null".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            format!("--listen-address={DNS}"),
            "--bind-interfaces".into(),
            format!("--addn-hosts={}", hosts.display()),
            // api.example.test follows the hosts file with a 2 s TTL
            "--local-ttl=2".into(),
            format!("--host-record=other.example.test,{OTHER}"),
            format!("--host-record=x.wild.example.test,{WILD},3600"),
            format!("--host-record=secret.other.test,{OTHER}"),
            format!("--pid-file={}", pid.display()),
            "--user=root".into(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.dnsmasq = Some(self.ns.spawn("/usr/sbin/dnsmasq", &args)?);
        wait_for("dnsmasq to answer", || {
            lookup_from(&self.ns, "other.example.test", false)
                .is_ok_and(|a| a.rcode == ResponseCode::NoError)
        });
        Ok(())
    }

    /// Points api.example.test at `ip` (dnsmasq rereads on SIGHUP).
    fn move_api(&self, ip: Ipv4Addr) -> Result<()> {
        std::fs::write(
            self.dir.path().join("hosts"),
            format!("{ip} api.example.test\n"),
        )?;
        self.dnsmasq
            .as_ref()
            .context("dnsmasq runs")?
            .signal(libc::SIGHUP)
            .context("signalling dnsmasq")?;
        Ok(())
    }
}

/// A TCP server on `ip:PORT` that answers each connection with a line
/// naming its address, then echoes one line.
struct LineServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LineServer {
    fn start(ns: &NetNs, ip: Ipv4Addr) -> Result<Self> {
        let addr = SocketAddr::from((ip, PORT));
        let listener = ns.enter(move || TcpListener::bind(addr))??;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        let _ = s.write_all(format!("{ip}\n").as_bytes());
                        let mut buf = [0u8; 256];
                        if let Ok(n) = s.read(&mut buf) {
                            let _ = s.write_all(&buf[..n]);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for LineServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a lookup returned.
#[derive(Debug)]
struct Answer {
    rcode: ResponseCode,
    addresses: Vec<Ipv4Addr>,
    /// Where the answer came from (the server asked, never the proxy).
    from: SocketAddr,
}

fn query_bytes(name: &str, id: u16) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

fn parse_answer(bytes: &[u8], from: SocketAddr) -> Result<Answer> {
    let m = Message::from_vec(bytes).context("a DNS answer")?;
    let addresses = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    Ok(Answer {
        rcode: m.metadata.response_code,
        addresses,
        from,
    })
}

/// Looks `name` up at `DNS` from inside `ns`, over UDP or TCP.
fn lookup_from(ns: &NetNs, name: &str, tcp: bool) -> Result<Answer> {
    let server = SocketAddr::from((DNS, 53));
    let id = rand_id();
    let message = query_bytes(name, id);
    if tcp {
        let mut stream =
            ns.enter(move || TcpStream::connect_timeout(&server, Duration::from_secs(2)))??;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut framed = (message.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&message);
        stream.write_all(&framed)?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len)?;
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut body)?;
        return parse_answer(&body, stream.peer_addr()?);
    }
    let socket = ns.enter(|| UdpSocket::bind("0.0.0.0:0"))??;
    socket.set_read_timeout(Some(Duration::from_secs(3)))?;
    socket.send_to(&message, server)?;
    let mut buf = [0u8; 4096];
    let (n, from) = socket.recv_from(&mut buf)?;
    parse_answer(&buf[..n], from)
}

fn rand_id() -> u16 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        & 0xffff) as u16
}

fn lookup(pod: &Pod, name: &str, tcp: bool) -> Result<Answer> {
    lookup_from(&pod.ns, name, tcp)
}

fn reaches(pod: &Pod, ip: Ipv4Addr) -> bool {
    request(pod, SocketAddr::from((ip, PORT)), Duration::from_secs(2))
        .is_ok_and(|(line, _)| line == ip.to_string())
}

fn blocked(pod: &Pod, ip: Ipv4Addr) -> bool {
    denied(pod, SocketAddr::from((ip, PORT)))
}

fn fqdn_entries(node: &Node) -> Vec<FqdnView> {
    node.api().get("/v1/fqdn").expect("debug fqdn answers")
}

#[test]
fn to_fqdns_through_the_dns_proxy() -> Result<()> {
    if !netns::root_or_skip("to_fqdns_through_the_dns_proxy") {
        return Ok(());
    }
    if !Path::new("/usr/sbin/dnsmasq").exists() {
        assert!(
            !netns::in_ci(),
            "dnsmasq is missing (scripts/install-deps.sh installs dnsmasq-base)"
        );
        eprintln!("skipping to_fqdns_through_the_dns_proxy: dnsmasq is not installed");
        return Ok(());
    }
    let rt = tokio::runtime::Runtime::new()?;
    let etcd = rt.block_on(TestEtcd::start())?;
    let kv = rt.block_on(Client::connect(&ClientConfig::new([etcd.endpoint()])))?;

    let mut fabric = Fabric::new()?;
    let node_ip = Ipv4Addr::new(192, 168, 78, 1);
    let pod_cidr = "10.12.1.0/24";
    let mut node = Node::new(
        NodeSpec {
            cluster: "c1".into(),
            cluster_id: 1,
            name: "n1".into(),
            ip: node_ip,
            pod_cidr: pod_cidr.into(),
            etcd: etcd.endpoint(),
            clustermesh_dir: None,
            kubeconfig: None,
        },
        &mut fabric,
    )?;
    let ext = ExternalHost::start(&mut fabric, pod_cidr, node_ip)?;
    node.start_agent()?;
    let client = node.add_pod("client", &[("app", "client")])?;

    // Controls without policy: the pod resolves directly and reaches every
    // server.
    let direct = lookup(&client, "api.example.test", false)?;
    assert_eq!(direct.addresses, vec![API], "{direct:?}");
    for ip in [API, OTHER, WILD, API_MOVED] {
        assert!(reaches(&client, ip), "control: the pod reaches {ip}");
    }

    let doc = PolicyDocument::parse(POLICY)?;
    rt.block_on(kv.put(&keys::policies().key(&doc.key()), doc.encode()))?;
    wait_for("the policy to deny what no rule allows", || {
        blocked(&client, OTHER)
    });
    // Nothing is learned yet: toFQDNs selects nothing.
    assert!(blocked(&client, API), "api before any lookup");

    // An allowed lookup of a selected name: the answer comes from the
    // server the pod asked, and the address is allowed at once.
    let a = lookup(&client, "api.example.test", false)?;
    assert_eq!(a.rcode, ResponseCode::NoError);
    assert_eq!(a.addresses, vec![API]);
    assert_eq!(
        a.from,
        SocketAddr::from((DNS, 53)),
        "the proxy is invisible"
    );
    assert!(reaches(&client, API), "api after its lookup");

    // Allowed lookup, name no toFQDNs selects: resolves, stays unreachable.
    let o = lookup(&client, "other.example.test", false)?;
    assert_eq!(o.addresses, vec![OTHER]);
    assert!(blocked(&client, OTHER), "other is not selected by toFQDNs");

    // A lookup no DNS rule allows: REFUSED by the proxy, and its address
    // stays unreachable when dialled directly.
    let s = lookup(&client, "secret.other.test", false)?;
    assert_eq!(s.rcode, ResponseCode::Refused, "{s:?}");
    assert!(s.addresses.is_empty());
    assert!(blocked(&client, OTHER));

    // A wildcard pattern, over TCP DNS.
    assert!(blocked(&client, WILD), "wild before its lookup");
    let w = lookup(&client, "x.wild.example.test", true)?;
    assert_eq!(w.addresses, vec![WILD], "{w:?}");
    assert!(reaches(&client, WILD), "wild after its TCP lookup");

    // `debug fqdn` shows what was learned, with the selectors using it.
    let entries = fqdn_entries(&node);
    let wild = entries
        .iter()
        .find(|e| e.name == "x.wild.example.test.")
        .expect("the wildcard name is listed");
    assert_eq!(wild.ip, WILD.to_string());
    assert_eq!(wild.selectors, vec!["*.wild.example.test.".to_string()]);
    assert!(wild.identity.is_some());
    assert!(
        !entries.iter().any(|e| e.name == "other.example.test."),
        "a name no toFQDNs selects is not learned: {entries:?}"
    );

    // The name moves: after the TTL the old address goes and the new one
    // comes with the next lookup.
    ext.move_api(API_MOVED)?;
    wait_for("api.example.test to resolve to its new address", || {
        lookup(&client, "api.example.test", false).is_ok_and(|a| a.addresses == vec![API_MOVED])
    });
    assert!(
        reaches(&client, API_MOVED),
        "the new address after its lookup"
    );
    wait_for("the old address to expire after its TTL", || {
        blocked(&client, API)
    });

    // An agent restart keeps the learned names (x.wild has a long TTL): the
    // address stays allowed without a new lookup, and lookups still work.
    node.kill_agent();
    node.start_agent()?;
    assert!(
        fqdn_entries(&node)
            .iter()
            .any(|e| e.name == "x.wild.example.test." && e.identity.is_some()),
        "restored after the restart"
    );
    assert!(
        reaches(&client, WILD),
        "wild after the restart, no new lookup"
    );
    let again = lookup(&client, "x.wild.example.test", false)?;
    assert_eq!(again.addresses, vec![WILD]);
    let refused = lookup(&client, "secret.other.test", false)?;
    assert_eq!(refused.rcode, ResponseCode::Refused);

    drop(client);
    drop(ext);
    Ok(())
}
