//! A DNS server outside the mesh for the `toFQDNs` tests and bench: a
//! host namespace on the fabric running Debian's dnsmasq, with TCP servers
//! on the addresses its names resolve to, and a DNS client that runs in any
//! namespace.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::{Context, Result};
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use netns::{NetNs, Process};

use super::{EchoServer, Fabric, Node, NodeSpec, wait_for};

pub const DNS: Ipv4Addr = Ipv4Addr::new(192, 168, 78, 50);
pub const API: Ipv4Addr = Ipv4Addr::new(192, 168, 78, 51);
pub const OTHER: Ipv4Addr = Ipv4Addr::new(192, 168, 78, 52);
pub const WILD: Ipv4Addr = Ipv4Addr::new(192, 168, 78, 53);
pub const API_MOVED: Ipv4Addr = Ipv4Addr::new(192, 168, 78, 54);
pub const PORT: u16 = 8080;

/// The node of the DNS tests: its address on the fabric, its pod CIDR.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 78, 1);
pub const POD_CIDR: &str = "10.12.1.0/24";

/// The `client` pods' policy: lookups of `*.example.test` and
/// `*.wild.example.test` through the proxy to `DNS`, and TCP 8080 to what
/// `api.example.test` and `*.wild.example.test` resolve to.
pub const POLICY: &str = r#"
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

/// Node `n1` of cluster `c1` (ID 1) at `NODE_IP` with `POD_CIDR`, on
/// `fabric`, with the local etcd at `etcd` (its agent not started yet).
pub fn dns_node(etcd: String, fabric: &mut Fabric) -> Result<Node> {
    Node::new(
        NodeSpec {
            cluster: "c1".into(),
            cluster_id: 1,
            name: "n1".into(),
            ip: NODE_IP,
            pod_cidr: POD_CIDR.into(),
            etcd,
            clustermesh_dir: None,
            kubeconfig: None,
        },
        fabric,
    )
}

/// Where dnsmasq is (Debian's `dnsmasq-base`).
pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// A host outside the mesh on the fabric: dnsmasq on `DNS`, and a TCP
/// server answering its own address on every other address.
pub struct ExternalHost {
    pub ns: NetNs,
    dir: tempfile::TempDir,
    dnsmasq: Option<Process>,
    servers: Vec<EchoServer>,
    /// Hosts-file lines besides api's.
    extra_hosts: String,
}

impl ExternalHost {
    /// `extra_hosts` lines go into dnsmasq's hosts file (after api's).
    pub fn start(
        fabric: &mut Fabric,
        pod_cidr: &str,
        node_ip: Ipv4Addr,
        extra_hosts: &str,
    ) -> Result<Self> {
        let ns = NetNs::unique("cmext")?;
        fabric.plug(&ns, DNS)?;
        for ip in [API, OTHER, WILD, API_MOVED] {
            ns.add_addr("fab0", &format!("{ip}/32"))?.keep();
        }
        ns.ip(&["route", "add", pod_cidr, "via", &node_ip.to_string()])?;
        let dir = tempfile::tempdir()?;
        std::fs::write(
            dir.path().join("hosts"),
            format!("{API} api.example.test\n{extra_hosts}"),
        )?;
        let mut host = Self {
            ns,
            dir,
            dnsmasq: None,
            servers: Vec::new(),
            extra_hosts: extra_hosts.to_string(),
        };
        for ip in [API, OTHER, WILD, API_MOVED] {
            host.servers.push(EchoServer::start_in(
                &host.ns,
                SocketAddr::from((ip, PORT)),
                ip.to_string(),
            )?);
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
    pub fn move_api(&self, ip: Ipv4Addr) -> Result<()> {
        std::fs::write(
            self.dir.path().join("hosts"),
            format!("{ip} api.example.test\n{}", self.extra_hosts),
        )?;
        self.dnsmasq
            .as_ref()
            .context("dnsmasq runs")?
            .signal(libc::SIGHUP)
            .context("signalling dnsmasq")?;
        Ok(())
    }
}

/// What a lookup returned.
#[derive(Debug)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub addresses: Vec<Ipv4Addr>,
    /// Where the answer came from (the server asked, never the proxy).
    pub from: SocketAddr,
}

pub fn query_bytes(name: &str, id: u16) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

pub fn parse_answer(bytes: &[u8], from: SocketAddr) -> Result<Answer> {
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
pub fn lookup_from(ns: &NetNs, name: &str, tcp: bool) -> Result<Answer> {
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

pub fn rand_id() -> u16 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        & 0xffff) as u16
}
