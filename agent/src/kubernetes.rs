//! Kubernetes mode: what the API server says, fed into the same control
//! loop as every other source.
//!
//! - CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy objects become
//!   policy documents (replacing etcd's `cilium/policies/v1`); an invalid
//!   one is refused whole, logged, counted and shown in `status`, and
//!   changes nothing (a valid earlier version stays enforced).
//! - Services joined with their endpoints become service definitions
//!   (replacing etcd's `cilium/servicedefs/v1`).
//! - This node's Pods and every Namespace give endpoints their labels
//!   ([`PodLabels`]); a label change moves the endpoint to a new identity.
//! - Nodes are watched for status.
//!
//! While the API server is unreachable nothing changes (the same rule as
//! an etcd outage); the watchers resume or re-list when it returns, and
//! deliver exactly the difference.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s::{
    KubeAccess,
    services_source::{self, ServiceChange},
    watch::{self, Change, KubeHealth},
};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::{Api, Client, api::DynamicObject, runtime::watcher};
use kvstore::{
    Event, StoreValue as _,
    values::{PolicyDocument, PolicyKind},
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    control_loop::{Input, LoopHandle},
    endpoint::NamedPort,
    endpoint_manager::EndpointManager,
    metrics::{AgentMetrics, ResourceLabel},
    views::{KubernetesResourceView, KubernetesView},
};

/// This node's Pods and every Namespace: the labels endpoints get.
#[derive(Debug)]
pub(crate) struct PodLabels {
    state: Mutex<PodState>,
    version: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct PodState {
    pods: HashMap<(String, String), Pod>,
    namespaces: HashMap<String, BTreeMap<String, String>>,
}

impl PodLabels {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::default(),
            version: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The endpoint labels of Pod `namespace/name`, if it is known.
    pub(crate) fn labels(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        let state = self.state.lock().expect("pod labels lock");
        let pod = state.pods.get(&(namespace.to_string(), name.to_string()))?;
        let empty = BTreeMap::new();
        let ns = state.namespaces.get(namespace).unwrap_or(&empty);
        Some(k8s::labels::endpoint_labels(pod, ns))
    }

    /// The ports Pod `namespace/name`'s containers declare by name.
    pub(crate) fn ports(&self, namespace: &str, name: &str) -> Vec<NamedPort> {
        let state = self.state.lock().expect("pod labels lock");
        state
            .pods
            .get(&(namespace.to_string(), name.to_string()))
            .map(named_ports)
            .unwrap_or_default()
    }

    /// [`PodLabels::labels`], waiting up to `wait` for the Pod to appear.
    pub(crate) async fn wait_labels(
        &self,
        namespace: &str,
        name: &str,
        wait: Duration,
    ) -> Option<BTreeMap<String, String>> {
        let mut rx = self.version.subscribe();
        let found = async {
            loop {
                if let Some(l) = self.labels(namespace, name) {
                    return l;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(wait, found).await.ok()
    }

    fn update(&self, f: impl FnOnce(&mut PodState)) {
        f(&mut self.state.lock().expect("pod labels lock"));
        self.version.send_modify(|v| *v += 1);
    }
}

/// What the Kubernetes sources report to `status` and `/metrics`.
#[derive(Debug, Clone)]
pub(crate) struct KubeState {
    access: String,
    health: KubeHealth,
    refused: Arc<Mutex<BTreeMap<String, String>>>,
    metrics: Arc<AgentMetrics>,
}

impl KubeState {
    fn refuse(&self, resource: &str, what: String, why: String) {
        let mut refused = self.refused.lock().expect("refused lock");
        refused.insert(what, why);
        self.count_refused(resource, &refused);
    }

    fn accept(&self, resource: &str, what: &str) {
        let mut refused = self.refused.lock().expect("refused lock");
        if refused.remove(what).is_some() {
            self.count_refused(resource, &refused);
        }
    }

    fn count_refused(&self, resource: &str, refused: &BTreeMap<String, String>) {
        let n = refused
            .keys()
            .filter(|k| k.starts_with(&format!("{resource} ")))
            .count();
        self.metrics
            .k8s_refused
            .get_or_create(&ResourceLabel {
                resource: resource.to_string(),
            })
            .set(n as i64);
    }

    fn count_event(&self, resource: &str) {
        self.metrics
            .k8s_events
            .get_or_create(&ResourceLabel {
                resource: resource.to_string(),
            })
            .inc();
    }

    /// For `status`.
    pub(crate) fn view(&self) -> KubernetesView {
        let h = self.health.snapshot();
        KubernetesView {
            access: self.access.clone(),
            connected: h.connected,
            version: h.version,
            last_error: h.last_error,
            last_contact_ms: h.last_contact_s.map(|s| (s * 1000.0) as u64),
            disconnects: h.disconnects,
            resources: h
                .resources
                .into_iter()
                .map(|(name, r)| {
                    (
                        name,
                        KubernetesResourceView {
                            synced: r.synced,
                            objects: r.objects,
                            events: r.events,
                            last_error: r.last_error,
                        },
                    )
                })
                .collect(),
            refused: self.refused.lock().expect("refused lock").clone(),
        }
    }
}

/// The Kubernetes side of an agent: a client, and the state `status` shows.
pub(crate) struct Kubernetes {
    client: Client,
    pub(crate) state: KubeState,
    pub(crate) pods: Arc<PodLabels>,
}

impl Kubernetes {
    /// A client for `access` (nothing is sent yet).
    pub(crate) async fn new(
        access: &KubeAccess,
        metrics: Arc<AgentMetrics>,
    ) -> Result<Self, k8s::ClientError> {
        let client = k8s::client(access).await?;
        Ok(Self {
            client,
            state: KubeState {
                access: access.to_string(),
                health: KubeHealth::default(),
                refused: Arc::default(),
                metrics,
            },
            pods: Arc::new(PodLabels::new()),
        })
    }

    /// Starts the watchers that feed the loop: policies, services, nodes,
    /// and the health probe. Runs until `shutdown`.
    pub(crate) async fn run_sources(
        self: Arc<Self>,
        control: LoopHandle,
        shutdown: CancellationToken,
    ) {
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(
            self.state
                .health
                .clone()
                .probe(self.client.clone(), shutdown.clone()),
        );
        {
            let (state, token) = (self.state.clone(), shutdown.clone());
            tasks.spawn(async move {
                loop {
                    let up = state.health.snapshot().connected;
                    state.metrics.k8s_connected.set(i64::from(up));
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            });
        }
        tasks.spawn(policies(
            self.client.clone(),
            self.state.clone(),
            control.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(services(
            self.client.clone(),
            self.state.clone(),
            control.clone(),
            shutdown.clone(),
        ));
        {
            let (tx, mut rx) = mpsc::channel::<Change<Node>>(64);
            tasks.spawn(watch::watch(
                Api::<Node>::all(self.client.clone()),
                watcher::Config::default(),
                "nodes",
                self.state.health.clone(),
                tx,
                shutdown.clone(),
            ));
            let state = self.state.clone();
            tasks.spawn(async move {
                while rx.recv().await.is_some() {
                    state.count_event("nodes");
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Watches this node's Pods and every Namespace into [`PodLabels`] and
    /// gives endpoints whose Pod's labels changed their new labels.
    pub(crate) async fn run_pods(
        self: Arc<Self>,
        node: String,
        endpoints: Arc<EndpointManager>,
        shutdown: CancellationToken,
    ) {
        let (pod_tx, mut pod_rx) = mpsc::channel::<Change<Pod>>(256);
        let (ns_tx, mut ns_rx) = mpsc::channel::<Change<Namespace>>(64);
        tokio::spawn(watch::watch(
            Api::<Pod>::all(self.client.clone()),
            watcher::Config::default().fields(&format!("spec.nodeName={node}")),
            "pods",
            self.state.health.clone(),
            pod_tx,
            shutdown.clone(),
        ));
        tokio::spawn(watch::watch(
            Api::<Namespace>::all(self.client.clone()),
            watcher::Config::default(),
            "namespaces",
            self.state.health.clone(),
            ns_tx,
            shutdown.clone(),
        ));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(c) = pod_rx.recv() => {
                    self.state.count_event("pods");
                    match c {
                        Change::Apply(pod) => {
                            let key = (
                                pod.metadata.namespace.clone().unwrap_or_default(),
                                pod.metadata.name.clone().unwrap_or_default(),
                            );
                            self.pods.update(|s| { s.pods.insert(key, pod); });
                        }
                        Change::Delete(k) => {
                            let key = (k.namespace.unwrap_or_default(), k.name);
                            self.pods.update(|s| { s.pods.remove(&key); });
                        }
                        Change::Synced => {}
                    }
                }
                Some(c) = ns_rx.recv() => {
                    self.state.count_event("namespaces");
                    match c {
                        Change::Apply(ns) => {
                            let name = ns.metadata.name.clone().unwrap_or_default();
                            let labels = ns.metadata.labels.clone().unwrap_or_default();
                            self.pods.update(|s| { s.namespaces.insert(name, labels); });
                        }
                        Change::Delete(k) => {
                            self.pods.update(|s| { s.namespaces.remove(&k.name); });
                        }
                        Change::Synced => {}
                    }
                }
                else => return,
            }
            self.relabel(&endpoints).await;
        }
    }

    /// Endpoints whose Pod's labels differ from theirs get the new ones.
    async fn relabel(&self, endpoints: &EndpointManager) {
        for ep in endpoints.list().await {
            let Some(pod) = &ep.pod else { continue };
            let Some(labels) = self.pods.labels(&ep.namespace, pod) else {
                continue;
            };
            if labels == ep.labels {
                continue;
            }
            if let Err(e) = endpoints.relabel(&ep.name, labels).await {
                warn!(endpoint = ep.name, pod, error = %e, "cannot apply the Pod's new labels; will retry on its next change");
            }
        }
    }
}

/// CNPs and CCNPs into the loop as policy documents.
async fn policies(
    client: Client,
    state: KubeState,
    control: LoopHandle,
    shutdown: CancellationToken,
) {
    let (tx, mut rx) = mpsc::channel::<(PolicyKind, Change<DynamicObject>)>(256);
    for (kind, resource) in [
        (PolicyKind::CiliumNetworkPolicy, "ciliumnetworkpolicies"),
        (
            PolicyKind::CiliumClusterwideNetworkPolicy,
            "ciliumclusterwidenetworkpolicies",
        ),
    ] {
        let api = Api::<DynamicObject>::all_with(client.clone(), &k8s::crd::api_resource(kind));
        let (ktx, mut krx) = mpsc::channel(256);
        tokio::spawn(watch::watch(
            api,
            watcher::Config::default(),
            resource,
            state.health.clone(),
            ktx,
            shutdown.clone(),
        ));
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(c) = krx.recv().await {
                if tx.send((kind, c)).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut synced = 0;
    while let Some((kind, change)) = rx.recv().await {
        let resource = match kind {
            PolicyKind::CiliumNetworkPolicy => "CiliumNetworkPolicy",
            PolicyKind::CiliumClusterwideNetworkPolicy => "CiliumClusterwideNetworkPolicy",
        };
        let input = match change {
            Change::Apply(obj) => {
                state.count_event(resource);
                let key = k8s::policy::object_key(kind, &obj);
                let what = format!("{resource} {}", watch::describe(&obj));
                match k8s::policy::document(kind, &obj) {
                    Ok(value) => {
                        state.accept(resource, &what);
                        Input::Policy(Event::Upsert { key, value })
                    }
                    Err(e) => {
                        warn!(policy = what, error = %e, "policy refused; nothing of it is enforced (an earlier valid version stays)");
                        state.refuse(resource, what, e.to_string());
                        continue;
                    }
                }
            }
            Change::Delete(k) => {
                state.count_event(resource);
                state.accept(resource, &format!("{resource} {k}"));
                Input::Policy(Event::Delete {
                    key: k8s::policy::key(kind, k.namespace.as_deref(), &k.name),
                })
            }
            Change::Synced => {
                synced += 1;
                if synced < 2 {
                    continue;
                }
                info!("Kubernetes policies synced");
                Input::Policy(Event::<PolicyDocument>::Synced)
            }
        };
        if !control.send(input).await {
            return;
        }
    }
}

/// Services with their endpoints into the loop as service definitions.
async fn services(
    client: Client,
    state: KubeState,
    control: LoopHandle,
    shutdown: CancellationToken,
) {
    let (tx, mut rx) = mpsc::channel(256);
    tokio::spawn(services_source::run(
        client,
        state.health.clone(),
        tx,
        shutdown,
    ));
    while let Some(change) = rx.recv().await {
        let input = match change {
            ServiceChange::Upsert { def, .. } => {
                state.count_event("Service");
                state.accept("Service", &format!("Service {}", def.key()));
                Input::ServiceDef(Event::Upsert {
                    key: def.key(),
                    value: def,
                })
            }
            ServiceChange::Delete { key } => {
                state.count_event("Service");
                state.accept("Service", &format!("Service {key}"));
                Input::ServiceDef(Event::Delete { key })
            }
            ServiceChange::Invalid { key, error } => {
                state.refuse("Service", format!("Service {key}"), error.to_string());
                continue;
            }
            ServiceChange::Synced => {
                info!("Kubernetes services synced");
                Input::ServiceDef(Event::Synced)
            }
        };
        if !control.send(input).await {
            return;
        }
    }
}

/// The named container ports of a Pod (what `port: http` in a policy
/// means for it); unnamed ports and ports out of range are left out.
fn named_ports(pod: &Pod) -> Vec<NamedPort> {
    pod.spec
        .iter()
        .flat_map(|spec| spec.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            Some(NamedPort {
                name: p.name.clone()?,
                port: u16::try_from(p.container_port).ok()?,
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_container_ports_are_the_endpoints() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "demo"},
            "spec": {"containers": [
                {"name": "web", "ports": [
                    {"name": "http", "containerPort": 8080},
                    {"containerPort": 9999},
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"}
                ]},
                {"name": "sidecar"}
            ]}
        }))
        .unwrap();
        let ports = named_ports(&pod);
        assert_eq!(
            ports
                .iter()
                .map(|p| (p.name.as_str(), p.port, p.protocol.as_str()))
                .collect::<Vec<_>>(),
            [("http", 8080, "TCP"), ("dns", 53, "UDP")]
        );
    }
}
