use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use kvstore::{
    Client, ClusterId, ClusterName, Event, IdentityCache, Labels, NumericIdentity, SessionHandle,
    StoreValue, SyncStore, SyncStoreConfig, WatchStore, WatchStoreConfig, keys,
    values::{ClusterService, IpIdentityPair, ServiceDef},
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

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

/// Exports every service definition of the cluster
/// (`cilium/servicedefs/v1/<ns>/<name>`) as the `ClusterService` that remote
/// clusters read (`cilium/state/services/v1/<cluster>/<ns>/<name>`), with the
/// cluster's endpoints whose labels match its selector as backends.
///
/// It joins three watches: the definitions, the cluster's ipcache (endpoint
/// IP → identity) and its identities (identity → labels); any change
/// recomputes the services (a pure function, [`exported_services`]) and the
/// write side stores only what changed. Once all three are synced the
/// services canary is written. Run by the leader only.
#[derive(Debug)]
pub struct ServiceExporter {
    client: Client,
    session: SessionHandle,
    cluster: ClusterName,
    cluster_id: ClusterId,
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
        }
    }

    /// Runs until `shutdown` (the end of the leader's term).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServiceExporterError> {
        let token = shutdown.child_token();
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
        let (store, store_runner) = SyncStore::<ClusterService>::new(
            self.client.clone(),
            self.session.clone(),
            SyncStoreConfig::new(keys::services())
                .with_canary(keys::canary(&self.cluster, keys::SERVICES_STORE)),
        );
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(defs_store.run(token.clone()));
        tasks.spawn(ips_store.run(token.clone()));
        tasks.spawn(store_runner.run(token.clone()));
        tasks.spawn(cache_runner.run(token.clone()));

        let mut state = ExportState::default();
        let mut synced = [false; 3];
        let mut exported: BTreeMap<String, ClusterService> = BTreeMap::new();
        let mut canary_written = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
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
                        token.cancel();
                        return Err(ServiceExporterError::Watch { what: "service inputs", source });
                    }
                    continue;
                }
            }
            if !synced.iter().all(|s| *s) {
                continue;
            }
            let desired = exported_services(&state, &self.cluster, self.cluster_id.get());
            for (key, svc) in &desired {
                if exported.get(key) != Some(svc) {
                    debug!(
                        service = key,
                        backends = svc.backends.len(),
                        "exporting service"
                    );
                    store.upsert(svc);
                }
            }
            for key in exported.keys() {
                if !desired.contains_key(key) {
                    store.delete(key);
                }
            }
            exported = desired;
            if !canary_written {
                info!(
                    services = exported.len(),
                    "services exported; writing the services canary"
                );
                store.synced();
                canary_written = true;
            }
        }
        token.cancel();
        while tasks.join_next().await.is_some() {}
        Ok(())
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
    use kvstore::{CLUSTER_LABEL, Label, NAMESPACE_LABEL};

    use super::*;

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
