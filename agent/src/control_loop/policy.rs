//! Local endpoints and their policy: attach and detach, a full recompute
//! when policies change or the view completes, and incremental updates when
//! one identity appears, changes or goes.

use std::{collections::BTreeMap, net::IpAddr};

use bpf::EndpointInfo;
use ipnet::IpNet;
use kvstore::{ClusterName, Labels, NumericIdentity};

use crate::{
    datapath_sync::DatapathSync,
    endpoint::{Endpoint, EndpointId},
    policy_resolver::{self, EndpointRules},
    tables::{IpEntry, SourceId, Tables},
};

pub(super) struct LocalEndpoint {
    pub endpoint: Endpoint,
    labels: Labels,
    pub rules: EndpointRules,
}

/// The endpoints of this node, by endpoint ID.
#[derive(Default)]
pub(super) struct Endpoints {
    by_id: BTreeMap<EndpointId, LocalEndpoint>,
}

impl Endpoints {
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(super) fn get(&self, id: EndpointId) -> Option<&LocalEndpoint> {
        self.by_id.get(&id)
    }

    /// Incremental policy: only entries naming `id` change. True if the
    /// change needs a full recompute (a reserved identity went: entities
    /// such as world or host are fixed entries that removal must not drop).
    #[must_use]
    pub(super) fn identity_changed(
        &self,
        dp: &mut DatapathSync,
        id: NumericIdentity,
        labels: Option<&Labels>,
    ) -> bool {
        for ep in self.by_id.values() {
            if !ep.rules.enforced {
                continue;
            }
            dp.remove_policy_identity(ep.endpoint.id, id.get());
            if let Some(labels) = labels {
                let keys =
                    policy_resolver::entries_for_identity(ep.endpoint.id, &ep.rules, id, labels);
                dp.add_policy_keys(keys);
            }
        }
        labels.is_none() && id.is_reserved()
    }

    /// Full recomputation of every endpoint's rules and entries (policies
    /// changed, or the view became complete).
    pub(super) fn recompute_all(
        &mut self,
        dp: &mut DatapathSync,
        tables: &Tables,
        cluster: &ClusterName,
    ) {
        for ep in self.by_id.values_mut() {
            let rules = policy_resolver::rules_for_endpoint(
                &ep.labels,
                tables.policies.values(),
                cluster.as_str(),
            );
            let keys = policy_resolver::resolve(
                ep.endpoint.id,
                &rules,
                tables.identities.iter().map(|(id, l)| (*id, l)),
            );
            dp.set_endpoint_policy(ep.endpoint.id, &keys);
            if rules.enforced != ep.rules.enforced
                && let Some(ifindex) = ep.endpoint.ifindex
            {
                dp.set_endpoint_info(
                    ifindex,
                    Some(EndpointInfo::new(
                        ep.endpoint.id.get(),
                        ep.endpoint.identity,
                        rules.enforced,
                    )),
                );
            }
            ep.rules = rules;
        }
    }

    /// Writes an endpoint's policy, identity and address, then attaches
    /// the datapath to it; returns its interface index.
    pub(super) fn attach(
        &mut self,
        dp: &mut DatapathSync,
        tables: &mut Tables,
        cluster: &ClusterName,
        node_ip: IpAddr,
        endpoint: Endpoint,
    ) -> Result<u32, String> {
        let labels = endpoint.security_labels(cluster);
        let rules = policy_resolver::rules_for_endpoint(
            &labels,
            tables.policies.values(),
            cluster.as_str(),
        );
        let keys = policy_resolver::resolve(
            endpoint.id,
            &rules,
            tables.identities.iter().map(|(id, l)| (*id, l)),
        );
        dp.set_endpoint_policy(endpoint.id, &keys);
        // The endpoint's own address and identity, known before etcd echoes them.
        let identity = NumericIdentity::new(endpoint.identity);
        tables.upsert_identity(SourceId::LOCAL_ENDPOINTS, identity, labels.clone());
        let full = self.identity_changed(dp, identity, Some(&labels));
        debug_assert!(!full, "an identity that appears needs no full recompute");
        // One ipcache entry per address (IPv4, and IPv6 when dual-stack).
        for addr in endpoint.addresses() {
            let prefix = IpNet::from(addr);
            if let Some(dir) = tables.flow_directory() {
                dir.set_local_endpoint(
                    addr,
                    endpoint.id.get(),
                    &endpoint.namespace,
                    &endpoint.name,
                );
            }
            let (before, after) = tables.upsert_ip(
                SourceId::LOCAL_ENDPOINTS,
                prefix,
                IpEntry {
                    identity,
                    host_ip: Some(node_ip),
                },
            );
            if before != after {
                dp.set_ip(prefix, after);
            }
        }
        dp.flush()
            .map_err(|e| format!("writing the endpoint's policy: {e}"))?;
        let ifindex = dp
            .attach(
                &endpoint.host_ifname,
                endpoint.id,
                endpoint.identity,
                rules.enforced,
            )
            .map_err(|e| {
                format!(
                    "attaching the datapath to {}: {:#}",
                    endpoint.host_ifname,
                    anyhow::Error::new(e)
                )
            })?;
        let mut endpoint = endpoint;
        endpoint.ifindex = Some(ifindex);
        let id = endpoint.id;
        let previous = self.by_id.insert(
            id,
            LocalEndpoint {
                endpoint,
                labels,
                rules,
            },
        );
        // Attached again with new labels: the old identity goes unless
        // another endpoint has it.
        if let Some(old) = previous.map(|p| p.endpoint.identity)
            && old != identity.get()
            && !self.by_id.values().any(|e| e.endpoint.identity == old)
        {
            let old = NumericIdentity::new(old);
            if tables.delete_identity(SourceId::LOCAL_ENDPOINTS, old) {
                let full = self.identity_changed(dp, old, None);
                debug_assert!(!full, "an endpoint's identity is never reserved");
            }
        }
        Ok(ifindex)
    }

    /// Detaches the datapath and withdraws the endpoint's address (and its
    /// identity, unless another endpoint has it). True in the second field
    /// when the identity went and a full recompute is due.
    pub(super) fn detach(
        &mut self,
        dp: &mut DatapathSync,
        tables: &mut Tables,
        endpoint: &Endpoint,
    ) -> (Result<(), String>, bool) {
        let ifindex = self
            .by_id
            .remove(&endpoint.id)
            .and_then(|e| e.endpoint.ifindex)
            .or(endpoint.ifindex);
        let result = dp.detach(&endpoint.host_ifname, ifindex, endpoint.id);
        for addr in endpoint.addresses() {
            let prefix = IpNet::from(addr);
            if let Some(dir) = tables.flow_directory() {
                dir.remove_local_endpoint(&addr);
            }
            let (before, after) = tables.delete_ip(SourceId::LOCAL_ENDPOINTS, prefix);
            if before != after {
                dp.set_ip(prefix, after);
            }
        }
        let identity = NumericIdentity::new(endpoint.identity);
        let mut full = false;
        if !self
            .by_id
            .values()
            .any(|e| e.endpoint.identity == endpoint.identity)
            && tables.delete_identity(SourceId::LOCAL_ENDPOINTS, identity)
        {
            // The local cluster's etcd may still know it.
            full = self.identity_changed(dp, identity, None);
        }
        let result = result.map_err(|e| {
            format!(
                "detaching from {}: {:#}",
                endpoint.host_ifname,
                anyhow::Error::new(e)
            )
        });
        (result, full)
    }
}
