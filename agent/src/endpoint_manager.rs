//! Adds and removes endpoints: address, veth, identity, datapath, ipcache
//! entry, and a snapshot on disk so that a restarted agent takes its
//! endpoints back.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::Arc,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use kvstore::{
    Allocator, AllocatorError, ClusterName, NumericIdentity, StoreValue, SyncStore,
    values::IpIdentityPair,
};
use tokio::sync::{Mutex, oneshot};
use tracing::{info, warn};

use crate::{
    control_loop::{Input, LoopHandle},
    endpoint::{
        Endpoint, EndpointId, EndpointRequest, host_ifname, security_labels, validate_request,
    },
    kubernetes::PodLabels,
    plumbing::{self, EndpointLink, PlumbingError},
};

/// Why an endpoint operation failed; each maps to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EndpointError {
    #[error("invalid endpoint request: {0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("no endpoint named {0:?}")]
    NotFound(String),
    #[error("the pod CIDR {0} has no free address")]
    PoolExhausted(IpNet),
    #[error("the node has no pod CIDR yet (waiting for IPAM)")]
    NoPodCidr,
    #[error(
        "Pod {0} is not in the Kubernetes API (on this node) after {1:?}; its labels give the endpoint's identity"
    )]
    PodUnknown(String, std::time::Duration),
    #[error("allocating the endpoint's identity")]
    Identity(#[source] AllocatorError),
    #[error("creating the endpoint's interfaces")]
    Plumbing(#[source] PlumbingError),
    #[error("programming the datapath: {0}")]
    Datapath(String),
    #[error("the agent is shutting down")]
    Stopping,
    #[error("saving the endpoint snapshot to {path}")]
    Snapshot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl EndpointError {
    /// The HTTP status for the REST API.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::NotFound(_) => 404,
            Self::Conflict(_) => 409,
            Self::PoolExhausted(_)
            | Self::NoPodCidr
            | Self::PodUnknown(..)
            | Self::Identity(_)
            | Self::Stopping => 503,
            Self::Plumbing(_) | Self::Datapath(_) | Self::Snapshot { .. } => 500,
        }
    }
}

/// What the manager needs to know about the node.
#[derive(Debug, Clone)]
pub(crate) struct EndpointManagerConfig {
    pub cluster: ClusterName,
    pub node_ip: IpAddr,
    pub node_netns: Option<PathBuf>,
    /// Where the endpoint snapshot lives.
    pub state_file: PathBuf,
}

struct Inner {
    endpoints: BTreeMap<String, Endpoint>,
    pod_cidr: Option<Ipv4Net>,
    /// The node's IPv6 pod CIDR, if it has one: endpoints are dual-stack.
    pod_cidr_v6: Option<Ipv6Net>,
}

/// See the module documentation. Operations are serialized.
pub(crate) struct EndpointManager {
    config: EndpointManagerConfig,
    allocator: Arc<Allocator>,
    ipcache: SyncStore<IpIdentityPair>,
    control: LoopHandle,
    inner: Mutex<Inner>,
    /// Restored endpoints whose identity is not confirmed yet.
    deferred: Mutex<Vec<String>>,
    /// Kubernetes mode: the Pods' labels, and how long an ADD waits for
    /// its Pod.
    pods: Option<(Arc<PodLabels>, std::time::Duration)>,
}

/// How long a restore waits for etcd to confirm an identity.
const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl std::fmt::Debug for EndpointManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointManager")
            .field("config", &self.config)
            .finish()
    }
}

impl EndpointManager {
    pub(crate) fn new(
        config: EndpointManagerConfig,
        allocator: Arc<Allocator>,
        ipcache: SyncStore<IpIdentityPair>,
        control: LoopHandle,
    ) -> Self {
        Self {
            config,
            allocator,
            ipcache,
            control,
            inner: Mutex::new(Inner {
                endpoints: BTreeMap::new(),
                pod_cidr: None,
                pod_cidr_v6: None,
            }),
            deferred: Mutex::default(),
            pods: None,
        }
    }

    /// Kubernetes mode: an endpoint of a Pod has the Pod's labels.
    pub(crate) fn with_pods(mut self, pods: Arc<PodLabels>, wait: std::time::Duration) -> Self {
        self.pods = Some((pods, wait));
        self
    }

    /// Sets the node's pod CIDR (from IPAM or configuration).
    pub(crate) async fn set_pod_cidr(&self, cidr: Ipv4Net) {
        self.inner.lock().await.pod_cidr = Some(cidr);
    }

    /// Sets the node's IPv6 pod CIDR (from IPAM or configuration): new
    /// endpoints get an address from it too.
    pub(crate) async fn set_pod_cidr_v6(&self, cidr: Option<Ipv6Net>) {
        self.inner.lock().await.pod_cidr_v6 = cidr;
    }

    /// The router address every endpoint uses as its gateway.
    pub(crate) fn gateway(cidr: Ipv4Net) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(cidr.network()) + 1)
    }

    /// The IPv6 router address (the CIDR's first address after the
    /// network's, as for IPv4).
    pub(crate) fn gateway_v6(cidr: Ipv6Net) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(cidr.network()) + 1)
    }

    pub(crate) async fn list(&self) -> Vec<Endpoint> {
        self.inner
            .lock()
            .await
            .endpoints
            .values()
            .cloned()
            .collect()
    }

    pub(crate) async fn get(&self, name: &str) -> Option<Endpoint> {
        self.inner.lock().await.endpoints.get(name).cloned()
    }

    /// Creates an endpoint. Adding a name that exists with the same network
    /// namespace returns the existing endpoint (a retried CNI ADD).
    pub(crate) async fn add(&self, req: EndpointRequest) -> Result<Endpoint, EndpointError> {
        validate_request(&req).map_err(EndpointError::BadRequest)?;
        // Before the lock: other endpoints go on while this one waits.
        let (pod_labels, pod_ports) = match (&self.pods, &req.pod) {
            (Some((pods, wait)), Some(pod)) => {
                let ns = req.namespace.as_deref().unwrap_or("default");
                let labels = pods.wait_labels(ns, pod, *wait).await;
                let labels = labels
                    .ok_or_else(|| EndpointError::PodUnknown(format!("{ns}/{pod}"), *wait))?;
                (Some(labels), Some(pods.ports(ns, pod)))
            }
            _ => (None, None),
        };
        let netns = plumbing::netns_path(&req.netns);
        let mut inner = self.inner.lock().await;
        if let Some(existing) = inner.endpoints.get(&req.name) {
            return if existing.netns == netns {
                Ok(existing.clone())
            } else {
                Err(EndpointError::Conflict(format!(
                    "endpoint {:?} exists with network namespace {}",
                    req.name,
                    existing.netns.display()
                )))
            };
        }
        if !netns.exists() {
            return Err(EndpointError::BadRequest(format!(
                "network namespace {} does not exist",
                netns.display()
            )));
        }
        let cidr = inner.pod_cidr.ok_or(EndpointError::NoPodCidr)?;
        let ip = pick_ip(cidr, &inner.endpoints, req.ip)?;
        let ipv6 = match (inner.pod_cidr_v6, req.ipv6) {
            (Some(cidr_v6), requested) => Some(pick_ipv6(cidr_v6, &inner.endpoints, requested)?),
            (None, Some(requested)) => {
                return Err(EndpointError::BadRequest(format!(
                    "address {requested} requested but the node has no IPv6 pod CIDR"
                )));
            }
            (None, None) => None,
        };
        let id = (1..)
            .map(EndpointId::new)
            .find(|id| !inner.endpoints.values().any(|e| e.id == *id))
            .expect("an unused ID");
        let namespace = req.namespace.clone().unwrap_or_else(|| "default".into());
        // A Pod's labels are its endpoint's (the request's are ignored then).
        let own_labels = pod_labels.unwrap_or_else(|| req.labels.clone());
        let labels = security_labels(&own_labels, &namespace, &self.config.cluster);
        let identity = self
            .allocator
            .allocate(&labels)
            .await
            .map_err(EndpointError::Identity)?
            .id;
        let endpoint = Endpoint {
            id,
            name: req.name.clone(),
            namespace,
            netns,
            ifname: req.ifname.clone().unwrap_or_else(|| "eth0".into()),
            host_ifname: host_ifname(id),
            ip,
            ipv6,
            labels: own_labels,
            identity: identity.get(),
            ifindex: None,
            pod: req.pod.clone(),
            // A Pod's named container ports are its endpoint's.
            ports: pod_ports.unwrap_or_else(|| req.ports.clone()),
        };
        match self.bring_up(&endpoint, cidr, inner.pod_cidr_v6).await {
            Ok(endpoint) => {
                info!(name = endpoint.name, ip = %endpoint.ip, ipv6 = ?endpoint.ipv6, identity = endpoint.identity, "endpoint added");
                inner
                    .endpoints
                    .insert(endpoint.name.clone(), endpoint.clone());
                self.save(&inner.endpoints)?;
                Ok(endpoint)
            }
            Err(e) => {
                let _ = self.allocator.release(&labels).await;
                Err(e)
            }
        }
    }

    /// Plumbing, datapath and ipcache entry of a new or restored endpoint.
    async fn bring_up(
        &self,
        endpoint: &Endpoint,
        cidr: Ipv4Net,
        cidr_v6: Option<Ipv6Net>,
    ) -> Result<Endpoint, EndpointError> {
        let link_node = self.config.node_netns.clone();
        let (pod, host_if, pod_if, ip) = (
            endpoint.netns.clone(),
            endpoint.host_ifname.clone(),
            endpoint.ifname.clone(),
            endpoint.ip,
        );
        let gateway = Self::gateway(cidr);
        let ipv6 = endpoint.ipv6.zip(cidr_v6.map(Self::gateway_v6));
        tokio::task::spawn_blocking(move || {
            plumbing::create_endpoint_link(&EndpointLink {
                node_netns: link_node.as_deref(),
                pod_netns: &pod,
                host_ifname: &host_if,
                pod_ifname: &pod_if,
                ip,
                gateway,
                ipv6,
            })
        })
        .await
        .map_err(|e| EndpointError::Datapath(e.to_string()))?
        .map_err(EndpointError::Plumbing)?;
        match self.attach(endpoint).await {
            Ok(attached) => {
                self.publish(&attached);
                Ok(attached)
            }
            Err(e) => {
                let _ = self.delete_link(&endpoint.host_ifname).await;
                Err(e)
            }
        }
    }

    async fn attach(&self, endpoint: &Endpoint) -> Result<Endpoint, EndpointError> {
        let (tx, rx) = oneshot::channel();
        if !self.control.send(Input::Attach(endpoint.clone(), tx)).await {
            return Err(EndpointError::Stopping);
        }
        let ifindex = rx
            .await
            .map_err(|_| EndpointError::Stopping)?
            .map_err(EndpointError::Datapath)?;
        let mut attached = endpoint.clone();
        attached.ifindex = Some(ifindex);
        Ok(attached)
    }

    /// Announces the endpoint's addresses (one ipcache entry per family,
    /// as Cilium writes them) with its identity.
    fn publish(&self, endpoint: &Endpoint) {
        for addr in endpoint.addresses() {
            let mut pair = IpIdentityPair::host(
                addr,
                NumericIdentity::new(endpoint.identity),
                Some(self.config.node_ip),
            );
            pair.k8s_namespace = endpoint.namespace.clone();
            pair.k8s_pod_name = endpoint
                .pod
                .clone()
                .unwrap_or_else(|| endpoint.name.clone());
            // Egress rules elsewhere resolve port names against these.
            pair.named_ports = endpoint.ports.iter().map(Into::into).collect();
            self.ipcache.upsert(&pair);
        }
    }

    async fn delete_link(&self, host_ifname: &str) -> Result<(), EndpointError> {
        let node = self.config.node_netns.clone();
        let host_if = host_ifname.to_string();
        tokio::task::spawn_blocking(move || {
            plumbing::delete_endpoint_link(node.as_deref(), &host_if)
        })
        .await
        .map_err(|e| EndpointError::Datapath(e.to_string()))?
        .map_err(EndpointError::Plumbing)
    }

    /// Removes an endpoint: datapath, ipcache entry, identity reference,
    /// interfaces. Returns `NotFound` for an unknown name.
    pub(crate) async fn delete(&self, name: &str) -> Result<Endpoint, EndpointError> {
        let mut inner = self.inner.lock().await;
        let endpoint = inner
            .endpoints
            .get(name)
            .cloned()
            .ok_or_else(|| EndpointError::NotFound(name.to_string()))?;
        let (tx, rx) = oneshot::channel();
        if !self.control.send(Input::Detach(endpoint.clone(), tx)).await {
            return Err(EndpointError::Stopping);
        }
        if let Ok(Err(e)) = rx.await {
            warn!(
                name,
                error = e,
                "detaching the datapath failed; removing the endpoint anyway"
            );
        }
        for addr in endpoint.addresses() {
            let pair = IpIdentityPair::host(addr, NumericIdentity::new(endpoint.identity), None);
            self.ipcache.delete(&pair.key());
        }
        if let Err(e) = self
            .allocator
            .release(&endpoint.security_labels(&self.config.cluster))
            .await
        {
            warn!(name, error = %e, "releasing the endpoint's identity failed; it will be retried");
        }
        self.delete_link(&endpoint.host_ifname).await?;
        inner.endpoints.remove(name);
        self.save(&inner.endpoints)?;
        info!(name, "endpoint deleted");
        Ok(endpoint)
    }

    /// Gives an endpoint new labels (its Pod's changed): a new identity,
    /// its policy and ipcache entry follow, the old identity is released.
    /// Nothing happens when the labels are the same.
    pub(crate) async fn relabel(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Endpoint, EndpointError> {
        let mut inner = self.inner.lock().await;
        let old = inner
            .endpoints
            .get(name)
            .cloned()
            .ok_or_else(|| EndpointError::NotFound(name.to_string()))?;
        if old.labels == labels {
            return Ok(old);
        }
        let new_set = security_labels(&labels, &old.namespace, &self.config.cluster);
        let identity = self
            .allocator
            .allocate(&new_set)
            .await
            .map_err(EndpointError::Identity)?
            .id;
        let mut endpoint = old.clone();
        endpoint.labels = labels;
        endpoint.identity = identity.get();
        let attached = match self.attach(&endpoint).await {
            Ok(a) => a,
            Err(e) => {
                let _ = self.allocator.release(&new_set).await;
                return Err(e);
            }
        };
        self.publish(&attached);
        if let Err(e) = self
            .allocator
            .release(&old.security_labels(&self.config.cluster))
            .await
        {
            warn!(name, error = %e, "releasing the endpoint's old identity failed; it will be retried");
        }
        info!(
            name,
            old = old.identity,
            new = attached.identity,
            "endpoint labels changed; new identity"
        );
        inner.endpoints.insert(name.to_string(), attached.clone());
        self.save(&inner.endpoints)?;
        Ok(attached)
    }

    /// Takes back the endpoints of the snapshot whose interfaces still
    /// exist (re-attaching the programs replaces them without a gap), and
    /// drops the others. Returns (restored, dropped).
    pub(crate) async fn restore(&self) -> Result<(usize, usize), EndpointError> {
        let saved = load_snapshot(&self.config.state_file);
        let mut inner = self.inner.lock().await;
        let (mut restored, mut dropped) = (0, 0);
        let mut etcd_away = false;
        for mut endpoint in saved {
            let node = self.config.node_netns.clone();
            let (host_if, netns) = (endpoint.host_ifname.clone(), endpoint.netns.clone());
            let alive = tokio::task::spawn_blocking(move || {
                netns.exists() && plumbing::link_exists(node.as_deref(), &host_if)
            })
            .await
            .unwrap_or(false);
            if !alive {
                warn!(
                    name = endpoint.name,
                    "endpoint from the snapshot is gone; dropping it"
                );
                let _ = self.delete_link(&endpoint.host_ifname).await;
                dropped += 1;
                continue;
            }
            let labels = endpoint.security_labels(&self.config.cluster);
            // After one timeout, etcd is known to be away: defer the rest at once.
            let wait = if etcd_away {
                std::time::Duration::ZERO
            } else {
                CONFIRM_TIMEOUT
            };
            match tokio::time::timeout(wait, self.allocator.allocate(&labels)).await {
                Ok(Ok(a)) => {
                    if a.id.get() != endpoint.identity {
                        warn!(name = endpoint.name, old = endpoint.identity, new = %a.id, "endpoint identity changed across the restart");
                    }
                    endpoint.identity = a.id.get();
                }
                outcome => {
                    // etcd is unreachable: keep the identity the datapath
                    // already enforces, and confirm it once etcd answers.
                    let why = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => {
                            etcd_away = true;
                            format!("no answer within {CONFIRM_TIMEOUT:?}")
                        }
                    };
                    warn!(
                        name = endpoint.name,
                        error = why,
                        "cannot confirm the endpoint's identity yet; keeping the previous one"
                    );
                    self.deferred.lock().await.push(endpoint.name.clone());
                }
            }
            match self.attach(&endpoint).await {
                Ok(attached) => {
                    self.publish(&attached);
                    inner.endpoints.insert(attached.name.clone(), attached);
                    restored += 1;
                }
                Err(e) => {
                    warn!(name = endpoint.name, error = %e, "cannot re-attach a restored endpoint; dropping it");
                    dropped += 1;
                }
            }
        }
        self.save(&inner.endpoints)?;
        Ok((restored, dropped))
    }

    /// Confirms the identities that could not be allocated at restore (etcd
    /// was down): takes their reference and slave key now.
    pub(crate) async fn retry_deferred(&self) {
        let names: Vec<String> = self.deferred.lock().await.clone();
        for name in names {
            let Some(endpoint) = self.get(&name).await else {
                self.deferred.lock().await.retain(|n| n != &name);
                continue;
            };
            let labels = endpoint.security_labels(&self.config.cluster);
            if let Ok(Ok(a)) =
                tokio::time::timeout(CONFIRM_TIMEOUT, self.allocator.allocate(&labels)).await
            {
                if a.id.get() != endpoint.identity {
                    warn!(name, old = endpoint.identity, new = %a.id, "the endpoint's identity changed while etcd was away; re-add the endpoint to adopt it");
                } else {
                    info!(
                        name,
                        identity = endpoint.identity,
                        "endpoint identity confirmed"
                    );
                }
                self.deferred.lock().await.retain(|n| n != &name);
            }
        }
    }

    /// The initial set of this node's ipcache entries is published.
    pub(crate) fn mark_synced(&self) {
        self.ipcache.synced();
    }

    fn save(&self, endpoints: &BTreeMap<String, Endpoint>) -> Result<(), EndpointError> {
        let path = &self.config.state_file;
        let err = |source| EndpointError::Snapshot {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let list: Vec<&Endpoint> = endpoints.values().collect();
        let tmp = path.with_extension("tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&list).expect("endpoints serialize"),
        )
        .map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}

fn load_snapshot(path: &Path) -> Vec<Endpoint> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            warn!(path = %path.display(), error = %e, "endpoint snapshot is unreadable; starting without it");
            Vec::new()
        }),
        Err(_) => Vec::new(),
    }
}

/// The requested address if it is usable and free, else the lowest free one.
/// The network address, the gateway (`.1`) and the broadcast address are
/// never handed out.
fn pick_ip(
    cidr: Ipv4Net,
    endpoints: &BTreeMap<String, Endpoint>,
    requested: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, EndpointError> {
    let used: std::collections::HashSet<Ipv4Addr> = endpoints.values().map(|e| e.ip).collect();
    let first = u32::from(cidr.network()) + 2;
    let last = u32::from(cidr.broadcast()).saturating_sub(1);
    if let Some(ip) = requested {
        let n = u32::from(ip);
        if !(first..=last).contains(&n) {
            return Err(EndpointError::BadRequest(format!(
                "address {ip} is not a usable address of the pod CIDR {cidr}"
            )));
        }
        if used.contains(&ip) {
            return Err(EndpointError::Conflict(format!("address {ip} is in use")));
        }
        return Ok(ip);
    }
    (first..=last)
        .map(Ipv4Addr::from)
        .find(|ip| !used.contains(ip))
        .ok_or(EndpointError::PoolExhausted(IpNet::V4(cidr)))
}

/// The IPv6 allocator, as [`pick_ip`]: the network address and the gateway
/// (`::1`) are never handed out, nor the CIDR's last address (IPv6 has no
/// broadcast; it is kept back so both families leave the same ends free).
/// The search stops at the first free address, so a /64 costs no more than
/// the endpoints the node has.
fn pick_ipv6(
    cidr: Ipv6Net,
    endpoints: &BTreeMap<String, Endpoint>,
    requested: Option<Ipv6Addr>,
) -> Result<Ipv6Addr, EndpointError> {
    let used: std::collections::HashSet<Ipv6Addr> =
        endpoints.values().filter_map(|e| e.ipv6).collect();
    let first = u128::from(cidr.network()) + 2;
    let last = u128::from(cidr.broadcast()).saturating_sub(1);
    if let Some(ip) = requested {
        let n = u128::from(ip);
        if !(first..=last).contains(&n) {
            return Err(EndpointError::BadRequest(format!(
                "address {ip} is not a usable address of the IPv6 pod CIDR {cidr}"
            )));
        }
        if used.contains(&ip) {
            return Err(EndpointError::Conflict(format!("address {ip} is in use")));
        }
        return Ok(ip);
    }
    (first..=last)
        .map(Ipv6Addr::from)
        .find(|ip| !used.contains(ip))
        .ok_or(EndpointError::PoolExhausted(IpNet::V6(cidr)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(ip: &str) -> Endpoint {
        Endpoint {
            id: EndpointId::new(1),
            name: ip.into(),
            namespace: "default".into(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            host_ifname: "cm1".into(),
            ip: ip.parse().unwrap(),
            ipv6: None,
            labels: BTreeMap::new(),
            identity: 300,
            ifindex: None,
            pod: None,
            ports: Vec::new(),
        }
    }

    #[test]
    fn addresses() {
        let cidr: Ipv4Net = "10.1.2.0/29".parse().unwrap();
        let mut eps = BTreeMap::new();
        assert_eq!(
            pick_ip(cidr, &eps, None).unwrap(),
            "10.1.2.2".parse::<Ipv4Addr>().unwrap()
        );
        eps.insert("a".into(), ep("10.1.2.2"));
        assert_eq!(
            pick_ip(cidr, &eps, None).unwrap(),
            "10.1.2.3".parse::<Ipv4Addr>().unwrap()
        );
        assert!(matches!(
            pick_ip(cidr, &eps, Some("10.1.2.2".parse().unwrap())),
            Err(EndpointError::Conflict(_))
        ));
        assert!(matches!(
            pick_ip(cidr, &eps, Some("10.1.2.1".parse().unwrap())),
            Err(EndpointError::BadRequest(_))
        ));
        assert!(matches!(
            pick_ip(cidr, &eps, Some("10.1.2.7".parse().unwrap())),
            Err(EndpointError::BadRequest(_))
        ));
        for i in 3..=6 {
            eps.insert(format!("{i}"), ep(&format!("10.1.2.{i}")));
        }
        assert!(matches!(
            pick_ip(cidr, &eps, None),
            Err(EndpointError::PoolExhausted(_))
        ));
        assert_eq!(
            EndpointManager::gateway(cidr),
            "10.1.2.1".parse::<Ipv4Addr>().unwrap()
        );
    }

    #[test]
    fn ipv6_addresses_mirror_the_ipv4_allocator() {
        let cidr: Ipv6Net = "fd10:1:0:1::/125".parse().unwrap();
        let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let mut eps = BTreeMap::new();
        assert_eq!(pick_ipv6(cidr, &eps, None).unwrap(), v6("fd10:1:0:1::2"));
        let mut a = ep("10.1.2.2");
        a.ipv6 = Some(v6("fd10:1:0:1::2"));
        eps.insert("a".into(), a);
        assert_eq!(pick_ipv6(cidr, &eps, None).unwrap(), v6("fd10:1:0:1::3"));
        // IPv4-only endpoints (restored from an old snapshot) hold no v6 address.
        eps.insert("old".into(), ep("10.1.2.3"));
        assert_eq!(pick_ipv6(cidr, &eps, None).unwrap(), v6("fd10:1:0:1::3"));
        assert!(matches!(
            pick_ipv6(cidr, &eps, Some(v6("fd10:1:0:1::2"))),
            Err(EndpointError::Conflict(_))
        ));
        for bad in ["fd10:1:0:1::1", "fd10:1:0:1::7", "fd10:9::5"] {
            assert!(
                matches!(
                    pick_ipv6(cidr, &eps, Some(v6(bad))),
                    Err(EndpointError::BadRequest(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            pick_ipv6(cidr, &eps, Some(v6("fd10:1:0:1::6"))).unwrap(),
            v6("fd10:1:0:1::6")
        );
        for i in 3..=6 {
            let mut e = ep(&format!("10.1.2.{i}"));
            e.ipv6 = Some(v6(&format!("fd10:1:0:1::{i}")));
            eps.insert(format!("{i}"), e);
        }
        assert!(matches!(
            pick_ipv6(cidr, &eps, None),
            Err(EndpointError::PoolExhausted(IpNet::V6(_)))
        ));
        assert_eq!(EndpointManager::gateway_v6(cidr), v6("fd10:1:0:1::1"));
        // A /64 finds its first free address at once.
        let wide: Ipv6Net = "fd10:1:0:2::/64".parse().unwrap();
        assert_eq!(pick_ipv6(wide, &eps, None).unwrap(), v6("fd10:1:0:2::2"));
    }
}
