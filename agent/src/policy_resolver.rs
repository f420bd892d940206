//! Pure policy resolution: which rules select an endpoint, and which policy
//! map entries follow from them for the identities of the mesh.
//!
//! Semantics (DESIGN §8, Cilium's where the design is silent):
//! - A direction of an endpoint is enforced (default deny) once a rule that
//!   selects the endpoint has rules for that direction (`ingress` or
//!   `ingressDeny`; `egress` or `egressDeny`), unless that rule's
//!   `enableDefaultDeny` says otherwise. Other endpoints allow everything.
//! - Deny rules win over allow rules, whatever their specificity.
//! - A `CiliumNetworkPolicy` applies to endpoints of its namespace; its
//!   endpoint selectors of peers are confined to its namespace unless they
//!   name `io.kubernetes.pod.namespace` themselves.
//! - Peer selectors that do not name `io.cilium.k8s.policy.cluster` select
//!   the LOCAL cluster only (the safe default).
//! - A rule with no peers but with ports admits every peer on those ports;
//!   a rule with neither (`{}`) admits nothing. No ports = every port.
//! - CIDR peers select the node-local CIDR identities of prefixes inside
//!   the CIDR and outside every `except` (longest prefix wins in the
//!   ipcache, so an `except` prefix has an identity of its own); a CIDR of
//!   length 0 also selects the world identities. Endpoints of the mesh keep
//!   their own identities: CIDR peers never select them.
//! - `world` selects the world identities and every CIDR identity.
//! - `toFQDNs` selects the node-local identities of the addresses the DNS
//!   proxy learned for names the selector matches: such an address's
//!   identity carries `cidr:<ip>/32` and one `fqdn:<selector>` label per
//!   selector of the policies that matches one of its names (Cilium's
//!   labels), so CIDR and `world` peers select it too. Addresses of the
//!   mesh's endpoints keep their own identities: `toFQDNs` never selects
//!   them.
//! - An egress allow rule whose ports have DNS rules (`rules.dns`) sends
//!   the connections on those ports through the agent's DNS proxy (the
//!   entries carry the proxy's port), which allows the lookups the rules'
//!   patterns match.
//!
//! Endpoints whose rules compile the same share one policy (one set of map
//! entries); the agent keys them by [`EndpointRules`].

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use bpf::{Direction, IDENTITY_ANY, L4Match, PolicyAction, PolicyKey, PolicyValue, Protocol};
use ipnet::IpNet;
use kvstore::{
    CLUSTER_LABEL, Label, Labels, NAMESPACE_LABEL, NumericIdentity, StoreValue,
    values::{
        CidrRule, Entity, IcmpFamily, L4Protocol, LabelSelector, PeerRule, PolicyDocument,
        PolicySpec, Port,
    },
};

/// Label source of CIDR identities (`cidr:10.0.0.0/8`).
pub(crate) const CIDR_SOURCE: &str = "cidr";

/// The labels of the node-local identity of a CIDR prefix: `cidr:<prefix>`
/// and `reserved:world`, as Cilium gives them.
pub fn cidr_identity_labels(prefix: IpNet) -> Labels {
    let mut labels = Labels::new();
    labels.insert(Label::new(CIDR_SOURCE, prefix.trunc().to_string(), ""));
    labels.insert(Label::new("reserved", "world", ""));
    labels
}

/// Label source of the identities of addresses learned from DNS answers
/// (`fqdn:*.example.com.`, one per selector matching one of its names).
pub(crate) const FQDN_SOURCE: &str = "fqdn";

/// The labels of the node-local identity of an address learned from DNS:
/// its CIDR labels and `fqdn:<selector>` for each selector (normalized
/// text) that matches one of its names.
pub fn fqdn_identity_labels<'a>(
    ip: IpAddr,
    selectors: impl IntoIterator<Item = &'a str>,
) -> Labels {
    let mut labels = cidr_identity_labels(IpNet::from(ip));
    for selector in selectors {
        labels.insert(Label::new(FQDN_SOURCE, selector, ""));
    }
    labels
}

/// A policy's DNS name selector as the `fqdn` crate matches it (a DNS
/// rule may have both a name and a pattern: either matches). Policies
/// were validated when decoded, so both compile.
pub fn compile_fqdn_selector(
    selector: &kvstore::values::FqdnSelector,
) -> impl Iterator<Item = fqdn::FqdnSelector> {
    let name = selector
        .match_name
        .as_deref()
        .and_then(|n| fqdn::FqdnSelector::match_name(n).ok());
    let pattern = selector
        .match_pattern
        .as_deref()
        .and_then(|p| fqdn::FqdnSelector::match_pattern(p).ok());
    name.into_iter().chain(pattern)
}

/// Every `toFQDNs` selector of the policies (normalized text → selector):
/// what the learned addresses are labelled with.
pub fn fqdn_selectors<'a>(
    policies: impl IntoIterator<Item = &'a PolicyDocument>,
) -> BTreeMap<String, fqdn::FqdnSelector> {
    let mut out = BTreeMap::new();
    for doc in policies {
        for spec in doc.rules() {
            for (direction, _, _, peer) in peer_rules(spec) {
                if direction != Direction::Egress {
                    continue;
                }
                for selector in peer.fqdn_selectors().iter().flat_map(compile_fqdn_selector) {
                    out.insert(selector.as_str().to_string(), selector);
                }
            }
        }
    }
    out
}

/// The prefix of a CIDR identity's labels.
fn cidr_of(labels: &Labels) -> Option<IpNet> {
    labels
        .iter()
        .find(|l| l.source == CIDR_SOURCE)
        .and_then(|l| l.key.parse().ok())
}

/// Every prefix the policies name in CIDR peers (rules and their
/// exceptions) that needs an identity of its own: all but `/0`, which is
/// the world.
pub fn cidr_prefixes<'a>(
    policies: impl IntoIterator<Item = &'a PolicyDocument>,
) -> BTreeSet<IpNet> {
    let mut out = BTreeSet::new();
    for doc in policies {
        for spec in doc.rules() {
            for peer in peer_rules(spec).map(|(_, _, _, p)| p) {
                for c in &peer.cidrs {
                    out.extend(
                        std::iter::once(c.cidr.0)
                            .chain(c.except.iter().map(|e| e.0))
                            .filter(|n| n.prefix_len() > 0)
                            .map(|n| n.trunc()),
                    );
                }
            }
        }
    }
    out
}

/// Where a compiled rule came from: the policy, the rule's path in it, and
/// what it does (for flows and status).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleRef {
    /// `<namespace>/<name>` or `_clusterwide/<name>`.
    pub policy: String,
    /// e.g. `specs[1].egressDeny[0]`.
    pub path: String,
    pub direction: Direction,
    pub action: PolicyAction,
}

/// Stable small numbers for rules (the cookies of policy map entries, which
/// flows carry back).
#[derive(Debug, Default)]
pub struct RuleCookies {
    by_rule: HashMap<RuleRef, u32>,
    rules: Vec<RuleRef>,
}

impl RuleCookies {
    /// The cookie of `rule` (numbered from 1 in order of first use).
    pub fn cookie(&mut self, rule: &RuleRef) -> u32 {
        if let Some(c) = self.by_rule.get(rule) {
            return *c;
        }
        self.rules.push(rule.clone());
        let cookie = self.rules.len() as u32;
        self.by_rule.insert(rule.clone(), cookie);
        cookie
    }

    /// The rule of a cookie.
    pub fn rule(&self, cookie: u32) -> Option<&RuleRef> {
        self.rules.get((cookie as usize).checked_sub(1)?)
    }
}

/// Who a compiled rule is about.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Peers {
    /// Every identity (a wildcard entry).
    Any,
    /// Identities matching any of these.
    Some {
        /// Endpoint selectors, already confined to namespace and cluster.
        selectors: Vec<LabelSelector>,
        /// Fixed (reserved) identities.
        identities: BTreeSet<NumericIdentity>,
        /// CIDR identities inside one of these and outside its exceptions.
        cidrs: Vec<(IpNet, Vec<IpNet>)>,
        /// Identities of learned addresses labelled with one of these
        /// selectors (normalized text).
        fqdns: Vec<String>,
    },
}

impl Peers {
    fn matches(&self, id: NumericIdentity, labels: Option<&Labels>) -> bool {
        let Self::Some {
            selectors,
            identities,
            cidrs,
            fqdns,
        } = self
        else {
            return false;
        };
        if identities.contains(&id) {
            return true;
        }
        let Some(labels) = labels else {
            return false;
        };
        if !fqdns.is_empty()
            && labels
                .iter()
                .any(|l| l.source == FQDN_SOURCE && fqdns.iter().any(|f| *f == l.key))
        {
            return true;
        }
        if let Some(prefix) = cidr_of(labels) {
            return cidrs.iter().any(|(net, except)| {
                net.contains(&prefix) && !except.iter().any(|e| e.contains(&prefix))
            });
        }
        selectors.iter().any(|s| s.matches(labels))
    }

    fn fixed(&self) -> impl Iterator<Item = NumericIdentity> + '_ {
        match self {
            Self::Any => None,
            Self::Some { identities, .. } => Some(identities.iter().copied()),
        }
        .into_iter()
        .flatten()
    }
}

/// One rule, compiled for the endpoints it selects.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CompiledRule {
    peers: Peers,
    l4: Vec<L4Match>,
    /// The L4 matches (of `l4`) whose connections go through the DNS proxy.
    redirect: Vec<L4Match>,
    action: PolicyAction,
    cookie: u32,
}

/// The rules of one direction of an endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectionRules {
    /// Default deny in this direction.
    pub enforced: bool,
    rules: Vec<CompiledRule>,
}

/// The rules that apply to one endpoint. Endpoints with equal rules share
/// their policy map entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointRules {
    pub ingress: DirectionRules,
    pub egress: DirectionRules,
    /// Names of the policies that select it (for status output).
    pub policies: Vec<String>,
    /// Port names of rules that nothing declares (the endpoint itself for
    /// ingress, no endpoint of the mesh for egress): nothing is allowed
    /// for them.
    pub unresolved_ports: Vec<String>,
    /// The lookups its DNS rules allow (normalized selector texts, sorted):
    /// what the DNS proxy lets through for it.
    pub dns_patterns: Vec<String>,
    /// The DNS proxy's port, which redirected entries carry (set when some
    /// rule redirects).
    pub dns_proxy_port: u16,
}

/// The DNS proxy's port unless the agent is configured otherwise.
pub const DEFAULT_DNS_PROXY_PORT: u16 = 10053;

impl EndpointRules {
    /// Whether some rule sends connections through the DNS proxy.
    pub fn redirects(&self) -> bool {
        self.egress.rules.iter().any(|r| !r.redirect.is_empty())
    }

    /// Whether some direction is enforced.
    pub fn enforced(&self) -> bool {
        self.ingress.enforced || self.egress.enforced
    }

    /// The rules of `direction`.
    pub fn direction(&self, direction: Direction) -> &DirectionRules {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    fn direction_mut(&mut self, direction: Direction) -> &mut DirectionRules {
        match direction {
            Direction::Ingress => &mut self.ingress,
            Direction::Egress => &mut self.egress,
        }
    }
}

/// The ports an endpoint declares by name (`http` → TCP 8080).
pub type NamedPorts = BTreeMap<String, Vec<(Protocol, u16)>>;

/// Every section of a rule: direction, allow or deny, path, peers.
fn peer_rules(
    spec: &PolicySpec,
) -> impl Iterator<Item = (Direction, PolicyAction, String, PeerRule<'_>)> {
    let ingress = spec.ingress.iter().enumerate().map(|(i, r)| {
        (
            Direction::Ingress,
            PolicyAction::Allow,
            format!("ingress[{i}]"),
            r.peer_rule(),
        )
    });
    let ingress_deny = spec.ingress_deny.iter().enumerate().map(|(i, r)| {
        (
            Direction::Ingress,
            PolicyAction::Deny,
            format!("ingressDeny[{i}]"),
            r.peer_rule(),
        )
    });
    let egress = spec.egress.iter().enumerate().map(|(i, r)| {
        (
            Direction::Egress,
            PolicyAction::Allow,
            format!("egress[{i}]"),
            r.peer_rule(),
        )
    });
    let egress_deny = spec.egress_deny.iter().enumerate().map(|(i, r)| {
        (
            Direction::Egress,
            PolicyAction::Deny,
            format!("egressDeny[{i}]"),
            r.peer_rule(),
        )
    });
    ingress.chain(ingress_deny).chain(egress).chain(egress_deny)
}

/// Whether `spec` makes `direction` default-deny for what it selects.
fn enables_default_deny(spec: &PolicySpec, direction: Direction) -> bool {
    let (has, setting) = match direction {
        Direction::Ingress => (
            !spec.ingress.is_empty() || !spec.ingress_deny.is_empty(),
            spec.enable_default_deny.as_ref().and_then(|d| d.ingress),
        ),
        Direction::Egress => (
            !spec.egress.is_empty() || !spec.egress_deny.is_empty(),
            spec.enable_default_deny.as_ref().and_then(|d| d.egress),
        ),
    };
    has && setting.unwrap_or(true)
}

/// The ports rules may name: the endpoint's own (for ingress) and every
/// endpoint's of the mesh (for egress, as Cilium resolves them).
#[derive(Debug, Clone, Copy)]
pub struct PortNames<'a> {
    pub own: &'a NamedPorts,
    pub mesh: &'a NamedPorts,
}

impl PortNames<'_> {
    fn of(&self, direction: Direction) -> &NamedPorts {
        match direction {
            Direction::Ingress => self.own,
            Direction::Egress => self.mesh,
        }
    }
}

/// Whether an egress rule of `policies` names a port (its entries follow
/// the mesh's named ports).
pub fn names_egress_ports<'a>(policies: impl IntoIterator<Item = &'a PolicyDocument>) -> bool {
    policies.into_iter().any(|doc| {
        doc.rules().any(|spec| {
            peer_rules(spec).any(|(direction, _, _, peer)| {
                direction == Direction::Egress
                    && peer
                        .to_ports
                        .iter()
                        .flat_map(|r| r.ports.iter())
                        .any(|p| matches!(p.port, Port::Name(_)))
            })
        })
    })
}

/// Compiles the rules of `policies` that select an endpoint with `labels`
/// (which include its namespace and cluster labels) in `local_cluster`,
/// with the `ports` names stand for; cookies number the rules.
pub fn rules_for_endpoint<'a>(
    labels: &Labels,
    policies: impl IntoIterator<Item = &'a PolicyDocument>,
    local_cluster: &str,
    ports: PortNames<'_>,
    cookies: &mut RuleCookies,
) -> EndpointRules {
    let mut out = EndpointRules::default();
    let namespace = labels.value(NAMESPACE_LABEL);
    for doc in policies {
        let doc_ns = doc.namespace();
        if doc_ns.is_some() && doc_ns != namespace {
            continue;
        }
        let key = doc.key();
        let many = doc.rules().count() > 1 || doc.spec.is_none();
        let mut selected = false;
        for (index, spec) in doc.rules().enumerate() {
            if !spec.endpoint_selector.matches(labels) {
                continue;
            }
            selected = true;
            for direction in Direction::ALL {
                if enables_default_deny(spec, direction) {
                    out.direction_mut(direction).enforced = true;
                }
            }
            let spec_path = if many {
                format!("specs[{index}]")
            } else {
                "spec".to_string()
            };
            for (direction, action, path, peer) in peer_rules(spec) {
                if !peer.has_l3() && !peer.has_l4() {
                    continue; // `{}`: admits nothing
                }
                let rule = RuleRef {
                    policy: key.clone(),
                    path: format!("{spec_path}.{path}"),
                    direction,
                    action,
                };
                let (l4, unresolved) = compile_l4(&peer, ports.of(direction));
                out.unresolved_ports.extend(unresolved);
                if l4.is_empty() {
                    continue;
                }
                // The ports of DNS rules go through the proxy.
                let mut redirect = Vec::new();
                if direction == Direction::Egress
                    && action == PolicyAction::Allow
                    && peer.has_dns_rules()
                {
                    let with_dns: Vec<_> = peer
                        .to_ports
                        .iter()
                        .filter(|r| !r.dns_rules().is_empty())
                        .cloned()
                        .collect();
                    let dns_peer = PeerRule {
                        to_ports: &with_dns,
                        icmps: &[],
                        ..peer.clone()
                    };
                    redirect = compile_l4(&dns_peer, ports.of(direction)).0;
                    out.dns_patterns.extend(
                        peer.dns_rules()
                            .flat_map(compile_fqdn_selector)
                            .map(|s| s.as_str().to_string()),
                    );
                    out.dns_proxy_port = DEFAULT_DNS_PROXY_PORT;
                }
                let peers = compile_peers(&peer, doc_ns, local_cluster);
                let cookie = cookies.cookie(&rule);
                out.direction_mut(direction).rules.push(CompiledRule {
                    peers,
                    l4,
                    redirect,
                    action,
                    cookie,
                });
            }
        }
        if selected {
            out.policies.push(key);
        }
    }
    out.unresolved_ports.sort();
    out.unresolved_ports.dedup();
    out.dns_patterns.sort();
    out.dns_patterns.dedup();
    out
}

/// What `rules` (all selecting one identity, or all wildcards) say, after
/// deny precedence, as the datapath's longest match needs it: an allow that
/// a deny of the same identity covers becomes that deny. An allow goes
/// through the DNS proxy when a rule allowing it has DNS rules for it.
/// Sorted by L4 match.
fn group_of<'r>(rules: impl IntoIterator<Item = &'r CompiledRule>) -> Vec<GroupEntry> {
    let mut group: BTreeMap<L4Match, (PolicyAction, u32)> = BTreeMap::new();
    let mut redirected: BTreeSet<L4Match> = BTreeSet::new();
    for rule in rules {
        for l4 in &rule.l4 {
            let e = group.entry(*l4).or_insert((rule.action, rule.cookie));
            if rule.action == PolicyAction::Deny && e.0 == PolicyAction::Allow {
                *e = (rule.action, rule.cookie);
            }
        }
        redirected.extend(rule.redirect.iter().copied());
    }
    let denies: Vec<(L4Match, u32)> = group
        .iter()
        .filter(|(_, (a, _))| *a == PolicyAction::Deny)
        .map(|(l4, (_, c))| (*l4, *c))
        .collect();
    group
        .into_iter()
        .map(
            |(l4, (action, cookie))| match denies.iter().find(|(d, _)| d.covers(&l4)) {
                Some((_, deny)) if action == PolicyAction::Allow => {
                    (l4, PolicyAction::Deny, *deny, false)
                }
                _ => (
                    l4,
                    action,
                    cookie,
                    action == PolicyAction::Allow && redirected.contains(&l4),
                ),
            },
        )
        .collect()
}

/// An entry of a group: match, action, rule cookie, through the DNS proxy.
type GroupEntry = (L4Match, PolicyAction, u32, bool);

fn keyed(
    policy_id: u32,
    direction: Direction,
    identity: u32,
    group: &[GroupEntry],
    proxy_port: u16,
) -> impl Iterator<Item = (PolicyKey, PolicyValue)> + '_ {
    group.iter().map(move |(l4, action, cookie, redirect)| {
        let key = PolicyKey::new(policy_id, direction, identity, *l4);
        let value = PolicyValue::new(*action, &key, *cookie);
        let value = if *redirect {
            value.with_proxy_port(proxy_port)
        } else {
            value
        };
        (key, value)
    })
}

/// The entries of policy `policy_id` that name identity `id` (with
/// `labels`, `None` when the identity is gone: fixed identities such as
/// `host` still match). Replaces every earlier entry of that identity.
pub fn entries_for_identity(
    policy_id: u32,
    rules: &EndpointRules,
    id: NumericIdentity,
    labels: Option<&Labels>,
) -> Vec<(PolicyKey, PolicyValue)> {
    Direction::ALL
        .into_iter()
        .flat_map(|direction| {
            let selecting = rules
                .direction(direction)
                .rules
                .iter()
                .filter(|r| r.peers.matches(id, labels));
            keyed(
                policy_id,
                direction,
                id.get(),
                &group_of(selecting),
                rules.dns_proxy_port,
            )
            .collect::<Vec<_>>()
        })
        .collect()
}

/// The identity-independent entries (rules that name every peer).
pub fn wildcard_entries(policy_id: u32, rules: &EndpointRules) -> Vec<(PolicyKey, PolicyValue)> {
    Direction::ALL
        .into_iter()
        .flat_map(|direction| {
            let wildcards = rules
                .direction(direction)
                .rules
                .iter()
                .filter(|r| r.peers == Peers::Any);
            keyed(
                policy_id,
                direction,
                IDENTITY_ANY,
                &group_of(wildcards),
                rules.dns_proxy_port,
            )
            .collect::<Vec<_>>()
        })
        .collect()
}

/// (label key, value) → identities having it, hashed with foldhash (the
/// index is rebuilt on each full recompute; SipHash showed in its profile).
type LabelIndex<'a> = HashMap<(&'a str, &'a str), Vec<u32>, foldhash::fast::RandomState>;

/// The identities of the mesh, and which of them each distinct set of
/// peers selects: a full recompute matches every selector against the
/// identities once, however many policies share the rule (a clusterwide
/// rule is in the policy of every endpoint), and only against those that
/// have the labels its `matchLabels` require.
pub struct Selections<'a> {
    identities: Vec<(NumericIdentity, &'a Labels)>,
    /// (label key, value) → indexes into `identities`; built on first use.
    by_label: Option<LabelIndex<'a>>,
    selected: Vec<(Peers, Vec<NumericIdentity>)>,
}

impl<'a> Selections<'a> {
    pub fn new(identities: impl IntoIterator<Item = (NumericIdentity, &'a Labels)>) -> Self {
        Self {
            identities: identities.into_iter().collect(),
            by_label: None,
            selected: Vec::new(),
        }
    }

    /// The identities `peers` selects, sorted: those of the mesh whose
    /// labels match, and the fixed ones (entities) whether known or not.
    fn select(&mut self, peers: &Peers) -> &[NumericIdentity] {
        if let Some(index) = self.selected.iter().position(|(p, _)| p == peers) {
            return &self.selected[index].1;
        }
        let mut ids: Vec<NumericIdentity> = self
            .candidates(peers)
            .filter(|(id, labels)| peers.matches(*id, Some(labels)))
            .map(|(id, _)| id)
            .chain(peers.fixed())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        self.selected.push((peers.clone(), ids));
        &self.selected[self.selected.len() - 1].1
    }

    /// Identities that may match `peers` (a superset): with CIDRs or a
    /// selector without `matchLabels`, all of them; otherwise those having
    /// the rarest required label of each selector.
    fn candidates(
        &mut self,
        peers: &Peers,
    ) -> Box<dyn Iterator<Item = (NumericIdentity, &'a Labels)> + '_> {
        let Peers::Some {
            selectors,
            cidrs,
            fqdns,
            ..
        } = peers
        else {
            return Box::new(std::iter::empty());
        };
        let indexable = cidrs.is_empty()
            && selectors
                .iter()
                .all(|s| s.required_labels().next().is_some());
        if !indexable {
            return Box::new(self.identities.iter().copied());
        }
        let identities = &self.identities;
        let index = self.by_label.get_or_insert_with(|| {
            let mut index = LabelIndex::default();
            for (i, (_, labels)) in identities.iter().enumerate() {
                for label in labels.iter() {
                    index
                        .entry((label.key.as_str(), label.value.as_str()))
                        .or_default()
                        .push(i as u32);
                }
            }
            index
        });
        let mut rows: Vec<u32> = selectors
            .iter()
            .flat_map(|s| {
                s.required_labels()
                    .map(|pair| index.get(&pair).map_or(&[][..], Vec::as_slice))
                    .min_by_key(|rows| rows.len())
                    .unwrap_or(&[])
            })
            .copied()
            .collect();
        // `fqdn:<selector>` labels have the selector as key, no value.
        for f in fqdns {
            rows.extend(index.get(&(f.as_str(), "")).into_iter().flatten());
        }
        if selectors.len() + fqdns.len() > 1 {
            rows.sort_unstable();
            rows.dedup();
        }
        Box::new(rows.into_iter().map(|i| identities[i as usize]))
    }
}

/// Every entry of a policy for the identities of the mesh, sorted by key.
///
/// Identities selected by the same rules get the same entries, so each
/// distinct combination of rules is grouped once and only the keys are
/// made per identity.
pub fn resolve_with(
    policy_id: u32,
    rules: &EndpointRules,
    selections: &mut Selections<'_>,
) -> Vec<(PolicyKey, PolicyValue)> {
    let mut out = wildcard_entries(policy_id, rules);
    let proxy_port = rules.dns_proxy_port;
    for direction in Direction::ALL {
        let rules = &rules.direction(direction).rules;
        // (identity, index of a rule that selects it)
        let mut selecting: Vec<(NumericIdentity, u16)> = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            if rule.peers != Peers::Any {
                let index = u16::try_from(index).expect("fewer than 65,536 rules");
                selecting.extend(selections.select(&rule.peers).iter().map(|id| (*id, index)));
            }
        }
        selecting.sort_unstable();
        let mut groups: HashMap<Vec<u16>, Vec<(PolicyKey, PolicyValue)>> = HashMap::new();
        let mut combination: Vec<u16> = Vec::new();
        for run in selecting.chunk_by(|a, b| a.0 == b.0) {
            let id = run[0].0;
            combination.clear();
            combination.extend(run.iter().map(|(_, index)| *index));
            if !groups.contains_key(combination.as_slice()) {
                let group = group_of(combination.iter().map(|i| &rules[usize::from(*i)]));
                // Entries of a placeholder identity: the value does not
                // depend on which identity it is.
                let template = keyed(policy_id, direction, u32::MAX, &group, proxy_port).collect();
                groups.insert(combination.clone(), template);
            }
            out.extend(groups[combination.as_slice()].iter().map(|(key, value)| {
                let mut key = *key;
                key.sec_identity = id.get();
                (key, *value)
            }));
        }
    }
    out.sort_unstable_by_key(|(key, _)| *key);
    out
}

/// Every entry of a policy for the identities of the mesh, sorted by key.
pub fn resolve<'a>(
    policy_id: u32,
    rules: &EndpointRules,
    identities: impl IntoIterator<Item = (NumericIdentity, &'a Labels)>,
) -> Vec<(PolicyKey, PolicyValue)> {
    resolve_with(policy_id, rules, &mut Selections::new(identities))
}

fn compile_peers(peer: &PeerRule<'_>, doc_ns: Option<&str>, local_cluster: &str) -> Peers {
    if !peer.has_l3() {
        return Peers::Any;
    }
    let mut selectors = Vec::new();
    let mut identities = BTreeSet::new();
    let mut cidrs = Vec::new();
    let mut fqdns: Vec<String> = peer
        .fqdn_selectors()
        .iter()
        .flat_map(compile_fqdn_selector)
        .map(|s| s.as_str().to_string())
        .collect();
    fqdns.sort();
    fqdns.dedup();
    for sel in peer.endpoints.into_iter().flatten() {
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
    let world = [
        NumericIdentity::WORLD,
        NumericIdentity::WORLD_IPV4,
        NumericIdentity::WORLD_IPV6,
    ];
    let all_v4: IpNet = "0.0.0.0/0".parse().expect("valid");
    let all_v6: IpNet = "::/0".parse().expect("valid");
    for CidrRule { cidr, except } in &peer.cidrs {
        let net = cidr.0.trunc();
        let except: Vec<IpNet> = except.iter().map(|e| e.0.trunc()).collect();
        if net.prefix_len() == 0 {
            // Unknown addresses are the world (2), whatever their family.
            identities.insert(NumericIdentity::WORLD);
            identities.insert(match net.addr() {
                IpAddr::V4(_) => NumericIdentity::WORLD_IPV4,
                IpAddr::V6(_) => NumericIdentity::WORLD_IPV6,
            });
        }
        cidrs.push((net, except));
    }
    for entity in peer.entities.into_iter().flatten() {
        match entity {
            Entity::All => return Peers::Any,
            Entity::World => {
                identities.extend(world);
                cidrs.push((all_v4, Vec::new()));
                cidrs.push((all_v6, Vec::new()));
            }
            Entity::WorldIpv4 => {
                identities.extend([NumericIdentity::WORLD, NumericIdentity::WORLD_IPV4]);
                cidrs.push((all_v4, Vec::new()));
            }
            Entity::WorldIpv6 => {
                identities.extend([NumericIdentity::WORLD, NumericIdentity::WORLD_IPV6]);
                cidrs.push((all_v6, Vec::new()));
            }
            Entity::Host => {
                identities.insert(NumericIdentity::HOST);
            }
            Entity::RemoteNode => {
                identities.insert(NumericIdentity::REMOTE_NODE);
            }
            Entity::Init => {
                identities.insert(NumericIdentity::INIT);
            }
            Entity::Health => {
                identities.insert(NumericIdentity::HEALTH);
            }
            Entity::Unmanaged => {
                identities.insert(NumericIdentity::UNMANAGED);
            }
            Entity::KubeApiserver => {
                identities.insert(NumericIdentity::KUBE_APISERVER);
            }
            Entity::Ingress => {
                identities.insert(NumericIdentity::INGRESS);
            }
            Entity::None => {}
            Entity::Cluster => {
                identities.extend([
                    NumericIdentity::HOST,
                    NumericIdentity::REMOTE_NODE,
                    NumericIdentity::INIT,
                    NumericIdentity::HEALTH,
                    NumericIdentity::UNMANAGED,
                    NumericIdentity::KUBE_APISERVER,
                    NumericIdentity::INGRESS,
                ]);
                selectors.push(LabelSelector::labels([(CLUSTER_LABEL, local_cluster)]));
            }
        }
    }
    Peers::Some {
        selectors,
        identities,
        cidrs,
        fqdns,
    }
}

/// The L4 matches of a rule, and the port names it uses that `named_ports`
/// (the endpoint's own for ingress, the mesh's for egress) do not declare.
fn compile_l4(peer: &PeerRule<'_>, named_ports: &NamedPorts) -> (Vec<L4Match>, Vec<String>) {
    if !peer.has_l4() {
        return (vec![L4Match::Any], Vec::new());
    }
    let mut out: Vec<L4Match> = Vec::new();
    let mut unresolved = Vec::new();
    let mut push = |l4: L4Match| {
        if !out.contains(&l4) {
            out.push(l4);
        }
    };
    for p in peer.to_ports.iter().flat_map(|r| r.ports.iter()) {
        let protocols: &[Protocol] = match p.protocol {
            L4Protocol::Tcp => &[Protocol::Tcp],
            L4Protocol::Udp => &[Protocol::Udp],
            L4Protocol::Sctp => &[Protocol::Sctp],
            L4Protocol::Icmp => &[Protocol::Icmp],
            L4Protocol::IcmpV6 => &[Protocol::Icmpv6],
            L4Protocol::Any => &[Protocol::Tcp, Protocol::Udp, Protocol::Sctp],
        };
        match &p.port {
            Port::Number(0) if p.protocol == L4Protocol::Any => push(L4Match::Any),
            Port::Number(0) => protocols
                .iter()
                .for_each(|proto| push(L4Match::Protocol(*proto))),
            Port::Number(port) => {
                let last = p.end_port.unwrap_or(*port).max(*port);
                for proto in protocols {
                    L4Match::port_range(*proto, *port, last)
                        .into_iter()
                        .for_each(&mut push);
                }
            }
            Port::Name(name) => {
                let mut any = false;
                for (proto, port) in named_ports.get(name).into_iter().flatten() {
                    if protocols.contains(proto) {
                        push(L4Match::Port(*proto, *port));
                        any = true;
                    }
                }
                if !any {
                    unresolved.push(name.clone());
                }
            }
        }
    }
    for field in peer.icmps.iter().flat_map(|r| r.fields.iter()) {
        let proto = match field.family {
            IcmpFamily::Ipv4 => Protocol::Icmp,
            IcmpFamily::Ipv6 => Protocol::Icmpv6,
        };
        push(L4Match::icmp_type(proto, field.type_number()));
    }
    (out, unresolved)
}
