//! Answers to `debug` queries and `status`: views of the loop's state and
//! of the maps as the kernel holds them. Read-only.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bpf::protocol_name;
use kvstore::{
    Labels, NumericIdentity,
    values::{AgentRemoteReport, AgentReport},
};

use super::{Answer, ControlLoop, Query};
use crate::{
    endpoint::EndpointId,
    tables::SourceId,
    views::{
        BackendView, CandidateView, IdentityView, IpCacheView, MapEntryView, PolicyEntryView,
        PolicyView, RefusedRouteView, ServiceView, SkippedBackendView, StatusView,
    },
};

/// Status reason of remote ipcache entries inside the local pods' space.
pub(super) const IPCACHE_IN_LOCAL_SPACE: &str = "ipcache-in-local-pod-space";

impl ControlLoop {
    pub(super) fn answer(&self, query: Query) -> Answer {
        match query {
            Query::Status => Answer::Status(Box::new(self.status())),
            Query::Report => Answer::Report(self.report()),
            Query::Fqdn => Answer::Fqdn(self.fqdn_view()),
            Query::Identities => {
                let mut all: Vec<IdentityView> = self
                    .tables
                    .identities
                    .iter()
                    .map(|(id, l)| IdentityView {
                        id: id.get(),
                        labels: l.canonical(),
                    })
                    .collect();
                all.sort_by_key(|v| v.id);
                Answer::Identities(all)
            }
            Query::IpCache => Answer::IpCache(
                self.dp
                    .datapath()
                    .ipcache()
                    .dump()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| IpCacheView {
                        prefix: k.net().map(|n| n.to_string()).unwrap_or_default(),
                        identity: v.sec_identity,
                        host_ip: v.tunnel_endpoint().map(|ip| ip.to_string()),
                    })
                    .collect(),
            ),
            Query::Policy(id) => Answer::Policy(self.policy_view(id)),
            Query::Services => Answer::Services(
                self.services
                    .merged
                    .iter()
                    .map(|(name, fe)| ServiceView {
                        name: name.clone(),
                        frontend: fe.frontend.to_string(),
                        protocol: protocol_name(fe.protocol),
                        backends: fe
                            .slots
                            .iter()
                            .map(|s| BackendView {
                                address: s.backend.to_string(),
                                cluster_id: s.cluster_id as u16,
                            })
                            .collect(),
                        active_clusters: fe.active_clusters.clone(),
                        reason: fe.reason.clone(),
                        mode: fe.mode.as_str().to_owned(),
                        candidates: fe
                            .candidates
                            .iter()
                            .map(|c| CandidateView {
                                cluster: c.cluster.clone(),
                                address: c.backend.to_string(),
                                weight: c.weight,
                                active: c.active,
                            })
                            .collect(),
                        skipped: fe
                            .skipped
                            .iter()
                            .map(|s| SkippedBackendView {
                                cluster: s.cluster.clone(),
                                address: s.backend.to_string(),
                                reason: s.reason.as_str().to_owned(),
                                detail: s.describe(fe.frontend.ip()),
                            })
                            .collect(),
                    })
                    .collect(),
            ),
            Query::Map(name) => Answer::Map(self.dump_map(&name)),
        }
    }

    fn policy_view(&self, id: EndpointId) -> Option<PolicyView> {
        let ep = self.endpoints.get(id)?;
        let rules = self.endpoints.rules(id)?;
        Some(PolicyView {
            endpoint: id,
            enforced: rules.enforced(),
            ingress_enforced: rules.ingress.enforced,
            egress_enforced: rules.egress.enforced,
            policy_id: ep.policy_id,
            policies: rules.policies.clone(),
            unresolved_ports: rules.unresolved_ports.clone(),
            entries: self
                .dp
                .policy_entries(ep.policy_id)
                .into_iter()
                .map(|(k, v)| {
                    let l4 = k.l4();
                    let (port, port_end) = l4.port_bounds();
                    PolicyEntryView {
                        identity: k.sec_identity,
                        identity_labels: self
                            .tables
                            .identities
                            .get(&NumericIdentity::new(k.sec_identity))
                            .map(Labels::canonical),
                        protocol: l4
                            .protocol()
                            .map_or_else(|| "any".to_string(), protocol_name),
                        port,
                        port_end,
                        direction: k.direction().as_str().to_string(),
                        action: v.action().map_or("unknown", |a| a.as_str()).to_string(),
                        rule: self
                            .endpoints
                            .rule(v.cookie)
                            .map(|r| format!("{} {}", r.policy, r.path))
                            .unwrap_or_default(),
                    }
                })
                .collect(),
        })
    }

    /// The content of a pinned map as the kernel has it (not the agent's
    /// view), decoded: addresses, host-order ports, identities with labels.
    fn dump_map(&self, name: &str) -> Result<Vec<MapEntryView>, String> {
        let dp = self.dp.datapath();
        let labels = |id: u64| {
            u32::try_from(id)
                .ok()
                .and_then(|id| self.tables.identities.get(&NumericIdentity::new(id)))
                .map(|l| l.to_string())
        };
        let view =
            |key: bpf::Fields, value: bpf::Fields| crate::views::map_entry(key, value, &labels);
        fn rows<K: bpf::Describe, V: bpf::DescribeValue<K>>(
            m: std::collections::BTreeMap<K, V>,
            view: impl Fn(bpf::Fields, bpf::Fields) -> MapEntryView,
        ) -> Vec<MapEntryView> {
            m.into_iter()
                .map(|(k, v)| view(k.describe(), v.describe(&k)))
                .collect()
        }
        let result = match name {
            "ipcache" => dp.ipcache().dump().map(|m| rows(m, view)),
            "policy" => dp.policy().dump().map(|m| rows(m, view)),
            "endpoints" => dp.endpoints().dump().map(|m| rows(m, view)),
            "services" => dp.services().dump().map(|m| rows(m, view)),
            "backends" => dp.backends().dump().map(|m| rows(m, view)),
            "conntrack" => dp.conntrack().dump().map(|m| rows(m, view)),
            other => {
                return Err(format!(
                    "unknown map {other:?}; one of ipcache, policy, endpoints, services, backends, conntrack"
                ));
            }
        };
        result.map_err(|e| e.to_string())
    }

    fn map_capacities(&self) -> BTreeMap<String, usize> {
        self.dp
            .datapath()
            .capacities()
            .into_iter()
            .map(|(n, c)| (n.to_string(), c as usize))
            .collect()
    }

    fn map_entries(&self) -> BTreeMap<String, usize> {
        self.map_sizes()
            .into_iter()
            .map(|(n, s)| (n.to_string(), s))
            .collect()
    }

    fn report(&self) -> AgentReport {
        AgentReport {
            node: self.config.node_name.to_string(),
            synced: self.sources.is_synced(),
            maps: self.map_entries(),
            map_capacity: self.map_capacities(),
            remotes: self
                .remotes
                .iter()
                .map(|r| AgentRemoteReport {
                    name: r.name.clone(),
                    connected: r.connected,
                    ready: r.ready,
                    error: (!r.ready)
                        .then(|| match (&r.last_error_kind, &r.last_error) {
                            (Some(k), Some(e)) => Some(format!("{k}: {e}")),
                            (None, Some(e)) => Some(e.clone()),
                            _ => None,
                        })
                        .flatten(),
                })
                .collect(),
        }
    }

    fn status(&self) -> StatusView {
        let identities_by_source: HashMap<SourceId, usize> = self
            .sources
            .iter()
            .map(|(s, _)| (s, self.tables.identity_count(s)))
            .collect();
        StatusView {
            cluster: self.config.cluster.to_string(),
            cluster_id: self.config.cluster_id,
            node: self.config.node_name.to_string(),
            node_ip: self.config.node_ip.to_string(),
            pod_cidr: self
                .pod_cidrs
                .iter()
                .find(|c| c.addr().is_ipv4())
                .map(|c| c.to_string()),
            pod_cidr_v6: self
                .pod_cidrs
                .iter()
                .find(|c| c.addr().is_ipv6())
                .map(|c| c.to_string()),
            synced: self.sources.is_synced(),
            sync_timed_out: self.sources.timed_out(),
            endpoints: self.endpoints.len(),
            maps: self.map_entries(),
            map_capacity: self.map_capacities(),
            sources: self.sources.views(|id| {
                (
                    self.tables.ip_count(id),
                    identities_by_source.get(&id).copied().unwrap_or(0),
                )
            }),
            kubernetes: self.kube.as_ref().map(crate::kubernetes::KubeState::view),
            conntrack: self.conntrack.as_ref().and_then(|rx| rx.borrow().clone()),
            remotes: self
                .remotes
                .iter()
                .cloned()
                .map(|mut r| {
                    let refused_ips = self
                        .sources
                        .id_of(&r.name)
                        .and_then(|id| self.refused_ips.get(&id))
                        .map_or(0, BTreeSet::len);
                    if refused_ips > 0 {
                        r.invalid
                            .insert(IPCACHE_IN_LOCAL_SPACE.to_string(), refused_ips as u64);
                    }
                    r.refused_routes = self
                        .refused_routes
                        .iter()
                        .filter(|x| x.cluster == r.name)
                        .map(|x| RefusedRouteView {
                            node: x.node.clone(),
                            cidr: x.cidr.to_string(),
                            reason: x.reason.as_str().to_string(),
                        })
                        .collect();
                    r
                })
                .collect(),
        }
    }
}
