use serde::{Deserialize, Serialize};

use super::{Cidr, CidrRule, FqdnSelector, IcmpRule, PolicyError, PortRule, fqdn::SelectorUse};
use crate::values::LabelSelector;

/// One ingress rule (of `ingress` or `ingressDeny`): which peers
/// (`fromEndpoints`, `fromCIDR`, `fromCIDRSet` or `fromEntities`, at most one
/// kind per rule) may reach the selected endpoints on which ports (`toPorts`)
/// or ICMP types (`icmps`).
///
/// Cilium's `fromRequires`, `fromGroups`, `fromNodes` and `authentication`
/// are read so that [`PolicyDocument::validate`](super::PolicyDocument::validate)
/// refuses them with a clear reason rather than as unknown fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressRule {
    /// Endpoints (of the mesh) by labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_endpoints: Option<Vec<LabelSelector>>,
    /// Peers outside the mesh by address.
    #[serde(rename = "fromCIDR", default, skip_serializing_if = "Option::is_none")]
    pub from_cidr: Option<Vec<Cidr>>,
    /// Peers outside the mesh by address, with exceptions.
    #[serde(
        rename = "fromCIDRSet",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub from_cidr_set: Option<Vec<CidrRule>>,
    /// Peers by what they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_entities: Option<Vec<Entity>>,
    /// Destination ports; none = every port (unless `icmps` is given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_ports: Vec<PortRule>,
    /// ICMP types; never together with `toPorts` in one rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub icmps: Vec<IcmpRule>,
    #[doc(hidden)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_requires: Option<serde_json::Value>,
    #[doc(hidden)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_groups: Option<serde_json::Value>,
    #[doc(hidden)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_nodes: Option<serde_json::Value>,
    #[doc(hidden)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<serde_json::Value>,
}

/// One egress rule (of `egress` or `egressDeny`): which peers (`toEndpoints`,
/// `toCIDR`, `toCIDRSet`, `toEntities` or, in `egress` only, `toFQDNs`; at
/// most one kind per rule) the selected endpoints may reach on which ports
/// (`toPorts`, with DNS rules in `egress`) or ICMP types (`icmps`).
///
/// Cilium's `toRequires`, `toGroups`, `toNodes`, `toServices` and
/// `authentication` are read so that
/// [`PolicyDocument::validate`](super::PolicyDocument::validate) refuses them
/// with a clear reason rather than as unknown fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRule {
    /// Endpoints (of the mesh) by labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_endpoints: Option<Vec<LabelSelector>>,
    /// Peers outside the mesh by address.
    #[serde(rename = "toCIDR", default, skip_serializing_if = "Option::is_none")]
    pub to_cidr: Option<Vec<Cidr>>,
    /// Peers outside the mesh by address, with exceptions.
    #[serde(rename = "toCIDRSet", default, skip_serializing_if = "Option::is_none")]
    pub to_cidr_set: Option<Vec<CidrRule>>,
    /// Peers by what they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_entities: Option<Vec<Entity>>,
    /// Destination ports; none = every port (unless `icmps` is given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_ports: Vec<PortRule>,
    /// ICMP types; never together with `toPorts` in one rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub icmps: Vec<IcmpRule>,
    #[doc(hidden)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_requires: Option<serde_json::Value>,
    #[doc(hidden)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_groups: Option<serde_json::Value>,
    #[doc(hidden)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_nodes: Option<serde_json::Value>,
    #[doc(hidden)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_services: Option<serde_json::Value>,
    /// Peers outside the mesh by DNS name: the addresses the endpoint
    /// learned by looking up a selected name through the DNS proxy (which a
    /// DNS rule in `toPorts[].rules.dns` of some rule must allow).
    #[serde(rename = "toFQDNs", default, skip_serializing_if = "Option::is_none")]
    pub to_fqdns: Option<Vec<FqdnSelector>>,
    #[doc(hidden)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<serde_json::Value>,
}

/// Peers named by what they are rather than by labels or addresses
/// (Cilium's entities, each a reserved identity or a set of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Entity {
    /// Everything, inside and outside the mesh.
    All,
    /// Anything outside the cluster (`reserved:world`, and unknown sources).
    World,
    /// IPv4 addresses outside the cluster (`reserved:world-ipv4`).
    WorldIpv4,
    /// IPv6 addresses outside the cluster (`reserved:world-ipv6`).
    WorldIpv6,
    /// Every endpoint and node of the local cluster.
    Cluster,
    /// The local node, and pods in its network namespace.
    Host,
    /// Endpoints whose identity is not known yet (`reserved:init`).
    Init,
    /// Cilium's ingress proxy (`reserved:ingress`).
    Ingress,
    /// Pods not managed by Cilium (`reserved:unmanaged`).
    Unmanaged,
    /// The other nodes of the cluster.
    RemoteNode,
    /// The health-check endpoints (`reserved:health`).
    Health,
    /// No peer at all.
    None,
    /// The Kubernetes API server (`reserved:kube-apiserver`).
    KubeApiserver,
}

/// A direction-independent view of an [`IngressRule`] or an [`EgressRule`],
/// so that resolution has one code path for both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRule<'a> {
    /// `fromEndpoints` / `toEndpoints`.
    pub endpoints: Option<&'a [LabelSelector]>,
    /// `fromCIDR` / `toCIDR` entries (as rules without exceptions), then
    /// `fromCIDRSet` / `toCIDRSet` entries.
    pub cidrs: Vec<CidrRule>,
    /// `fromEntities` / `toEntities`.
    pub entities: Option<&'a [Entity]>,
    /// `toFQDNs` (egress only): peers by DNS name, whose addresses the
    /// agent learns from the DNS answers its proxy reads. Until a name is
    /// learned, a rule of `toFQDNs` allows nothing.
    pub fqdns: Option<&'a [FqdnSelector]>,
    /// `toPorts`.
    pub to_ports: &'a [PortRule],
    /// `icmps`.
    pub icmps: &'a [IcmpRule],
}

impl<'a> PeerRule<'a> {
    /// Whether the rule names peers (a non-empty list of endpoints, CIDRs,
    /// entities or DNS names).
    ///
    /// A rule of `toFQDNs` names peers even before any name is learned: a
    /// resolver that does not know the names yet must select no peer for
    /// it, never every peer.
    pub fn has_l3(&self) -> bool {
        self.endpoints.is_some_and(|e| !e.is_empty())
            || !self.cidrs.is_empty()
            || self.entities.is_some_and(|e| !e.is_empty())
            || !self.fqdn_selectors().is_empty()
    }

    /// `toFQDNs`, empty when absent.
    pub fn fqdn_selectors(&self) -> &'a [FqdnSelector] {
        self.fqdns.unwrap_or_default()
    }

    /// Every DNS rule of the rule's ports (`toPorts[].rules.dns`): the
    /// lookups an endpoint selected by the rule may make through the proxy,
    /// to the rule's peers on those ports.
    pub fn dns_rules(&self) -> impl Iterator<Item = &'a FqdnSelector> + use<'a> {
        self.to_ports.iter().flat_map(PortRule::dns_rules)
    }

    /// Whether some port of the rule has DNS rules, so that the endpoints
    /// it selects have their DNS traffic on those ports redirected to the
    /// proxy.
    pub fn has_dns_rules(&self) -> bool {
        self.dns_rules().next().is_some()
    }

    /// Whether the rule names ports or ICMP types.
    pub fn has_l4(&self) -> bool {
        !self.to_ports.is_empty() || !self.icmps.is_empty()
    }
}

#[allow(clippy::too_many_arguments)]
fn peer_rule<'a>(
    endpoints: Option<&'a [LabelSelector]>,
    cidr: Option<&'a [Cidr]>,
    cidr_set: Option<&'a [CidrRule]>,
    entities: Option<&'a [Entity]>,
    fqdns: Option<&'a [FqdnSelector]>,
    to_ports: &'a [PortRule],
    icmps: &'a [IcmpRule],
) -> PeerRule<'a> {
    PeerRule {
        endpoints,
        cidrs: cidr
            .into_iter()
            .flatten()
            .map(|c| CidrRule::new(*c))
            .chain(cidr_set.into_iter().flatten().cloned())
            .collect(),
        entities,
        fqdns,
        to_ports,
        icmps,
    }
}

impl IngressRule {
    /// The rule seen without its direction.
    pub fn peer_rule(&self) -> PeerRule<'_> {
        peer_rule(
            self.from_endpoints.as_deref(),
            self.from_cidr.as_deref(),
            self.from_cidr_set.as_deref(),
            self.from_entities.as_deref(),
            None,
            &self.to_ports,
            &self.icmps,
        )
    }

    /// `path` is the rule's (`spec.ingress[0]`); `deny` names the list
    /// (`ingressDeny`) of a deny rule.
    pub(super) fn validate(&self, path: &str, deny: Option<&str>) -> Result<(), PolicyError> {
        Fields {
            names: ["fromEndpoints", "fromCIDR", "fromCIDRSet", "fromEntities"],
            endpoints: self.from_endpoints.as_deref(),
            cidr: self.from_cidr.as_deref(),
            cidr_set: self.from_cidr_set.as_deref(),
            entities: self.from_entities.as_deref(),
            fqdns: None,
            ingress: true,
            to_ports: &self.to_ports,
            icmps: &self.icmps,
            unsupported: &[
                ("fromRequires", self.from_requires.is_some()),
                ("fromGroups", self.from_groups.is_some()),
                ("fromNodes", self.from_nodes.is_some()),
            ],
            allow_only: &[("authentication", self.authentication.is_some())],
            not_in_deny: &[],
        }
        .validate(path, deny)
    }
}

impl EgressRule {
    /// The rule seen without its direction.
    pub fn peer_rule(&self) -> PeerRule<'_> {
        peer_rule(
            self.to_endpoints.as_deref(),
            self.to_cidr.as_deref(),
            self.to_cidr_set.as_deref(),
            self.to_entities.as_deref(),
            self.to_fqdns.as_deref(),
            &self.to_ports,
            &self.icmps,
        )
    }

    /// `path` is the rule's (`spec.egress[0]`); `deny` names the list
    /// (`egressDeny`) of a deny rule.
    pub(super) fn validate(&self, path: &str, deny: Option<&str>) -> Result<(), PolicyError> {
        Fields {
            names: ["toEndpoints", "toCIDR", "toCIDRSet", "toEntities"],
            endpoints: self.to_endpoints.as_deref(),
            cidr: self.to_cidr.as_deref(),
            cidr_set: self.to_cidr_set.as_deref(),
            entities: self.to_entities.as_deref(),
            fqdns: self.to_fqdns.as_deref(),
            ingress: false,
            to_ports: &self.to_ports,
            icmps: &self.icmps,
            unsupported: &[
                ("toRequires", self.to_requires.is_some()),
                ("toGroups", self.to_groups.is_some()),
                ("toNodes", self.to_nodes.is_some()),
                ("toServices", self.to_services.is_some()),
            ],
            allow_only: &[("authentication", self.authentication.is_some())],
            not_in_deny: &[("toFQDNs", self.to_fqdns.is_some())],
        }
        .validate(path, deny)
    }
}

/// What ingress and egress rules share, with their direction's field names.
struct Fields<'a> {
    /// The names of the endpoints, CIDR, CIDR set and entities fields.
    names: [&'static str; 4],
    endpoints: Option<&'a [LabelSelector]>,
    cidr: Option<&'a [Cidr]>,
    cidr_set: Option<&'a [CidrRule]>,
    entities: Option<&'a [Entity]>,
    /// `toFQDNs` (egress rules only).
    fqdns: Option<&'a [FqdnSelector]>,
    /// Whether the rule is an ingress rule (no DNS rules there).
    ingress: bool,
    to_ports: &'a [PortRule],
    icmps: &'a [IcmpRule],
    /// Cilium fields clustermesh does not enforce yet, and whether present.
    unsupported: &'a [(&'static str, bool)],
    /// Like `unsupported`, and not part of Cilium's deny rules at all.
    allow_only: &'a [(&'static str, bool)],
    /// Supported in allow rules, and not part of Cilium's deny rules.
    not_in_deny: &'a [(&'static str, bool)],
}

impl Fields<'_> {
    fn validate(&self, path: &str, deny: Option<&str>) -> Result<(), PolicyError> {
        let unsupported = self.unsupported.iter().map(|f| (f, None));
        let allow_only = self.allow_only.iter().map(|f| (f, deny));
        for ((name, present), deny) in unsupported.chain(allow_only) {
            if *present {
                let reason = match deny {
                    Some(list) => format!("{name} is not allowed in {list} rules"),
                    None => format!("{name} is not supported yet (nothing was applied)"),
                };
                return Err(PolicyError::field(format!("{path}.{name}"), reason));
            }
        }
        if let Some(list) = deny
            && let Some((name, _)) = self.not_in_deny.iter().find(|(_, present)| *present)
        {
            return Err(PolicyError::field(
                format!("{path}.{name}"),
                format!("{name} is not allowed in {list} rules"),
            ));
        }
        // Cilium refuses two kinds of peers in one rule: write two rules.
        let lens = [
            self.endpoints.map_or(0, <[_]>::len),
            self.cidr.map_or(0, <[_]>::len),
            self.cidr_set.map_or(0, <[_]>::len),
            self.entities.map_or(0, <[_]>::len),
            self.fqdns.map_or(0, <[_]>::len),
        ];
        let names = self.names.iter().chain(["toFQDNs"].iter());
        let mut kinds = names.zip(lens).filter(|(_, n)| *n > 0);
        if let (Some((a, _)), Some((b, _))) = (kinds.next(), kinds.next()) {
            return Err(PolicyError::field(
                path,
                format!("combining {a} and {b} is not supported; write one rule for each"),
            ));
        }
        if !self.icmps.is_empty() && !self.to_ports.is_empty() {
            return Err(PolicyError::field(
                path,
                "the icmps block may only be present without toPorts; define a separate rule for toPorts",
            ));
        }
        let [endpoints, _, cidr_set, _] = self.names;
        for (i, selector) in self.endpoints.into_iter().flatten().enumerate() {
            selector.validate().map_err(|error| PolicyError::Selector {
                path: format!("{path}.{endpoints}[{i}]"),
                error,
            })?;
        }
        for (i, rule) in self.cidr_set.into_iter().flatten().enumerate() {
            rule.validate(&format!("{path}.{cidr_set}[{i}]"))?;
        }
        for (i, selector) in self.fqdns.into_iter().flatten().enumerate() {
            selector.validate(&format!("{path}.toFQDNs[{i}]"), SelectorUse::ToFqdns)?;
        }
        for (i, rule) in self.to_ports.iter().enumerate() {
            rule.validate(&format!("{path}.toPorts[{i}]"), deny, self.ingress)?;
        }
        for (i, rule) in self.icmps.iter().enumerate() {
            rule.validate(&format!("{path}.icmps[{i}]"))?;
        }
        Ok(())
    }
}
