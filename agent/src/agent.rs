//! Wires the agent together: etcd session, datapath, control loop, watches
//! of the local cluster (and, through the remote cluster manager, of every
//! remote one), node registration, endpoints, API and metrics.

use std::{net::IpAddr, sync::Arc, time::Duration};

use anyhow::Context;
use bpf::{Datapath, DatapathConfig};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use kvstore::{
    Allocator, AllocatorConfig, Client, Event, IdentityCache, RawEntry, Session, StoreValue,
    SyncStore, SyncStoreConfig, WatchStore, WatchStoreConfig, keys,
    remote::ConfigMirror,
    values::{
        IpIdentityPair, IpamAssignment, Node, NodeAddress, NodeCidr, PolicyDocument, ServiceDef,
        Timestamp,
    },
};
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    api::ApiServer,
    config::AgentConfig,
    conntrack_gc::ConntrackGc,
    control_loop::{ControlLoop, Input, IpEvent, LoopConfig, LoopHandle},
    datapath_sync::DatapathSync,
    endpoint_manager::{EndpointManager, EndpointManagerConfig},
    health::HealthServer,
    hubble::Hubble,
    kubernetes::Kubernetes,
    metrics::AgentMetrics,
    plumbing,
    remote_clusters::{AgentReporter, RemoteClusters},
    routes::{self, Routes},
    tables::SourceId,
};

/// How long shutdown waits for components before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Local identity events buffered between the identity cache and the loop
/// (as many as a watch store buffers).
const IDENTITY_EVENTS_CAPACITY: usize = 4_096;
/// How often endpoints whose identity could not be confirmed (etcd was
/// unreachable) are tried again.
const IDENTITY_RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// The node agent.
#[derive(Debug)]
pub struct Agent {
    config: AgentConfig,
}

impl Agent {
    pub fn new(config: AgentConfig) -> Self {
        Self { config }
    }

    /// Runs until `shutdown`. The datapath keeps enforcing after the agent
    /// stops (programs stay attached, maps stay pinned).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let c = self.config;
        let metrics = Arc::new(AgentMetrics::new());
        let inner = shutdown.child_token();
        let mut tasks = Components {
            set: JoinSet::new(),
            token: inner.clone(),
        };

        // etcd: components retry on their own, so the agent starts (and the
        // datapath keeps its state) while etcd is down.
        let client = Client::connect_lazy(&c.etcd)
            .await
            .context("etcd client configuration")?;
        let (session, session_handle) = Session::new(client.clone(), c.session_ttl);
        tasks.spawn("session", session.run(inner.clone()));

        plumbing::prepare_node(c.node_netns.as_deref())
            .context("preparing the node's network namespace")?;
        let datapath = Datapath::open(DatapathConfig {
            bpffs_dir: c.bpffs_dir.clone(),
            ipcache_max_entries: c.ipcache_max_entries,
            ..DatapathConfig::default()
        })
        .with_context(|| {
            format!(
                "opening the datapath with maps pinned in {}",
                c.bpffs_dir.display()
            )
        })?;
        for (name, capacity) in datapath.capacities() {
            metrics.set_map_capacity(name, capacity);
        }
        let sync = DatapathSync::new(Box::new(datapath), c.node_netns.clone())
            .context("reading the pinned maps")?;
        let (route_handle, route_requests) = routes::channel();
        let (mut control, handle) = ControlLoop::new(
            LoopConfig {
                cluster: c.cluster.clone(),
                cluster_id: c.cluster_id.get(),
                node_name: c.node_name.clone(),
                node_ip: c.node_ip,
                sync_timeout: c.sync_timeout,
                pod_cidr_pools: c.pod_cidr_pools.clone(),
            },
            sync,
            route_handle,
            metrics.clone(),
        );
        let hubble = c
            .hubble
            .clone()
            .map(|config| Hubble::new(config, c.cluster.as_str(), c.node_name.as_str(), &metrics));
        if let Some(h) = &hubble {
            control.with_hubble(h.directory.clone(), h.peers.clone(), h.peer_port);
        }
        let (conntrack_gc, conntrack_last_pass) =
            ConntrackGc::new(c.bpffs_dir.clone(), c.conntrack_gc, metrics.clone());
        control.with_conntrack(conntrack_last_pass);
        tasks.spawn("conntrack GC", conntrack_gc.run(inner.clone()));
        let dns_view = Arc::new(crate::dns_proxy::DnsView::default());
        control.with_dns_proxy(
            dns_view.clone(),
            c.dns_proxy_port,
            c.fqdn_cache,
            c.state_dir.join("fqdn.json"),
        );
        {
            let routes = Routes::new(c.node_netns.clone(), metrics.clone(), handle.clone());
            let token = inner.clone();
            tasks.spawn("routes", async move {
                tokio::task::spawn_blocking(move || routes.run(route_requests, token))
                    .await
                    .context("the route installer panicked")
            });
        }

        // Identities of the local cluster feed both the allocator and the loop.
        let (identity_events_tx, identity_events) = mpsc::channel(IDENTITY_EVENTS_CAPACITY);
        let (cache, cache_runner) = IdentityCache::local(client.clone());
        tasks.spawn(
            "identity cache",
            cache_runner
                .forward_to(identity_events_tx)
                .run(inner.clone()),
        );
        tasks.spawn(
            "identity events",
            forward(identity_events, handle.clone(), |e| {
                Input::Identity(SourceId::LOCAL_CLUSTER, e)
            }),
        );
        let node_key_ip = c.node_ip.to_string();
        let (allocator, allocator_runner) = Allocator::new(
            client.clone(),
            session_handle.clone(),
            cache.clone(),
            AllocatorConfig::new(c.cluster_id, c.mode, node_key_ip),
        );
        tasks.spawn("allocator", allocator_runner.run(inner.clone()));

        spawn_watch::<IpIdentityPair>(
            &mut tasks,
            &client,
            keys::ipcache(),
            "ipcache",
            &handle,
            &inner,
            |e| Input::Ip(SourceId::LOCAL_CLUSTER, IpEvent::from_event(e, false)),
        );
        spawn_watch::<Node>(
            &mut tasks,
            &client,
            keys::nodes(),
            "nodes",
            &handle,
            &inner,
            |e| Input::Node(SourceId::LOCAL_CLUSTER, e),
        );
        // Policies and services: from Kubernetes in Kubernetes mode, else
        // from the local etcd's own keys.
        let kube = match &c.k8s {
            Some(access) => {
                let kube = Kubernetes::new(access, metrics.clone())
                    .await
                    .with_context(|| format!("Kubernetes mode ({access})"))?;
                info!(%access, "Kubernetes mode");
                let kube = Arc::new(kube);
                control.with_kube(kube.state.clone());
                let (kube2, handle, token) = (kube.clone(), handle.clone(), inner.clone());
                tasks.spawn("Kubernetes sources", async move {
                    kube2.run_sources(handle, token).await;
                    anyhow::Ok(())
                });
                Some(kube)
            }
            None => {
                spawn_watch::<PolicyDocument>(
                    &mut tasks,
                    &client,
                    keys::policies(),
                    "policies",
                    &handle,
                    &inner,
                    Input::Policy,
                );
                spawn_watch::<ServiceDef>(
                    &mut tasks,
                    &client,
                    keys::service_defs(),
                    "servicedefs",
                    &handle,
                    &inner,
                    Input::ServiceDef,
                );
                None
            }
        };

        // Write side: this node's ipcache entries and node entry.
        let (ipcache_store, ipcache_runner) = SyncStore::<IpIdentityPair>::new(
            client.clone(),
            session_handle.clone(),
            SyncStoreConfig::new(keys::ipcache())
                .with_canary(keys::canary(&c.cluster, keys::IPCACHE_STORE))
                // After a lost lease (or a wiped etcd), endpoints are
                // re-announced only once their identities exist again.
                .after(allocator.restored()),
        );
        tasks.spawn("ipcache sync store", ipcache_runner.run(inner.clone()));
        let (node_store, node_runner) = SyncStore::<Node>::new(
            client.clone(),
            session_handle.clone(),
            SyncStoreConfig::new(keys::nodes())
                .with_canary(keys::canary(&c.cluster, keys::NODES_STORE)),
        );
        tasks.spawn("node sync store", node_runner.run(inner.clone()));
        let (canary_store, canary_runner) = SyncStore::<RawEntry>::new(
            client.clone(),
            session_handle.clone(),
            SyncStoreConfig::new(keys::canaries_of(&c.cluster)),
        );
        tasks.spawn("canary sync store", canary_runner.run(inner.clone()));
        {
            let cache = cache.clone();
            let token = inner.clone();
            tasks.spawn("identities canary", async move {
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = cache.wait_synced() => {
                        canary_store.upsert(&RawEntry { key: keys::IDENTITIES_STORE.into(), value: Timestamp::now().encode() });
                        canary_store.synced();
                        token.cancelled().await;
                    }
                }
                anyhow::Ok(())
            });
        }

        let mut node = Node::new(&c.cluster, c.node_name.to_string(), c.cluster_id.get());
        // IPv4 first: `Node::internal_ip` (Hubble peers) reads the first.
        node.ip_addresses.push(NodeAddress {
            kind: NodeAddress::INTERNAL_IP.into(),
            ip: c.node_ip,
        });
        if let Some(ipv6) = c.node_ipv6 {
            node.ip_addresses.push(NodeAddress {
                kind: NodeAddress::INTERNAL_IP.into(),
                ip: IpAddr::V6(ipv6),
            });
        }
        // A restarted agent reuses its pod CIDRs, so it comes back (and keeps
        // its endpoints' addresses) while etcd or the operator is down.
        let cidr_file = c.state_dir.join("pod-cidr");
        let cidr_v6_file = c.state_dir.join("pod-cidr-v6");
        let remembered = std::fs::read_to_string(&cidr_file)
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Net>().ok());
        let remembered_v6 = std::fs::read_to_string(&cidr_v6_file)
            .ok()
            .and_then(|s| s.trim().parse::<Ipv6Net>().ok());
        let (pod_cidr, pod_cidr_v6) = match (c.pod_cidr, remembered) {
            (Some(cidr), _) => (cidr, c.pod_cidr_v6),
            (None, Some(cidr)) => {
                let cidr_v6 = c.pod_cidr_v6.or(remembered_v6);
                // Published below with the CIDRs: a node without them, even
                // for a moment, withdraws every remote's route to its pods.
                info!(%cidr, ipv6 = ?cidr_v6, "reusing the pod CIDRs of the previous run");
                let (client, node_name, token) =
                    (client.clone(), c.node_name.clone(), inner.clone());
                tasks.spawn("IPAM check", async move {
                    tokio::select! {
                        _ = token.cancelled() => {}
                        (assigned, assigned_v6) = wait_for_pod_cidr(&client, node_name.as_str()) => {
                            if assigned != cidr || assigned_v6.is_some_and(|a| Some(a) != cidr_v6) {
                                tracing::error!(%cidr, ipv6 = ?cidr_v6, %assigned, assigned_v6 = ?assigned_v6, "the operator assigned this node other pod CIDRs; restart the agent with its state dir cleared to adopt them");
                            }
                            token.cancelled().await;
                        }
                    }
                    anyhow::Ok(())
                });
                (cidr, cidr_v6)
            }
            (None, None) => {
                node_store.upsert(&node);
                info!(
                    node = %c.node_name,
                    "waiting for a pod CIDR from the operator's IPAM"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return drain(tasks, inner).await,
                    (cidr, cidr_v6) = wait_for_pod_cidr(&client, c.node_name.as_str()) => {
                        (cidr, c.pod_cidr_v6.or(cidr_v6))
                    }
                }
            }
        };
        info!(%pod_cidr, ipv6 = ?pod_cidr_v6, "pod CIDR");
        let remember = std::fs::create_dir_all(&c.state_dir)
            .and_then(|()| std::fs::write(&cidr_file, pod_cidr.to_string()))
            .and_then(|()| match pod_cidr_v6 {
                Some(v6) => std::fs::write(&cidr_v6_file, v6.to_string()),
                None => match std::fs::remove_file(&cidr_v6_file) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                },
            });
        if let Err(e) = remember {
            warn!(error = %e, dir = %c.state_dir.display(), "cannot remember the pod CIDRs");
        }
        if pod_cidr_v6.is_some() {
            plumbing::prepare_node_v6(c.node_netns.as_deref())
                .context("preparing the node's network namespace for IPv6")?;
        }
        node.ipv4_alloc_cidr = Some(NodeCidr::from_net(IpNet::V4(pod_cidr)));
        node.ip_addresses.push(NodeAddress {
            kind: NodeAddress::CILIUM_INTERNAL_IP.into(),
            ip: IpAddr::V4(EndpointManager::gateway(pod_cidr)),
        });
        if let Some(v6) = pod_cidr_v6 {
            node.ipv6_alloc_cidr = Some(NodeCidr::from_net(IpNet::V6(v6)));
            node.ip_addresses.push(NodeAddress {
                kind: NodeAddress::CILIUM_INTERNAL_IP.into(),
                ip: IpAddr::V6(EndpointManager::gateway_v6(v6)),
            });
        }
        node_store.upsert(&node);
        node_store.synced();
        control.set_pod_cidrs(
            std::iter::once(IpNet::V4(pod_cidr))
                .chain(pod_cidr_v6.map(IpNet::V6))
                .collect(),
        );
        let announced = c
            .clustermesh_config_dir
            .as_ref()
            .map(|dir| RemoteClusters::announce(dir, &c.cluster, &mut control))
            .unwrap_or_default();
        tasks.spawn("control loop", control.run(inner.clone()));
        tasks.spawn(
            "DNS proxy",
            crate::dns_proxy::run(
                crate::dns_proxy::DnsProxyConfig {
                    port: c.dns_proxy_port,
                    node_netns: c.node_netns.clone(),
                    bpffs_dir: c.bpffs_dir.clone(),
                    upstream_timeout: Duration::from_secs(5),
                    max_map_wait: c.dns_proxy_response_max_delay,
                    limits: fqdn::ResponseLimits::default(),
                    max_in_flight: 4096,
                },
                dns_view,
                handle.clone(),
                metrics.clone(),
                hubble.as_ref().map(Hubble::l7_sink),
                inner.clone(),
            ),
        );
        {
            // Learned addresses expire on the loop's clock.
            let (handle, token) = (handle.clone(), inner.clone());
            tasks.spawn("FQDN expiry", async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = token.cancelled() => return Ok::<(), anyhow::Error>(()),
                        _ = tick.tick() => {
                            if !handle.send(crate::control_loop::Input::FqdnTick).await {
                                return Ok(());
                            }
                        }
                    }
                }
            });
        }
        match &hubble {
            Some(h) => {
                let (server, tls) = h.bind(&metrics).await?;
                tasks.spawn(
                    "flow reader",
                    h.ingest(c.bpffs_dir.clone(), metrics.clone())
                        .run(inner.clone()),
                );
                tasks.spawn(
                    "Hubble server",
                    crate::hubble::serve(server, tls, inner.clone()),
                );
            }
            None => {
                // Flows are still read, for the metrics.
                let h = Hubble::new(
                    crate::hubble::HubbleConfig {
                        socket: Default::default(),
                        tcp: None,
                        capacity: hubble::ring::Capacity::new(1).expect("valid"),
                    },
                    c.cluster.as_str(),
                    c.node_name.as_str(),
                    &metrics,
                );
                tasks.spawn(
                    "flow reader",
                    h.ingest(c.bpffs_dir.clone(), metrics.clone())
                        .run(inner.clone()),
                );
            }
        }

        let mut endpoints = EndpointManager::new(
            EndpointManagerConfig {
                cluster: c.cluster.clone(),
                node_ip: c.node_ip,
                node_netns: c.node_netns.clone(),
                state_file: c.state_dir.join("endpoints.json"),
            },
            allocator,
            ipcache_store,
            handle.clone(),
        );
        if let Some(kube) = &kube {
            endpoints = endpoints.with_pods(kube.pods.clone(), c.k8s_pod_wait);
        }
        let endpoints = Arc::new(endpoints);
        endpoints.set_pod_cidr(pod_cidr).await;
        endpoints.set_pod_cidr_v6(pod_cidr_v6).await;
        let (restored, dropped) = endpoints.restore().await.context("restoring endpoints")?;
        info!(restored, dropped, "endpoints restored from the snapshot");
        endpoints.mark_synced();
        if let Some(kube) = kube {
            let (endpoints, node, token) =
                (endpoints.clone(), c.node_name.to_string(), inner.clone());
            tasks.spawn("Kubernetes pods", async move {
                kube.run_pods(node, endpoints, token).await;
                anyhow::Ok(())
            });
        }
        {
            let (endpoints, token) = (endpoints.clone(), inner.clone());
            tasks.spawn("identity confirmation", async move {
                let mut tick = tokio::time::interval(IDENTITY_RETRY_INTERVAL);
                loop {
                    tokio::select! {
                        _ = token.cancelled() => return anyhow::Ok(()),
                        _ = tick.tick() => endpoints.retry_deferred().await,
                    }
                }
            });
        }

        tasks.spawn(
            "agent report",
            AgentReporter {
                client: client.clone(),
                session: session_handle.clone(),
                control: handle.clone(),
            }
            .run(inner.clone()),
        );
        if let Some(dir) = &c.clustermesh_config_dir {
            let mirror = ConfigMirror {
                client: client.clone(),
                dir: dir.clone(),
                local: c.cluster.clone(),
                through_cache: c.kvstoremesh_cache.clone(),
            };
            tasks.spawn("remote cluster config mirror", mirror.run(inner.clone()));
            let remotes = RemoteClusters {
                dir: dir.clone(),
                local: c.cluster.clone(),
                local_id: c.cluster_id,
                mode: c.mode,
                control: handle.clone(),
                metrics: metrics.clone(),
                announced,
            };
            tasks.spawn("remote clusters", remotes.run(inner.clone()));
        }
        tasks.spawn(
            "API server",
            ApiServer::new(c.api_socket.clone(), endpoints, handle.clone()).run(inner.clone()),
        );
        if let Some(addr) = c.health_listen {
            tasks.spawn(
                "health server",
                HealthServer::new(addr, metrics.clone(), handle.clone()).run(inner.clone()),
            );
        }
        info!(cluster = %c.cluster, node = %c.node_name, "agent running");

        tokio::select! {
            _ = shutdown.cancelled() => {}
            Some(result) = tasks.set.join_next() => {
                let error = match result {
                    Ok(Ok(())) => anyhow::anyhow!("a component stopped"),
                    Ok(Err(e)) => e,
                    Err(e) => anyhow::anyhow!("a component panicked: {e}"),
                };
                inner.cancel();
                let _ = drain(tasks, inner).await;
                return Err(error);
            }
        }
        drain(tasks, inner).await
    }
}

async fn drain(mut tasks: Components, token: CancellationToken) -> anyhow::Result<()> {
    token.cancel();
    let all = async {
        while let Some(r) = tasks.set.join_next().await {
            if let Ok(Err(e)) = r {
                warn!(error = %format!("{e:#}"), "component failed during shutdown");
            }
        }
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
        warn!("components did not stop within {SHUTDOWN_GRACE:?}; aborting them");
    }
    Ok(())
}

/// A local watch store whose events go to the control loop.
fn spawn_watch<V: StoreValue>(
    tasks: &mut Components,
    client: &Client,
    prefix: kvstore::KeyPrefix,
    name: &'static str,
    handle: &LoopHandle,
    token: &CancellationToken,
    wrap: fn(Event<V>) -> Input,
) {
    let (store, rx) = WatchStore::<V>::new(
        client.clone(),
        WatchStoreConfig::new(prefix).with_name(name),
    );
    tasks.spawn(name, store.run(token.clone()));
    tasks.spawn(name, forward(rx, handle.clone(), wrap));
}

/// Forwards a store's events into the control loop.
pub(crate) async fn forward<V>(
    mut rx: mpsc::Receiver<Event<V>>,
    handle: LoopHandle,
    wrap: impl Fn(Event<V>) -> Input,
) -> anyhow::Result<()> {
    while let Some(event) = rx.recv().await {
        if !handle.send(wrap(event)).await {
            break;
        }
    }
    Ok(())
}

/// Waits for the operator to assign this node an IPv4 pod CIDR; returns it
/// with the IPv6 one of the same assignment, if the operator has an IPv6
/// pool.
async fn wait_for_pod_cidr(client: &Client, node: &str) -> (Ipv4Net, Option<Ipv6Net>) {
    let (store, mut rx) = WatchStore::<IpamAssignment>::new(
        client.clone(),
        WatchStoreConfig::new(keys::ipam_nodes()).with_name("ipam"),
    );
    let token = CancellationToken::new();
    let run = store.run(token.clone());
    tokio::pin!(run);
    let cidr = loop {
        tokio::select! {
            _ = &mut run => std::future::pending::<()>().await,
            event = rx.recv() => match event {
                Some(Event::Upsert { key, value }) if key == node => {
                    if let Some(IpNet::V4(cidr)) = value.ipv4 {
                        let v6 = match value.ipv6 {
                            Some(IpNet::V6(v6)) => Some(v6),
                            _ => None,
                        };
                        break (cidr, v6);
                    }
                }
                Some(_) => {}
                None => std::future::pending::<()>().await,
            },
        }
    };
    token.cancel();
    cidr
}

/// The agent's long-lived components, stopped together.
struct Components {
    set: JoinSet<anyhow::Result<()>>,
    token: CancellationToken,
}

impl Components {
    /// Runs a component; its end before shutdown is an error naming it.
    fn spawn<E>(
        &mut self,
        name: &'static str,
        run: impl std::future::Future<Output = Result<(), E>> + Send + 'static,
    ) where
        E: Into<anyhow::Error> + Send + 'static,
    {
        let token = self.token.clone();
        self.set.spawn(async move {
            match run.await {
                Ok(()) if token.is_cancelled() => Ok(()),
                Ok(()) => Err(anyhow::anyhow!("{name} stopped unexpectedly")),
                Err(e) => Err(e.into().context(name)),
            }
        });
    }
}
