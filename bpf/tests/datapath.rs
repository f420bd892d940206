//! Kernel tests: real packets (ping, TCP, UDP; IPv4 and IPv6) between
//! network namespaces through the datapath programs on endpoint veths.
//! Each test builds its own node namespace, pods and bpffs pin directory.

mod harness;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    time::Duration,
};

use anyhow::Result;
use bpf::{
    BackendKey, BackendValue, CtKey, CtLifetimes, CtValue, Datapath, DropReason, EndpointDetach,
    FlowDirection, FlowEvent, FlowReader, IDENTITY_ANY, IDENTITY_WORLD, IpCacheKey, IpCacheValue,
    L4Match, PolicyKey, PolicyValue, Protocol, ReconcileStats, Verdict, monotonic_now_ns,
    service_entries,
};
use harness::{
    Node, Server, ping_denied, ping_ok, tcp_denied, tcp_request, tcp_request_from_port, udp_denied,
    udp_request,
};
use netns::{skip_unless_root, wait_until};

const CLIENT: u32 = 1001;
const OTHER: u32 = 1002;
const SERVER: u32 = 2000;
const PORT: u16 = 8080;

fn sock(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

/// Collects flow events until `pred` finds one (or 3 s pass).
fn wait_event(
    reader: &mut FlowReader,
    mut pred: impl FnMut(&FlowEvent) -> bool,
) -> Option<FlowEvent> {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(e)) = reader.next_timeout(Duration::from_millis(200))
            && pred(&e)
        {
            return Some(e);
        }
    }
    None
}

#[test]
fn policy_allows_by_identity_and_port_and_replies_pass() -> Result<()> {
    skip_unless_root!(Ok(()));
    let mut node = Node::new()?;
    let client = node.add_pod("client", CLIENT)?;
    let other = node.add_pod("other", OTHER)?;
    let server = node.add_pod("server", SERVER)?;
    node.publish_ipcache()?;
    node.allow(server, CLIENT, L4Match::Port(Protocol::Tcp, PORT))?;
    node.allow(server, CLIENT, L4Match::Protocol(Protocol::Udp))?;
    node.allow(server, CLIENT, L4Match::Protocol(Protocol::Icmp))?;
    node.allow(server, CLIENT, L4Match::Protocol(Protocol::Icmpv6))?;
    let _srv = Server::start(node.pod(server), PORT)?;
    let _srv2 = Server::start(node.pod(server), PORT + 1)?;
    // Positive controls: without enforcement every pair denied below talks.
    for pod in [client, other, server] {
        node.attach(pod, false)?;
    }
    for ip in node.pod(server).ips() {
        tcp_request(node.pod(client), sock(ip, PORT + 1))?;
        assert!(ping_ok(node.pod(other), ip), "control: other ping {ip}");
        tcp_request(node.pod(other), sock(ip, PORT))?;
        assert_eq!(udp_request(node.pod(other), sock(ip, PORT))?, "server");
    }
    assert!(ping_ok(node.pod(server), node.pod(client).ips()[0]));
    // Every pod is default-deny: the clients receive replies only through
    // conntrack, the server only what its policy allows.
    for pod in [client, other, server] {
        node.attach(pod, true)?;
    }

    for ip in node.pod(server).ips() {
        // allowed identity, port and protocol; replies pass the client
        assert!(ping_ok(node.pod(client), ip), "client ping {ip}");
        let (name, _) = tcp_request(node.pod(client), sock(ip, PORT))?;
        assert_eq!(name, "server");
        assert_eq!(udp_request(node.pod(client), sock(ip, PORT))?, "server");
        // allowed identity, port not allowed
        assert!(
            tcp_denied(node.pod(client), sock(ip, PORT + 1)),
            "port {ip}"
        );
        // identity not allowed
        assert!(ping_denied(node.pod(other), ip), "other ping {ip}");
        assert!(
            tcp_denied(node.pod(other), sock(ip, PORT)),
            "other tcp {ip}"
        );
        assert!(
            udp_denied(node.pod(other), sock(ip, PORT)),
            "other udp {ip}"
        );
        // the server cannot open connections to the default-deny client
        assert!(ping_denied(node.pod(server), node.pod(client).ips()[0]));
    }

    // a deny entry for every identity wins over the identity's own allow
    // (within one identity the agent makes covered allows denies: the
    // longest entry decides)
    node.dp().policy().upsert(
        &PolicyKey::ingress(node.pod(server).endpoint_id, IDENTITY_ANY, L4Match::Any),
        &PolicyValue::DENY,
    )?;
    assert!(tcp_denied(
        node.pod(client),
        sock(node.pod(server).ips()[0], PORT)
    ));
    Ok(())
}

#[test]
fn egress_policy_with_port_ranges_icmp_types_and_deny() -> Result<()> {
    use bpf::{Direction::Egress, MatchType, PolicyAction::*};
    skip_unless_root!(Ok(()));
    let mut node = Node::new()?;
    let client = node.add_pod("client", CLIENT)?;
    let server = node.add_pod("server", SERVER)?;
    let other = node.add_pod("other", OTHER)?;
    node.publish_ipcache()?;
    let _servers: Vec<Server> = [PORT, PORT + 5, PORT + 8]
        .into_iter()
        .flat_map(|port| {
            [
                Server::start(node.pod(server), port),
                Server::start(node.pod(other), port),
            ]
        })
        .collect::<Result<_>>()?;
    for pod in [client, server, other] {
        node.attach_with(pod, false, false)?;
    }
    // Positive controls: everything below that is denied works unenforced.
    for ip in node.pod(server).ips() {
        tcp_request(node.pod(client), sock(ip, PORT + 8))?;
        tcp_request(node.pod(client), sock(node.pod(other).ip4.into(), PORT))?;
        assert!(ping_ok(node.pod(client), node.pod(other).ips()[0]));
    }
    // client: egress to the server on TCP 8080-8087 (two aligned blocks
    // cover 8080-8087 exactly: 8080/13), ICMP(v6) echo to the server, and a
    // deny for everyone on 8085.
    for l4 in L4Match::port_range(Protocol::Tcp, PORT, PORT + 7) {
        node.entry(client, Egress, SERVER, l4, Allow, 11)?;
    }
    node.entry(
        client,
        Egress,
        SERVER,
        L4Match::icmp_type(Protocol::Icmp, 8),
        Allow,
        12,
    )?;
    node.entry(
        client,
        Egress,
        SERVER,
        L4Match::icmp_type(Protocol::Icmpv6, 128),
        Allow,
        12,
    )?;
    node.attach_with(client, false, true)?;
    let mut flows = node.dp().flow_reader()?;
    flows.drain();
    for ip in node.pod(server).ips() {
        let (name, _) = tcp_request(node.pod(client), sock(ip, PORT))?;
        assert_eq!(name, "server", "in range {ip}");
        tcp_request(node.pod(client), sock(ip, PORT + 5))?;
        assert!(
            tcp_denied(node.pod(client), sock(ip, PORT + 8)),
            "out of range {ip}"
        );
        assert!(ping_ok(node.pod(client), ip), "echo allowed {ip}");
    }
    for ip in node.pod(other).ips() {
        assert!(
            tcp_denied(node.pod(client), sock(ip, PORT)),
            "other identity {ip}"
        );
        assert!(ping_denied(node.pod(client), ip), "other ping {ip}");
    }
    let allowed = wait_event(&mut flows, |e| {
        e.direction == FlowDirection::FromEndpoint
            && e.verdict == Verdict::Forwarded
            && e.dport == PORT
    })
    .expect("a forwarded egress flow");
    let m = allowed.policy.expect("the deciding entry");
    assert_eq!(
        (m.direction, m.match_type, m.cookie),
        (Egress, MatchType::L3L4, 11)
    );
    assert_eq!(allowed.dst_identity, SERVER);
    let denied = wait_event(&mut flows, |e| {
        e.direction == FlowDirection::FromEndpoint
            && e.verdict == Verdict::Dropped
            && e.dport == PORT + 8
    })
    .expect("a dropped egress flow");
    assert_eq!(denied.drop_reason, Some(DropReason::Policy));
    // The server's side is not enforced: ingress is open to the client.
    // A deny for every identity on 8085 wins over the allowed range.
    node.entry(
        client,
        Egress,
        IDENTITY_ANY,
        L4Match::Port(Protocol::Tcp, PORT + 5),
        Deny,
        13,
    )?;
    for ip in node.pod(server).ips() {
        assert!(
            tcp_denied(node.pod(client), sock(ip, PORT + 5)),
            "deny {ip}"
        );
        tcp_request(node.pod(client), sock(ip, PORT))?;
    }
    let deny = wait_event(&mut flows, |e| {
        e.verdict == Verdict::Dropped && e.dport == PORT + 5
    })
    .expect("a denied flow");
    assert_eq!(deny.drop_reason, Some(DropReason::PolicyDeny));
    assert_eq!(deny.policy.map(|m| m.cookie), Some(13));
    Ok(())
}

#[test]
fn unknown_source_is_world_and_denied_once_a_policy_applies() -> Result<()> {
    skip_unless_root!(Ok(()));
    let mut node = Node::new()?;
    let stranger = node.add_pod("stranger", 0)?;
    let server = node.add_pod("server", SERVER)?;
    // only the server is in the ipcache: the stranger's source is unknown
    let server_ips = node.pod(server).ips();
    for ip in server_ips {
        node.dp()
            .ipcache()
            .upsert(&IpCacheKey::host(ip), &IpCacheValue::new(SERVER))?;
    }
    node.attach(stranger, false)?;
    let ifindex = node.attach(server, false)?;
    let mut flows = node.dp().flow_reader()?;
    for ip in server_ips {
        assert!(
            ping_ok(node.pod(stranger), ip),
            "no policy selects the server yet"
        );
    }

    // a policy now selects the server and allows only CLIENT
    node.allow(server, CLIENT, L4Match::Any)?;
    node.attach(server, true)?;
    for ip in server_ips {
        assert!(
            ping_denied(node.pod(stranger), ip),
            "unknown source denied {ip}"
        );
    }
    let drop = wait_event(&mut flows, |e| e.verdict == Verdict::Dropped).expect("a drop event");
    assert_eq!(drop.src_identity, IDENTITY_WORLD);
    assert_eq!(drop.dst_identity, SERVER);
    assert_eq!(drop.drop_reason, Some(DropReason::Policy));
    assert_eq!(drop.ifindex, ifindex);

    // allowing world lets it in again
    node.allow(server, IDENTITY_WORLD, L4Match::Any)?;
    for ip in server_ips {
        assert!(ping_ok(node.pod(stranger), ip));
    }
    Ok(())
}

#[test]
fn flow_events_report_forwarded_dropped_and_translated() -> Result<()> {
    skip_unless_root!(Ok(()));
    let mut node = Node::new()?;
    let client = node.add_pod("client", CLIENT)?;
    let server = node.add_pod("server", SERVER)?;
    node.publish_ipcache()?;
    node.attach(client, false)?;
    node.allow(server, CLIENT, L4Match::Port(Protocol::Tcp, PORT))?;
    let _srv = Server::start(node.pod(server), PORT)?;
    let _srv2 = Server::start(node.pod(server), PORT + 1)?;
    let server_ip = node.pod(server).ips()[1];
    let client_ip = node.pod(client).ips()[1];
    // Positive control of the denial below: without enforcement the client
    // reaches the server's second port.
    node.attach(server, false)?;
    tcp_request(node.pod(client), sock(server_ip, PORT + 1))?;
    let server_if = node.attach(server, true)?;
    let mut flows = node.dp().flow_reader()?;

    tcp_request(node.pod(client), sock(server_ip, PORT))?;
    let fwd = wait_event(&mut flows, |e| {
        e.verdict == Verdict::Forwarded && e.dport == PORT
    })
    .expect("forwarded event");
    assert_eq!((fwd.src, fwd.dst), (client_ip, server_ip));
    assert_eq!((fwd.src_identity, fwd.dst_identity), (CLIENT, SERVER));
    assert_eq!(fwd.protocol, Protocol::Tcp);
    assert_eq!(fwd.direction, FlowDirection::ToEndpoint);
    assert_eq!(fwd.ifindex, server_if);
    // the connection's first packet: a SYN, not a reply
    assert_eq!(
        (fwd.tcp_flags, fwd.is_reply, fwd.icmp),
        (0x02, Some(false), None)
    );

    assert!(tcp_denied(node.pod(client), sock(server_ip, PORT + 1)));
    let drop = wait_event(&mut flows, |e| {
        e.verdict == Verdict::Dropped && e.dport == PORT + 1
    })
    .expect("dropped event");
    assert_eq!(drop.drop_reason, Some(DropReason::Policy));
    assert_eq!(drop.src_identity, CLIENT);
    assert_eq!((drop.tcp_flags & 0x02, drop.is_reply), (0x02, Some(false)));
    // an echo request carries its ICMP type
    assert!(ping_denied(node.pod(client), server_ip));
    let echo = wait_event(&mut flows, |e| {
        e.verdict == Verdict::Dropped && matches!(e.protocol, Protocol::Icmp | Protocol::Icmpv6)
    })
    .expect("dropped echo request");
    let request_type = if server_ip.is_ipv4() { 8 } else { 128 };
    assert_eq!((echo.icmp, echo.tcp_flags), (Some((request_type, 0)), 0));

    // a service frontend -> translated event naming the backend
    let vip: SocketAddr = "[fd00:96::10]:80".parse()?;
    let backend = sock(server_ip, PORT);
    node.dp().backends().upsert(
        &BackendKey { backend_id: 1 },
        &BackendValue::new(backend, Protocol::Tcp, 2),
    )?;
    node.dp()
        .services()
        .batch_upsert(&service_entries(vip, Protocol::Tcp, &[1]))?;
    let (name, peer) = tcp_request(node.pod(client), vip)?;
    assert_eq!((name.as_str(), peer), ("server", vip));
    let tr =
        wait_event(&mut flows, |e| e.verdict == Verdict::Translated).expect("translated event");
    assert_eq!((tr.dst, tr.dport), (server_ip, PORT));
    assert_eq!(tr.direction, FlowDirection::FromEndpoint);
    assert_eq!((tr.src_identity, tr.dst_identity), (CLIENT, SERVER));
    Ok(())
}

/// A client that reuses its port: the same tuple after translation serves a
/// service connection, then a direct one to the backend, then one through
/// another frontend. Each connection's replies must come from what it
/// dialled (a stale reverse translation would make the client's kernel drop
/// the SYN-ACK: the connect times out).
#[test]
fn a_reused_client_port_gets_the_replies_of_what_it_dialled() -> Result<()> {
    skip_unless_root!(Ok(()));
    let mut node = Node::new()?;
    let (client, server, _s) = node.client_and_backend(CLIENT, SERVER, PORT)?;
    let backend = sock(node.pod(server).ips()[0], PORT);
    let vip1: SocketAddr = "10.96.0.10:80".parse()?;
    let vip2: SocketAddr = "10.96.0.11:81".parse()?;
    for vip in [vip1, vip2] {
        node.dp()
            .services()
            .batch_upsert(&service_entries(vip, Protocol::Tcp, &[1]))?;
    }
    let port = 41234;
    for to in [vip1, backend, vip1, vip2, backend] {
        let (name, peer) = tcp_request_from_port(node.pod(client), port, to)
            .map_err(|e| anyhow::anyhow!("from port {port} to {to}: {e}"))?;
        assert_eq!((name.as_str(), peer), ("server", to));
    }
    Ok(())
}

#[test]
fn service_balances_across_backends_and_replies_come_from_the_frontend() -> Result<()> {
    skip_unless_root!(Ok(()));
    let mut node = Node::new()?;
    let client = node.add_pod("client", CLIENT)?;
    let b1 = node.add_pod("backend1", SERVER)?;
    let b2 = node.add_pod("backend2", SERVER)?;
    node.publish_ipcache()?;
    node.attach(client, true)?;
    for b in [b1, b2] {
        node.attach(b, true)?;
        node.allow(b, CLIENT, L4Match::Port(Protocol::Tcp, PORT))?;
        node.allow(b, CLIENT, L4Match::Port(Protocol::Udp, PORT))?;
    }
    let _s1 = Server::start(node.pod(b1), PORT)?;
    let _s2 = Server::start(node.pod(b2), PORT)?;

    for family in 0..2 {
        let vip: SocketAddr = if family == 0 {
            "10.96.0.10:80".parse()?
        } else {
            "[fd00:96::10]:80".parse()?
        };
        let base = 10 * family as u32;
        // backends "in two clusters"
        let mut backends = BTreeMap::new();
        for (i, b) in [b1, b2].into_iter().enumerate() {
            let addr = sock(node.pod(b).ips()[family], PORT);
            backends.insert(
                BackendKey {
                    backend_id: base + 1 + i as u32,
                },
                BackendValue::new(addr, Protocol::Tcp, 1 + i as u16),
            );
        }
        node.dp()
            .backends()
            .batch_upsert(&backends.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>())?;
        let mut services: BTreeMap<_, _> =
            service_entries(vip, Protocol::Tcp, &[base + 1, base + 2])
                .into_iter()
                .collect();
        services.extend(service_entries(vip, Protocol::Udp, &[base + 1, base + 2]));
        node.dp().services().reconcile(&services)?;

        let mut seen = BTreeSet::new();
        for _ in 0..24 {
            let (name, peer) = tcp_request(node.pod(client), vip)?;
            assert_eq!(peer, vip, "the client talks to the frontend");
            seen.insert(name);
        }
        assert_eq!(seen.len(), 2, "both backends used: {seen:?}");
        // UDP: the connected socket only accepts answers from the frontend
        let mut udp_seen = BTreeSet::new();
        for _ in 0..16 {
            udp_seen.insert(udp_request(node.pod(client), vip)?);
        }
        assert!(!udp_seen.is_empty());

        // remove backend1: new connections all go to backend2
        let mut services: BTreeMap<_, _> = service_entries(vip, Protocol::Tcp, &[base + 2])
            .into_iter()
            .collect();
        services.extend(service_entries(vip, Protocol::Udp, &[base + 2]));
        let stats = node.dp().services().reconcile(&services)?;
        assert_eq!(
            stats,
            ReconcileStats {
                inserted: 0,
                updated: 4,
                deleted: 2
            }
        );
        node.dp().backends().delete(&BackendKey {
            backend_id: base + 1,
        })?;
        for _ in 0..12 {
            let (name, peer) = tcp_request(node.pod(client), vip)?;
            assert_eq!((name.as_str(), peer), ("backend2", vip));
        }
        for _ in 0..4 {
            assert_eq!(udp_request(node.pod(client), vip)?, "backend2");
        }
        // no backends left: the datapath drops instead of leaking the frontend
        let empty: BTreeMap<_, _> = service_entries(vip, Protocol::Tcp, &[])
            .into_iter()
            .collect();
        node.dp().services().reconcile(&empty)?;
        assert!(tcp_denied(node.pod(client), vip));
        node.dp().services().clear()?;
    }
    Ok(())
}

#[test]
fn icmp_errors_about_a_service_connection_name_the_frontend() -> Result<()> {
    use std::net::UdpSocket;
    skip_unless_root!(Ok(()));
    let mut node = Node::new()?;
    let client = node.add_pod("client", CLIENT)?;
    let backend = node.add_pod("backend", SERVER)?;
    node.publish_ipcache()?;
    for pod in [client, backend] {
        node.attach(pod, false)?;
    }
    // Nothing listens on the backend's UDP port: its kernel answers port
    // unreachable, quoting the translated packet (to the backend).
    const CLOSED: u16 = 7777;
    for (family, vip) in [(0, "10.96.0.20:53"), (1, "[fd00:96::20]:53")] {
        let vip: SocketAddr = vip.parse()?;
        let backend_id = 50 + family as u32;
        node.dp().backends().upsert(
            &BackendKey { backend_id },
            &BackendValue::new(
                sock(node.pod(backend).ips()[family], CLOSED),
                Protocol::Udp,
                1,
            ),
        )?;
        let services: BTreeMap<_, _> = service_entries(vip, Protocol::Udp, &[backend_id])
            .into_iter()
            .collect();
        node.dp().services().reconcile(&services)?;
        // A connected UDP socket learns of the error only if it names the
        // frontend it is connected to.
        let any: SocketAddr = if family == 0 {
            "0.0.0.0:0".parse()?
        } else {
            "[::]:0".parse()?
        };
        let socket = node.pod(client).ns.enter(|| UdpSocket::bind(any))??;
        socket.connect(vip)?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut buf = [0u8; 16];
        let refused = (0..3).any(|_| {
            socket.send(b"query").is_ok()
                && socket
                    .recv(&mut buf)
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
        });
        assert!(
            refused,
            "{vip}: the port unreachable from the backend reached the client as the frontend's"
        );
        node.dp().services().clear()?;
    }
    Ok(())
}

#[test]
fn an_endpoint_reaches_itself_through_a_service() -> Result<()> {
    skip_unless_root!(Ok(()));
    let mut node = Node::new()?;
    let server = node.add_pod("server", SERVER)?;
    let other = node.add_pod("other", OTHER)?;
    node.publish_ipcache()?;
    // Default deny both ways, nothing allowed: a connection of the server
    // to itself is its own business (as in Cilium).
    node.attach_with(server, true, true)?;
    node.attach(other, false)?;
    let _srv = Server::start(node.pod(server), PORT)?;
    for (family, vip) in [(0, "10.96.0.30:80"), (1, "[fd00:96::30]:80")] {
        let vip: SocketAddr = vip.parse()?;
        let backend_id = 60 + family as u32;
        node.dp().backends().upsert(
            &BackendKey { backend_id },
            &BackendValue::new(sock(node.pod(server).ips()[family], PORT), Protocol::Tcp, 1),
        )?;
        let services: BTreeMap<_, _> = service_entries(vip, Protocol::Tcp, &[backend_id])
            .into_iter()
            .collect();
        node.dp().services().reconcile(&services)?;
        // Control: another pod goes through the same frontend to the
        // server, which denies it (ingress enforced, nothing allowed).
        assert!(tcp_denied(node.pod(other), vip), "{vip}: other is denied");
        for _ in 0..3 {
            let (name, peer) = tcp_request(node.pod(server), vip)?;
            assert_eq!(
                (name.as_str(), peer),
                ("server", vip),
                "{vip}: the server reaches itself and sees the frontend"
            );
        }
        node.dp().services().clear()?;
    }
    Ok(())
}

#[test]
fn loader_restart_under_continuous_ping_loses_no_packet() -> Result<()> {
    skip_unless_root!(Ok(()));
    let mut node = Node::new()?;
    let client = node.add_pod("client", CLIENT)?;
    let other = node.add_pod("other", OTHER)?;
    let server = node.add_pod("server", SERVER)?;
    node.publish_ipcache()?;
    node.allow(server, CLIENT, L4Match::Protocol(Protocol::Icmp))?;
    let server_ip = node.pod(server).ips()[0];
    // Positive control of the denials below: without enforcement `other`
    // reaches the server.
    for pod in [client, other, server] {
        node.attach(pod, false)?;
    }
    assert!(ping_ok(node.pod(other), server_ip), "control: other pings");
    for pod in [client, other, server] {
        node.attach(pod, true)?;
    }
    assert!(ping_ok(node.pod(client), server_ip));
    let before = node.dp().policy().dump()?;

    let count = 400;
    let pinger = node.pod(client).ns.spawn(
        "ping",
        &[
            "-q",
            "-i",
            "0.01",
            "-W",
            "1",
            "-c",
            &count.to_string(),
            &server_ip.to_string(),
        ],
    )?;
    for round in 0..3 {
        // the loader goes away: programs stay attached and keep enforcing
        node.datapath = None;
        assert!(
            ping_denied(node.pod(other), server_ip),
            "round {round}: enforcement without a loader"
        );
        // a new loader reuses the pinned maps and replaces the programs
        node.datapath = Some(Node::open_datapath(&node.pin_dir)?);
        assert_eq!(node.dp().policy().dump()?, before, "pinned maps kept");
        for pod in [client, other, server] {
            node.attach(pod, true)?;
        }
    }
    // each restart replaced our filters in place instead of adding more
    for (hook, program) in [
        ("egress", "cm_to_endpoint"),
        ("ingress", "cm_from_endpoint"),
    ] {
        let filters = node.ns.run(
            "tc",
            &["filter", "show", "dev", &node.pod(server).host_if, hook],
        )?;
        let ours = filters.lines().filter(|l| l.contains(program)).count();
        assert_eq!(ours, 1, "{filters}");
        assert_eq!(
            filters.lines().filter(|l| l.contains("handle")).count(),
            1,
            "{filters}"
        );
    }
    let out = pinger.wait_timeout(Duration::from_secs(30))?;
    let summary = out
        .stdout
        .lines()
        .find(|l| l.contains("transmitted"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        summary.starts_with(&format!("{count} packets transmitted, {count} received")),
        "{summary}"
    );
    Ok(())
}

#[test]
fn detach_withdraws_enforcement_and_reopen_keeps_the_maps() -> Result<()> {
    skip_unless_root!(Ok(()));
    let mut node = Node::new()?;
    let other = node.add_pod("other", OTHER)?;
    let server = node.add_pod("server", SERVER)?;
    node.publish_ipcache()?;
    node.attach(other, false)?;
    let server_ip = node.pod(server).ips()[1];
    node.attach(server, false)?;
    assert!(ping_ok(node.pod(other), server_ip), "positive control");
    let ifindex = node.attach(server, true)?;
    assert!(ping_denied(node.pod(other), server_ip));
    let ipcache = node.dp().ipcache().dump()?;
    assert_eq!(ipcache.len(), 4);

    let detach = EndpointDetach {
        ifname: node.pod(server).host_if.clone(),
        netns: Some(node.ns.path().to_owned()),
    };
    node.datapath
        .as_mut()
        .expect("open")
        .detach_endpoint(&detach)?;
    assert!(
        ping_ok(node.pod(other), server_ip),
        "no program, no enforcement"
    );
    assert!(
        node.dp()
            .endpoints()
            .get(&bpf::EndpointKey { ifindex })?
            .is_none()
    );
    let filters = node.ns.ip(&["link", "show", &node.pod(server).host_if])?;
    assert!(!filters.is_empty());

    node.datapath = None;
    let reopened = Datapath::open(node_config(&node))?;
    assert_eq!(
        reopened.ipcache().dump()?,
        ipcache,
        "a second open reuses the pinned maps"
    );
    Ok(())
}

fn node_config(node: &Node) -> bpf::DatapathConfig {
    bpf::DatapathConfig {
        bpffs_dir: node.pin_dir.clone(),
        conntrack_max_entries: 16 * 1024,
        ..Default::default()
    }
}

#[test]
fn reconcile_writes_only_the_difference() -> Result<()> {
    skip_unless_root!(Ok(()));
    let node = Node::new()?;
    let dp = node.dp();

    let entry = |i: u32| {
        let ip = IpAddr::from([10, 50, (i >> 8) as u8, i as u8]);
        (IpCacheKey::host(ip), IpCacheValue::new(1000 + i))
    };
    let mut desired: BTreeMap<_, _> = (0..2000).map(entry).collect();
    desired.insert(
        IpCacheKey::new("10.60.0.0/16".parse()?),
        IpCacheValue::new(77),
    );
    let stats = dp.ipcache().reconcile(&desired)?;
    assert_eq!(
        stats,
        ReconcileStats {
            inserted: 2001,
            updated: 0,
            deleted: 0
        }
    );
    assert_eq!(dp.ipcache().reconcile(&desired)?, ReconcileStats::default());

    for i in 0..10 {
        desired.insert(entry(i).0, IpCacheValue::new(5));
    }
    for i in 10..15 {
        desired.remove(&entry(i).0);
    }
    for i in 3000..3003 {
        let (k, v) = entry(i);
        desired.insert(k, v);
    }
    let stats = dp.ipcache().reconcile(&desired)?;
    assert_eq!(
        stats,
        ReconcileStats {
            inserted: 3,
            updated: 10,
            deleted: 5
        }
    );
    assert_eq!(dp.ipcache().dump()?, desired);
    // longest-prefix match
    let hit = dp.ipcache().get(&IpCacheKey::host("10.60.3.4".parse()?))?;
    assert_eq!(hit.map(|v| v.sec_identity), Some(77));

    // per-endpoint reconcile leaves other endpoints' entries alone
    let mine = |id: u32| PolicyKey::ingress(1, id, L4Match::Any);
    dp.policy()
        .upsert(&PolicyKey::ingress(2, 9, L4Match::Any), &PolicyValue::ALLOW)?;
    dp.policy().upsert(&mine(8), &PolicyValue::ALLOW)?;
    let want: BTreeMap<_, _> = [
        (mine(IDENTITY_ANY), PolicyValue::DENY),
        (mine(7), PolicyValue::ALLOW),
    ]
    .into();
    let stats = dp.policy().reconcile_subset(&want, |k| k.policy_id == 1)?;
    assert_eq!(
        stats,
        ReconcileStats {
            inserted: 2,
            updated: 0,
            deleted: 1
        }
    );
    assert_eq!(dp.policy().dump()?.len(), 3);
    assert_eq!(dp.policy().clear()?, 3);
    Ok(())
}

/// One round trip on an open connection: `client` sends, `server` answers.
fn round_trip(client: &mut TcpStream, server: &mut TcpStream) -> Result<()> {
    let mut buf = [0u8; 4];
    client.write_all(b"ping")?;
    server.read_exact(&mut buf)?;
    server.write_all(b"pong")?;
    client.read_exact(&mut buf)?;
    anyhow::ensure!(&buf == b"pong", "echo: {buf:?}");
    Ok(())
}

/// A GC pass with lifetimes that let only established TCP live: a closed TCP
/// connection's and a finished UDP exchange's entries go, an open TCP
/// connection's stay and it keeps working; once closed, its entries go too.
#[test]
fn conntrack_gc_removes_closed_and_idle_entries_and_keeps_open_connections() -> Result<()> {
    skip_unless_root!(Ok(()));
    let mut node = Node::new()?;
    let client = node.add_pod("client", CLIENT)?;
    let server = node.add_pod("server", SERVER)?;
    node.publish_ipcache()?;
    node.attach(client, true)?;
    node.attach(server, true)?;
    for l4 in [
        L4Match::Port(Protocol::Tcp, PORT),
        L4Match::Port(Protocol::Udp, PORT),
        L4Match::Port(Protocol::Tcp, PORT + 1),
    ] {
        node.allow(server, CLIENT, l4)?;
    }
    let _srv = Server::start(node.pod(server), PORT)?;
    let listener = node
        .pod(server)
        .ns
        .enter(|| TcpListener::bind(("::", PORT + 1)))??;
    let server_ip = node.pod(server).ips()[0];

    // An open connection (both ends held here), a closed one (the server
    // closes after answering: read_to_string returns once its FIN passed
    // both programs) and a UDP exchange.
    let mut open = node.pod(client).ns.enter(|| {
        TcpStream::connect_timeout(&sock(server_ip, PORT + 1), Duration::from_secs(2))
    })??;
    let (mut accepted, _) = listener.accept()?;
    for s in [&open, &accepted] {
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
    }
    round_trip(&mut open, &mut accepted)?;
    tcp_request(node.pod(client), sock(server_ip, PORT))?;
    // The client closed second: its socket waits in LAST-ACK until the
    // server's last ACK passed both programs. After that nothing of the
    // connection is in flight (a late packet would make a new entry).
    assert!(
        wait_until(Duration::from_secs(5), || node
            .pod(client)
            .ns
            .run("ss", &["-Htn", "state", "last-ack"])
            .is_ok_and(|out| out.trim().is_empty())),
        "the closed connection's last ACK"
    );
    assert_eq!(
        udp_request(node.pod(client), sock(server_ip, PORT))?,
        "server"
    );

    let ct = node.dp().conntrack();
    let before = ct.dump()?;
    let by_port = |protocol: Protocol, port: u16| -> BTreeMap<CtKey, CtValue> {
        before
            .iter()
            .filter(|(k, _)| k.protocol() == protocol && k.dst().map(|d| d.port()) == Some(port))
            .map(|(k, v)| (*k, *v))
            .collect()
    };
    let (open_entries, closed, udp) = (
        by_port(Protocol::Tcp, PORT + 1),
        by_port(Protocol::Tcp, PORT),
        by_port(Protocol::Udp, PORT),
    );
    // the client's egress entry and the server's ingress entry of each
    assert_eq!(
        (open_entries.len(), closed.len(), udp.len(), before.len()),
        (2, 2, 2, 6),
        "{before:#?}"
    );
    for (k, v) in &open_entries {
        assert!(v.seen_reply() && !v.closing(), "open: {k:?} {v:?}");
    }
    for (k, v) in &closed {
        assert!(v.seen_reply() && v.closing(), "closed: {k:?} {v:?}");
    }
    for (k, v) in &udp {
        assert!(v.seen_reply() && !v.closing(), "udp: {k:?} {v:?}");
    }

    let only_established = CtLifetimes {
        tcp_established: Duration::from_secs(3600),
        tcp_syn: Duration::ZERO,
        tcp_closing: Duration::ZERO,
        any: Duration::ZERO,
    };
    let stats = ct.gc(&only_established, monotonic_now_ns())?;
    assert_eq!(
        stats.deleted,
        BTreeMap::from([(Protocol::Tcp, 2), (Protocol::Udp, 2)])
    );
    assert_eq!(stats.remaining, BTreeMap::from([(bpf::FAMILY_V4, 2)]));
    let after = ct.dump()?;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        open_entries.keys().collect::<Vec<_>>(),
        "exactly the open connection's entries stay"
    );
    // The open connection keeps working (default-deny on both pods: its
    // packets pass only through its entries).
    round_trip(&mut open, &mut accepted)?;
    let stats = ct.gc(&only_established, monotonic_now_ns())?;
    assert_eq!((stats.deleted_total(), stats.remaining_total()), (0, 2));

    // A reset (SO_LINGER 0) closes it: the RST passed both programs once
    // the server's read fails, and nothing follows a RST. Its entries are
    // closing, and the next pass removes them.
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket this test owns, with a valid linger.
    let rc = unsafe {
        libc::setsockopt(
            open.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as u32,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    drop(open);
    let reset = accepted.read(&mut [0u8; 4]);
    assert!(
        reset
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{reset:?}"
    );
    for (k, v) in ct.dump()? {
        assert!(v.closing(), "after the RST: {k:?} {v:?}");
    }
    let stats = ct.gc(&only_established, monotonic_now_ns())?;
    assert_eq!(stats.deleted, BTreeMap::from([(Protocol::Tcp, 2)]));
    assert!(ct.dump()?.is_empty());
    Ok(())
}

/// A service connection's frontend entry follows the connection too: it
/// sees only the client's packets, so the client acknowledging the
/// handshake marks it answered, and the client's FIN closing; a pass that
/// keeps only established TCP then removes every entry of the connection.
#[test]
fn service_conntrack_entries_record_the_answer_and_the_close() -> Result<()> {
    skip_unless_root!(Ok(()));
    let mut node = Node::new()?;
    let (client, _server, _s) = node.client_and_backend(CLIENT, SERVER, PORT)?;
    let vip: SocketAddr = "10.96.0.10:80".parse()?;
    node.dp()
        .services()
        .batch_upsert(&service_entries(vip, Protocol::Tcp, &[1]))?;
    let (name, peer) = tcp_request(node.pod(client), vip)?;
    assert_eq!((name.as_str(), peer), ("server", vip));
    // The client closed second: once the server's last ACK reached it, its
    // FIN had passed the client's program.
    assert!(
        wait_until(Duration::from_secs(5), || node
            .pod(client)
            .ns
            .run("ss", &["-Htn", "state", "last-ack"])
            .is_ok_and(|out| out.trim().is_empty())),
        "the connection's last ACK"
    );
    let ct = node.dp().conntrack();
    let entries = ct.dump()?;
    let scopes: BTreeSet<_> = entries.keys().map(|k| format!("{:?}", k.scope())).collect();
    assert_eq!(
        scopes,
        BTreeSet::from(["Egress".into(), "Ingress".into(), "Service".into()]),
        "{entries:#?}"
    );
    for (k, v) in &entries {
        assert!(v.seen_reply() && v.closing(), "{k:?} {v:?}");
    }
    let only_established = CtLifetimes {
        tcp_established: Duration::from_secs(3600),
        tcp_syn: Duration::ZERO,
        tcp_closing: Duration::ZERO,
        any: Duration::ZERO,
    };
    let stats = ct.gc(&only_established, monotonic_now_ns())?;
    assert_eq!(stats.deleted, BTreeMap::from([(Protocol::Tcp, 3)]));
    assert!(ct.dump()?.is_empty());
    Ok(())
}
