//! Which pod CIDRs of other nodes this node routes, and which claims it
//! refuses: a pure function of the nodes the agent knows and of the address
//! space that is the local cluster's (see [`plan`]). The control loop applies
//! the result with iproute2.
//!
//! A remote node's pod CIDR is untrusted input: a remote that could route
//! `0.0.0.0/1`, a local node's CIDR or the fabric's subnet through one of its
//! nodes would take local traffic away. Only the local cluster's own nodes
//! are trusted.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

use ipnet::IpNet;
use kvstore::values::Node;
use serde::{Deserialize, Serialize};

/// Narrowest prefix length a remote node's IPv4 pod CIDR may have: a node
/// owns a slice of its cluster's pool, never a /8 (or `0.0.0.0/1`).
pub(crate) const MIN_REMOTE_PREFIX_V4: u8 = 16;
/// The same for IPv6.
pub(crate) const MIN_REMOTE_PREFIX_V6: u8 = 48;

/// Why a remote node's pod CIDR is not routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RouteRefusal {
    /// Wider than [`MIN_REMOTE_PREFIX_V4`] / [`MIN_REMOTE_PREFIX_V6`].
    TooWide,
    /// Overlaps this node's or another local node's pod CIDR, or the local
    /// cluster's pod pool.
    OverlapsLocalPods,
    /// Overlaps a network of this node's own interfaces (fabric,
    /// control plane).
    OverlapsHostNetwork,
    /// Overlaps a CIDR another remote cluster already holds.
    OverlapsOtherRemote,
    /// Outside the pod pool the remote's config says it has.
    OutsideRemotePool,
    /// The next hop is an address of the local cluster's own space.
    GatewayInLocalSpace,
}

impl RouteRefusal {
    pub(crate) const ALL: [Self; 6] = [
        Self::TooWide,
        Self::OverlapsLocalPods,
        Self::OverlapsHostNetwork,
        Self::OverlapsOtherRemote,
        Self::OutsideRemotePool,
        Self::GatewayInLocalSpace,
    ];

    /// Label of the refusal in status and metrics.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::TooWide => "route-too-wide",
            Self::OverlapsLocalPods => "route-overlaps-local-pods",
            Self::OverlapsHostNetwork => "route-overlaps-host-network",
            Self::OverlapsOtherRemote => "route-overlaps-other-remote",
            Self::OutsideRemotePool => "route-outside-remote-pool",
            Self::GatewayInLocalSpace => "route-gateway-in-local-space",
        }
    }
}

impl fmt::Display for RouteRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One refused claim.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RefusedRoute {
    pub cluster: String,
    pub node: String,
    pub cidr: IpNet,
    pub reason: RouteRefusal,
}

/// What the plan is computed from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RouteInputs<'a> {
    pub local_cluster: &'a str,
    pub local_node: &'a str,
    /// This node's pod CIDRs (IPv4, and IPv6 on a dual-stack node).
    pub own_pod_cidrs: &'a [IpNet],
    /// The local cluster's pod pools (configured; may be empty).
    pub local_pools: &'a [IpNet],
    /// Networks of this node's interfaces (and their direct routes).
    pub host_networks: &'a [IpNet],
    /// Cluster → node name → node, every cluster the agent knows.
    pub nodes: &'a BTreeMap<String, BTreeMap<String, Node>>,
    /// Remote cluster → its pod pools, where its config names them.
    pub remote_pools: &'a BTreeMap<String, Vec<IpNet>>,
    /// Routes in place now: a claim that holds a CIDR keeps it against a
    /// later, overlapping claim of another remote.
    pub installed: &'a BTreeMap<IpNet, IpAddr>,
}

/// The routes to install and the claims refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RoutePlan {
    pub routes: BTreeMap<IpNet, IpAddr>,
    pub refused: Vec<RefusedRoute>,
}

/// One remote claim: a node's CIDR and its next hop.
struct Claim<'a> {
    cluster: &'a str,
    node: &'a str,
    cidr: IpNet,
    via: IpAddr,
}

/// Computes the routes, both families.
///
/// - Every pod CIDR is routed through the node's `InternalIP` of the same
///   family (an IPv6 route needs an IPv6 next hop); a CIDR of a family the
///   node has no such address for is not routed.
/// - Other nodes of the local cluster: every pod CIDR except this node's.
/// - Remote nodes: a pod CIDR is routed only if it is at least as narrow as
///   the minimum, overlaps none of the local space (this node's and other
///   local nodes' CIDRs, the local pools, the host's networks), lies inside
///   the remote's pool where one is known, does not overlap what another
///   remote holds, and its next hop is not in the local space. Claims that
///   hold a route now are considered first, so a newcomer cannot take a
///   CIDR away; the rest in (cluster, node) order.
pub(crate) fn plan(inputs: &RouteInputs<'_>) -> RoutePlan {
    let mut out = RoutePlan::default();
    let mut local_pods: Vec<IpNet> = inputs.local_pools.to_vec();
    local_pods.extend(inputs.own_pod_cidrs.iter().copied());
    for (cluster, nodes) in inputs.nodes {
        if cluster != inputs.local_cluster {
            continue;
        }
        for node in nodes.values() {
            let cidrs = node.pod_cidrs();
            local_pods.extend(cidrs.iter().copied());
            if node.name == inputs.local_node {
                continue;
            }
            for cidr in cidrs {
                if let Some(via) = node.internal_ip_for(&cidr)
                    && !inputs.own_pod_cidrs.contains(&cidr)
                {
                    out.routes.insert(cidr, via);
                }
            }
        }
    }

    let mut claims: Vec<Claim<'_>> = Vec::new();
    for (cluster, nodes) in inputs.nodes {
        if cluster == inputs.local_cluster {
            continue;
        }
        for node in nodes.values() {
            for cidr in node.pod_cidrs() {
                if let Some(via) = node.internal_ip_for(&cidr) {
                    claims.push(Claim {
                        cluster,
                        node: &node.name,
                        cidr: cidr.trunc(),
                        via,
                    });
                }
            }
        }
    }
    // Holders first (stable sort keeps (cluster, node) order otherwise).
    claims.sort_by_key(|c| inputs.installed.get(&c.cidr) != Some(&c.via));

    let mut held: Vec<(IpNet, &str)> = Vec::new();
    let mut refused = BTreeSet::new();
    for claim in claims {
        let verdict = judge(inputs, &local_pods, &held, &claim);
        match verdict {
            Ok(()) => {
                held.push((claim.cidr, claim.cluster));
                // A local node's route to the same CIDR would already have
                // refused the claim (it overlaps local pods).
                out.routes.entry(claim.cidr).or_insert(claim.via);
            }
            Err(reason) => {
                refused.insert(RefusedRoute {
                    cluster: claim.cluster.to_string(),
                    node: claim.node.to_string(),
                    cidr: claim.cidr,
                    reason,
                });
            }
        }
    }
    out.refused = refused.into_iter().collect();
    out
}

fn judge(
    inputs: &RouteInputs<'_>,
    local_pods: &[IpNet],
    held: &[(IpNet, &str)],
    claim: &Claim<'_>,
) -> Result<(), RouteRefusal> {
    let min = if claim.cidr.addr().is_ipv4() {
        MIN_REMOTE_PREFIX_V4
    } else {
        MIN_REMOTE_PREFIX_V6
    };
    if claim.cidr.prefix_len() < min {
        return Err(RouteRefusal::TooWide);
    }
    if local_pods.iter().any(|l| overlaps(l, &claim.cidr)) {
        return Err(RouteRefusal::OverlapsLocalPods);
    }
    if inputs
        .host_networks
        .iter()
        .any(|h| overlaps(h, &claim.cidr))
    {
        return Err(RouteRefusal::OverlapsHostNetwork);
    }
    if let Some(pools) = inputs.remote_pools.get(claim.cluster)
        && !pools.is_empty()
        && !pools.iter().any(|p| p.contains(&claim.cidr))
    {
        return Err(RouteRefusal::OutsideRemotePool);
    }
    if held
        .iter()
        .any(|(cidr, cluster)| *cluster != claim.cluster && overlaps(cidr, &claim.cidr))
    {
        return Err(RouteRefusal::OverlapsOtherRemote);
    }
    if local_pods.iter().any(|l| l.contains(&claim.via)) {
        return Err(RouteRefusal::GatewayInLocalSpace);
    }
    Ok(())
}

/// Whether two prefixes share an address (one contains the other).
pub(crate) fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use kvstore::{
        ClusterName,
        values::{NodeAddress, NodeCidr},
    };

    use super::*;

    fn node(cluster: &str, name: &str, ip: &str, cidrs: &[&str]) -> Node {
        let mut n = Node::new(&ClusterName::new(cluster).unwrap(), name, 0);
        n.ip_addresses.push(NodeAddress {
            kind: NodeAddress::INTERNAL_IP.into(),
            ip: ip.parse().unwrap(),
        });
        let (v4, v6): (Vec<IpNet>, Vec<IpNet>) = cidrs
            .iter()
            .map(|c| c.parse::<IpNet>().unwrap())
            .partition(|c| c.addr().is_ipv4());
        let mut cidrs = v4.into_iter().map(NodeCidr::from_net);
        n.ipv4_alloc_cidr = cidrs.next();
        let rest: Vec<NodeCidr> = cidrs.collect();
        if !rest.is_empty() {
            n.ipv4_secondary_alloc_cidrs = Some(rest);
        }
        let mut cidrs = v6.into_iter().map(NodeCidr::from_net);
        n.ipv6_alloc_cidr = cidrs.next();
        let rest: Vec<NodeCidr> = cidrs.collect();
        if !rest.is_empty() {
            n.ipv6_secondary_alloc_cidrs = Some(rest);
        }
        n
    }

    /// A dual-stack node: an IPv6 InternalIP beside the IPv4 one.
    fn with_v6(mut n: Node, ip: &str) -> Node {
        n.ip_addresses.push(NodeAddress {
            kind: NodeAddress::INTERNAL_IP.into(),
            ip: ip.parse().unwrap(),
        });
        n
    }

    struct World {
        nodes: BTreeMap<String, BTreeMap<String, Node>>,
        pools: Vec<IpNet>,
        host: Vec<IpNet>,
        remote_pools: BTreeMap<String, Vec<IpNet>>,
        installed: BTreeMap<IpNet, IpAddr>,
        own: Vec<IpNet>,
    }

    impl World {
        fn new() -> Self {
            let mut w = Self {
                nodes: BTreeMap::new(),
                pools: vec!["10.1.0.0/16".parse().unwrap()],
                host: vec!["172.16.0.0/16".parse().unwrap()],
                remote_pools: BTreeMap::new(),
                installed: BTreeMap::new(),
                own: vec!["10.1.1.0/24".parse().unwrap()],
            };
            w.add(node("c1", "n1", "172.16.1.11", &["10.1.1.0/24"]));
            w.add(node("c1", "n2", "172.16.1.12", &["10.1.2.0/24"]));
            w.add(node("c2", "n1", "172.16.2.11", &["10.2.1.0/24"]));
            w
        }

        fn add(&mut self, n: Node) {
            self.nodes
                .entry(n.cluster.clone())
                .or_default()
                .insert(n.name.clone(), n);
        }

        fn plan(&self) -> RoutePlan {
            plan(&RouteInputs {
                local_cluster: "c1",
                local_node: "n1",
                own_pod_cidrs: &self.own,
                local_pools: &self.pools,
                host_networks: &self.host,
                nodes: &self.nodes,
                remote_pools: &self.remote_pools,
                installed: &self.installed,
            })
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn honest_mesh_routes_every_other_node() {
        let p = World::new().plan();
        assert!(p.refused.is_empty(), "{:?}", p.refused);
        assert_eq!(
            p.routes.keys().copied().collect::<Vec<_>>(),
            vec![net("10.1.2.0/24"), net("10.2.1.0/24")]
        );
    }

    #[test]
    fn hostile_claims_are_refused_with_their_reason() {
        let cases = [
            ("0.0.0.0/1", RouteRefusal::TooWide),
            ("10.0.0.0/8", RouteRefusal::TooWide),
            ("10.1.1.0/24", RouteRefusal::OverlapsLocalPods),
            ("10.1.2.128/25", RouteRefusal::OverlapsLocalPods),
            ("10.1.200.0/24", RouteRefusal::OverlapsLocalPods),
            ("172.16.5.0/24", RouteRefusal::OverlapsHostNetwork),
        ];
        for (cidr, reason) in cases {
            let mut w = World::new();
            w.add(node("c2", "evil", "172.16.2.66", &["10.2.9.0/24", cidr]));
            let p = w.plan();
            assert_eq!(
                p.refused,
                vec![RefusedRoute {
                    cluster: "c2".into(),
                    node: "evil".into(),
                    cidr: net(cidr).trunc(),
                    reason,
                }],
                "{cidr}"
            );
            assert!(!p.routes.contains_key(&net(cidr).trunc()), "{cidr}");
            assert_eq!(
                p.routes.get(&net("10.2.9.0/24")),
                Some(&"172.16.2.66".parse().unwrap()),
                "the honest CIDR of the same node is still routed"
            );
        }
    }

    #[test]
    fn remote_pool_bounds_its_claims() {
        let mut w = World::new();
        w.remote_pools.insert("c2".into(), vec![net("10.2.0.0/16")]);
        w.add(node("c2", "n2", "172.16.2.12", &["10.9.0.0/24"]));
        let p = w.plan();
        assert_eq!(p.refused.len(), 1);
        assert_eq!(p.refused[0].reason, RouteRefusal::OutsideRemotePool);
        assert!(p.routes.contains_key(&net("10.2.1.0/24")));
    }

    #[test]
    fn first_holder_keeps_a_cidr_against_another_remote() {
        let mut w = World::new();
        // c3 claims c2's CIDR; c2 holds the route now, so c3 is refused…
        w.installed
            .insert(net("10.2.1.0/24"), "172.16.2.11".parse().unwrap());
        w.add(node("c0", "thief", "172.16.3.11", &["10.2.1.0/25"]));
        let p = w.plan();
        assert_eq!(p.refused.len(), 1);
        assert_eq!(p.refused[0].cluster, "c0");
        assert_eq!(p.refused[0].reason, RouteRefusal::OverlapsOtherRemote);
        assert_eq!(
            p.routes.get(&net("10.2.1.0/24")),
            Some(&"172.16.2.11".parse().unwrap())
        );
        // …and without a holder, the (cluster, node) order decides.
        w.installed.clear();
        assert_eq!(w.plan().refused[0].cluster, "c2");
    }

    #[test]
    fn ipv6_cidrs_are_routed_through_ipv6_next_hops() {
        let mut w = World::new();
        w.pools.push(net("fd10:1::/48"));
        w.host.push(net("fd00:172:16::/64"));
        w.own.push(net("fd10:1:0:1::/64"));
        w.add(with_v6(
            node(
                "c1",
                "n1",
                "172.16.1.11",
                &["10.1.1.0/24", "fd10:1:0:1::/64"],
            ),
            "fd00:172:16::1:11",
        ));
        w.add(with_v6(
            node(
                "c1",
                "n2",
                "172.16.1.12",
                &["10.1.2.0/24", "fd10:1:0:2::/64"],
            ),
            "fd00:172:16::1:12",
        ));
        w.add(with_v6(
            node(
                "c2",
                "n1",
                "172.16.2.11",
                &["10.2.1.0/24", "fd10:2:0:1::/64"],
            ),
            "fd00:172:16::2:11",
        ));
        // A node without an IPv6 address: its IPv6 CIDR has no next hop.
        w.add(node(
            "c2",
            "n2",
            "172.16.2.12",
            &["10.2.2.0/24", "fd10:2:0:2::/64"],
        ));
        let p = w.plan();
        assert!(p.refused.is_empty(), "{:?}", p.refused);
        let via = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(
            p.routes.get(&net("fd10:1:0:2::/64")).copied(),
            via("fd00:172:16::1:12")
        );
        assert_eq!(
            p.routes.get(&net("fd10:2:0:1::/64")).copied(),
            via("fd00:172:16::2:11")
        );
        assert_eq!(
            p.routes.get(&net("10.2.1.0/24")).copied(),
            via("172.16.2.11")
        );
        assert_eq!(
            p.routes.get(&net("10.2.2.0/24")).copied(),
            via("172.16.2.12")
        );
        assert!(!p.routes.contains_key(&net("fd10:1:0:1::/64")), "own CIDR");
        assert!(!p.routes.contains_key(&net("fd10:2:0:2::/64")));
        // IPv6 claims are judged as IPv4 ones.
        let cases = [
            ("fd10::/32", RouteRefusal::TooWide),
            ("fd10:1:0:9::/64", RouteRefusal::OverlapsLocalPods),
            ("fd00:172:16::/80", RouteRefusal::OverlapsHostNetwork),
        ];
        for (cidr, reason) in cases {
            let mut w2 = World::new();
            w2.pools.push(net("fd10:1::/48"));
            w2.host.push(net("fd00:172:16::/64"));
            w2.add(with_v6(
                node("c2", "evil", "172.16.2.66", &[cidr]),
                "fd00:172:16::2:66",
            ));
            let p = w2.plan();
            assert_eq!(p.refused.len(), 1, "{cidr}");
            assert_eq!(p.refused[0].reason, reason, "{cidr}");
        }
    }

    #[test]
    fn gateway_inside_local_pods_is_refused() {
        let mut w = World::new();
        w.add(node("c2", "n3", "10.1.2.7", &["10.2.3.0/24"]));
        let p = w.plan();
        assert_eq!(p.refused[0].reason, RouteRefusal::GatewayInLocalSpace);
    }
}
