//! The cluster's Services joined with their endpoints, as service
//! definitions: one task watches Services and their endpoints
//! (`discovery.k8s.io/v1` EndpointSlices where the server offers them, else
//! core/v1 Endpoints) and sends every definition that changed. The agent
//! programs them; the operator exports the global, shared ones.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::{
    core::v1::{Endpoints, Service},
    discovery::v1::EndpointSlice,
};
use kube::{Api, Client, runtime::watcher};
use kvstore::values::ServiceDef;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    service::{self, Backends, MeshAnnotations, SLICE_SERVICE_LABEL, ServiceError},
    watch::{self, Change, KubeHealth, ObjectKey},
};

/// What the services source sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceChange {
    /// A Service's definition (key `<ns>/<name>`) is new or changed.
    Upsert {
        def: ServiceDef,
        annotations: MeshAnnotations,
    },
    /// The Service is gone, has no virtual IP any more, or was refused.
    Delete { key: String },
    /// A Service was refused (it is also deleted, if it was upserted before).
    Invalid { key: String, error: ServiceError },
    /// Services and endpoints delivered their initial lists.
    Synced,
}

/// Where the endpoints come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointsApi {
    /// `discovery.k8s.io/v1` EndpointSlices (Kubernetes ≥ 1.21).
    Slices,
    /// core/v1 Endpoints.
    Endpoints,
}

/// Picks EndpointSlices when the server serves `discovery.k8s.io/v1`.
pub async fn endpoints_api(client: &Client) -> EndpointsApi {
    match client.list_api_group_resources("discovery.k8s.io/v1").await {
        Ok(list) if list.resources.iter().any(|r| r.name == "endpointslices") => {
            EndpointsApi::Slices
        }
        _ => EndpointsApi::Endpoints,
    }
}

/// Services and endpoints, joined.
#[derive(Debug, Default)]
pub struct ServiceJoin {
    services: HashMap<String, Service>,
    /// `<ns>/<name>` → slice name (or `""` for an Endpoints object) → backends.
    backends: HashMap<String, BTreeMap<String, Backends>>,
    /// What was last sent per key.
    sent: HashMap<String, Result<(ServiceDef, MeshAnnotations), ServiceError>>,
    /// `<ns>/<slice>` → its Service's key (a deleted slice names only itself).
    slice_owner: HashMap<String, String>,
}

impl ServiceJoin {
    pub fn apply_service(&mut self, svc: Service) -> Vec<ServiceChange> {
        let key = ObjectKey::of(&svc).to_string();
        self.services.insert(key.clone(), svc);
        self.recompute(&key)
    }

    pub fn delete_service(&mut self, key: &ObjectKey) -> Vec<ServiceChange> {
        let key = key.to_string();
        self.services.remove(&key);
        self.recompute(&key)
    }

    pub fn apply_endpoints(&mut self, ep: &Endpoints) -> Vec<ServiceChange> {
        let key = ObjectKey::of(ep).to_string();
        self.backends
            .entry(key.clone())
            .or_default()
            .insert(String::new(), service::endpoints_backends(ep));
        self.recompute(&key)
    }

    pub fn delete_endpoints(&mut self, key: &ObjectKey) -> Vec<ServiceChange> {
        let key = key.to_string();
        if let Some(parts) = self.backends.get_mut(&key) {
            parts.remove("");
            if parts.is_empty() {
                self.backends.remove(&key);
            }
        }
        self.recompute(&key)
    }

    pub fn apply_slice(&mut self, slice: &EndpointSlice) -> Vec<ServiceChange> {
        let Some(key) = slice_service(slice) else {
            return Vec::new();
        };
        let name = slice.metadata.name.clone().unwrap_or_default();
        self.slice_owner
            .insert(ObjectKey::of(slice).to_string(), key.clone());
        self.backends
            .entry(key.clone())
            .or_default()
            .insert(name, service::slices_backends([slice]));
        self.recompute(&key)
    }

    /// A slice is gone.
    pub fn delete_slice(&mut self, slice: &ObjectKey) -> Vec<ServiceChange> {
        let Some(key) = self.slice_owner.remove(&slice.to_string()) else {
            return Vec::new();
        };
        if let Some(parts) = self.backends.get_mut(&key) {
            parts.remove(&slice.name);
            if parts.is_empty() {
                self.backends.remove(&key);
            }
        }
        self.recompute(&key)
    }

    fn recompute(&mut self, key: &str) -> Vec<ServiceChange> {
        let now = self.services.get(key).map(|svc| {
            let mut backends = Backends::new();
            for part in self.backends.get(key).into_iter().flat_map(|p| p.values()) {
                for (ip, ports) in part {
                    backends.entry(*ip).or_default().extend(ports.clone());
                }
            }
            let ann = service::annotations(svc)?;
            Ok(service::service_def(svc, &backends)?.map(|def| (def, ann)))
        });
        let now: Option<Result<(ServiceDef, MeshAnnotations), ServiceError>> = match now {
            None => None,
            Some(Ok(None)) => None,
            Some(Ok(Some(v))) => Some(Ok(v)),
            Some(Err(e)) => Some(Err(e)),
        };
        let before = self.sent.get(key);
        if before == now.as_ref() {
            return Vec::new();
        }
        let had = matches!(before, Some(Ok(_)));
        let mut out = Vec::new();
        match &now {
            Some(Ok((def, ann))) => out.push(ServiceChange::Upsert {
                def: def.clone(),
                annotations: ann.clone(),
            }),
            Some(Err(error)) => {
                if had {
                    out.push(ServiceChange::Delete { key: key.into() });
                }
                out.push(ServiceChange::Invalid {
                    key: key.into(),
                    error: error.clone(),
                });
            }
            None if had => out.push(ServiceChange::Delete { key: key.into() }),
            None => {}
        }
        match now {
            Some(v) => {
                self.sent.insert(key.to_string(), v);
            }
            None => {
                self.sent.remove(key);
            }
        }
        out
    }
}

/// `<ns>/<service>` of a slice, from its `kubernetes.io/service-name` label.
fn slice_service(slice: &EndpointSlice) -> Option<String> {
    let ns = slice.metadata.namespace.as_deref()?;
    let svc = slice.metadata.labels.as_ref()?.get(SLICE_SERVICE_LABEL)?;
    Some(format!("{ns}/{svc}"))
}

/// Watches Services and their endpoints and sends the joined definitions
/// to `tx` until `shutdown` or until the receiver is gone.
pub async fn run(
    client: Client,
    health: KubeHealth,
    tx: mpsc::Sender<ServiceChange>,
    shutdown: CancellationToken,
) {
    let which = endpoints_api(&client).await;
    debug!(?which, "service endpoints from");
    let token = shutdown.child_token();
    let (svc_tx, mut svc_rx) = mpsc::channel(256);
    tokio::spawn(watch::watch(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        "services",
        health.clone(),
        svc_tx,
        token.clone(),
    ));
    let (ep_tx, mut ep_rx) = mpsc::channel(256);
    let (slice_tx, mut slice_rx) = mpsc::channel(256);
    match which {
        EndpointsApi::Endpoints => {
            drop(slice_tx);
            tokio::spawn(watch::watch(
                Api::<Endpoints>::all(client.clone()),
                watcher::Config::default(),
                "endpoints",
                health.clone(),
                ep_tx,
                token.clone(),
            ));
        }
        EndpointsApi::Slices => {
            drop(ep_tx);
            tokio::spawn(watch::watch(
                Api::<EndpointSlice>::all(client.clone()),
                watcher::Config::default(),
                "endpointslices",
                health.clone(),
                slice_tx,
                token.clone(),
            ));
        }
    }
    let _guard = token.drop_guard();
    let mut join = ServiceJoin::default();
    let (mut services_synced, mut endpoints_synced, mut sent_synced) = (false, false, false);
    loop {
        let changes = tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(c) = svc_rx.recv() => match c {
                Change::Apply(s) => join.apply_service(s),
                Change::Delete(k) => join.delete_service(&k),
                Change::Synced => { services_synced = true; Vec::new() }
            },
            Some(c) = ep_rx.recv() => match c {
                Change::Apply(e) => join.apply_endpoints(&e),
                Change::Delete(k) => join.delete_endpoints(&k),
                Change::Synced => { endpoints_synced = true; Vec::new() }
            },
            Some(c) = slice_rx.recv() => match c {
                Change::Apply(s) => join.apply_slice(&s),
                Change::Delete(k) => join.delete_slice(&k),
                Change::Synced => { endpoints_synced = true; Vec::new() }
            },
            else => return,
        };
        for change in changes {
            if let ServiceChange::Invalid { key, error } = &change {
                warn!(service = %key, %error, "Service refused; it changes nothing");
            }
            if tx.send(change).await.is_err() {
                return;
            }
        }
        if services_synced && endpoints_synced && !sent_synced {
            sent_synced = true;
            if tx.send(ServiceChange::Synced).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, ServicePort, ServiceSpec},
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };

    use super::*;

    fn svc(annotations: &[(&str, &str)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("echo".into()),
                namespace: Some("demo".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some("10.96.0.10".into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn endpoints(ips: &[&str]) -> Endpoints {
        Endpoints {
            metadata: ObjectMeta {
                name: Some("echo".into()),
                namespace: Some("demo".into()),
                ..Default::default()
            },
            subsets: Some(vec![EndpointSubset {
                addresses: Some(
                    ips.iter()
                        .map(|ip| EndpointAddress {
                            ip: ip.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ports: Some(vec![EndpointPort {
                    name: Some("http".into()),
                    port: 8080,
                    ..Default::default()
                }]),
                ..Default::default()
            }]),
        }
    }

    fn backends(changes: &[ServiceChange]) -> Vec<String> {
        match changes {
            [ServiceChange::Upsert { def, .. }] => def
                .backends
                .iter()
                .flatten()
                .map(|ip| ip.to_string())
                .collect(),
            other => panic!("expected one upsert, got {other:?}"),
        }
    }

    fn slice(name: &str, ready: &[(&str, Option<bool>)]) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "demo", "labels": {SLICE_SERVICE_LABEL: "echo"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": ready.iter().map(|(ip, r)| {
                let mut e = serde_json::json!({"addresses": [ip]});
                if let Some(r) = r {
                    e["conditions"] = serde_json::json!({"ready": r});
                }
                e
            }).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn slices_of_a_service_are_merged_and_only_ready_endpoints_count() {
        let mut join = ServiceJoin::default();
        assert!(join.apply_service(svc(&[])).len() == 1);
        let a = slice(
            "echo-a",
            &[("10.1.0.5", Some(true)), ("10.1.0.6", Some(false))],
        );
        assert_eq!(backends(&join.apply_slice(&a)), ["10.1.0.5"]);
        // No conditions: ready, as the API says.
        let b = slice("echo-b", &[("10.1.1.7", None)]);
        assert_eq!(backends(&join.apply_slice(&b)), ["10.1.0.5", "10.1.1.7"]);
        let changes = join.apply_slice(&b);
        assert!(changes.is_empty(), "{changes:?}");
        let gone = ObjectKey {
            namespace: Some("demo".into()),
            name: "echo-a".into(),
        };
        assert_eq!(backends(&join.delete_slice(&gone)), ["10.1.1.7"]);
        match join.apply_slice(&b).as_slice() {
            [] => {}
            other => panic!("{other:?}"),
        }
        let ServiceChange::Upsert { def, .. } =
            &join.apply_slice(&slice("echo-a", &[("10.1.0.9", None)]))[0]
        else {
            panic!("an upsert");
        };
        assert_eq!(def.ports[0].target(), 8080, "the port from the slices");
    }

    #[test]
    fn services_and_endpoints_join_in_any_order() {
        let mut join = ServiceJoin::default();
        // Endpoints before their Service: nothing yet.
        assert!(join.apply_endpoints(&endpoints(&["10.1.0.5"])).is_empty());
        assert_eq!(
            backends(&join.apply_service(svc(&[("service.cilium.io/global", "true")]))),
            ["10.1.0.5"]
        );
        // The same again: nothing.
        assert!(join.apply_endpoints(&endpoints(&["10.1.0.5"])).is_empty());
        assert_eq!(
            backends(&join.apply_endpoints(&endpoints(&["10.1.0.5", "10.1.1.6"]))),
            ["10.1.0.5", "10.1.1.6"]
        );
        // A bad annotation: the definition goes, the reason is told.
        let changes = join.apply_service(svc(&[
            ("service.cilium.io/affinity", "x"),
            ("service.cilium.io/global", "true"),
        ]));
        assert!(
            matches!(
                changes.as_slice(),
                [ServiceChange::Delete { key }, ServiceChange::Invalid { .. }] if key == "demo/echo"
            ),
            "{changes:?}"
        );
        assert_eq!(
            backends(&join.apply_service(svc(&[]))),
            ["10.1.0.5", "10.1.1.6"]
        );
        let key = ObjectKey {
            namespace: Some("demo".into()),
            name: "echo".into(),
        };
        assert_eq!(backends(&join.delete_endpoints(&key)), Vec::<String>::new());
        assert_eq!(
            join.delete_service(&key),
            [ServiceChange::Delete {
                key: "demo/echo".into()
            }]
        );
        assert!(join.delete_service(&key).is_empty());
    }
}
