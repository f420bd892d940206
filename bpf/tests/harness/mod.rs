//! A node namespace with endpoint ("pod") namespaces behind veths, the
//! datapath pinned in a per-test bpffs directory, and small TCP/UDP/ping
//! clients and servers that run inside the namespaces. Everything is
//! removed on drop.

#![allow(dead_code)]

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context, Result};
use bpf::{
    Datapath, DatapathConfig, EndpointAttach, EndpointPolicy, IpCacheKey, IpCacheValue, L4Match,
    PolicyKey, PolicyValue,
};
use netns::{Address, NetNs, Route, Veth, unique_name, wait_until};

/// One endpoint: its namespace, host-side veth and addresses.
pub(crate) struct Pod {
    pub(crate) name: String,
    pub(crate) ns: NetNs,
    pub(crate) host_if: String,
    pub(crate) ip4: Ipv4Addr,
    pub(crate) ip6: Ipv6Addr,
    pub(crate) endpoint_id: u32,
    pub(crate) identity: u32,
    _guards: (Veth, Vec<Address>, Vec<Route>),
}

impl Pod {
    pub(crate) fn ips(&self) -> [IpAddr; 2] {
        [IpAddr::V4(self.ip4), IpAddr::V6(self.ip6)]
    }
}

/// A node namespace (forwarding on) with pods attached to it.
pub(crate) struct Node {
    pub(crate) ns: NetNs,
    pub(crate) pin_dir: PathBuf,
    pub(crate) datapath: Option<Datapath>,
    pub(crate) pods: Vec<Pod>,
}

impl Node {
    pub(crate) fn new() -> Result<Self> {
        let ns = NetNs::unique("cmn")?;
        ns.enable_forwarding()?;
        let pin_dir = PathBuf::from("/sys/fs/bpf").join(unique_name("cmtest-"));
        let datapath = Some(Self::open_datapath(&pin_dir)?);
        Ok(Self {
            ns,
            pin_dir,
            datapath,
            pods: Vec::new(),
        })
    }

    pub(crate) fn open_datapath(pin_dir: &std::path::Path) -> Result<Datapath> {
        Datapath::open(DatapathConfig {
            bpffs_dir: pin_dir.to_owned(),
            conntrack_max_entries: 16 * 1024,
            ..DatapathConfig::default()
        })
        .context("open datapath")
    }

    pub(crate) fn dp(&self) -> &Datapath {
        self.datapath.as_ref().expect("datapath open")
    }

    /// Adds pod number `n` (1..) with `identity`: 10.200.n.2/24 and
    /// fd00:200:n::2/64 behind host-side 10.200.n.1 / fd00:200:n::1.
    pub(crate) fn add_pod(&mut self, name: &str, identity: u32) -> Result<usize> {
        let n = self.pods.len() + 1;
        let ns = NetNs::unique("cmp")?;
        let host_if = unique_name("h");
        let veth = Veth::create(&host_if, Some(&self.ns), "eth0", Some(&ns))?;
        let ip4 = Ipv4Addr::new(10, 200, n as u8, 2);
        let ip6: Ipv6Addr = format!("fd00:200:{n}::2").parse()?;
        let addrs = vec![
            self.ns.add_addr(&host_if, &format!("10.200.{n}.1/24"))?,
            self.ns.add_addr(&host_if, &format!("fd00:200:{n}::1/64"))?,
            ns.add_addr("eth0", &format!("{ip4}/24"))?,
            ns.add_addr("eth0", &format!("{ip6}/64"))?,
        ];
        let routes = vec![
            ns.add_route("default", Some(&format!("10.200.{n}.1")), None)?,
            ns.add_route("default", Some(&format!("fd00:200:{n}::1")), None)?,
        ];
        self.pods.push(Pod {
            name: name.to_owned(),
            ns,
            host_if,
            ip4,
            ip6,
            endpoint_id: 100 + n as u32,
            identity,
            _guards: (veth, addrs, routes),
        });
        Ok(n - 1)
    }

    /// Puts every pod's addresses into the ipcache with its identity.
    pub(crate) fn publish_ipcache(&self) -> Result<()> {
        let entries: Vec<_> = self
            .pods
            .iter()
            .flat_map(|p| {
                p.ips()
                    .map(|ip| (IpCacheKey::host(ip), IpCacheValue::new(p.identity)))
            })
            .collect();
        self.datapath
            .as_ref()
            .expect("datapath")
            .ipcache()
            .batch_upsert(&entries)?;
        Ok(())
    }

    pub(crate) fn attach(&mut self, pod: usize, policy_enforced: bool) -> Result<u32> {
        let p = &self.pods[pod];
        let attach = EndpointAttach {
            ifname: p.host_if.clone(),
            netns: Some(self.ns.path().to_owned()),
            endpoint_id: p.endpoint_id,
            identity: p.identity,
            policy: if policy_enforced {
                EndpointPolicy::ingress(p.endpoint_id)
            } else {
                EndpointPolicy::open()
            },
        };
        Ok(self
            .datapath
            .as_mut()
            .expect("datapath")
            .attach_endpoint(&attach)?)
    }

    /// Attaches pod `pod` with its own policy (id = endpoint id) enforced
    /// in the given directions.
    pub(crate) fn attach_with(&mut self, pod: usize, ingress: bool, egress: bool) -> Result<u32> {
        let p = &self.pods[pod];
        let attach = EndpointAttach {
            ifname: p.host_if.clone(),
            netns: Some(self.ns.path().to_owned()),
            endpoint_id: p.endpoint_id,
            identity: p.identity,
            policy: EndpointPolicy {
                policy_id: p.endpoint_id,
                ingress,
                egress,
            },
        };
        Ok(self
            .datapath
            .as_mut()
            .expect("datapath")
            .attach_endpoint(&attach)?)
    }

    /// Writes one entry of pod `pod`'s policy.
    pub(crate) fn entry(
        &self,
        pod: usize,
        direction: bpf::Direction,
        identity: u32,
        l4: L4Match,
        action: bpf::PolicyAction,
        cookie: u32,
    ) -> Result<()> {
        let key = PolicyKey::new(self.pods[pod].endpoint_id, direction, identity, l4);
        self.dp()
            .policy()
            .upsert(&key, &PolicyValue::new(action, &key, cookie))?;
        Ok(())
    }

    /// A client pod and a server pod, both default-deny, the server
    /// admitting `client_identity` on TCP `port` with an echo server
    /// listening, and backend 1 = the server's IPv4 address on `port`.
    /// Returns (client, server, the running echo server).
    pub(crate) fn client_and_backend(
        &mut self,
        client_identity: u32,
        server_identity: u32,
        port: u16,
    ) -> Result<(usize, usize, Server)> {
        let client = self.add_pod("client", client_identity)?;
        let server = self.add_pod("server", server_identity)?;
        self.publish_ipcache()?;
        self.attach(client, true)?;
        self.attach(server, true)?;
        self.allow(
            server,
            client_identity,
            L4Match::Port(bpf::Protocol::Tcp, port),
        )?;
        let echo = Server::start(self.pod(server), port)?;
        let backend = SocketAddr::new(self.pod(server).ips()[0], port);
        self.dp().backends().upsert(
            &bpf::BackendKey { backend_id: 1 },
            &bpf::BackendValue::new(backend, bpf::Protocol::Tcp, 1),
        )?;
        Ok((client, server, echo))
    }

    /// Allows `from` identity to reach pod `to` on `l4`.
    pub(crate) fn allow(&self, to: usize, from_identity: u32, l4: L4Match) -> Result<()> {
        let key = PolicyKey::ingress(self.pods[to].endpoint_id, from_identity, l4);
        self.datapath
            .as_ref()
            .expect("datapath")
            .policy()
            .upsert(&key, &PolicyValue::ALLOW)?;
        Ok(())
    }

    pub(crate) fn pod(&self, i: usize) -> &Pod {
        &self.pods[i]
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.datapath = None;
        if let Err(e) = Datapath::remove_pins(&self.pin_dir) {
            eprintln!("cannot remove {}: {e}", self.pin_dir.display());
        }
    }
}

/// One ping from `pod` to `to` (1 s timeout).
pub(crate) fn ping_once(pod: &Pod, to: IpAddr) -> bool {
    pod.ns
        .exec("ping", &["-c", "1", "-W", "1", &to.to_string()])
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Pings until one answer comes back (up to 5 s).
pub(crate) fn ping_ok(pod: &Pod, to: IpAddr) -> bool {
    wait_until(Duration::from_secs(5), || ping_once(pod, to))
}

/// Two pings, neither answered: ping's exit code 1 ("no reply"). Any other
/// failure (ping missing, an unreachable network: code 2) is not a denial.
pub(crate) fn ping_denied(pod: &Pod, to: IpAddr) -> bool {
    pod.ns
        .exec(
            "ping",
            &["-c", "2", "-i", "0.1", "-W", "1", &to.to_string()],
        )
        .is_ok_and(|o| o.status.code() == Some(1))
}

/// A dual-stack server in a pod: TCP answers each connection with its name
/// and closes; UDP echoes its name to each datagram.
pub(crate) struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    pub(crate) fn start(pod: &Pod, port: u16) -> Result<Self> {
        let (tcp, udp) = pod.ns.enter(|| -> std::io::Result<_> {
            let tcp = TcpListener::bind(("::", port))?;
            let udp = UdpSocket::bind(("::", port))?;
            Ok((tcp, udp))
        })??;
        tcp.set_nonblocking(true)?;
        udp.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let name = pod.name.clone();
        let tcp_thread = {
            let (stop, name) = (stop.clone(), name.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match tcp.accept() {
                        Ok((mut conn, _)) => {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.write_all(name.as_bytes());
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        let udp_thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((_, from)) = udp.recv_from(&mut buf) {
                        let _ = udp.send_to(name.as_bytes(), from);
                    }
                }
            })
        };
        Ok(Self {
            stop,
            threads: vec![tcp_thread, udp_thread],
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Connects over TCP from `pod`; returns (server name, the peer address the
/// client's socket sees).
pub(crate) fn tcp_request(pod: &Pod, to: SocketAddr) -> Result<(String, SocketAddr)> {
    let mut stream = pod
        .ns
        .enter(|| TcpStream::connect_timeout(&to, Duration::from_millis(1500)))??;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let peer = stream.peer_addr()?;
    let mut name = String::new();
    stream.read_to_string(&mut name)?;
    Ok((name, peer))
}

/// [`tcp_request`] from a fixed local port of `pod` (bound before the
/// connect, as a client that reuses its port does).
pub(crate) fn tcp_request_from_port(
    pod: &Pod,
    local_port: u16,
    to: SocketAddr,
) -> Result<(String, SocketAddr)> {
    use std::os::fd::FromRawFd as _;
    let mut stream = pod.ns.enter(move || -> std::io::Result<TcpStream> {
        let (family, local, remote) = match to {
            SocketAddr::V4(a) => {
                let sa = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
                    sin_family: libc::AF_INET as u16,
                    sin_port: port.to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(ip).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                (
                    libc::AF_INET,
                    sa(std::net::Ipv4Addr::UNSPECIFIED, local_port),
                    sa(*a.ip(), a.port()),
                )
            }
            SocketAddr::V6(_) => {
                return Err(std::io::Error::other("IPv4 only"));
            }
        };
        let check = |r: libc::c_int| {
            if r < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(r)
            }
        };
        // SAFETY: plain socket calls on a descriptor this function owns;
        // the addresses are valid sockaddr_in values of the given length.
        unsafe {
            let fd = check(libc::socket(
                family,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
            ))?;
            let stream = TcpStream::from_raw_fd(fd);
            let one: libc::c_int = 1;
            check(libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            ))?;
            // The connect timeout.
            let tv = libc::timeval {
                tv_sec: 1,
                tv_usec: 500_000,
            };
            check(libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_SNDTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            ))?;
            let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
            check(libc::bind(
                fd,
                (&local as *const libc::sockaddr_in).cast(),
                len,
            ))?;
            check(libc::connect(
                fd,
                (&remote as *const libc::sockaddr_in).cast(),
                len,
            ))?;
            Ok(stream)
        }
    })??;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let peer = stream.peer_addr()?;
    let mut name = String::new();
    stream.read_to_string(&mut name)?;
    Ok((name, peer))
}

/// Whether a TCP connection attempt from `pod` goes unanswered (SYN dropped)
/// for 600 ms. A refusal (nothing listens) is not a denial. Every denial a
/// test checks first has a positive control: the same pod reaching the same
/// server while allowed.
pub(crate) fn tcp_denied(pod: &Pod, to: SocketAddr) -> bool {
    matches!(
        pod.ns.enter(|| TcpStream::connect_timeout(&to, Duration::from_millis(600))),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut
    )
}

/// Whether two datagrams from `pod` get no answer within 600 ms: each receive
/// times out. A refusal (an ICMP port unreachable: nothing listens) is not a
/// denial.
pub(crate) fn udp_denied(pod: &Pod, to: SocketAddr) -> bool {
    let any: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().expect("addr")
    } else {
        "[::]:0".parse().expect("addr")
    };
    let Ok(Ok(socket)) = pod.ns.enter(|| UdpSocket::bind(any)) else {
        return false;
    };
    let mut buf = [0u8; 64];
    socket.connect(to).is_ok()
        && socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .is_ok()
        && (0..2).all(|_| {
            socket.send(b"hi").is_ok()
                && socket.recv(&mut buf).is_err_and(|e| {
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    )
                })
        })
}

/// Sends one datagram from a socket connected to `to` (which only accepts
/// answers from `to`); returns the answer.
pub(crate) fn udp_request(pod: &Pod, to: SocketAddr) -> Result<String> {
    let any: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = pod.ns.enter(|| UdpSocket::bind(any))??;
    socket.connect(to)?;
    socket.set_read_timeout(Some(Duration::from_millis(700)))?;
    let mut buf = [0u8; 256];
    for _ in 0..3 {
        socket.send(b"hi")?;
        if let Ok(n) = socket.recv(&mut buf) {
            return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    anyhow::bail!("no UDP answer from {to}")
}
