//! What reaches the loop, and the handle its sources send it through.

use std::time::Instant;

use ipnet::IpNet;
use kvstore::{
    Event, keys,
    values::{
        AgentReport, ClusterService, IdentityEntry, IpIdentityPair, Node, PolicyDocument,
        ServiceDef,
    },
};
use tokio::sync::{mpsc, oneshot};

use super::sources::StoreKind;
use crate::{
    endpoint::{Endpoint, EndpointId},
    route_plan::RefusedRoute,
    tables::{IpEntry, PortNames, SourceId},
    views::{
        FqdnView, IdentityView, IpCacheView, MapEntryView, PolicyView, RemoteView, ServiceView,
        StatusView,
    },
};

/// Inputs queued for the loop before its sources wait (a remote's initial
/// list arrives in bursts much larger than one batch).
pub(super) const QUEUE_CAPACITY: usize = 16_384;
/// Inputs handled before the datapath is written once.
pub(super) const BATCH_SIZE: usize = 4_096;

/// Why the loop is woken.
pub(crate) enum Input {
    Identity(SourceId, Event<IdentityEntry>),
    Ip(SourceId, IpEvent),
    Node(SourceId, Event<Node>),
    Service(SourceId, Event<ClusterService>),
    Policy(Event<PolicyDocument>),
    ServiceDef(Event<ServiceDef>),
    /// A source (a remote cluster) appears with the kinds it will deliver.
    RegisterSource {
        id: SourceId,
        name: String,
        cluster_id: u32,
        kinds: Vec<StoreKind>,
        /// Its pod pools, where its config names them: its nodes' routes
        /// must lie inside.
        pod_cidr_pools: Vec<IpNet>,
    },
    /// A source is gone (its configuration was removed, or its cluster
    /// config refused): whatever it delivered goes.
    RemoveSource(SourceId),
    /// Remote cluster status, for `status`.
    RemoteStatus(Vec<RemoteView>),
    /// The remote node CIDRs the route installer refused, for `status`.
    RoutesRefused(Vec<RefusedRoute>),
    Attach(Endpoint, oneshot::Sender<Result<u32, String>>),
    Detach(Endpoint, oneshot::Sender<Result<(), String>>),
    Query(Query, oneshot::Sender<Answer>),
    /// The DNS proxy read an answer (the maps are written before `done`).
    FqdnLearned(super::fqdn::FqdnLearned),
    /// Learned addresses expire; the learned names are saved.
    FqdnTick,
}

impl Input {
    /// `source` says its initial list of `kind` is complete.
    pub(crate) fn synced(source: SourceId, kind: StoreKind) -> Self {
        match kind {
            StoreKind::Identities => Self::Identity(source, Event::Synced),
            StoreKind::IpCache => Self::Ip(source, IpEvent::Synced),
            StoreKind::Nodes => Self::Node(source, Event::Synced),
            StoreKind::Services => Self::Service(source, Event::Synced),
            StoreKind::Policies => Self::Policy(Event::Synced),
            StoreKind::ServiceDefs => Self::ServiceDef(Event::Synced),
        }
    }

    /// The source whose data this is (for the propagation histogram).
    pub(super) fn data_source(&self) -> Option<SourceId> {
        match self {
            Self::Identity(s, _) | Self::Ip(s, _) | Self::Node(s, _) | Self::Service(s, _) => {
                Some(*s)
            }
            _ => None,
        }
    }
}

/// An ipcache change reduced to what the datapath needs, computed where the
/// event is received so that the loop's queue stays small under a burst
/// (an initial list of a large remote cluster).
pub(crate) enum IpEvent {
    /// With the pod the entry names (namespace, name), if any, for flows.
    Upsert(IpNet, IpEntry, Option<Box<PodRef>>, PortNames),
    Delete(IpNet),
    /// A delete whose key is not a prefix (nothing to do).
    Ignore,
    Synced,
}

/// The pod an ipcache entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl IpEvent {
    /// Reduces a store event; `remote` rewrites the host identity to
    /// remote-node as Cilium does.
    pub(crate) fn from_event(event: Event<IpIdentityPair>, remote: bool) -> Self {
        match event {
            Event::Upsert { value, .. } => {
                let pod = (!value.k8s_pod_name.is_empty()).then(|| {
                    Box::new(PodRef {
                        namespace: value.k8s_namespace.clone(),
                        name: value.k8s_pod_name.clone(),
                    })
                });
                // Decoding refused any port name that cannot be used.
                let ports = value
                    .named_ports
                    .iter()
                    .filter_map(|p| {
                        let protocol = crate::endpoint::port_protocol(&p.protocol)?;
                        Some((p.name.as_str().into(), protocol, p.port))
                    })
                    .collect();
                Self::Upsert(
                    value.prefix(),
                    IpEntry::from_pair(&value, remote),
                    pod,
                    ports,
                )
            }
            Event::Delete { key } => keys::parse_ipcache(&key).map_or(Self::Ignore, Self::Delete),
            Event::Synced => Self::Synced,
        }
    }
}

/// A read of the agent's state.
#[derive(Debug, Clone)]
pub(crate) enum Query {
    Status,
    /// The agent's report of itself to its cluster's etcd: a small part of
    /// the status, cheap enough to ask for every few seconds with hundreds
    /// of remotes.
    Report,
    Identities,
    IpCache,
    Policy(EndpointId),
    Services,
    /// The raw content of a BPF map.
    Map(String),
    /// What the DNS proxy learned.
    Fqdn,
}

#[derive(Debug, Clone)]
pub(crate) enum Answer {
    Status(Box<StatusView>),
    Report(AgentReport),
    Identities(Vec<IdentityView>),
    IpCache(Vec<IpCacheView>),
    Policy(Option<PolicyView>),
    Services(Vec<ServiceView>),
    Map(Result<Vec<MapEntryView>, String>),
    Fqdn(Vec<FqdnView>),
}

/// An input and when it arrived (for the propagation-delay histogram).
pub(crate) struct Timed {
    pub at: Instant,
    pub input: Input,
}

/// Where the loop's sources send their inputs.
#[derive(Debug, Clone)]
pub(crate) struct LoopHandle {
    pub(super) tx: mpsc::Sender<Timed>,
}

impl LoopHandle {
    /// False once the loop stopped.
    pub(crate) async fn send(&self, input: Input) -> bool {
        self.tx
            .send(Timed {
                at: Instant::now(),
                input,
            })
            .await
            .is_ok()
    }

    /// [`LoopHandle::send`] from a thread outside the async runtime.
    pub(crate) fn blocking_send(&self, input: Input) -> bool {
        self.tx
            .blocking_send(Timed {
                at: Instant::now(),
                input,
            })
            .is_ok()
    }

    /// Asks the loop something; `None` if it stopped.
    pub(crate) async fn query(&self, query: Query) -> Option<Answer> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Input::Query(query, tx)).await {
            return None;
        }
        rx.await.ok()
    }
}
