//! The loop driven by event lists, with the maps in memory: no kernel, no
//! root, no etcd (as kube-runtime's reflector tests drive a store).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, mpsc::Receiver},
    time::Duration,
};

use bpf::{IpCacheKey, IpCacheValue, L4Match, PolicyKey};
use ipnet::IpNet;
use kvstore::{
    ClusterName, Event, Labels, NumericIdentity,
    values::{IdentityEntry, IpIdentityPair, Node, PolicyDocument},
};
use tokio::sync::oneshot;

use super::{Answer, ControlLoop, Input, IpEvent, LoopConfig, Query, StoreKind};
use crate::{
    datapath_maps::{MapOps, MemoryDatapath},
    datapath_sync::DatapathSync,
    endpoint::{self, Endpoint, EndpointId},
    metrics::AgentMetrics,
    routes::{self, RouteRequest},
    tables::SourceId,
};

const C2: SourceId = SourceId(2);
const NAMESPACE: &str = "demo";
/// Identities of the local cluster (ID 1) and of c2 (ID 2, its own block).
const WEB: u32 = 1 << 16 | 300;
const CLIENT: u32 = 1 << 16 | 301;
const C2_CLIENT: u32 = 2 << 16 | 5;
const C2_OTHER: u32 = 2 << 16 | 6;

/// Clients of this cluster (a selector without a cluster label selects
/// the local cluster only).
const WEB_ALLOWS_CLIENTS: &str = "kind: CiliumNetworkPolicy
metadata: {name: web, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
";

/// Clients of c2.
const WEB_ALLOWS_C2_CLIENTS: &str = "kind: CiliumNetworkPolicy
metadata: {name: web, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client, io.cilium.k8s.policy.cluster: c2}}]
";

fn cluster(name: &str) -> ClusterName {
    ClusterName::new(name).unwrap()
}

/// The security labels of a pod `app=<app>` in `cluster`.
fn labels(app: &str, cluster_name: &str) -> Labels {
    endpoint::security_labels(
        &BTreeMap::from([("app".to_string(), app.to_string())]),
        NAMESPACE,
        &cluster(cluster_name),
    )
}

fn identity(source: SourceId, id: u32, labels: Labels) -> Input {
    Input::Identity(
        source,
        Event::Upsert {
            key: id.to_string(),
            value: IdentityEntry {
                id: NumericIdentity::new(id),
                labels,
            },
        },
    )
}

fn identity_deleted(source: SourceId, id: u32) -> Input {
    Input::Identity(
        source,
        Event::Delete {
            key: id.to_string(),
        },
    )
}

fn ip(source: SourceId, address: &str, id: u32) -> Input {
    let pair = IpIdentityPair::host(address.parse().unwrap(), NumericIdentity::new(id), None);
    Input::Ip(
        source,
        IpEvent::from_event(
            Event::Upsert {
                key: address.into(),
                value: pair,
            },
            !source.is_local(),
        ),
    )
}

fn prefix(address: &str) -> IpNet {
    IpNet::from(address.parse::<IpAddr>().unwrap())
}

/// An allow-all-ports ingress entry of endpoint `endpoint`'s policy for
/// `identity`.
struct PolicyEntry {
    endpoint: u32,
    identity: u32,
}

fn policy_key(endpoint: u32, identity: u32) -> PolicyEntry {
    PolicyEntry { endpoint, identity }
}

/// `demo/web` is `policy`, web and the client have identities, and the
/// local cluster has synced.
fn web_policy_synced(policy: &str) -> Vec<Input> {
    let mut inputs = vec![
        Input::Policy(Event::Upsert {
            key: "demo/web".into(),
            value: PolicyDocument::parse(policy).unwrap(),
        }),
        identity(SourceId::LOCAL_CLUSTER, WEB, labels("web", "c1")),
        identity(SourceId::LOCAL_CLUSTER, CLIENT, labels("client", "c1")),
    ];
    inputs.extend(synced(SourceId::LOCAL_CLUSTER, &StoreKind::LOCAL));
    inputs
}

/// Every kind of `source` says its initial list is complete.
fn synced(source: SourceId, kinds: &[StoreKind]) -> Vec<Input> {
    kinds
        .iter()
        .map(|kind| Input::synced(source, *kind))
        .collect()
}

fn register_c2() -> Input {
    Input::RegisterSource {
        id: C2,
        name: "c2".into(),
        cluster_id: 2,
        kinds: StoreKind::REMOTE.to_vec(),
        pod_cidr_pools: vec!["10.2.0.0/16".parse().unwrap()],
    }
}

fn pod(id: u32, app: &str, address: Ipv4Addr, identity: u32) -> Endpoint {
    Endpoint {
        id: EndpointId::new(id),
        name: format!("{app}-{id}"),
        namespace: NAMESPACE.into(),
        netns: "/nonexistent".into(),
        ifname: "eth0".into(),
        host_ifname: endpoint::host_ifname(EndpointId::new(id)),
        ip: address,
        ipv6: None,
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
        identity,
        ifindex: None,
        pod: None,
        ports: Vec::new(),
    }
}

/// A loop of cluster c1 over maps in memory.
struct Harness {
    control: ControlLoop,
    maps: MemoryDatapath,
    routes: Receiver<RouteRequest>,
}

impl Harness {
    /// A loop whose pinned maps hold `maps` from before a restart.
    fn with_maps(maps: MemoryDatapath) -> Self {
        let dp = DatapathSync::new(Box::new(maps.clone()), None).unwrap();
        let (route_handle, routes) = routes::channel();
        let (mut control, _handle) = ControlLoop::new(
            LoopConfig {
                cluster: cluster("c1"),
                cluster_id: 1,
                node_name: "n1".parse().unwrap(),
                node_ip: "192.168.1.1".parse().unwrap(),
                sync_timeout: Duration::from_secs(60),
                pod_cidr_pools: vec!["10.1.0.0/16".parse().unwrap()],
            },
            dp,
            route_handle,
            Arc::new(AgentMetrics::new()),
        );
        control.set_pod_cidrs(vec!["10.1.0.0/24".parse().unwrap()]);
        Self {
            control,
            maps,
            routes,
        }
    }

    fn new() -> Self {
        Self::with_maps(MemoryDatapath::default())
    }

    /// One batch, as the loop receives it.
    fn step(&mut self, inputs: impl IntoIterator<Item = Input>) {
        self.control.step_now(inputs);
    }

    fn attach(&mut self, endpoint: Endpoint) -> u32 {
        let (tx, mut rx) = oneshot::channel();
        self.step([Input::Attach(endpoint, tx)]);
        rx.try_recv().unwrap().unwrap()
    }

    fn detach(&mut self, endpoint: Endpoint) {
        let (tx, mut rx) = oneshot::channel();
        self.step([Input::Detach(endpoint, tx)]);
        rx.try_recv().unwrap().unwrap();
    }

    /// Identity → its labels, as `debug identities` shows them.
    fn identities(&mut self) -> BTreeMap<u32, String> {
        match self.control.answer(Query::Identities) {
            Answer::Identities(all) => all.into_iter().map(|v| (v.id, v.labels)).collect(),
            _ => unreachable!(),
        }
    }

    fn ipcache(&self) -> BTreeMap<IpCacheKey, IpCacheValue> {
        self.maps.ipcache.content()
    }

    /// The policy endpoint `endpoint` follows, as written.
    fn endpoint_policy(&self, endpoint: u32) -> bpf::EndpointPolicy {
        self.maps
            .endpoints
            .content()
            .into_values()
            .find(|i| i.endpoint_id == endpoint)
            .expect("the endpoint is written")
            .policy()
    }

    fn has_policy(&self, entry: PolicyEntry) -> bool {
        let Some(info) = self
            .maps
            .endpoints
            .content()
            .into_values()
            .find(|i| i.endpoint_id == entry.endpoint)
        else {
            return false;
        };
        let key = PolicyKey::ingress(info.policy().policy_id, entry.identity, L4Match::Any);
        self.maps.policy.content().contains_key(&key)
    }

    /// The latest route request, if one came since the last look.
    fn last_route_request(&self) -> Option<RouteRequest> {
        self.routes.try_iter().last()
    }
}

#[test]
fn deletions_wait_until_every_source_synced() {
    // Before the restart the pinned maps held an address nobody claims now.
    let maps = MemoryDatapath::default();
    let stale = IpCacheKey::new(prefix("10.1.0.99"));
    maps.ipcache
        .batch_upsert(&[(stale, IpCacheValue::new(CLIENT))])
        .unwrap();
    let mut h = Harness::with_maps(maps);
    h.step([
        register_c2(),
        Input::Policy(Event::Upsert {
            key: "demo/web".into(),
            value: PolicyDocument::parse(WEB_ALLOWS_CLIENTS).unwrap(),
        }),
        identity(SourceId::LOCAL_CLUSTER, WEB, labels("web", "c1")),
        identity(SourceId::LOCAL_CLUSTER, CLIENT, labels("client", "c1")),
    ]);
    h.attach(pod(7, "web", Ipv4Addr::new(10, 1, 0, 10), WEB));
    assert!(
        h.has_policy(policy_key(7, CLIENT)),
        "the client is admitted"
    );
    h.step(synced(SourceId::LOCAL_CLUSTER, &StoreKind::LOCAL));

    // c2 has not synced: a removal is computed but not written.
    h.step([identity_deleted(SourceId::LOCAL_CLUSTER, CLIENT)]);
    assert!(!h.identities().contains_key(&CLIENT));
    assert!(
        h.has_policy(policy_key(7, CLIENT)),
        "held back while c2 is not synced"
    );
    assert!(h.ipcache().contains_key(&stale), "held back too");
    assert!(
        h.last_route_request().is_none(),
        "no routes before the sync"
    );

    // c2 synced: the view is complete and the deletions are written.
    h.step(synced(C2, &StoreKind::REMOTE));
    assert!(!h.has_policy(policy_key(7, CLIENT)));
    assert!(!h.ipcache().contains_key(&stale));
    assert!(
        h.ipcache()
            .contains_key(&IpCacheKey::new(prefix("10.1.0.10"))),
        "the endpoint's own address stays"
    );
    assert!(
        h.maps
            .endpoints
            .content()
            .values()
            .any(|i| i.endpoint_id == 7 && i.policy().ingress)
    );
    assert!(h.last_route_request().is_some(), "routes once synced");
}

#[test]
fn a_remote_configured_at_start_keeps_its_entries_until_it_synced() {
    // Before the restart the pinned map held an address of c2's.
    let maps = MemoryDatapath::default();
    let c2_pod = IpCacheKey::new(prefix("10.2.0.7"));
    maps.ipcache
        .batch_upsert(&[(c2_pod, IpCacheValue::new(C2_CLIENT))])
        .unwrap();
    let mut h = Harness::with_maps(maps);
    h.control.expect_remote(C2, "c2", Vec::new());
    // The local cluster syncs before c2 has even connected.
    h.step(web_policy_synced(WEB_ALLOWS_CLIENTS));
    assert!(
        h.ipcache().contains_key(&c2_pod),
        "c2's entry stays while c2 has not synced"
    );
    // c2 connects and delivers its view, with the address in it.
    h.step([register_c2(), ip(C2, "10.2.0.7", C2_CLIENT)]);
    h.step(synced(C2, &StoreKind::REMOTE));
    assert_eq!(
        h.ipcache().get(&c2_pod),
        Some(&IpCacheValue::new(C2_CLIENT)),
        "still there after the sync"
    );
}

#[test]
fn a_failed_write_stays_queued_and_is_tried_again() {
    let mut h = Harness::new();
    h.step([register_c2()]);
    let addresses = ["10.2.0.1", "10.2.0.2", "10.2.0.3"];
    h.maps.ipcache.fail_next_batch(1);
    h.step(addresses.map(|a| ip(C2, a, C2_CLIENT)));
    assert_eq!(
        h.ipcache().len(),
        1,
        "the kernel stopped after one entry of the batch"
    );
    let (at, _) = h.control.retry.expect("a retry is scheduled");
    assert!(at <= tokio::time::Instant::now() + super::RETRY_MIN);

    // The retry (the loop's timer) writes the rest, with no new input.
    h.control.apply();
    assert!(h.control.retry.is_none(), "written: no more retries");
    for a in addresses {
        assert_eq!(
            h.ipcache().get(&IpCacheKey::new(prefix(a))),
            Some(&IpCacheValue::new(C2_CLIENT)),
            "{a} is written"
        );
    }
}

#[test]
fn failed_writes_back_off() {
    let mut h = Harness::new();
    h.step([register_c2()]);
    h.maps.ipcache.fail_next_batch(0);
    h.step([ip(C2, "10.2.0.1", C2_CLIENT)]);
    let (_, next) = h.control.retry.unwrap();
    assert_eq!(next, super::RETRY_MIN * 2);
    for _ in 0..10 {
        h.maps.ipcache.fail_next_batch(0);
        h.control.apply();
    }
    let (at, next) = h.control.retry.unwrap();
    assert_eq!(next, super::RETRY_MAX, "doubling stops at the maximum");
    assert!(at > tokio::time::Instant::now() + super::RETRY_MAX / 2);
    assert!(h.ipcache().is_empty());
    h.control.apply();
    assert_eq!(h.ipcache().len(), 1);
}

#[test]
fn a_removed_cluster_is_drained() {
    let mut h = Harness::new();
    let mut node = Node::new(&cluster("c2"), "c2-n1", 2);
    node.ipv4_alloc_cidr = Some(kvstore::values::NodeCidr::from_net(
        "10.2.1.0/24".parse().unwrap(),
    ));
    h.step([register_c2()]);
    h.step(
        [
            identity(C2, C2_CLIENT, labels("client", "c2")),
            ip(C2, "10.2.1.5", C2_CLIENT),
            Input::Node(
                C2,
                Event::Upsert {
                    key: "c2/c2-n1".into(),
                    value: node,
                },
            ),
        ]
        .into_iter()
        .chain(synced(SourceId::LOCAL_CLUSTER, &StoreKind::LOCAL))
        .chain(synced(C2, &StoreKind::REMOTE)),
    );
    let c2_address = IpCacheKey::new(prefix("10.2.1.5"));
    assert_eq!(
        h.ipcache().get(&c2_address).map(|v| v.sec_identity),
        Some(C2_CLIENT)
    );
    assert!(h.identities().contains_key(&C2_CLIENT));
    let routes = h
        .last_route_request()
        .expect("routes requested once synced");
    assert!(routes.nodes.contains_key("c2"));
    assert!(routes.remote_pools.contains_key("c2"));

    h.step([Input::RemoveSource(C2)]);
    assert!(!h.ipcache().contains_key(&c2_address));
    assert!(!h.identities().contains_key(&C2_CLIENT));
    let routes = h.last_route_request().expect("routes planned again");
    assert!(!routes.nodes.contains_key("c2"), "{:?}", routes.nodes);
    assert!(!routes.remote_pools.contains_key("c2"));
    match h.control.answer(Query::Status) {
        Answer::Status(s) => assert!(s.sources.iter().all(|s| s.name != "c2")),
        _ => unreachable!(),
    }
}

#[test]
fn an_identity_from_two_sources_stays_until_both_let_go() {
    let mut h = Harness::new();
    h.step([register_c2()]);
    h.step(
        synced(SourceId::LOCAL_CLUSTER, &StoreKind::LOCAL)
            .into_iter()
            .chain(synced(C2, &StoreKind::REMOTE)),
    );
    // The local cluster's etcd and a local endpoint both know WEB.
    h.step([identity(SourceId::LOCAL_CLUSTER, WEB, labels("web", "c1"))]);
    let web = pod(7, "web", Ipv4Addr::new(10, 1, 0, 10), WEB);
    h.attach(web.clone());
    let web_labels = h.identities()[&WEB].clone();
    assert!(web_labels.contains("app=web"), "{web_labels}");

    // A remote may not take it over.
    h.step([identity(C2, WEB, labels("evil", "c2"))]);
    assert_eq!(h.identities()[&WEB], web_labels);

    // One source lets go: the other still has it.
    h.step([identity_deleted(SourceId::LOCAL_CLUSTER, WEB)]);
    assert_eq!(h.identities().get(&WEB), Some(&web_labels));
    // The remote's delete removes nothing it does not hold.
    h.step([identity_deleted(C2, WEB)]);
    assert_eq!(h.identities().get(&WEB), Some(&web_labels));

    // Both let go: it is gone.
    h.detach(web);
    assert!(!h.identities().contains_key(&WEB));
}

#[test]
fn a_new_remote_identity_updates_the_policy() {
    let mut h = Harness::new();
    h.step([
        register_c2(),
        Input::Policy(Event::Upsert {
            key: "demo/web".into(),
            value: PolicyDocument::parse(WEB_ALLOWS_C2_CLIENTS).unwrap(),
        }),
        identity(SourceId::LOCAL_CLUSTER, WEB, labels("web", "c1")),
    ]);
    h.attach(pod(7, "web", Ipv4Addr::new(10, 1, 0, 10), WEB));
    h.step(
        synced(SourceId::LOCAL_CLUSTER, &StoreKind::LOCAL)
            .into_iter()
            .chain(synced(C2, &StoreKind::REMOTE)),
    );
    assert!(!h.has_policy(policy_key(7, C2_CLIENT)));

    h.step([
        identity(C2, C2_CLIENT, labels("client", "c2")),
        identity(C2, C2_OTHER, labels("other", "c2")),
    ]);
    assert!(
        h.has_policy(policy_key(7, C2_CLIENT)),
        "a client in c2 is admitted as soon as its identity arrives"
    );
    assert!(!h.has_policy(policy_key(7, C2_OTHER)), "others are not");

    h.step([identity_deleted(C2, C2_CLIENT)]);
    assert!(!h.has_policy(policy_key(7, C2_CLIENT)));
}

#[test]
fn before_the_sync_each_endpoint_keeps_its_own_policy_from_before_a_restart() {
    // What the pinned maps held before the restart: endpoint 7 (web)
    // enforced ingress under policy 7 admitting CLIENT; endpoint 8 open.
    let maps = MemoryDatapath::default();
    let admit = PolicyKey::ingress(7, CLIENT, L4Match::Any);
    maps.policy
        .batch_upsert(&[(admit, bpf::PolicyValue::ALLOW)])
        .unwrap();
    maps.endpoints
        .batch_upsert(&[
            (
                bpf::EndpointKey { ifindex: 1007 },
                bpf::EndpointInfo::new(7, WEB, bpf::EndpointPolicy::ingress(7)),
            ),
            (
                bpf::EndpointKey { ifindex: 1008 },
                bpf::EndpointInfo::new(8, CLIENT, bpf::EndpointPolicy::open()),
            ),
        ])
        .unwrap();
    let mut h = Harness::with_maps(maps);
    // The policy is not readable yet (no source synced): both endpoints
    // come back with the same (empty) rules. They must not share a policy:
    // web keeps policy 7 and its entries, enforced.
    h.attach(pod(8, "client", Ipv4Addr::new(10, 1, 0, 11), CLIENT));
    h.attach(pod(7, "web", Ipv4Addr::new(10, 1, 0, 10), WEB));
    let web = h.endpoint_policy(7);
    assert_eq!(
        (web.policy_id, web.ingress),
        (7, true),
        "web keeps policy 7"
    );
    let client = h.endpoint_policy(8);
    assert_ne!(
        client.policy_id, 7,
        "the client does not follow web's entries"
    );
    assert!(h.has_policy(policy_key(7, CLIENT)), "web's entries stay");

    // Synced with the policy: web is enforced by its rules; the client,
    // selected by nothing, is open again.
    h.step(web_policy_synced(WEB_ALLOWS_CLIENTS));
    assert!(
        h.has_policy(policy_key(7, CLIENT)),
        "the client is admitted"
    );
    let client = h.endpoint_policy(8);
    assert!(!client.enforced(), "nothing selects the client");
}

#[test]
fn endpoints_with_equal_rules_share_one_policy() {
    let mut h = Harness::new();
    h.step(web_policy_synced(WEB_ALLOWS_CLIENTS));
    h.attach(pod(7, "web", Ipv4Addr::new(10, 1, 0, 10), WEB));
    h.attach(pod(9, "web", Ipv4Addr::new(10, 1, 0, 12), WEB));
    let infos = h.maps.endpoints.content();
    let ids: BTreeSet<u32> = infos.values().map(|i| i.policy().policy_id).collect();
    assert_eq!(ids.len(), 1, "one policy for both replicas: {infos:?}");
    let entries = h.maps.policy.content().len();
    assert!(h.has_policy(policy_key(9, CLIENT)));
    // A policy change rewrites the shared policy in place.
    h.step([Input::Policy(Event::Delete {
        key: "demo/web".into(),
    })]);
    assert!(!h.has_policy(policy_key(7, CLIENT)));
    assert!(h.maps.policy.content().len() < entries);
    let infos = h.maps.endpoints.content();
    assert!(infos.values().all(|i| !i.policy().enforced()));
}

#[test]
fn a_dual_stack_endpoint_has_an_ipcache_entry_per_family() {
    let mut h = Harness::new();
    h.step([
        register_c2(),
        identity(SourceId::LOCAL_CLUSTER, WEB, labels("web", "c1")),
        identity(C2, C2_CLIENT, labels("client", "c2")),
    ]);
    let mut web = pod(7, "web", Ipv4Addr::new(10, 1, 0, 10), WEB);
    web.ipv6 = Some("fd10:1::a".parse().unwrap());
    h.attach(web.clone());
    let entry = |h: &Harness, a: &str| h.ipcache().get(&IpCacheKey::new(prefix(a))).copied();
    for address in ["10.1.0.10", "fd10:1::a"] {
        let value = entry(&h, address).unwrap_or_else(|| panic!("{address} is programmed"));
        assert_eq!(value.sec_identity, WEB, "{address}");
        assert_eq!(
            value.tunnel_endpoint(),
            Some("192.168.1.1".parse().unwrap()),
            "{address}"
        );
    }
    // A remote cluster's IPv6 entry reaches the map like an IPv4 one.
    h.step([
        ip(C2, "10.2.1.5", C2_CLIENT),
        ip(C2, "fd10:2:0:1::5", C2_CLIENT),
    ]);
    assert_eq!(
        entry(&h, "10.2.1.5").map(|v| v.sec_identity),
        Some(C2_CLIENT)
    );
    assert_eq!(
        entry(&h, "fd10:2:0:1::5").map(|v| v.sec_identity),
        Some(C2_CLIENT)
    );
    h.detach(web);
    assert_eq!(entry(&h, "10.1.0.10"), None);
    assert_eq!(entry(&h, "fd10:1::a"), None, "both families are withdrawn");
}

#[test]
fn named_ports_resolve_to_what_the_endpoint_declares() {
    let mut h = Harness::new();
    let policy = "kind: CiliumNetworkPolicy
metadata: {name: web, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: http, protocol: TCP}]}]
";
    h.step(web_policy_synced(policy));
    let mut declares = pod(7, "web", Ipv4Addr::new(10, 1, 0, 10), WEB);
    declares.ports = vec![endpoint::NamedPort {
        name: "http".into(),
        port: 8080,
        protocol: "TCP".into(),
    }];
    h.attach(declares);
    h.attach(pod(9, "web", Ipv4Addr::new(10, 1, 0, 12), WEB));
    let policy_of = |ep: u32| h.endpoint_policy(ep).policy_id;
    let entries = h.maps.policy.content();
    let http = |ep: u32| {
        entries.contains_key(&PolicyKey::ingress(
            policy_of(ep),
            CLIENT,
            L4Match::Port(bpf::Protocol::Tcp, 8080),
        ))
    };
    assert!(http(7), "the declared port is admitted");
    assert!(!http(9), "an endpoint that declares nothing admits nothing");
    assert_ne!(policy_of(7), policy_of(9), "their policies differ");
}

#[test]
fn egress_named_ports_follow_what_the_mesh_declares() {
    let mut h = Harness::new();
    let policy = "kind: CiliumNetworkPolicy
metadata: {name: client, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: [{matchLabels: {app: web, io.cilium.k8s.policy.cluster: c2}}]
    toPorts: [{ports: [{port: http, protocol: TCP}]}]
";
    h.step(web_policy_synced(policy));
    h.step([identity(C2, C2_CLIENT, labels("web", "c2"))]);
    h.attach(pod(7, "client", Ipv4Addr::new(10, 1, 0, 10), CLIENT));
    let http = |h: &Harness, port: u16| {
        h.maps.policy.content().contains_key(&PolicyKey::egress(
            h.endpoint_policy(7).policy_id,
            C2_CLIENT,
            L4Match::Port(bpf::Protocol::Tcp, port),
        ))
    };
    assert!(!http(&h, 8080), "nothing declares `http` yet");
    // A remote endpoint declares `http` in its ipcache entry.
    let mut pair = IpIdentityPair::host(
        "10.2.1.5".parse().unwrap(),
        NumericIdentity::new(C2_CLIENT),
        None,
    );
    pair.named_ports = vec![kvstore::values::NamedPort {
        name: "http".into(),
        port: 8080,
        protocol: "TCP".into(),
    }];
    let upsert = |pair: &IpIdentityPair| {
        Input::Ip(
            C2,
            IpEvent::from_event(
                Event::Upsert {
                    key: pair.ip.to_string(),
                    value: pair.clone(),
                },
                true,
            ),
        )
    };
    h.step([upsert(&pair)]);
    assert!(http(&h, 8080), "the declared port is allowed");
    // It moves to another port: the old one closes.
    pair.named_ports[0].port = 8443;
    h.step([upsert(&pair)]);
    assert!(http(&h, 8443) && !http(&h, 8080));
    // The entry goes: nothing declares `http` any more.
    h.step([Input::Ip(
        C2,
        IpEvent::from_event(
            Event::Delete {
                key: "10.2.1.5".into(),
            },
            true,
        ),
    )]);
    assert!(!http(&h, 8443), "a name nobody declares matches nothing");
}

#[test]
fn learned_addresses_become_policy_before_the_answer_goes_and_expire() {
    let mut h = Harness::new();
    let policy = "kind: CiliumNetworkPolicy
metadata: {name: client, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toCIDR: [192.0.2.53/32]
    toPorts:
    - ports: [{port: '53', protocol: UDP}]
      rules: {dns: [{matchPattern: '*.example.com'}]}
  - toFQDNs: [{matchPattern: '*.example.com'}]
    toPorts: [{ports: [{port: '443', protocol: TCP}]}]
";
    h.step(web_policy_synced(policy));
    h.attach(pod(7, "client", Ipv4Addr::new(10, 1, 0, 10), CLIENT));
    let policy_id = h.endpoint_policy(7).policy_id;
    // The DNS rule's entry sends lookups to the proxy; its port is the
    // default one.
    let dns = h
        .maps
        .policy
        .content()
        .into_iter()
        .find(|(k, _)| k.policy_id == policy_id && k.l4() == L4Match::Port(bpf::Protocol::Udp, 53))
        .expect("an entry for the DNS server");
    assert_eq!(
        dns.1.proxy_port(),
        crate::policy_resolver::DEFAULT_DNS_PROXY_PORT
    );
    // Nothing learned: toFQDNs allows nothing.
    let https = |h: &Harness| {
        h.maps
            .policy
            .content()
            .into_iter()
            .filter(|(k, v)| {
                k.policy_id == policy_id
                    && k.l4() == L4Match::Port(bpf::Protocol::Tcp, 443)
                    && v.proxy_port() == 0
            })
            .map(|(k, _)| k.sec_identity)
            .collect::<Vec<_>>()
    };
    assert!(https(&h).is_empty());

    // An answer: the address gets an identity, an ipcache entry and the
    // policy entry, written in the batch that says `done`.
    let (done, mut written) = oneshot::channel();
    h.step([Input::FqdnLearned(super::FqdnLearned {
        endpoint: EndpointId::new(7),
        name: fqdn::DnsName::new("api.example.com").unwrap(),
        ips: vec![fqdn::LearnedIp {
            ip: "203.0.113.7".parse().unwrap(),
            ttl: 0,
        }],
        done: Some(done),
    })]);
    assert!(written.try_recv().is_ok(), "told once the batch is written");
    let learned = h
        .ipcache()
        .into_iter()
        .find(|(k, _)| k.net() == Some(prefix("203.0.113.7")))
        .expect("the learned address is in the ipcache")
        .1
        .sec_identity;
    assert!(NumericIdentity::new(learned).is_local_scope());
    assert!(
        h.identities()[&learned].contains("fqdn:*.example.com."),
        "{:?}",
        h.identities()[&learned]
    );
    assert_eq!(https(&h), vec![learned]);

    // TTL 0 (no minimum): the next tick withdraws it all.
    h.step([Input::FqdnTick]);
    assert!(
        !h.ipcache()
            .keys()
            .any(|k| k.net() == Some(prefix("203.0.113.7")))
    );
    assert!(https(&h).is_empty());
    assert!(!h.identities().contains_key(&learned));
}

#[test]
fn the_report_is_the_status_in_brief() {
    let mut h = Harness::new();
    h.step([register_c2()]);
    let down = crate::views::RemoteView {
        name: "c2".into(),
        connected: false,
        last_error_kind: Some("unreachable".into()),
        last_error: Some("connection refused".into()),
        ..Default::default()
    };
    let up = crate::views::RemoteView {
        name: "c3".into(),
        connected: true,
        ready: true,
        last_error: Some("an old error".into()),
        ..Default::default()
    };
    h.step([Input::RemoteStatus(vec![down, up])]);
    let Answer::Status(status) = h.control.answer(Query::Status) else {
        unreachable!()
    };
    let Answer::Report(report) = h.control.answer(Query::Report) else {
        unreachable!()
    };
    assert_eq!(report.node, status.node);
    assert_eq!(report.synced, status.synced);
    assert_eq!(report.maps, status.maps);
    assert_eq!(report.map_capacity, status.map_capacity);
    let remotes: Vec<_> = report
        .remotes
        .iter()
        .map(|r| (r.name.as_str(), r.connected, r.ready, r.error.as_deref()))
        .collect();
    assert_eq!(
        remotes,
        [
            ("c2", false, false, Some("unreachable: connection refused")),
            ("c3", true, true, None),
        ]
    );
}
