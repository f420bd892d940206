//! The DNS proxy for `toFQDNs` policy.
//!
//! Only endpoints whose egress rules have DNS rules (`toPorts[].rules.dns`)
//! use it: their policy entries for those ports carry the proxy's port, and
//! the datapath sends such connections to the proxy on this node
//! ([`bpf::PROXY_V4`] / [`bpf::PROXY_V6`] on the node's `lo`), keeping where
//! they were going in a conntrack entry of scope `proxy` that the proxy
//! reads. Replies from the proxy are rewritten by the datapath to come from
//! the server the endpoint asked, so the endpoint never sees the proxy.
//!
//! For each query the proxy:
//! 1. refuses a lookup no DNS rule of the endpoint allows, answering
//!    REFUSED as Cilium does (the query never leaves the node);
//! 2. forwards the others to the server the endpoint asked, from the node;
//! 3. reads the answer (`fqdn`, on hickory-proto) and, when a `toFQDNs`
//!    selector of the policies matches its name, hands the addresses to
//!    the control loop, which gives them identities, ipcache and policy
//!    entries; only once those are written is the answer released, so the
//!    endpoint's first connection never races the map write.
//!
//! Malformed queries and answers are dropped and counted
//! (`clustermesh_agent_dns_proxy_messages{outcome}`); answers are bounded
//! ([`fqdn::ResponseLimits`]) and so is what an endpoint may learn
//! ([`fqdn::CacheConfig`]).

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::Context;
use bpf::{
    CONNTRACK_MAP, ConntrackMap, CtKey, CtScope, FlowDirection, FlowEvent, IPCACHE_MAP, IpCacheKey,
    IpCacheMap, PROXY_V4, PROXY_V6, Protocol, Verdict,
};
use fqdn::{DnsQuery, DnsResponse, FqdnSelector, ResponseLimits, SelectorSet, Transport};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream, UdpSocket},
    sync::Semaphore,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    control_loop::{FqdnLearned, Input, LoopHandle},
    endpoint::EndpointId,
    hubble::{DnsRecord, L7Sink},
    metrics::AgentMetrics,
};

/// An endpoint whose DNS goes through the proxy.
#[derive(Debug)]
pub(crate) struct DnsEndpoint {
    pub id: EndpointId,
    pub identity: u32,
    pub namespace: String,
    pub name: String,
    /// The lookups its DNS rules allow.
    pub patterns: SelectorSet,
}

/// What the control loop tells the proxy.
#[derive(Debug, Default)]
pub(crate) struct DnsView {
    inner: RwLock<ViewInner>,
}

#[derive(Debug, Default)]
struct ViewInner {
    /// (name, address) pairs in the maps: an answer made only of these
    /// need not wait.
    known: HashMap<fqdn::DnsName, std::collections::HashSet<IpAddr>>,
    endpoints: HashMap<IpAddr, Arc<DnsEndpoint>>,
    /// The policies' `toFQDNs` selectors: answers for a name one of them
    /// matches wait for the maps.
    selectors: Arc<Vec<FqdnSelector>>,
}

impl DnsView {
    pub(crate) fn publish(
        &self,
        endpoints: HashMap<IpAddr, Arc<DnsEndpoint>>,
        selectors: Arc<Vec<FqdnSelector>>,
    ) {
        let mut inner = self.inner.write().expect("not poisoned");
        inner.endpoints = endpoints;
        inner.selectors = selectors;
    }

    /// The loop wrote (or withdrew) these pairs.
    pub(crate) fn learned(&self, diff: &fqdn::CacheDiff) {
        let mut inner = self.inner.write().expect("not poisoned");
        for (name, change) in diff.iter() {
            let ips = inner.known.entry(name.clone()).or_default();
            for ip in &change.removed {
                ips.remove(ip);
            }
            ips.extend(change.added.iter().copied());
            if ips.is_empty() {
                inner.known.remove(name);
            }
        }
    }

    fn knows(&self, name: &fqdn::DnsName, ips: &[fqdn::LearnedIp]) -> bool {
        let inner = self.inner.read().expect("not poisoned");
        inner
            .known
            .get(name)
            .is_some_and(|known| ips.iter().all(|a| known.contains(&a.ip)))
    }

    fn endpoint(&self, ip: IpAddr) -> Option<Arc<DnsEndpoint>> {
        self.inner
            .read()
            .expect("not poisoned")
            .endpoints
            .get(&ip)
            .cloned()
    }

    fn selectors(&self) -> Arc<Vec<FqdnSelector>> {
        self.inner.read().expect("not poisoned").selectors.clone()
    }
}

/// The proxy's settings.
#[derive(Debug, Clone)]
pub(crate) struct DnsProxyConfig {
    pub port: u16,
    /// The node's network namespace (`None`: the agent's own).
    pub node_netns: Option<PathBuf>,
    pub bpffs_dir: PathBuf,
    /// How long an upstream server may take to answer.
    pub upstream_timeout: Duration,
    /// How long an answer waits for its addresses to be in the maps
    /// before it is released anyway (counted as `map_write_timeout`).
    pub max_map_wait: Duration,
    pub limits: ResponseLimits,
    /// Queries handled at once; more are dropped (the client retries).
    pub max_in_flight: usize,
}

/// The running proxy's shared parts.
struct Proxy {
    config: DnsProxyConfig,
    view: Arc<DnsView>,
    control: LoopHandle,
    metrics: Arc<AgentMetrics>,
    conntrack: ConntrackMap,
    /// For the identity of the servers asked (in flows).
    ipcache: IpCacheMap,
    sockets: SocketFactory,
    /// Upstream UDP sockets between queries.
    udp_pool: std::sync::Mutex<UdpPool>,
    in_flight: Semaphore,
    /// Where lookups become L7 flows (when Hubble is on).
    flows: Option<L7Sink>,
}

/// Binds the proxy's sockets in the node's namespace (giving `lo` the
/// proxy's addresses) and serves until `shutdown`.
pub(crate) async fn run(
    config: DnsProxyConfig,
    view: Arc<DnsView>,
    control: LoopHandle,
    metrics: Arc<AgentMetrics>,
    flows: Option<L7Sink>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let proxy = match start(config, view, control, metrics.clone(), flows) {
        Ok(p) => p,
        Err(e) => {
            // The rest of the agent goes on; lookups that policy sends to
            // the proxy fail (closed, never bypassed).
            warn!(
                error = format!("{e:#}"),
                "the DNS proxy cannot start: endpoints whose policy has DNS rules cannot resolve names"
            );
            metrics.count_error("dns-proxy");
            shutdown.cancelled().await;
            return Ok(());
        }
    };
    let (proxy, bound) = proxy;
    info!(
        port = proxy.config.port,
        "DNS proxy listening on {PROXY_V4} and {PROXY_V6}"
    );
    let mut tasks = tokio::task::JoinSet::new();
    for (udp, tcp) in bound {
        let udp = Arc::new(UdpSocket::from_std(udp).context("UDP socket")?);
        let tcp = TcpListener::from_std(tcp).context("TCP listener")?;
        tasks.spawn(proxy.clone().serve_udp(udp, shutdown.clone()));
        tasks.spawn(proxy.clone().serve_tcp(tcp, shutdown.clone()));
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a DNS proxy task panicked")?;
    }
    Ok(())
}

type Bound = Vec<(std::net::UdpSocket, std::net::TcpListener)>;

/// Gives `lo` the proxy's addresses, binds its sockets and opens the maps
/// it reads.
fn start(
    config: DnsProxyConfig,
    view: Arc<DnsView>,
    control: LoopHandle,
    metrics: Arc<AgentMetrics>,
    flows: Option<L7Sink>,
) -> anyhow::Result<(Arc<Proxy>, Bound)> {
    let netns = config.node_netns.clone();
    let port = config.port;
    add_proxy_addresses(netns.as_deref())?;
    let bound = in_node(netns.as_deref(), move || bind_all(port))?
        .with_context(|| format!("binding the DNS proxy's sockets (port {port})"))?;
    let conntrack = ConntrackMap::open_pinned(&config.bpffs_dir, CONNTRACK_MAP)
        .context("opening the conntrack map for the DNS proxy")?;
    let ipcache = IpCacheMap::open_pinned(&config.bpffs_dir, IPCACHE_MAP)
        .context("opening the ipcache map for the DNS proxy")?;
    let proxy = Arc::new(Proxy {
        ipcache,
        flows,
        in_flight: Semaphore::new(config.max_in_flight),
        sockets: SocketFactory::new(netns)?,
        udp_pool: std::sync::Mutex::new(UdpPool::default()),
        config,
        view,
        control,
        metrics,
        conntrack,
    });
    Ok((proxy, bound))
}

/// Runs `f` in the node's namespace (or here).
fn in_node<R: Send>(netns: Option<&Path>, f: impl FnOnce() -> R + Send) -> anyhow::Result<R> {
    match netns {
        Some(path) => netns::run_in(path, f).context("entering the node's network namespace"),
        None => Ok(f()),
    }
}

/// Gives the node's `lo` the proxy's addresses (kept: other agents'
/// datapath programs of this node redirect there).
fn add_proxy_addresses(netns: Option<&Path>) -> anyhow::Result<()> {
    let v4 = format!("{PROXY_V4}/32");
    crate::plumbing::run_in(netns, "ip", &["addr", "replace", &v4, "dev", "lo"])
        .context("adding the DNS proxy's IPv4 address to lo")?;
    let v6 = format!("{PROXY_V6}/128");
    if let Err(e) = crate::plumbing::run_in(
        netns,
        "ip",
        &["-6", "addr", "replace", &v6, "dev", "lo", "nodad"],
    ) {
        warn!(error = %e, "the DNS proxy has no IPv6 address (IPv6 disabled on the node?)");
    }
    Ok(())
}

/// UDP sockets and TCP listeners on the proxy's addresses (IPv6 only when
/// the node has it).
fn bind_all(port: u16) -> io::Result<Vec<(std::net::UdpSocket, std::net::TcpListener)>> {
    let mut out = Vec::new();
    for ip in [IpAddr::V4(PROXY_V4), IpAddr::V6(PROXY_V6)] {
        let addr = SocketAddr::new(ip, port);
        let udp = match std::net::UdpSocket::bind(addr) {
            Ok(s) => s,
            Err(e) if ip.is_ipv6() => {
                debug!(error = %e, "no IPv6 DNS proxy");
                continue;
            }
            Err(e) => return Err(e),
        };
        let tcp = std::net::TcpListener::bind(addr)?;
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        out.push((udp, tcp));
    }
    Ok(out)
}

/// Creates upstream sockets in the node's namespace: a thread that stays
/// there serves the requests (a socket lives in the namespace it was
/// created in, whichever thread uses it).
struct SocketFactory {
    tx: Option<std::sync::mpsc::Sender<SocketRequest>>,
}

type SocketRequest = (
    bool,
    bool,
    tokio::sync::oneshot::Sender<io::Result<UpstreamSocket>>,
);

enum UpstreamSocket {
    Udp(std::net::UdpSocket),
    Tcp(TcpSocket),
}

impl SocketFactory {
    fn new(netns: Option<PathBuf>) -> anyhow::Result<Self> {
        let Some(path) = netns else {
            return Ok(Self { tx: None });
        };
        let ns =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let (tx, rx) = std::sync::mpsc::channel::<SocketRequest>();
        std::thread::Builder::new()
            .name("dns-proxy-sockets".into())
            .spawn(move || {
                use std::os::fd::AsFd;
                if let Err(e) = netns::setns(ns.as_fd()) {
                    warn!(error = %e, "the DNS proxy cannot enter the node's namespace");
                    return;
                }
                for (tcp, v6, reply) in rx {
                    let _ = reply.send(make_socket(tcp, v6));
                }
            })
            .context("starting the DNS proxy's socket thread")?;
        Ok(Self { tx: Some(tx) })
    }

    async fn socket(&self, tcp: bool, v6: bool) -> io::Result<UpstreamSocket> {
        let Some(tx) = &self.tx else {
            return make_socket(tcp, v6);
        };
        let (reply, rx) = tokio::sync::oneshot::channel();
        tx.send((tcp, v6, reply))
            .map_err(|_| io::Error::other("the DNS proxy's socket thread stopped"))?;
        rx.await
            .map_err(|_| io::Error::other("the DNS proxy's socket thread stopped"))?
    }
}

fn make_socket(tcp: bool, v6: bool) -> io::Result<UpstreamSocket> {
    if tcp {
        let s = if v6 {
            TcpSocket::new_v6()?
        } else {
            TcpSocket::new_v4()?
        };
        return Ok(UpstreamSocket::Tcp(s));
    }
    let any: SocketAddr = if v6 {
        "[::]:0".parse().expect("valid")
    } else {
        "0.0.0.0:0".parse().expect("valid")
    };
    let s = std::net::UdpSocket::bind(any)?;
    s.set_nonblocking(true)?;
    Ok(UpstreamSocket::Udp(s))
}

/// Upstream UDP sockets kept between queries (creating one in the node's
/// namespace costs a thread hop): each serves one query at a time, from a
/// random source port, answers matched by server and ID.
#[derive(Default)]
struct UdpPool {
    v4: Vec<UdpSocket>,
    v6: Vec<UdpSocket>,
}

impl UdpPool {
    /// Sockets kept per family.
    const MAX: usize = 256;

    fn take(&mut self, v6: bool) -> Option<UdpSocket> {
        if v6 { self.v6.pop() } else { self.v4.pop() }
    }

    fn put(&mut self, v6: bool, socket: UdpSocket) {
        let list = if v6 { &mut self.v6 } else { &mut self.v4 };
        if list.len() < Self::MAX {
            list.push(socket);
        }
    }
}

/// A query's endpoint, the query, its server, and the refusal to answer.
type Classified = (Arc<DnsEndpoint>, DnsQuery, SocketAddr, Option<Vec<u8>>);

/// What to do with a query.
enum Decision {
    /// Forward to `upstream`; the answer is read for `endpoint`.
    Forward {
        endpoint: Arc<DnsEndpoint>,
        query: DnsQuery,
        upstream: SocketAddr,
    },
    /// Answer this (REFUSED) without forwarding.
    Refuse(Vec<u8>),
    /// Drop it.
    Drop,
}

impl Proxy {
    /// The proxy's address as `client` reached it.
    fn local(&self, client: SocketAddr) -> SocketAddr {
        let ip = match client.ip() {
            IpAddr::V4(_) => IpAddr::V4(PROXY_V4),
            IpAddr::V6(_) => IpAddr::V6(PROXY_V6),
        };
        SocketAddr::new(ip, self.config.port)
    }

    /// Where the endpoint's connection was going, as the datapath recorded
    /// it when it redirected the connection.
    fn upstream(&self, client: SocketAddr, protocol: Protocol) -> Option<SocketAddr> {
        let key = CtKey::new(protocol, client, self.local(client), CtScope::Proxy);
        let value = self.conntrack.get(&key).ok().flatten()?;
        value.proxy_upstream(&key)
    }

    /// Who sent the query, where it was going, and whether its rules allow
    /// the lookup.
    /// [`Proxy::classify`], counted, with the query's flow.
    fn decide(&self, client: SocketAddr, message: &[u8], transport: Transport) -> Decision {
        let protocol = protocol_of(transport);
        match self.classify(client, message, transport) {
            Err(outcome) => {
                self.metrics.count_dns(outcome);
                Decision::Drop
            }
            Ok((endpoint, query, upstream, Some(reply))) => {
                self.metrics.count_dns("refused");
                self.flow(&endpoint, client, upstream, protocol, &query, None, true);
                Decision::Refuse(reply)
            }
            Ok((endpoint, query, upstream, None)) => {
                self.flow(&endpoint, client, upstream, protocol, &query, None, false);
                Decision::Forward {
                    endpoint,
                    query,
                    upstream,
                }
            }
        }
    }

    /// The query's endpoint, query and server, and the refusal to answer
    /// when no DNS rule allows it; or why it is dropped.
    fn classify(
        &self,
        client: SocketAddr,
        message: &[u8],
        transport: Transport,
    ) -> Result<Classified, &'static str> {
        let Some(endpoint) = self.view.endpoint(client.ip()) else {
            return Err("unknown_source");
        };
        let protocol = protocol_of(transport);
        let Some(upstream) = self.upstream(client, protocol) else {
            return Err("no_original_destination");
        };
        let query = match DnsQuery::parse(message, transport) {
            Ok(q) => q,
            Err(e) => {
                debug!(%client, error = %e, "malformed DNS query dropped");
                return Err("malformed_query");
            }
        };
        if !endpoint.patterns.matches(&query.name) {
            info!(
                endpoint = endpoint.id.get(),
                identity = endpoint.identity,
                pod = %format_args!("{}/{}", endpoint.namespace, endpoint.name),
                name = query.name.as_str(),
                "DNS lookup refused: no DNS rule of the endpoint allows it"
            );
            let reply = query.refused(transport).map_err(|_| "malformed_query")?;
            return Ok((endpoint, query, upstream, Some(reply)));
        }
        Ok((endpoint, query, upstream, None))
    }

    /// An L7 flow of a lookup: the query (`response` `None`; `refused`
    /// makes it a drop) or its answer.
    #[allow(clippy::too_many_arguments)]
    fn flow(
        &self,
        endpoint: &DnsEndpoint,
        client: SocketAddr,
        upstream: SocketAddr,
        protocol: Protocol,
        query: &DnsQuery,
        response: Option<(&DnsResponse, Duration)>,
        refused: bool,
    ) {
        let Some(sink) = &self.flows else {
            return;
        };
        let server_identity = self
            .ipcache
            .get(&IpCacheKey::host(upstream.ip()))
            .ok()
            .flatten()
            .map_or(2, |v| v.sec_identity);
        let (src, dst, src_identity, dst_identity) = if response.is_some() {
            (upstream, client, server_identity, endpoint.identity)
        } else {
            (client, upstream, endpoint.identity, server_identity)
        };
        let event = FlowEvent {
            timestamp: Duration::ZERO,
            src: src.ip(),
            dst: dst.ip(),
            sport: src.port(),
            dport: dst.port(),
            protocol,
            src_identity,
            dst_identity,
            verdict: if refused {
                Verdict::Dropped
            } else {
                Verdict::Forwarded
            },
            drop_reason: None,
            ifindex: 0,
            direction: FlowDirection::FromEndpoint,
            is_reply: Some(response.is_some()),
            tcp_flags: 0,
            icmp: None,
            policy: None,
        };
        let mut record = DnsRecord {
            response: response.is_some(),
            query: query.name.as_str().to_string(),
            qtype: query.record_type.to_string(),
            ..DnsRecord::default()
        };
        if refused {
            record.rcode = u32::from(u16::from(fqdn::ResponseCode::Refused));
        }
        if let Some((r, latency)) = response {
            record.rcode = u32::from(u16::from(r.rcode));
            record.ips = r.addresses.iter().map(|a| a.ip.to_string()).collect();
            record.ttl = r.addresses.iter().map(|a| a.ttl).min().unwrap_or(0);
            record.cnames = r.cnames.iter().map(|c| c.as_str().to_string()).collect();
            record.latency_ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        }
        sink.dns(event, record);
    }

    /// Reads the answer; when a `toFQDNs` selector matches its name, waits
    /// until its addresses are in the maps. `None`: drop it.
    async fn release(
        &self,
        endpoint: &DnsEndpoint,
        (client, upstream, asked): (SocketAddr, SocketAddr, std::time::Instant),
        query: &DnsQuery,
        answer: &[u8],
        transport: Transport,
    ) -> Option<()> {
        let read_at = std::time::Instant::now();
        let response = match DnsResponse::parse(answer, transport, &self.config.limits) {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "malformed DNS answer dropped");
                self.metrics.count_dns("malformed_answer");
                return None;
            }
        };
        if !response.answers(query) {
            self.metrics.count_dns("mismatched_answer");
            return None;
        }
        if let Some(t) = response.truncation {
            self.metrics.count_dns(t.reason.as_str());
        }
        let protocol = protocol_of(transport);
        self.flow(
            endpoint,
            client,
            upstream,
            protocol,
            query,
            Some((&response, asked.elapsed())),
            false,
        );
        if response.addresses.is_empty() {
            return Some(());
        }
        let selectors = self.view.selectors();
        let selected = selectors
            .iter()
            .any(|s| s.matches(&response.name) || response.cnames.iter().any(|c| s.matches(c)));
        if !selected {
            return Some(());
        }
        // Every address already allowed for this name (another lookup
        // learned it): the loop refreshes the TTLs, nothing to wait for.
        if self.view.knows(&response.name, &response.addresses) {
            let learned = FqdnLearned {
                endpoint: endpoint.id,
                name: response.name.clone(),
                ips: response.addresses.clone(),
                done: None,
            };
            if !self.control.send(Input::FqdnLearned(learned)).await {
                return None;
            }
            return Some(());
        }
        let (done, written) = tokio::sync::oneshot::channel();
        let learned = FqdnLearned {
            endpoint: endpoint.id,
            name: response.name.clone(),
            ips: response.addresses.clone(),
            done: Some(done),
        };
        if !self.control.send(Input::FqdnLearned(learned)).await {
            return None;
        }
        match tokio::time::timeout(self.config.max_map_wait, written).await {
            Ok(Ok(())) => self
                .metrics
                .fqdn_answer_to_map
                .observe(read_at.elapsed().as_secs_f64()),
            Ok(Err(_)) => return None,
            Err(_) => {
                warn!(
                    name = response.name.as_str(),
                    "DNS answer released before its addresses were in the maps"
                );
                self.metrics.count_dns("map_write_timeout");
            }
        }
        Some(())
    }

    async fn serve_udp(self: Arc<Self>, socket: Arc<UdpSocket>, shutdown: CancellationToken) {
        let mut buf = vec![0u8; fqdn::MAX_MESSAGE_LEN];
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = socket.recv_from(&mut buf) => r,
            };
            let (n, client) = match received {
                Ok(r) => r,
                Err(e) => {
                    warn!(error = %e, "DNS proxy: receiving failed");
                    continue;
                }
            };
            let Ok(permit) = self.in_flight.try_acquire() else {
                self.metrics.count_dns("overloaded");
                continue;
            };
            permit.forget();
            let message = buf[..n].to_vec();
            let this = self.clone();
            let socket = socket.clone();
            tokio::spawn(async move {
                this.handle_udp(&socket, &message, client).await;
                this.in_flight.add_permits(1);
            });
        }
    }

    async fn handle_udp(&self, socket: &UdpSocket, message: &[u8], client: SocketAddr) {
        let (endpoint, query, upstream) = match self.decide(client, message, Transport::Udp) {
            Decision::Drop => return,
            Decision::Refuse(reply) => {
                let _ = socket.send_to(&reply, client).await;
                return;
            }
            Decision::Forward {
                endpoint,
                query,
                upstream,
            } => (endpoint, query, upstream),
        };
        let forward = self.forward_udp(upstream, message, query.id);
        let exchanged = self
            .exchange(
                forward,
                &endpoint,
                (client, upstream),
                &query,
                Transport::Udp,
            )
            .await;
        if let Some(answer) = exchanged {
            let _ = socket.send_to(&answer, client).await;
        }
    }

    /// Forwards a query (`forward`), reads its answer and releases it:
    /// the answer to send, or `None` (counted) to send nothing.
    async fn exchange(
        &self,
        forward: impl std::future::Future<Output = io::Result<Vec<u8>>>,
        endpoint: &DnsEndpoint,
        (client, upstream): (SocketAddr, SocketAddr),
        query: &DnsQuery,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let asked = std::time::Instant::now();
        let answer = match forward.await {
            Ok(a) => a,
            Err(e) => {
                debug!(%upstream, error = %e, "DNS upstream failed");
                self.metrics.count_dns("upstream_failed");
                return None;
            }
        };
        self.release(
            endpoint,
            (client, upstream, asked),
            query,
            &answer,
            transport,
        )
        .await?;
        self.metrics.count_dns("forwarded");
        Some(answer)
    }

    async fn forward_udp(
        &self,
        upstream: SocketAddr,
        message: &[u8],
        id: u16,
    ) -> io::Result<Vec<u8>> {
        let v6 = upstream.is_ipv6();
        let pooled = self.udp_pool.lock().expect("not poisoned").take(v6);
        let socket = match pooled {
            Some(s) => s,
            None => {
                let UpstreamSocket::Udp(socket) = self.sockets.socket(false, v6).await? else {
                    unreachable!("asked for UDP");
                };
                UdpSocket::from_std(socket)?
            }
        };
        socket.send_to(message, upstream).await?;
        let mut buf = vec![0u8; fqdn::MAX_MESSAGE_LEN];
        let answer = tokio::time::timeout(self.config.upstream_timeout, async {
            loop {
                let (n, from) = socket.recv_from(&mut buf).await?;
                // Only the answer to this query (its server, same ID).
                if from == upstream && n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                    return Ok::<_, io::Error>(buf[..n].to_vec());
                }
            }
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer"))??;
        // Answered: the socket serves another query (one that timed out is
        // dropped, so that a late answer cannot meet the next query).
        self.udp_pool.lock().expect("not poisoned").put(v6, socket);
        Ok(answer)
    }

    async fn serve_tcp(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => r,
            };
            let (stream, client) = match accepted {
                Ok(r) => r,
                Err(e) => {
                    warn!(error = %e, "DNS proxy: accepting failed");
                    continue;
                }
            };
            let this = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = this.handle_tcp(stream, client) => {}
                }
            });
        }
    }

    /// One client connection: each query in turn, over one upstream
    /// connection opened at the first query forwarded.
    async fn handle_tcp(&self, mut client_stream: TcpStream, client: SocketAddr) {
        let idle = Duration::from_secs(30);
        let mut upstream_stream: Option<TcpStream> = None;
        loop {
            let Ok(Ok(message)) = tokio::time::timeout(idle, read_framed(&mut client_stream)).await
            else {
                return;
            };
            let (endpoint, query, upstream) = match self.decide(client, &message, Transport::Tcp) {
                Decision::Drop => return,
                Decision::Refuse(reply) => {
                    if client_stream.write_all(&reply).await.is_err() {
                        return;
                    }
                    continue;
                }
                Decision::Forward {
                    endpoint,
                    query,
                    upstream,
                } => (endpoint, query, upstream),
            };
            let forward = self.forward_tcp(&mut upstream_stream, upstream, &message);
            let Some(answer) = self
                .exchange(
                    forward,
                    &endpoint,
                    (client, upstream),
                    &query,
                    Transport::Tcp,
                )
                .await
            else {
                return;
            };
            if client_stream.write_all(&answer).await.is_err() {
                return;
            }
        }
    }

    async fn forward_tcp(
        &self,
        stream: &mut Option<TcpStream>,
        upstream: SocketAddr,
        message: &[u8],
    ) -> io::Result<Vec<u8>> {
        tokio::time::timeout(self.config.upstream_timeout, async {
            if stream.is_none() {
                let UpstreamSocket::Tcp(socket) =
                    self.sockets.socket(true, upstream.is_ipv6()).await?
                else {
                    unreachable!("asked for TCP");
                };
                *stream = Some(socket.connect(upstream).await?);
            }
            let s = stream.as_mut().expect("connected");
            s.write_all(message).await?;
            read_framed(s).await
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer"))?
    }
}

/// The L4 protocol of a DNS transport.
fn protocol_of(transport: Transport) -> Protocol {
    match transport {
        Transport::Udp => Protocol::Udp,
        Transport::Tcp => Protocol::Tcp,
    }
}

/// One length-prefixed DNS message from a TCP stream, with its prefix.
async fn read_framed(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let n = usize::from(u16::from_be_bytes(len));
    let mut out = vec![0u8; n + 2];
    out[..2].copy_from_slice(&len);
    stream.read_exact(&mut out[2..]).await?;
    Ok(out)
}
