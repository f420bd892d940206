//! Local endpoints and their policy: attach and detach, a full recompute
//! when policies change or the view completes, and incremental updates when
//! one identity appears, changes or goes.
//!
//! Endpoints whose rules compile the same share one policy (one set of
//! entries in the policy map, under one policy id): a thousand replicas of
//! a workload cost the entries of one. A policy keeps its id while its
//! rules change (entries are rewritten in place, new ones first), so a
//! change never leaves an endpoint without entries.
//!
//! The CIDR prefixes that policies name get node-local identities (scope
//! bit 24, as in Cilium) with ipcache entries of their own, which every
//! other source's entry for the same prefix overrides.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
};

use bpf::{EndpointInfo, EndpointPolicy};
use ipnet::IpNet;
use kvstore::{ClusterName, Labels, NumericIdentity};

use crate::{
    datapath_sync::DatapathSync,
    dns_proxy::DnsEndpoint,
    endpoint::{Endpoint, EndpointId, NamedPort},
    policy_resolver::{
        self, EndpointRules, NamedPorts, RuleCookies, RuleRef, Selections, cidr_identity_labels,
    },
    tables::{IpEntry, PortNames, SourceId, Tables},
};

pub(super) struct LocalEndpoint {
    pub endpoint: Endpoint,
    labels: Labels,
    /// The policy it follows (0: none yet).
    pub policy_id: u32,
}

/// Endpoints with equal rules, and their policy.
struct PolicySet {
    rules: EndpointRules,
    endpoints: BTreeSet<EndpointId>,
}

/// The endpoints of this node, by endpoint ID, and their policies.
pub(super) struct Endpoints {
    by_id: BTreeMap<EndpointId, LocalEndpoint>,
    sets: BTreeMap<u32, PolicySet>,
    cookies: RuleCookies,
    /// The node-local identities of the CIDR prefixes policies name.
    cidrs: BTreeMap<IpNet, NumericIdentity>,
    /// Cookies already named to the flow directory.
    exported_cookies: u32,
    /// The DNS proxy's port (entries of DNS rules redirect there).
    dns_proxy_port: u16,
}

impl Default for Endpoints {
    fn default() -> Self {
        Self {
            by_id: BTreeMap::new(),
            sets: BTreeMap::new(),
            cookies: RuleCookies::default(),
            cidrs: BTreeMap::new(),
            exported_cookies: 0,
            dns_proxy_port: policy_resolver::DEFAULT_DNS_PROXY_PORT,
        }
    }
}

impl Endpoints {
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(super) fn set_dns_proxy_port(&mut self, port: u16) {
        self.dns_proxy_port = port;
    }

    /// The endpoints whose rules send DNS through the proxy, by address,
    /// with the lookups their rules allow.
    pub(super) fn dns_endpoints(&self) -> HashMap<IpAddr, Arc<DnsEndpoint>> {
        let mut out = HashMap::new();
        for ep in self.by_id.values() {
            let Some(rules) = self.sets.get(&ep.policy_id).map(|s| &s.rules) else {
                continue;
            };
            if !rules.redirects() {
                continue;
            }
            let mut patterns = fqdn::SelectorSet::new();
            for text in &rules.dns_patterns {
                if let Ok(p) = fqdn::FqdnSelector::match_pattern(text) {
                    patterns.insert(p);
                }
            }
            let entry = Arc::new(DnsEndpoint {
                id: ep.endpoint.id,
                identity: ep.endpoint.identity,
                namespace: ep.endpoint.namespace.clone(),
                name: ep.endpoint.name.clone(),
                patterns,
            });
            for addr in ep.endpoint.addresses() {
                out.insert(addr, entry.clone());
            }
        }
        out
    }

    pub(super) fn get(&self, id: EndpointId) -> Option<&LocalEndpoint> {
        self.by_id.get(&id)
    }

    /// The rules an endpoint follows.
    pub(super) fn rules(&self, id: EndpointId) -> Option<&EndpointRules> {
        let policy_id = self.by_id.get(&id)?.policy_id;
        self.sets.get(&policy_id).map(|s| &s.rules)
    }

    /// Distinct policies (endpoints with equal rules share one).
    pub(super) fn policy_count(&self) -> usize {
        self.sets.len()
    }

    /// The rule a policy entry's cookie stands for.
    pub(super) fn rule(&self, cookie: u32) -> Option<&RuleRef> {
        self.cookies.rule(cookie)
    }

    /// Incremental policy: only entries naming `id` change (`labels`
    /// `None`: it went; fixed identities such as `host` keep their entries).
    pub(super) fn identity_changed(
        &self,
        dp: &mut DatapathSync,
        id: NumericIdentity,
        labels: Option<&Labels>,
    ) {
        for (policy_id, set) in &self.sets {
            if !set.rules.enforced() {
                continue;
            }
            let entries = policy_resolver::entries_for_identity(*policy_id, &set.rules, id, labels);
            dp.set_policy_identity(*policy_id, id.get(), entries);
        }
    }

    /// Full recomputation of every endpoint's rules and entries (policies
    /// changed, or the view became complete).
    pub(super) fn recompute_all(
        &mut self,
        dp: &mut DatapathSync,
        tables: &mut Tables,
        cluster: &ClusterName,
    ) {
        self.sync_cidr_identities(dp, tables);
        // Endpoints with the same labels and named ports (replicas)
        // compile the same: once each.
        let mesh_ports = tables.named_ports();
        let mut compiled: HashMap<&Labels, Vec<(&[NamedPort], EndpointRules)>> = HashMap::new();
        let mut wanted: Vec<(EndpointId, EndpointRules)> = Vec::with_capacity(self.by_id.len());
        for ep in self.by_id.values() {
            let same = compiled.entry(&ep.labels).or_default();
            let rules = match same.iter().find(|(ports, _)| *ports == ep.endpoint.ports) {
                Some((_, rules)) => rules.clone(),
                None => {
                    let rules = compile(
                        &mut self.cookies,
                        ep,
                        tables,
                        cluster,
                        &mesh_ports,
                        self.dns_proxy_port,
                    );
                    same.push((&ep.endpoint.ports, rules.clone()));
                    rules
                }
            };
            wanted.push((ep.endpoint.id, rules));
        }
        drop(compiled);
        // Keep each policy id where its rules still exist; then let rules
        // that changed take over the id their endpoints had (entries are
        // rewritten in place); only then allocate.
        let old = std::mem::take(&mut self.sets);
        let mut unused: BTreeSet<u32> = old.keys().copied().collect();
        let mut new: BTreeMap<u32, PolicySet> = BTreeMap::new();
        let mut pending: Vec<(EndpointId, EndpointRules)> = Vec::new();
        // Before the sync every endpoint keeps its own policy id: the
        // entries written before a restart stay under it until the view is
        // complete, and another endpoint's would not be the same.
        let holding = dp.holding();
        for (ep, rules) in wanted {
            let current = self.by_id[&ep].policy_id;
            if holding && current != 0 {
                match new.get_mut(&current) {
                    Some(set) if set.rules == rules => {
                        set.endpoints.insert(ep);
                        continue;
                    }
                    Some(_) => {}
                    None => {
                        unused.remove(&current);
                        new.insert(
                            current,
                            PolicySet {
                                rules,
                                endpoints: [ep].into(),
                            },
                        );
                        continue;
                    }
                }
            }
            if let Some((id, set)) = new.iter_mut().find(|(_, s)| s.rules == rules && !holding) {
                set.endpoints.insert(ep);
                self.by_id.get_mut(&ep).expect("listed").policy_id = *id;
                continue;
            }
            match old.iter().find(|(_, s)| s.rules == rules) {
                Some((id, _)) => {
                    unused.remove(id);
                    new.insert(
                        *id,
                        PolicySet {
                            rules,
                            endpoints: [ep].into(),
                        },
                    );
                    self.by_id.get_mut(&ep).expect("listed").policy_id = *id;
                }
                None => pending.push((ep, rules)),
            }
        }
        for (ep, rules) in pending {
            if let Some((id, set)) = new.iter_mut().find(|(_, s)| s.rules == rules && !holding) {
                set.endpoints.insert(ep);
                self.by_id.get_mut(&ep).expect("listed").policy_id = *id;
                continue;
            }
            let previous = self.by_id[&ep].policy_id;
            let id = if unused.remove(&previous) {
                previous
            } else {
                next_policy_id(dp, &new, &unused)
            };
            new.insert(
                id,
                PolicySet {
                    rules,
                    endpoints: [ep].into(),
                },
            );
            self.by_id.get_mut(&ep).expect("listed").policy_id = id;
        }
        let mut selections = selections(tables);
        for (id, set) in &new {
            write_policy(dp, *id, &set.rules, &mut selections);
        }
        for ep in self.by_id.values() {
            if let Some(ifindex) = ep.endpoint.ifindex {
                let policy = endpoint_policy(ep.policy_id, &new[&ep.policy_id].rules);
                dp.set_endpoint_info(
                    ifindex,
                    Some(EndpointInfo::new(
                        ep.endpoint.id.get(),
                        ep.endpoint.identity,
                        policy,
                    )),
                );
            }
        }
        for id in unused {
            dp.set_policy(id, &[]);
        }
        self.sets = new;
        self.export_rules(tables);
    }

    /// Names new rule cookies to the flow directory (flows show the rule).
    fn export_rules(&mut self, tables: &Tables) {
        let Some(dir) = tables.flow_directory() else {
            return;
        };
        while let Some(rule) = self.cookies.rule(self.exported_cookies + 1) {
            self.exported_cookies += 1;
            dir.set_rule(self.exported_cookies, rule);
        }
    }

    /// Gives every CIDR prefix the policies name a node-local identity
    /// with its ipcache entry, and withdraws those no policy names.
    fn sync_cidr_identities(&mut self, dp: &mut DatapathSync, tables: &mut Tables) {
        let wanted = policy_resolver::cidr_prefixes(tables.policies.values());
        let gone: Vec<IpNet> = self
            .cidrs
            .keys()
            .filter(|p| !wanted.contains(p))
            .copied()
            .collect();
        for prefix in gone {
            let id = self.cidrs.remove(&prefix).expect("listed");
            let (before, after) = tables.delete_ip(SourceId::POLICY_CIDRS, prefix);
            if before != after {
                dp.set_ip(prefix, after);
            }
            tables.delete_identity(SourceId::POLICY_CIDRS, id);
        }
        let mut used: BTreeSet<u32> = self.cidrs.values().map(|i| i.get()).collect();
        let mut next = NumericIdentity::LOCAL_SCOPE + 1;
        for prefix in wanted {
            if self.cidrs.contains_key(&prefix) {
                continue;
            }
            while used.contains(&next) {
                next += 1;
            }
            used.insert(next);
            let id = NumericIdentity::new(next);
            self.cidrs.insert(prefix, id);
            tables.upsert_identity(SourceId::POLICY_CIDRS, id, cidr_identity_labels(prefix));
            let (before, after) = tables.upsert_ip(
                SourceId::POLICY_CIDRS,
                prefix,
                IpEntry {
                    identity: id,
                    host_ip: None,
                },
            );
            if before != after {
                dp.set_ip(prefix, after);
            }
        }
    }

    /// Puts `ep` into the policy of its rules (an existing one with equal
    /// rules, or a new one whose entries are written first).
    fn join(
        &mut self,
        dp: &mut DatapathSync,
        tables: &Tables,
        ep: EndpointId,
        rules: EndpointRules,
    ) -> u32 {
        // Before the sync, the policy the endpoint had before a restart
        // keeps its id and is not shared (its old entries stay until the
        // view is complete).
        let written = dp
            .written_policy(ep)
            .map(|p| p.policy_id)
            .filter(|id| *id != 0);
        if dp.holding()
            && let Some(id) = written
        {
            match self.sets.get_mut(&id) {
                Some(set) if set.rules == rules => {
                    set.endpoints.insert(ep);
                    return id;
                }
                Some(_) => {}
                None => {
                    write_policy(dp, id, &rules, &mut selections(tables));
                    self.sets.insert(
                        id,
                        PolicySet {
                            rules,
                            endpoints: [ep].into(),
                        },
                    );
                    return id;
                }
            }
        }
        if let Some((id, set)) = self
            .sets
            .iter_mut()
            .find(|(_, s)| s.rules == rules && !dp.holding())
        {
            set.endpoints.insert(ep);
            return *id;
        }
        let id = match written {
            Some(id) if !self.sets.contains_key(&id) => id,
            _ => next_policy_id(dp, &self.sets, &BTreeSet::new()),
        };
        write_policy(dp, id, &rules, &mut selections(tables));
        self.sets.insert(
            id,
            PolicySet {
                rules,
                endpoints: [ep].into(),
            },
        );
        id
    }

    /// Takes `ep` out of policy `id`; the last endpoint out removes it.
    fn leave(&mut self, dp: &mut DatapathSync, ep: EndpointId, id: u32) {
        if let Some(set) = self.sets.get_mut(&id) {
            set.endpoints.remove(&ep);
            if set.endpoints.is_empty() {
                self.sets.remove(&id);
                dp.set_policy(id, &[]);
            }
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
        // The endpoint's own address and identity, known before etcd echoes them.
        let identity = NumericIdentity::new(endpoint.identity);
        tables.upsert_identity(SourceId::LOCAL_ENDPOINTS, identity, labels.clone());
        self.identity_changed(dp, identity, Some(&labels));
        let local = LocalEndpoint {
            endpoint,
            labels,
            policy_id: 0,
        };
        let rules = compile(
            &mut self.cookies,
            &local,
            tables,
            cluster,
            &tables.named_ports(),
            self.dns_proxy_port,
        );
        self.export_rules(tables);
        let mut local = local;
        let previous = self.by_id.remove(&local.endpoint.id);
        let policy_id = self.join(dp, tables, local.endpoint.id, rules);
        if let Some(prev) = &previous
            && prev.policy_id != policy_id
        {
            self.leave(dp, prev.endpoint.id, prev.policy_id);
        }
        local.policy_id = policy_id;
        let endpoint = &local.endpoint;
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
            tables.set_named_ports(SourceId::LOCAL_ENDPOINTS, prefix, port_names(endpoint));
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
        let policy = endpoint_policy(policy_id, &self.sets[&policy_id].rules);
        let ifindex = dp
            .attach(
                &endpoint.host_ifname,
                endpoint.id,
                endpoint.identity,
                policy,
            )
            .map_err(|e| {
                format!(
                    "attaching the datapath to {}: {:#}",
                    endpoint.host_ifname,
                    anyhow::Error::new(e)
                )
            })?;
        local.endpoint.ifindex = Some(ifindex);
        let id = local.endpoint.id;
        self.by_id.insert(id, local);
        // Attached again with new labels: the old identity goes unless
        // another endpoint has it.
        if let Some(old) = previous.map(|p| p.endpoint.identity)
            && old != identity.get()
            && !self.by_id.values().any(|e| e.endpoint.identity == old)
        {
            let old = NumericIdentity::new(old);
            if tables.delete_identity(SourceId::LOCAL_ENDPOINTS, old) {
                self.identity_changed(dp, old, tables.identities.get(&old));
            }
        }
        Ok(ifindex)
    }

    /// Detaches the datapath and withdraws the endpoint's address (and its
    /// identity, unless another endpoint has it).
    pub(super) fn detach(
        &mut self,
        dp: &mut DatapathSync,
        tables: &mut Tables,
        endpoint: &Endpoint,
    ) -> Result<(), String> {
        let removed = self.by_id.remove(&endpoint.id);
        let ifindex = removed
            .as_ref()
            .and_then(|e| e.endpoint.ifindex)
            .or(endpoint.ifindex);
        let result = dp.detach(&endpoint.host_ifname, ifindex);
        if let Some(removed) = removed {
            self.leave(dp, endpoint.id, removed.policy_id);
        }
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
        if !self
            .by_id
            .values()
            .any(|e| e.endpoint.identity == endpoint.identity)
            && tables.delete_identity(SourceId::LOCAL_ENDPOINTS, identity)
        {
            // The local cluster's etcd may still know it.
            self.identity_changed(dp, identity, tables.identities.get(&identity));
        }
        result.map_err(|e| {
            format!(
                "detaching from {}: {:#}",
                endpoint.host_ifname,
                anyhow::Error::new(e)
            )
        })
    }
}

/// The rules of `ep` under the current policies, with `mesh_ports` the
/// ports the mesh's endpoints declare by name; DNS rules redirect to the
/// proxy on `dns_proxy_port`.
fn compile(
    cookies: &mut RuleCookies,
    ep: &LocalEndpoint,
    tables: &Tables,
    cluster: &ClusterName,
    mesh_ports: &NamedPorts,
    dns_proxy_port: u16,
) -> EndpointRules {
    let mut rules = policy_resolver::rules_for_endpoint(
        &ep.labels,
        tables.policies.values(),
        cluster.as_str(),
        policy_resolver::PortNames {
            own: &named_ports(&ep.endpoint),
            mesh: mesh_ports,
        },
        cookies,
    );
    if rules.dns_proxy_port != 0 {
        rules.dns_proxy_port = dns_proxy_port;
    }
    rules
}

/// The entries of policy `id` for every identity the tables know.
fn write_policy(
    dp: &mut DatapathSync,
    id: u32,
    rules: &EndpointRules,
    selections: &mut Selections<'_>,
) {
    let entries = if rules.enforced() {
        policy_resolver::resolve_with(id, rules, selections)
    } else {
        Vec::new()
    };
    dp.set_policy(id, &entries);
}

/// The identities the tables know, for resolving policies.
fn selections(tables: &Tables) -> Selections<'_> {
    Selections::new(tables.identities.iter().map(|(i, l)| (*i, l)))
}

/// A policy id neither `sets`, `reserved` nor the datapath (entries left
/// from before a restart) uses.
fn next_policy_id(
    dp: &DatapathSync,
    sets: &BTreeMap<u32, PolicySet>,
    reserved: &BTreeSet<u32>,
) -> u32 {
    let in_use = dp.policy_ids_in_use();
    (1..)
        .find(|id| !sets.contains_key(id) && !reserved.contains(id) && !in_use.contains(id))
        .expect("fewer than 2^32 policies")
}

fn endpoint_policy(policy_id: u32, rules: &EndpointRules) -> EndpointPolicy {
    EndpointPolicy {
        policy_id,
        ingress: rules.ingress.enforced,
        egress: rules.egress.enforced,
    }
}

/// The ports an endpoint declares by name, as its ipcache entry lists them.
fn port_names(endpoint: &Endpoint) -> PortNames {
    endpoint
        .ports
        .iter()
        .filter_map(|p| Some((p.name.as_str().into(), p.protocol()?, p.port)))
        .collect()
}

/// The ports an endpoint declares by name.
fn named_ports(endpoint: &Endpoint) -> NamedPorts {
    let mut out = NamedPorts::new();
    for p in &endpoint.ports {
        if let Some(protocol) = p.protocol() {
            out.entry(p.name.clone())
                .or_default()
                .push((protocol, p.port));
        }
    }
    out
}
