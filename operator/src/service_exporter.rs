use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use k8s::{
    services_source::{self, ServiceChange},
    watch::KubeHealth,
};
use kvstore::{
    Client, ClusterId, ClusterName, Event, IdentityCache, Labels, NumericIdentity, SessionHandle,
    StoreValue, SyncStore, SyncStoreConfig, WatchStore, WatchStoreConfig, keys,
    values::{ClusterService, IpIdentityPair, ServiceDef},
};
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::metrics::OperatorMetrics;

/// Why the exporter stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceExporterError {
    #[error("watching {what}")]
    Watch {
        what: &'static str,
        #[source]
        source: kvstore::Error,
    },
}

/// Where the exporter's service definitions come from.
#[derive(Clone)]
pub enum ServiceSource {
    /// `cilium/servicedefs/v1/<ns>/<name>` in etcd, with the cluster's
    /// endpoints whose labels match a definition's selector as backends.
    Etcd,
    /// The cluster's Services with their ready endpoints
    /// ([`k8s::services_source`]); only the global, shared ones are exported.
    Kubernetes {
        client: kube::Client,
        health: KubeHealth,
    },
}

impl std::fmt::Debug for ServiceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Etcd => "Etcd",
            Self::Kubernetes { .. } => "Kubernetes",
        })
    }
}

/// Exports the cluster's services as the `ClusterService`s that remote
/// clusters read (`cilium/state/services/v1/<cluster>/<ns>/<name>`).
///
/// With [`ServiceSource::Etcd`] (the default) it joins three watches: the
/// definitions (`cilium/servicedefs/v1/<ns>/<name>`), the cluster's ipcache
/// (endpoint IP → identity) and its identities (identity → labels); any
/// change recomputes the services (a pure function, [`exported_services`]).
/// With [`ServiceSource::Kubernetes`] the definitions are the Services whose
/// annotations say global and shared, their backends the ready endpoints.
/// Either way the write side stores only what changed, and once the inputs
/// are synced the services canary is written. Run by the leader only.
#[derive(Debug)]
pub struct ServiceExporter {
    client: Client,
    session: SessionHandle,
    cluster: ClusterName,
    cluster_id: ClusterId,
    source: ServiceSource,
    metrics: Option<OperatorMetrics>,
}

impl ServiceExporter {
    pub fn new(
        client: Client,
        session: SessionHandle,
        cluster: ClusterName,
        cluster_id: ClusterId,
    ) -> Self {
        Self {
            client,
            session,
            cluster,
            cluster_id,
            source: ServiceSource::Etcd,
            metrics: None,
        }
    }

    /// Reads the definitions from `source` instead of etcd.
    pub fn with_source(mut self, source: ServiceSource) -> Self {
        self.source = source;
        self
    }

    /// Reports the number of exported services in `metrics`.
    pub fn with_metrics(mut self, metrics: OperatorMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Runs until `shutdown` (the end of the leader's term).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServiceExporterError> {
        let token = shutdown.child_token();
        let (store, store_runner) = SyncStore::<ClusterService>::new(
            self.client.clone(),
            self.session.clone(),
            SyncStoreConfig::new(keys::services())
                .with_canary(keys::canary(&self.cluster, keys::SERVICES_STORE)),
        );
        let mut tasks = JoinSet::new();
        tasks.spawn(store_runner.run(token.clone()));
        let writer = ExportWriter {
            store,
            exported: BTreeMap::new(),
            canary_written: false,
            metrics: self.metrics.clone(),
        };
        let result = match self.source.clone() {
            ServiceSource::Etcd => self.run_etcd(writer, &mut tasks, &token).await,
            ServiceSource::Kubernetes { client, health } => {
                self.run_kubernetes(client, health, writer, &mut tasks, &token)
                    .await
            }
        };
        token.cancel();
        while tasks.join_next().await.is_some() {}
        result
    }

    async fn run_etcd(
        &self,
        mut writer: ExportWriter,
        tasks: &mut JoinSet<Result<(), kvstore::Error>>,
        token: &CancellationToken,
    ) -> Result<(), ServiceExporterError> {
        let (defs_store, mut defs) = WatchStore::<ServiceDef>::new(
            self.client.clone(),
            WatchStoreConfig::new(keys::service_defs()).with_name("service definitions"),
        );
        let (ips_store, mut ips) = WatchStore::<IpIdentityPair>::new(
            self.client.clone(),
            WatchStoreConfig::new(keys::ipcache()).with_name("ipcache"),
        );
        let (identity_tx, mut identity_events) = mpsc::channel(1024);
        let (_cache, cache_runner) = IdentityCache::local(self.client.clone());
        let cache_runner = cache_runner.forward_to(identity_tx);
        tasks.spawn(defs_store.run(token.clone()));
        tasks.spawn(ips_store.run(token.clone()));
        tasks.spawn(cache_runner.run(token.clone()));

        let mut state = ExportState::default();
        let mut synced = [false; 3];
        loop {
            tokio::select! {
                _ = token.cancelled() => return Ok(()),
                Some(e) = defs.recv() => match e {
                    Event::Upsert { key, value } => { state.defs.insert(key, value); }
                    Event::Delete { key } => { state.defs.remove(&key); }
                    Event::Synced => synced[0] = true,
                },
                Some(e) = ips.recv() => match e {
                    Event::Upsert { key, value } => { state.ips.insert(key, (value.ip, value.id)); }
                    Event::Delete { key } => { state.ips.remove(&key); }
                    Event::Synced => synced[1] = true,
                },
                Some(e) = identity_events.recv() => match e {
                    Event::Upsert { value, .. } => { state.identities.insert(value.id, value.labels); }
                    Event::Delete { key } => {
                        if let Some(id) = keys::parse_identity_master(&key) {
                            state.identities.remove(&id);
                        }
                    }
                    Event::Synced => synced[2] = true,
                },
                Some(done) = tasks.join_next() => {
                    if let Ok(Err(source)) = done {
                        return Err(ServiceExporterError::Watch { what: "service inputs", source });
                    }
                    continue;
                }
            }
            if !synced.iter().all(|s| *s) {
                continue;
            }
            writer.apply(exported_services(
                &state,
                &self.cluster,
                self.cluster_id.get(),
            ));
            writer.synced();
        }
    }

    async fn run_kubernetes(
        &self,
        client: kube::Client,
        health: KubeHealth,
        mut writer: ExportWriter,
        tasks: &mut JoinSet<Result<(), kvstore::Error>>,
        token: &CancellationToken,
    ) -> Result<(), ServiceExporterError> {
        let (tx, mut changes) = mpsc::channel(256);
        let source = tokio::spawn(services_source::run(client, health, tx, token.clone()));
        let _source = tokio_util::task::AbortOnDropHandle::new(source);
        let mut state = ExportState::default();
        let mut synced = false;
        loop {
            tokio::select! {
                _ = token.cancelled() => return Ok(()),
                change = changes.recv() => match change {
                    Some(change) => {
                        if !state.apply_kubernetes(change) {
                            synced = true;
                        }
                    }
                    // The source stops only with the token.
                    None => return Ok(()),
                },
                Some(done) = tasks.join_next() => {
                    if let Ok(Err(source)) = done {
                        return Err(ServiceExporterError::Watch { what: "the services store", source });
                    }
                    continue;
                }
            }
            if !synced {
                continue;
            }
            writer.apply(exported_services(
                &state,
                &self.cluster,
                self.cluster_id.get(),
            ));
            writer.synced();
        }
    }
}

/// The write side of the exporter: what it last stored, and the canary.
struct ExportWriter {
    store: SyncStore<ClusterService>,
    exported: BTreeMap<String, ClusterService>,
    canary_written: bool,
    metrics: Option<OperatorMetrics>,
}

impl ExportWriter {
    /// Stores what changed from the last call, deletes what is gone.
    fn apply(&mut self, desired: BTreeMap<String, ClusterService>) {
        for (key, svc) in &desired {
            if self.exported.get(key) != Some(svc) {
                debug!(
                    service = key,
                    backends = svc.backends.len(),
                    "exporting service"
                );
                self.store.upsert(svc);
            }
        }
        for key in self.exported.keys() {
            if !desired.contains_key(key) {
                debug!(service = key, "no longer exporting service");
                self.store.delete(key);
            }
        }
        self.exported = desired;
        if let Some(m) = &self.metrics {
            m.services_exported.set(self.exported.len() as i64);
        }
    }

    /// Writes the services canary, once: every input was listed.
    fn synced(&mut self) {
        if !self.canary_written {
            info!(
                services = self.exported.len(),
                "services exported; writing the services canary"
            );
            self.store.synced();
            self.canary_written = true;
        }
    }
}

/// What the exporter joins.
#[derive(Debug, Default)]
pub struct ExportState {
    /// `<ns>/<name>` → definition.
    pub defs: BTreeMap<String, ServiceDef>,
    /// ipcache key → (IP, identity).
    pub ips: HashMap<String, (IpAddr, NumericIdentity)>,
    pub identities: HashMap<NumericIdentity, Labels>,
}

impl ExportState {
    /// Applies a change of the Kubernetes services source: a Service is a
    /// definition while its annotations say global and shared (Cilium's
    /// `GetAnnotationShared`); anything else removes it. `false` once the
    /// source says its initial lists are in.
    pub fn apply_kubernetes(&mut self, change: ServiceChange) -> bool {
        match change {
            ServiceChange::Upsert { def, annotations } if annotations.exported() => {
                self.defs.insert(def.key(), def);
            }
            ServiceChange::Upsert { def, .. } => {
                self.defs.remove(&def.key());
            }
            ServiceChange::Delete { key } | ServiceChange::Invalid { key, .. } => {
                self.defs.remove(&key);
            }
            ServiceChange::Synced => return false,
        }
        true
    }
}

/// The services a cluster exports, by their key (`<cluster>/<ns>/<name>`).
pub fn exported_services(
    state: &ExportState,
    cluster: &ClusterName,
    cluster_id: u32,
) -> BTreeMap<String, ClusterService> {
    state
        .defs
        .values()
        .map(|def| {
            let mut backends: Vec<IpAddr> = match &def.backends {
                Some(backends) => backends.clone(),
                None => state
                    .ips
                    .values()
                    .filter(|(_, id)| state.identities.get(id).is_some_and(|l| def.selects(l)))
                    .map(|(ip, _)| *ip)
                    .collect(),
            };
            backends.sort();
            let svc = def.export(cluster, cluster_id, backends);
            (svc.key(), svc)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s::service::MeshAnnotations;
    use kvstore::{CLUSTER_LABEL, Label, NAMESPACE_LABEL};

    use super::*;

    #[test]
    fn kubernetes_services_are_exported_while_global_and_shared() {
        let c1 = ClusterName::new("c1").unwrap();
        let mut def = ServiceDef::parse("namespace: demo\nname: echo\nfrontend: 10.96.0.10\nports: [{name: http, port: 80, targetPort: 8080}]\nselector: {app: echo}\nglobal: true\n").unwrap();
        def.backends = Some(vec![
            "10.1.0.6".parse().unwrap(),
            "10.1.0.5".parse().unwrap(),
        ]);
        let global = MeshAnnotations {
            global: true,
            shared: true,
            ..Default::default()
        };
        let mut state = ExportState::default();
        let upsert = |annotations: &MeshAnnotations| ServiceChange::Upsert {
            def: def.clone(),
            annotations: annotations.clone(),
        };
        assert!(state.apply_kubernetes(upsert(&global)));
        let out = exported_services(&state, &c1, 1);
        let backends: Vec<&String> = out["c1/demo/echo"].backends.keys().collect();
        assert_eq!(backends, ["10.1.0.5", "10.1.0.6"]);
        // shared=false, or not global: withdrawn.
        let not_shared = MeshAnnotations {
            shared: false,
            ..global.clone()
        };
        state.apply_kubernetes(upsert(&not_shared));
        assert!(exported_services(&state, &c1, 1).is_empty());
        state.apply_kubernetes(upsert(&global));
        state.apply_kubernetes(upsert(&MeshAnnotations::default()));
        assert!(exported_services(&state, &c1, 1).is_empty());
        // Refused or deleted: withdrawn.
        state.apply_kubernetes(upsert(&global));
        state.apply_kubernetes(ServiceChange::Invalid {
            key: "demo/echo".into(),
            error: k8s::service::ServiceError::Invalid("x".into()),
        });
        assert!(exported_services(&state, &c1, 1).is_empty());
        state.apply_kubernetes(upsert(&global));
        state.apply_kubernetes(ServiceChange::Delete {
            key: "demo/echo".into(),
        });
        assert!(exported_services(&state, &c1, 1).is_empty());
        assert!(!state.apply_kubernetes(ServiceChange::Synced));
    }

    #[test]
    fn backends_are_matching_endpoints() {
        let c1 = ClusterName::new("c1").unwrap();
        let mut state = ExportState::default();
        let def = ServiceDef::parse("namespace: demo\nname: echo\nfrontend: 10.96.0.10\nports: [{name: http, port: 80, targetPort: 8080}]\nselector: {app: echo}\nglobal: true\n").unwrap();
        state.defs.insert(def.key(), def);
        let labels = |app: &str, ns: &str| -> Labels {
            [
                Label::k8s("app", app),
                Label::k8s(NAMESPACE_LABEL, ns),
                Label::k8s(CLUSTER_LABEL, "c1"),
            ]
            .into_iter()
            .collect()
        };
        state
            .identities
            .insert(NumericIdentity::new(65836), labels("echo", "demo"));
        state
            .identities
            .insert(NumericIdentity::new(65837), labels("echo", "prod"));
        state
            .identities
            .insert(NumericIdentity::new(65838), labels("client", "demo"));
        state.ips.insert(
            "10.1.0.5".into(),
            ("10.1.0.5".parse().unwrap(), NumericIdentity::new(65836)),
        );
        state.ips.insert(
            "10.1.1.5".into(),
            ("10.1.1.5".parse().unwrap(), NumericIdentity::new(65836)),
        );
        state.ips.insert(
            "10.1.0.6".into(),
            ("10.1.0.6".parse().unwrap(), NumericIdentity::new(65837)),
        );
        state.ips.insert(
            "10.1.0.7".into(),
            ("10.1.0.7".parse().unwrap(), NumericIdentity::new(65838)),
        );
        state.ips.insert(
            "10.1.0.8".into(),
            ("10.1.0.8".parse().unwrap(), NumericIdentity::new(99999)),
        );
        let out = exported_services(&state, &c1, 1);
        let svc = &out["c1/demo/echo"];
        let backends: Vec<&String> = svc.backends.keys().collect();
        assert_eq!(backends, ["10.1.0.5", "10.1.1.5"]);
        assert!(svc.shared && svc.include_external);
        assert_eq!(svc.cluster_id, 1);
    }
}
