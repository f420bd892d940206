//! Source events applied to the tables, and what each change sets off
//! (policy entries, the ipcache, services, routes).
//!
//! Sources deliver exactly the difference to what the loop has, also after
//! a reconnect (their stores track staleness), so an upsert sets, a delete
//! removes, and a source that goes is removed whole.

use ipnet::IpNet;
use kvstore::{
    Event, NumericIdentity, keys,
    values::{ClusterService, IdentityEntry, Node},
};
use tracing::{info, warn};

use super::{ControlLoop, Input, IpEvent, StoreKind, sources::Source};
use crate::{
    route_plan,
    tables::{IdentityUpsert, SourceId},
};

impl ControlLoop {
    pub(super) fn handle(&mut self, input: Input) {
        match input {
            Input::Identity(source, event) => self.on_identity(source, event),
            Input::Ip(source, event) => self.on_ip(source, event),
            Input::Node(source, event) => self.on_node(source, event),
            Input::Service(source, event) => self.on_service(source, event),
            Input::Policy(event) => {
                match event {
                    Event::Upsert { key, value } => {
                        self.tables.policies.insert(key, value);
                    }
                    Event::Delete { key } => {
                        self.tables.policies.remove(&key);
                    }
                    Event::Synced => self.mark_synced(SourceId::LOCAL_CLUSTER, StoreKind::Policies),
                }
                self.recompute_all_policy();
            }
            Input::ServiceDef(event) => {
                match event {
                    Event::Upsert { key, value } => {
                        self.tables.service_defs.insert(key, value);
                    }
                    Event::Delete { key } => {
                        self.tables.service_defs.remove(&key);
                    }
                    Event::Synced => {
                        self.mark_synced(SourceId::LOCAL_CLUSTER, StoreKind::ServiceDefs)
                    }
                }
                self.services.touch();
            }
            Input::RegisterSource {
                id,
                name,
                cluster_id,
                kinds,
                pod_cidr_pools,
            } => {
                info!(source = name, "remote source registered");
                self.sources
                    .register(id, Source::new(name, cluster_id, kinds, pod_cidr_pools));
            }
            Input::RemoveSource(id) => self.remove_source(id),
            Input::RemoteStatus(remotes) => self.remotes = remotes,
            Input::RoutesRefused(refused) => self.refused_routes = refused,
            Input::Attach(endpoint, reply) => {
                let result = self.endpoints.attach(
                    &mut self.dp,
                    &mut self.tables,
                    &self.config.cluster,
                    self.config.node_ip,
                    endpoint,
                );
                self.endpoints_changed();
                let _ = reply.send(result);
            }
            Input::Detach(endpoint, reply) => {
                let result = self
                    .endpoints
                    .detach(&mut self.dp, &mut self.tables, &endpoint);
                self.fqdn_endpoint_removed(endpoint.id);
                self.endpoints_changed();
                let _ = reply.send(result);
            }
            Input::Query(query, reply) => {
                let _ = reply.send(self.answer(query));
            }
            Input::FqdnLearned(learned) => self.on_fqdn_learned(learned),
            Input::FqdnTick => self.on_fqdn_tick(),
        }
    }

    fn endpoints_changed(&mut self) {
        self.publish_dns_view();
        self.services.touch();
        self.metrics.endpoints.set(self.endpoints.len() as i64);
    }

    fn on_identity(&mut self, source: SourceId, event: Event<IdentityEntry>) {
        match event {
            Event::Upsert { value, .. } => {
                match self
                    .tables
                    .upsert_identity(source, value.id, value.labels.clone())
                {
                    IdentityUpsert::Changed => {
                        self.identity_changed(value.id, Some(&value.labels));
                        if source.is_local() {
                            self.services.touch();
                        }
                    }
                    IdentityUpsert::Unchanged => {}
                    IdentityUpsert::Refused => warn!(
                        source = self.sources.name(source),
                        id = value.id.get(),
                        "a remote tried to set a reserved or local identity; ignored"
                    ),
                }
            }
            Event::Delete { key } => {
                if let Ok(id) = key.parse::<NumericIdentity>()
                    && self.tables.delete_identity(source, id)
                {
                    self.identity_changed(id, None);
                    if source.is_local() {
                        self.services.touch();
                    }
                }
            }
            Event::Synced => self.mark_synced(source, StoreKind::Identities),
        }
    }

    fn on_ip(&mut self, source: SourceId, event: IpEvent) {
        let remote = !source.is_local();
        let (prefix, (before, after)) = match event {
            IpEvent::Upsert(prefix, entry, pod, ports) => {
                if remote && self.in_local_pod_space(&prefix) {
                    // A remote address inside the local pods' space would
                    // give a local address the remote's identity: refused,
                    // counted, and any earlier claim of it withdrawn.
                    if self.refused_ips.entry(source).or_default().insert(prefix) {
                        warn!(
                            source = self.sources.name(source),
                            %prefix,
                            "a remote ipcache entry lies in the local pods' address space; ignored"
                        );
                    }
                    (prefix, self.tables.delete_ip(source, prefix))
                } else {
                    if let (Some(dir), Some(pod)) = (self.tables.flow_directory(), pod)
                        && is_host(&prefix)
                    {
                        dir.set_pod(prefix.addr(), &pod.namespace, &pod.name);
                    }
                    self.tables.set_named_ports(source, prefix, ports);
                    (prefix, self.tables.upsert_ip(source, prefix, entry))
                }
            }
            IpEvent::Delete(prefix) => {
                if let Some(refused) = self.refused_ips.get_mut(&source) {
                    refused.remove(&prefix);
                }
                let result = self.tables.delete_ip(source, prefix);
                if let Some(dir) = self.tables.flow_directory()
                    && result.1.is_none()
                {
                    dir.remove_pod(&prefix.addr());
                }
                (prefix, result)
            }
            IpEvent::Ignore => return,
            IpEvent::Synced => return self.mark_synced(source, StoreKind::IpCache),
        };
        if before != after {
            self.dp.set_ip(prefix, after);
            if !remote {
                self.services.touch();
            }
        }
    }

    /// Whether `prefix` overlaps the local cluster's pods: its configured
    /// pools, this node's CIDR, and the CIDRs of the local nodes known.
    fn in_local_pod_space(&self, prefix: &IpNet) -> bool {
        let local_nodes = self
            .tables
            .nodes
            .get(self.config.cluster.as_str())
            .into_iter()
            .flat_map(|nodes| nodes.values())
            .flat_map(Node::pod_cidrs);
        self.config
            .pod_cidr_pools
            .iter()
            .copied()
            .chain(self.pod_cidrs.iter().copied())
            .chain(local_nodes)
            .any(|local| route_plan::overlaps(&local, prefix))
    }

    fn on_node(&mut self, source: SourceId, event: Event<Node>) {
        let Some(cluster) = self.sources.name(source).map(str::to_string) else {
            return;
        };
        match event {
            Event::Upsert { value, .. } => {
                self.tables
                    .nodes
                    .entry(cluster)
                    .or_default()
                    .insert(value.name.clone(), value);
            }
            Event::Delete { key } => {
                let name = keys::parse_node_name(&key);
                if let Some(nodes) = self.tables.nodes.get_mut(&cluster) {
                    nodes.remove(name);
                }
            }
            Event::Synced => self.mark_synced(source, StoreKind::Nodes),
        }
        self.nodes_changed();
    }

    fn on_service(&mut self, source: SourceId, event: Event<ClusterService>) {
        let Some(cluster) = self.sources.name(source).map(str::to_string) else {
            return;
        };
        match event {
            Event::Upsert { value, .. } => {
                self.tables
                    .services
                    .entry(value.namespaced_name())
                    .or_default()
                    .insert(cluster, value);
            }
            Event::Delete { key } => {
                // `<cluster>/<ns>/<name>`
                let name = keys::split_cluster(&key).map_or(key.as_str(), |(_, name)| name);
                if let Some(by_cluster) = self.tables.services.get_mut(name) {
                    by_cluster.remove(&cluster);
                    if by_cluster.is_empty() {
                        self.tables.services.remove(name);
                    }
                }
            }
            Event::Synced => self.mark_synced(source, StoreKind::Services),
        }
        self.services.touch();
    }

    /// A source is gone: everything it delivered goes with it.
    fn remove_source(&mut self, source: SourceId) {
        let (removed, complete) = self.sources.remove(source);
        let Some(removed) = removed else {
            return;
        };
        info!(
            source = removed.name,
            "removing a source and what it delivered"
        );
        self.refused_ips.remove(&source);
        for prefix in self.tables.ips_of(source) {
            let (before, after) = self.tables.delete_ip(source, prefix);
            if before != after {
                self.dp.set_ip(prefix, after);
            }
        }
        for id in self.tables.identities_of(source) {
            if self.tables.delete_identity(source, id) {
                self.identity_changed(id, None);
            }
        }
        self.tables.nodes.remove(&removed.name);
        for by_cluster in self.tables.services.values_mut() {
            by_cluster.remove(&removed.name);
        }
        self.tables.services.retain(|_, m| !m.is_empty());
        self.services.touch();
        self.routes_dirty = true;
        if complete {
            self.complete_sync();
        }
    }
}

/// A single address (a pod's), not a wider prefix.
fn is_host(prefix: &IpNet) -> bool {
    prefix.prefix_len() == prefix.max_prefix_len()
}
