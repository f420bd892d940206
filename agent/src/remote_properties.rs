//! Property tests: random and hostile values of every key type a remote
//! cluster publishes, fed through the validators (and what they let through
//! into the tables and the route plan), against the invariants of the
//! remote-cluster module: no local or reserved identity replaced, no route
//! into local space, nothing outside the remote's own range accepted.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::IpNet;
use kvstore::{
    CLUSTER_LABEL, ClusterId, ClusterName, IdentityRange, Label, Labels, MaxConnectedClusters,
    NumericIdentity, StoreValue, remote_identity_validator,
    values::{ClusterService, IdentityEntry, IpIdentityPair, Node, NodeAddress, NodeCidr},
};
use proptest::prelude::*;

use crate::{
    remote_clusters::{
        REMOTE_IPCACHE_RESERVED, ipcache_validator, node_validator, service_validator,
    },
    route_plan::{self, MIN_REMOTE_PREFIX_V4, RouteInputs, overlaps},
    tables::{IpEntry, SourceId, Tables},
};

const MODE: MaxConnectedClusters = MaxConnectedClusters::C255;
const LOCAL_ID: u32 = 1;
const REMOTE_ID: u32 = 2;

fn remote() -> (ClusterName, ClusterId) {
    (
        ClusterName::new("c2").unwrap(),
        ClusterId::new(REMOTE_ID, MODE).unwrap(),
    )
}

/// Identities a hostile remote likes: reserved ones, the local block, its
/// own block, other blocks, the scope byte, anything.
fn any_identity() -> impl Strategy<Value = u32> {
    prop_oneof![
        0u32..256,
        (0u32..0x1_0000).prop_map(|l| LOCAL_ID << 16 | l),
        (0u32..0x1_0000).prop_map(|l| REMOTE_ID << 16 | l),
        (3u32..256, 0u32..0x1_0000).prop_map(|(c, l)| c << 16 | l),
        any::<u32>(),
    ]
}

fn cluster_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("c2".to_string()),
        Just("c1".to_string()),
        Just("c3".to_string()),
        Just("c20".to_string()),
        "[a-z0-9/._-]{0,6}",
    ]
}

fn labels(cluster: String, app: String) -> Labels {
    [Label::k8s("app", app), Label::k8s(CLUSTER_LABEL, cluster)]
        .into_iter()
        .collect()
}

fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        // Local pods, remote pods, the fabric, anything.
        (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Ipv4Addr::new(10, 1, a, b)),
        (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Ipv4Addr::new(10, 2, a, b)),
        (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Ipv4Addr::new(172, 16, a, b)),
        any::<u32>().prop_map(Ipv4Addr::from),
    ]
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        4 => ipv4().prop_map(IpAddr::V4),
        1 => any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
    ]
}

fn any_prefix() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (ipv4(), 0u8..=32).prop_map(|(ip, l)| IpNet::new(IpAddr::V4(ip), l).unwrap().trunc()),
        (any::<u128>(), 0u8..=128).prop_map(|(n, l)| {
            IpNet::new(IpAddr::V6(Ipv6Addr::from(n)), l)
                .unwrap()
                .trunc()
        }),
    ]
}

/// One thing a remote does to its identities.
#[derive(Debug, Clone)]
enum IdentityOp {
    Upsert(u32, String, String),
    Delete(u32),
}

fn identity_op() -> impl Strategy<Value = IdentityOp> {
    prop_oneof![
        (any_identity(), cluster_name(), "[a-z]{1,4}")
            .prop_map(|(id, c, app)| IdentityOp::Upsert(id, c, app)),
        any_identity().prop_map(IdentityOp::Delete),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Accepted identities are in the remote's block, not reserved, and
    /// name the remote.
    #[test]
    fn identity_validator_accepts_only_the_remotes_own(
        id in any_identity(),
        cluster in cluster_name(),
        app in "[a-z]{1,4}",
    ) {
        let (name, cid) = remote();
        let validate = remote_identity_validator(&name, cid, MODE);
        let entry = IdentityEntry { id: NumericIdentity::new(id), labels: labels(cluster.clone(), app) };
        if validate(&id.to_string(), &entry).is_ok() {
            prop_assert!(!entry.id.is_reserved());
            prop_assert!(IdentityRange::block(cid, MODE).contains(entry.id));
            prop_assert_eq!(cluster, "c2");
        }
    }

    /// Whatever a remote upserts and deletes, through the validator or
    /// not, reserved and local identities keep their labels.
    #[test]
    fn no_remote_sequence_replaces_a_reserved_or_local_identity(
        ops in proptest::collection::vec(identity_op(), 1..40),
        through_validator in any::<bool>(),
    ) {
        let (name, cid) = remote();
        let validate = remote_identity_validator(&name, cid, MODE);
        let mut t = Tables::new();
        let local_ids = [LOCAL_ID << 16 | 300, LOCAL_ID << 16 | 301];
        for (i, id) in local_ids.iter().enumerate() {
            let source = if i == 0 { SourceId::LOCAL_ENDPOINTS } else { SourceId::LOCAL_CLUSTER };
            t.upsert_identity(source, NumericIdentity::new(*id), labels("c1".into(), format!("local{i}")));
        }
        let before: BTreeMap<NumericIdentity, Labels> = t
            .identities
            .iter()
            .filter(|(id, _)| id.is_reserved() || local_ids.contains(&id.get()))
            .map(|(id, l)| (*id, l.clone()))
            .collect();
        let source = SourceId(2);
        for op in ops {
            match op {
                IdentityOp::Upsert(id, cluster, app) => {
                    let entry = IdentityEntry { id: NumericIdentity::new(id), labels: labels(cluster, app) };
                    if !through_validator || validate(&id.to_string(), &entry).is_ok() {
                        t.upsert_identity(source, entry.id, entry.labels);
                    }
                }
                IdentityOp::Delete(id) => {
                    t.delete_identity(source, NumericIdentity::new(id));
                }
            }
            for (id, labels) in &before {
                prop_assert_eq!(t.identities.get(id), Some(labels), "identity {} changed", id);
            }
            for id in t.identities_of(source) {
                prop_assert!(!id.is_reserved() && !local_ids.contains(&id.get()));
            }
        }
    }

    /// Accepted ipcache entries are single addresses whose identity is the
    /// remote's or an allowed reserved one; what reaches the datapath is
    /// never a reserved identity a local policy entity could name, except
    /// remote-node and health.
    #[test]
    fn ipcache_validator_accepts_only_single_addresses_of_the_remote(
        ip in any_ip(),
        len in 0u8..=128,
        id in any_identity(),
        host in proptest::option::of(any_ip()),
    ) {
        let (name, cid) = remote();
        let validate = ipcache_validator(&name, cid, MODE);
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let pair = IpIdentityPair::host(ip, NumericIdentity::new(id), host).with_prefix_len(len.min(max));
        // Through the decoder first, as the watch does.
        let decoded = IpIdentityPair::decode(&pair.key(), &pair.encode());
        prop_assert!(decoded.is_ok(), "{:?}", decoded);
        let pair = decoded.unwrap();
        if validate(&pair.key(), &pair).is_ok() {
            let prefix = pair.prefix();
            prop_assert_eq!(prefix.prefix_len(), prefix.max_prefix_len());
            let block = IdentityRange::block(cid, MODE);
            prop_assert!(block.contains(pair.id) || REMOTE_IPCACHE_RESERVED.contains(&pair.id));
            let entry = IpEntry::from_pair(&pair, true);
            prop_assert!(
                block.contains(entry.identity)
                    || entry.identity == NumericIdentity::REMOTE_NODE
                    || entry.identity == NumericIdentity::HEALTH
            );
        }
    }

    /// Remote ipcache claims never displace a local claim of the same
    /// address.
    #[test]
    fn local_ipcache_claims_win(
        addrs in proptest::collection::vec(ipv4(), 1..20),
        ids in proptest::collection::vec(any_identity(), 20),
    ) {
        let mut t = Tables::new();
        for (i, ip) in addrs.iter().enumerate() {
            let p = IpNet::from(IpAddr::V4(*ip));
            let local = IpEntry { identity: NumericIdentity::new(LOCAL_ID << 16 | 300), host_ip: None };
            if i % 2 == 0 {
                t.upsert_ip(SourceId::LOCAL_CLUSTER, p, local);
            }
            t.upsert_ip(SourceId(2), p, IpEntry { identity: NumericIdentity::new(ids[i]), host_ip: None });
            if i % 2 == 0 {
                prop_assert_eq!(t.ip_winner(&p), Some(local));
            }
        }
    }

    /// Random bytes never crash a decoder, and nothing a remote's node or
    /// service validator accepts names another cluster.
    #[test]
    fn hostile_bytes_and_foreign_values_are_refused(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        node_cluster in cluster_name(),
        node_name in "[a-z0-9/.]{0,8}",
        node_id in 0u32..600,
        svc_cluster in cluster_name(),
        svc_id in 0u32..600,
        backend in any_ip(),
    ) {
        let (name, cid) = remote();
        let _ = Node::decode("c2/n", &bytes);
        let _ = ClusterService::decode("c2/ns/s", &bytes);
        let _ = IpIdentityPair::decode("10.2.0.1", &bytes);
        let _ = IdentityEntry::decode("131372", &bytes);

        let json = serde_json::json!({"Name": node_name, "Cluster": node_cluster, "ClusterID": node_id});
        let key = format!("{node_cluster}/{node_name}");
        if let Ok(node) = Node::decode(&key, json.to_string().as_bytes())
            && node_validator(&name, cid)(&key, &node).is_ok()
        {
            prop_assert_eq!(&node.cluster, "c2");
            prop_assert!(node.cluster_id == REMOTE_ID || node.cluster_id == 0);
            prop_assert!(!node.name.contains('/') && !node.name.is_empty());
        }

        let svc_name = ClusterName::new(svc_cluster.as_str());
        if let Ok(svc_name) = svc_name {
            let mut svc = ClusterService::new(&svc_name, svc_id, "ns", "s");
            svc.backends.insert(backend.to_string(), BTreeMap::new());
            if let Ok(svc) = ClusterService::decode(&svc.key(), &svc.encode())
                && service_validator(&name, cid)(&svc.key(), &svc).is_ok()
            {
                prop_assert_eq!(&svc.cluster, "c2");
                prop_assert_eq!(svc.cluster_id, REMOTE_ID);
                prop_assert!(!backend.is_loopback() && !backend.is_unspecified() && !backend.is_multicast());
            }
        }
    }

    /// Whatever CIDRs remote nodes claim, no route goes into local space,
    /// none is wider than the minimum, each stays in its remote's pool, and
    /// no two remotes' routes overlap; the local cluster's own routes are
    /// all there.
    #[test]
    fn no_route_into_local_space(
        claims in proptest::collection::vec(
            (prop_oneof![Just("c2"), Just("c3"), Just("c4")], any_prefix(), ipv4()),
            0..24,
        ),
        c3_pool_known in any::<bool>(),
        installed_first in any::<bool>(),
    ) {
        let local_pools: Vec<IpNet> = vec!["10.1.0.0/16".parse().unwrap()];
        let host: Vec<IpNet> = vec!["172.16.0.0/16".parse().unwrap(), "127.0.0.0/8".parse().unwrap()];
        let own: IpNet = "10.1.1.0/24".parse().unwrap();
        let mut nodes: BTreeMap<String, BTreeMap<String, Node>> = BTreeMap::new();
        let mut add = |cluster: &str, name: String, via: Ipv4Addr, cidr: IpNet| {
            let mut n = Node::new(&ClusterName::new(cluster).unwrap(), name.clone(), 0);
            n.ip_addresses.push(NodeAddress { kind: NodeAddress::INTERNAL_IP.into(), ip: IpAddr::V4(via) });
            if cidr.addr().is_ipv4() {
                n.ipv4_alloc_cidr = Some(NodeCidr::from_net(cidr));
            } else {
                n.ipv6_alloc_cidr = Some(NodeCidr::from_net(cidr));
            }
            nodes.entry(cluster.to_string()).or_default().insert(name, n);
        };
        add("c1", "n1".into(), Ipv4Addr::new(172, 16, 1, 11), own);
        add("c1", "n2".into(), Ipv4Addr::new(172, 16, 1, 12), "10.1.2.0/24".parse().unwrap());
        for (i, (cluster, cidr, via)) in claims.iter().enumerate() {
            add(cluster, format!("n{i}"), *via, *cidr);
        }
        let mut remote_pools = BTreeMap::new();
        if c3_pool_known {
            remote_pools.insert("c3".to_string(), vec!["10.3.0.0/16".parse::<IpNet>().unwrap()]);
        }
        let plan_with = |installed: &BTreeMap<IpNet, IpAddr>| {
            route_plan::plan(&RouteInputs {
                local_cluster: "c1",
                local_node: "n1",
                own_pod_cidrs: &[own],
                local_pools: &local_pools,
                host_networks: &host,
                nodes: &nodes,
                remote_pools: &remote_pools,
                installed,
            })
        };
        let mut plan = plan_with(&BTreeMap::new());
        if installed_first {
            // A second round with the first one's routes in place.
            plan = plan_with(&plan.routes.clone());
        }
        prop_assert_eq!(plan.routes.get(&"10.1.2.0/24".parse().unwrap()), Some(&"172.16.1.12".parse::<IpAddr>().unwrap()));
        prop_assert!(!plan.routes.contains_key(&own));
        let owner = |cidr: &IpNet, via: &IpAddr| -> Option<String> {
            nodes.iter().find_map(|(c, ns)| {
                ns.values()
                    .any(|n| n.internal_ip() == Some(*via) && n.pod_cidrs().iter().any(|p| p.trunc() == *cidr))
                    .then(|| c.clone())
            })
        };
        let mut remote_routes = Vec::new();
        for (cidr, via) in &plan.routes {
            let cluster = owner(cidr, via).expect("every route is some node's claim");
            if cluster == "c1" {
                continue;
            }
            prop_assert!(cidr.prefix_len() >= MIN_REMOTE_PREFIX_V4, "{} too wide", cidr);
            for local in local_pools.iter().chain(&host).chain([&own]) {
                prop_assert!(!overlaps(local, cidr), "{} overlaps local {}", cidr, local);
            }
            if let Some(pools) = remote_pools.get(&cluster) {
                prop_assert!(pools.iter().any(|p| p.contains(cidr)), "{} outside {}'s pool", cidr, cluster);
            }
            remote_routes.push((cluster, *cidr));
        }
        for (i, (ca, a)) in remote_routes.iter().enumerate() {
            for (cb, b) in &remote_routes[i + 1..] {
                prop_assert!(ca == cb || !overlaps(a, b), "{}:{} and {}:{} overlap", ca, a, cb, b);
            }
        }
    }
}
