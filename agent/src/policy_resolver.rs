//! Pure policy resolution: which rules select an endpoint, and which policy
//! map entries follow from them for the identities of the mesh.
//!
//! Semantics (DESIGN §8):
//! - An endpoint selected by no rule allows everything; once selected, its
//!   ingress is default-deny and only what some rule allows passes.
//! - A `CiliumNetworkPolicy` applies to endpoints of its namespace; its
//!   `fromEndpoints` selectors are confined to its namespace unless they name
//!   `io.kubernetes.pod.namespace` themselves.
//! - Selectors that do not name `io.cilium.k8s.policy.cluster` select the
//!   LOCAL cluster only (the safe default); a rule names the cluster label
//!   to admit remote clusters.
//! - No `fromEndpoints`/`fromEntities` admits every peer (on the listed
//!   ports); no `toPorts` admits every port.

use std::collections::BTreeSet;

use bpf::{IDENTITY_ANY, L4Match, PolicyKey, Protocol};
use kvstore::{
    CLUSTER_LABEL, Labels, NAMESPACE_LABEL, NumericIdentity,
    values::{Entity, L4Protocol, LabelSelector, PolicyDocument, Port, PortProtocol},
};

use crate::endpoint::EndpointId;

/// Who a compiled ingress rule admits.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Peers {
    /// Every identity (a wildcard entry).
    Any,
    /// Identities matching any of these (already confined) selectors, plus
    /// these fixed identities.
    Some {
        selectors: Vec<LabelSelector>,
        identities: BTreeSet<NumericIdentity>,
    },
}

/// One ingress rule, compiled for the endpoints it selects.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CompiledIngress {
    peers: Peers,
    ports: Vec<L4Match>,
}

/// The rules that apply to one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointRules {
    /// Some rule selects the endpoint: ingress is default-deny.
    pub enforced: bool,
    /// Names of the policies that select it (for status output).
    pub policies: Vec<String>,
    ingress: Vec<CompiledIngress>,
}

/// Compiles the rules of `policies` that select an endpoint with `labels`
/// (which include its namespace and cluster labels) in `local_cluster`.
pub fn rules_for_endpoint<'a>(
    labels: &Labels,
    policies: impl IntoIterator<Item = &'a PolicyDocument>,
    local_cluster: &str,
) -> EndpointRules {
    let mut out = EndpointRules::default();
    let namespace = labels.value(NAMESPACE_LABEL);
    for doc in policies {
        let doc_ns = doc.namespace();
        if doc_ns.is_some() && doc_ns != namespace {
            continue;
        }
        let mut selected = false;
        for rule in doc.rules() {
            if !rule.endpoint_selector.matches(labels) {
                continue;
            }
            selected = true;
            for ingress in &rule.ingress {
                out.ingress.push(CompiledIngress {
                    peers: compile_peers(
                        ingress.from_endpoints.as_deref(),
                        ingress.from_entities.as_deref(),
                        doc_ns,
                        local_cluster,
                    ),
                    ports: compile_ports(
                        &ingress
                            .to_ports
                            .iter()
                            .flat_map(|p| p.ports.iter())
                            .collect::<Vec<_>>(),
                    ),
                });
            }
        }
        if selected {
            out.enforced = true;
            out.policies.push(doc.key_name());
        }
    }
    out
}

/// The policy entries that admitting identity `id` (with `labels`) adds for
/// endpoint `endpoint_id`. Wildcard entries are not included (see
/// [`wildcard_entries`]).
pub fn entries_for_identity(
    endpoint_id: EndpointId,
    rules: &EndpointRules,
    id: NumericIdentity,
    labels: &Labels,
) -> Vec<PolicyKey> {
    let mut out = Vec::new();
    for rule in &rules.ingress {
        if let Peers::Some {
            selectors,
            identities,
        } = &rule.peers
            && (identities.contains(&id) || selectors.iter().any(|s| s.matches(labels)))
        {
            out.extend(
                rule.ports
                    .iter()
                    .map(|l4| PolicyKey::ingress(endpoint_id.get(), id.get(), *l4)),
            );
        }
    }
    out
}

/// The identity-independent entries (rules that admit every peer).
pub fn wildcard_entries(endpoint_id: EndpointId, rules: &EndpointRules) -> Vec<PolicyKey> {
    rules
        .ingress
        .iter()
        .filter(|r| r.peers == Peers::Any)
        .flat_map(|r| {
            r.ports
                .iter()
                .map(|l4| PolicyKey::ingress(endpoint_id.get(), IDENTITY_ANY, *l4))
        })
        .collect()
}

/// Every entry of an endpoint for the identities of the mesh.
pub fn resolve<'a>(
    endpoint_id: EndpointId,
    rules: &EndpointRules,
    identities: impl IntoIterator<Item = (NumericIdentity, &'a Labels)>,
) -> BTreeSet<PolicyKey> {
    let mut out: BTreeSet<PolicyKey> = wildcard_entries(endpoint_id, rules).into_iter().collect();
    for (id, labels) in identities {
        out.extend(entries_for_identity(endpoint_id, rules, id, labels));
    }
    // Fixed identities (entities) need no labels.
    for rule in &rules.ingress {
        if let Peers::Some { identities, .. } = &rule.peers {
            for id in identities {
                out.extend(
                    rule.ports
                        .iter()
                        .map(|l4| PolicyKey::ingress(endpoint_id.get(), id.get(), *l4)),
                );
            }
        }
    }
    out
}

fn compile_peers(
    from_endpoints: Option<&[LabelSelector]>,
    from_entities: Option<&[Entity]>,
    doc_ns: Option<&str>,
    local_cluster: &str,
) -> Peers {
    if from_endpoints.is_none() && from_entities.is_none() {
        return Peers::Any;
    }
    let mut selectors = Vec::new();
    let mut identities = BTreeSet::new();
    let mut any = false;
    for sel in from_endpoints.into_iter().flatten() {
        let mut sel = sel.clone();
        if let Some(ns) = doc_ns
            && !sel.mentions(NAMESPACE_LABEL)
        {
            sel.match_labels
                .insert(NAMESPACE_LABEL.to_string(), ns.to_string());
        }
        if !sel.mentions(CLUSTER_LABEL) {
            sel.match_labels
                .insert(CLUSTER_LABEL.to_string(), local_cluster.to_string());
        }
        selectors.push(sel);
    }
    for entity in from_entities.into_iter().flatten() {
        match entity {
            Entity::All => any = true,
            Entity::World => {
                identities.extend([
                    NumericIdentity::WORLD,
                    NumericIdentity::WORLD_IPV4,
                    NumericIdentity::WORLD_IPV6,
                ]);
            }
            Entity::Host => {
                identities.insert(NumericIdentity::HOST);
            }
            Entity::RemoteNode => {
                identities.insert(NumericIdentity::REMOTE_NODE);
            }
            Entity::Cluster => {
                identities.extend([NumericIdentity::HOST, NumericIdentity::REMOTE_NODE]);
                selectors.push(LabelSelector::labels([(CLUSTER_LABEL, local_cluster)]));
            }
            // Not resolved yet: admit nothing.
            Entity::WorldIpv4
            | Entity::WorldIpv6
            | Entity::Init
            | Entity::Ingress
            | Entity::Unmanaged
            | Entity::Health
            | Entity::None
            | Entity::KubeApiserver => {}
        }
    }
    if any {
        return Peers::Any;
    }
    Peers::Some {
        selectors,
        identities,
    }
}

fn compile_ports(ports: &[&PortProtocol]) -> Vec<L4Match> {
    if ports.is_empty() {
        return vec![L4Match::Any];
    }
    let mut out: Vec<L4Match> = Vec::new();
    let mut push = |l4: L4Match| {
        if !out.contains(&l4) {
            out.push(l4);
        }
    };
    for p in ports {
        // Named ports are not resolved yet: they admit nothing.
        let Port::Number(port) = &p.port else {
            continue;
        };
        match (p.protocol, *port) {
            (L4Protocol::Any, 0) => push(L4Match::Any),
            (L4Protocol::Any, port) => {
                push(L4Match::Port(Protocol::Tcp, port));
                push(L4Match::Port(Protocol::Udp, port));
            }
            (L4Protocol::Icmp, _) => push(L4Match::Protocol(Protocol::Icmp)),
            (L4Protocol::Tcp, 0) => push(L4Match::Protocol(Protocol::Tcp)),
            (L4Protocol::Udp, 0) => push(L4Match::Protocol(Protocol::Udp)),
            (L4Protocol::Tcp, port) => push(L4Match::Port(Protocol::Tcp, port)),
            (L4Protocol::Udp, port) => push(L4Match::Port(Protocol::Udp, port)),
            // Not enforced yet: admit nothing.
            (L4Protocol::Sctp | L4Protocol::IcmpV6, _) => {}
        }
    }
    out
}

/// A policy's name for status output.
trait KeyName {
    fn key_name(&self) -> String;
}

impl KeyName for PolicyDocument {
    fn key_name(&self) -> String {
        kvstore::StoreValue::key(self)
    }
}
