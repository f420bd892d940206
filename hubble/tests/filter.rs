//! Table-driven tests of `FlowFilters`: one table per `FlowFilter` field,
//! with the cases of Cilium's `pkg/hubble/filters/*_test.go` where they
//! exist, then allow/deny combination and the compile errors.

use hubble::filter::{FilterError, FlowFilters};
use hubble_api::flow::{
    CiliumEventType, DropReason, Endpoint, EventTypeFilter, Flow, FlowFilter, HttpHeader, Ip,
    IpTraceId, IpVersion, Layer4, NetworkInterface, Sctp, Service, Tcp, TcpFlags, TraceContext,
    TraceParent, TrafficDirection, Udp, Verdict, Workload, flow_filter::Experimental,
    layer4::Protocol,
};

/// A filter field under test: `(filter, [(flow, want)])`.
type Case = (FlowFilter, Vec<(Flow, bool)>);

fn check(name: &str, cases: Vec<Case>) {
    for (i, (filter, flows)) in cases.into_iter().enumerate() {
        let filters = FlowFilters::compile(std::slice::from_ref(&filter), &[])
            .unwrap_or_else(|e| panic!("{name} case {i}: {filter:?} does not compile: {e}"));
        for (j, (flow, want)) in flows.iter().enumerate() {
            assert_eq!(
                filters.matches(flow),
                *want,
                "{name} case {i} flow {j}\nfilter: {filter:?}\nflow: {flow:?}"
            );
        }
    }
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| (*s).to_owned()).collect()
}

fn ep(cluster: &str, namespace: &str, pod: &str) -> Option<Endpoint> {
    Some(Endpoint {
        cluster_name: cluster.to_owned(),
        namespace: namespace.to_owned(),
        pod_name: pod.to_owned(),
        ..Default::default()
    })
}

fn with_labels(labels: &[&str]) -> Option<Endpoint> {
    Some(Endpoint {
        labels: strings(labels),
        ..Default::default()
    })
}

fn from_pod(namespace: &str, pod: &str) -> Flow {
    Flow {
        source: ep("c1", namespace, pod),
        ..Default::default()
    }
}

fn to_pod(namespace: &str, pod: &str) -> Flow {
    Flow {
        destination: ep("c1", namespace, pod),
        ..Default::default()
    }
}

fn ips(source: &str, destination: &str) -> Flow {
    Flow {
        ip: Some(Ip {
            source: source.to_owned(),
            destination: destination.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn l4(protocol: Protocol) -> Flow {
    Flow {
        l4: Some(Layer4 {
            protocol: Some(protocol),
        }),
        ..Default::default()
    }
}

fn tcp(source_port: u32, destination_port: u32, flags: Option<TcpFlags>) -> Flow {
    l4(Protocol::Tcp(Tcp {
        source_port,
        destination_port,
        flags,
    }))
}

fn udp(source_port: u32, destination_port: u32) -> Flow {
    l4(Protocol::Udp(Udp {
        source_port,
        destination_port,
    }))
}

fn verdict(v: Verdict) -> Flow {
    Flow {
        verdict: v as i32,
        ..Default::default()
    }
}

fn dropped(reason: DropReason) -> Flow {
    Flow {
        verdict: Verdict::Dropped as i32,
        drop_reason_desc: reason as i32,
        ..Default::default()
    }
}

fn replied(verdict: Verdict, is_reply: Option<bool>) -> Flow {
    Flow {
        verdict: verdict as i32,
        is_reply,
        ..Default::default()
    }
}

fn event(r#type: i32, sub_type: i32) -> Flow {
    Flow {
        event_type: Some(CiliumEventType { r#type, sub_type }),
        ..Default::default()
    }
}

fn node(name: &str) -> Flow {
    Flow {
        node_name: name.to_owned(),
        ..Default::default()
    }
}

fn flags(f: impl FnOnce(&mut TcpFlags)) -> Option<TcpFlags> {
    let mut flags = TcpFlags::default();
    f(&mut flags);
    Some(flags)
}

#[test]
fn uuid() {
    let flow = |id: &str| Flow {
        uuid: id.to_owned(),
        ..Default::default()
    };
    check(
        "uuid",
        vec![(
            FlowFilter {
                uuid: strings(&["a", "b"]),
                ..Default::default()
            },
            vec![
                (flow("a"), true),
                (flow("b"), true),
                (flow("c"), false),
                (flow(""), false),
            ],
        )],
    );
}

#[test]
fn ip() {
    check(
        "ip",
        vec![
            (
                FlowFilter {
                    source_ip: strings(&["1.1.1.1", "10.0.0.0/8", "2001:db8::/32"]),
                    ..Default::default()
                },
                vec![
                    (ips("1.1.1.1", "2.2.2.2"), true),
                    (ips("10.1.2.3", "2.2.2.2"), true),
                    (ips("11.0.0.1", "10.1.1.1"), false),
                    (ips("2001:db8::1", "::1"), true),
                    (ips("2001:db9::1", "::1"), false),
                    // IPv4-mapped IPv6 is not in an IPv4 CIDR, as in Go.
                    (ips("::ffff:10.0.0.1", "::1"), false),
                    (ips("", ""), false),
                    (ips("garbage", ""), false),
                    (Flow::default(), false),
                ],
            ),
            (
                FlowFilter {
                    destination_ip: strings(&["2.2.2.2", "fd00::1"]),
                    ..Default::default()
                },
                vec![
                    (ips("1.1.1.1", "2.2.2.2"), true),
                    (ips("2.2.2.2", "1.1.1.1"), false),
                    // Exact match compares addresses, not spellings.
                    (ips("1.1.1.1", "fd00:0::1"), true),
                ],
            ),
            (
                FlowFilter {
                    // A host address in CIDR form is the network, as Go's ParsePrefix.
                    source_ip: strings(&["192.168.1.77/24"]),
                    destination_ip: strings(&["192.168.2.0/24"]),
                    ..Default::default()
                },
                vec![
                    (ips("192.168.1.1", "192.168.2.1"), true),
                    (ips("192.168.1.1", "192.168.3.1"), false),
                ],
            ),
            (
                FlowFilter {
                    source_ip_xlated: strings(&["100.64.0.0/10"]),
                    ..Default::default()
                },
                vec![
                    (
                        Flow {
                            ip: Some(Ip {
                                source: "10.0.0.1".into(),
                                source_xlated: "100.64.0.9".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        true,
                    ),
                    (ips("100.64.0.9", ""), false),
                ],
            ),
        ],
    );
}

#[test]
fn pod() {
    check(
        "pod",
        vec![
            (
                // Cilium's "source pod": a bare name is in "default".
                FlowFilter {
                    source_pod: strings(&["xwing", "default/tiefighter"]),
                    ..Default::default()
                },
                vec![
                    (from_pod("default", "xwing"), true),
                    (from_pod("default", "tiefighter"), true),
                    (from_pod("kube-system", "xwing"), false),
                    (to_pod("default", "xwing"), false),
                ],
            ),
            (
                FlowFilter {
                    destination_pod: strings(&["xwing", "default/tiefighter"]),
                    ..Default::default()
                },
                vec![
                    (to_pod("default", "xwing"), true),
                    (to_pod("default", "tiefighter"), true),
                    (to_pod("kube-system", "xwing"), false),
                    (from_pod("default", "xwing"), false),
                ],
            ),
            (
                // Prefixes, and a namespace alone.
                FlowFilter {
                    source_pod: strings(&["xwing", "kube-system/coredns-", "monitoring/"]),
                    ..Default::default()
                },
                vec![
                    (from_pod("default", "xwing-t-65b"), true),
                    (from_pod("kube-system", "coredns-12345"), true),
                    (from_pod("kube-system", "-coredns-12345"), false),
                    (from_pod("monitoring", "prometheus-0"), true),
                    (from_pod("default", "tiefighter"), false),
                    (from_pod("", "xwing"), false),
                    (Flow::default(), false),
                ],
            ),
            (
                // "/name": any namespace (flow.proto).
                FlowFilter {
                    source_pod: strings(&["/xwing"]),
                    ..Default::default()
                },
                vec![
                    (from_pod("default", "xwing"), true),
                    (from_pod("empire", "xwing-2"), true),
                    (from_pod("empire", "tiefighter"), false),
                ],
            ),
            (
                // "cluster/namespace/name" (our flow.proto).
                FlowFilter {
                    source_pod: strings(&["c1/default/xwing", "c2//tie", "/empire/"]),
                    ..Default::default()
                },
                vec![
                    (from_pod("default", "xwing"), true),
                    (
                        Flow {
                            source: ep("c2", "default", "xwing"),
                            ..Default::default()
                        },
                        false,
                    ),
                    (
                        Flow {
                            source: ep("c2", "other", "tiefighter"),
                            ..Default::default()
                        },
                        true,
                    ),
                    (from_pod("empire", "anything"), true),
                ],
            ),
            (
                // Source and destination in one filter: AND.
                FlowFilter {
                    source_pod: strings(&["xwing", "tiefighter"]),
                    destination_pod: strings(&["deathstar"]),
                    ..Default::default()
                },
                vec![
                    (
                        Flow {
                            source: ep("c1", "default", "xwing"),
                            destination: ep("c1", "default", "deathstar"),
                            ..Default::default()
                        },
                        true,
                    ),
                    (
                        Flow {
                            source: ep("c1", "default", "deathstar"),
                            destination: ep("c1", "default", "xwing"),
                            ..Default::default()
                        },
                        false,
                    ),
                ],
            ),
        ],
    );
}

#[test]
fn service() {
    let from = |ns: &str, name: &str| Flow {
        source_service: Some(Service {
            namespace: ns.into(),
            name: name.into(),
        }),
        ..Default::default()
    };
    let to = |ns: &str, name: &str| Flow {
        destination_service: Some(Service {
            namespace: ns.into(),
            name: name.into(),
        }),
        ..Default::default()
    };
    check(
        "service",
        vec![
            (
                FlowFilter {
                    source_service: strings(&["deathstar", "kube-system/kube-dns"]),
                    ..Default::default()
                },
                vec![
                    (from("default", "xwing"), false),
                    (from("default", "deathstar"), true),
                    (from("kube-system", "kube-dns"), true),
                    (to("kube-system", "deathstar"), false),
                    (Flow::default(), false),
                ],
            ),
            (
                FlowFilter {
                    destination_service: strings(&["default/", "kube-system/kube-"]),
                    ..Default::default()
                },
                vec![
                    (to("default", "xwing"), true),
                    (to("default", "deathstar"), true),
                    (to("kube-system", "kube-dns"), true),
                    (from("kube-system", "deathstar"), false),
                ],
            ),
        ],
    );
}

#[test]
fn labels() {
    let from = |labels: &[&str]| Flow {
        source: with_labels(labels),
        ..Default::default()
    };
    let to = |labels: &[&str]| Flow {
        destination: with_labels(labels),
        ..Default::default()
    };
    check(
        "labels",
        vec![
            (
                FlowFilter {
                    source_label: strings(&["k8s:app=foo", "reserved:world"]),
                    ..Default::default()
                },
                vec![
                    (from(&["k8s:app=foo", "k8s:version=1"]), true),
                    (from(&["reserved:world"]), true),
                    (from(&["k8s:app=bar"]), false),
                    (from(&["container:app=foo"]), false),
                    (to(&["k8s:app=foo"]), false),
                    (Flow::default(), false),
                ],
            ),
            (
                // No source: any source.
                FlowFilter {
                    destination_label: strings(&["app=foo"]),
                    ..Default::default()
                },
                vec![
                    (to(&["k8s:app=foo"]), true),
                    (to(&["container:app=foo"]), true),
                    (to(&["k8s:app=bar"]), false),
                ],
            ),
            (
                FlowFilter {
                    source_label: strings(&["app in (a, b), !k8s:canary, tier!=db"]),
                    ..Default::default()
                },
                vec![
                    (from(&["k8s:app=a"]), true),
                    (from(&["k8s:app=b", "k8s:tier=web"]), true),
                    (from(&["k8s:app=b", "k8s:tier=db"]), false),
                    (from(&["k8s:app=a", "k8s:canary"]), false),
                    (from(&["k8s:app=c"]), false),
                ],
            ),
            (
                // An empty selector selects everything, as in Kubernetes.
                FlowFilter {
                    source_label: strings(&[""]),
                    ..Default::default()
                },
                vec![(from(&["k8s:app=a"]), true), (Flow::default(), true)],
            ),
            (
                FlowFilter {
                    node_labels: strings(&["kubernetes.io/hostname=n1"]),
                    ..Default::default()
                },
                vec![
                    (
                        Flow {
                            node_labels: strings(&["kubernetes.io/hostname=n1", "zone=a"]),
                            ..Default::default()
                        },
                        true,
                    ),
                    (
                        Flow {
                            node_labels: strings(&["kubernetes.io/hostname=n2"]),
                            ..Default::default()
                        },
                        false,
                    ),
                    (Flow::default(), false),
                ],
            ),
        ],
    );
}

#[test]
fn identity() {
    let flow = |source: u32, destination: u32| Flow {
        source: Some(Endpoint {
            identity: source,
            ..Default::default()
        }),
        destination: Some(Endpoint {
            identity: destination,
            ..Default::default()
        }),
        ..Default::default()
    };
    check(
        "identity",
        vec![
            (
                FlowFilter {
                    source_identity: vec![1, 2],
                    ..Default::default()
                },
                vec![
                    (flow(1, 5), true),
                    (flow(2, 5), true),
                    (flow(5, 1), false),
                    (Flow::default(), false),
                ],
            ),
            (
                FlowFilter {
                    source_identity: vec![1],
                    destination_identity: vec![5],
                    ..Default::default()
                },
                vec![(flow(1, 5), true), (flow(1, 6), false)],
            ),
        ],
    );
}

#[test]
fn cluster_name() {
    let flow = |source: &str, destination: &str| Flow {
        source: ep(source, "ns", "a"),
        destination: ep(destination, "ns", "b"),
        ..Default::default()
    };
    check(
        "cluster_name",
        vec![
            (
                FlowFilter {
                    source_cluster_name: strings(&["c1", "c2"]),
                    ..Default::default()
                },
                vec![
                    (flow("c1", "c3"), true),
                    (flow("c2", "c3"), true),
                    // Exact, not prefix.
                    (flow("c10", "c1"), false),
                    (flow("", "c1"), false),
                    (Flow::default(), false),
                ],
            ),
            (
                FlowFilter {
                    destination_cluster_name: strings(&["c3"]),
                    ..Default::default()
                },
                vec![(flow("c1", "c3"), true), (flow("c3", "c1"), false)],
            ),
        ],
    );
}

#[test]
fn workload() {
    let flow = |name: &str, kind: &str| Flow {
        source: Some(Endpoint {
            workloads: vec![Workload {
                name: name.into(),
                kind: kind.into(),
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let w = |name: &str, kind: &str| Workload {
        name: name.into(),
        kind: kind.into(),
    };
    check(
        "workload",
        vec![
            (
                FlowFilter {
                    source_workload: vec![w("api", ""), w("", "DaemonSet")],
                    ..Default::default()
                },
                vec![
                    (flow("api", "Deployment"), true),
                    (flow("agent", "DaemonSet"), true),
                    (flow("web", "Deployment"), false),
                    (Flow::default(), false),
                ],
            ),
            (
                FlowFilter {
                    destination_workload: vec![w("api", "Deployment")],
                    ..Default::default()
                },
                vec![(flow("api", "Deployment"), false)],
            ),
        ],
    );
}

#[test]
fn traffic_direction() {
    let flow = |d: TrafficDirection| Flow {
        traffic_direction: d as i32,
        ..Default::default()
    };
    check(
        "traffic_direction",
        vec![(
            FlowFilter {
                traffic_direction: vec![TrafficDirection::Ingress as i32],
                ..Default::default()
            },
            vec![
                (flow(TrafficDirection::Ingress), true),
                (flow(TrafficDirection::Egress), false),
                (flow(TrafficDirection::Unknown), false),
            ],
        )],
    );
}

#[test]
fn verdict_and_drop_reason() {
    check(
        "verdict",
        vec![
            (
                FlowFilter {
                    verdict: vec![Verdict::Forwarded as i32, Verdict::Error as i32],
                    ..Default::default()
                },
                vec![
                    (verdict(Verdict::Forwarded), true),
                    (verdict(Verdict::Error), true),
                    (verdict(Verdict::Dropped), false),
                    (Flow::default(), false),
                ],
            ),
            (
                FlowFilter {
                    drop_reason_desc: vec![DropReason::PolicyDenied as i32],
                    ..Default::default()
                },
                vec![
                    (dropped(DropReason::PolicyDenied), true),
                    (dropped(DropReason::StaleOrUnroutableIp), false),
                    // Only dropped flows have a drop reason.
                    (
                        Flow {
                            verdict: Verdict::Forwarded as i32,
                            drop_reason_desc: DropReason::PolicyDenied as i32,
                            ..Default::default()
                        },
                        false,
                    ),
                ],
            ),
        ],
    );
}

#[test]
fn event_type() {
    let et = |r#type: i32, match_sub_type: bool, sub_type: i32| EventTypeFilter {
        r#type,
        match_sub_type,
        sub_type,
    };
    check(
        "event_type",
        vec![
            (
                FlowFilter {
                    event_type: vec![et(1, false, 0)],
                    ..Default::default()
                },
                vec![
                    (event(1, 133), true),
                    (event(4, 0), false),
                    (Flow::default(), false),
                ],
            ),
            (
                FlowFilter {
                    event_type: vec![et(4, true, 3), et(5, false, 0)],
                    ..Default::default()
                },
                vec![
                    (event(4, 3), true),
                    (event(4, 0), false),
                    (event(5, 9), true),
                    (event(1, 3), false),
                ],
            ),
            (
                // Type 0 is any type.
                FlowFilter {
                    event_type: vec![et(0, true, 0)],
                    ..Default::default()
                },
                vec![
                    (event(4, 0), true),
                    (event(1, 0), true),
                    (event(4, 5), false),
                ],
            ),
        ],
    );
}

#[test]
fn protocol() {
    let icmp4 = l4(Protocol::IcmPv4(Default::default()));
    let icmp6 = l4(Protocol::IcmPv6(Default::default()));
    let sctp = l4(Protocol::Sctp(Sctp::default()));
    let vrrp = l4(Protocol::Vrrp(Default::default()));
    let igmp = l4(Protocol::Igmp(Default::default()));
    let proto = |names: &[&str]| FlowFilter {
        protocol: strings(names),
        ..Default::default()
    };
    check(
        "protocol",
        vec![
            (
                proto(&["TCP"]),
                vec![
                    (tcp(1, 2, None), true),
                    (udp(1, 2), false),
                    (Flow::default(), false),
                ],
            ),
            (
                proto(&["udp"]),
                vec![(udp(1, 2), true), (tcp(1, 2, None), false)],
            ),
            (
                proto(&["icmp"]),
                vec![
                    (icmp4.clone(), true),
                    (icmp6.clone(), true),
                    (udp(1, 2), false),
                ],
            ),
            (
                proto(&["icmpv4"]),
                vec![(icmp4.clone(), true), (icmp6.clone(), false)],
            ),
            (proto(&["ICMPv6"]), vec![(icmp4, false), (icmp6, true)]),
            (
                proto(&["sctp"]),
                vec![(sctp, true), (tcp(1, 2, None), false)],
            ),
            (proto(&["vrrp", "igmp"]), vec![(vrrp, true), (igmp, true)]),
            // L7 protocols: our flows carry no L7 record.
            (
                proto(&["http", "dns", "kafka"]),
                vec![(tcp(1, 80, None), false), (udp(1, 53), false)],
            ),
            (proto(&["dns", "udp"]), vec![(udp(1, 53), true)]),
        ],
    );
}

#[test]
fn port() {
    let sctp = |s: u32, d: u32| {
        l4(Protocol::Sctp(Sctp {
            source_port: s,
            destination_port: d,
        }))
    };
    check(
        "port",
        vec![
            (
                FlowFilter {
                    source_port: strings(&["12345", "53"]),
                    ..Default::default()
                },
                vec![
                    (tcp(12345, 80, None), true),
                    (udp(53, 1000), true),
                    (sctp(53, 1), true),
                    (tcp(80, 12345, None), false),
                    (l4(Protocol::IcmPv4(Default::default())), false),
                    (Flow::default(), false),
                ],
            ),
            (
                FlowFilter {
                    destination_port: strings(&["80", "0"]),
                    ..Default::default()
                },
                vec![
                    (tcp(12345, 80, None), true),
                    (udp(80, 1000), false),
                    (udp(1, 0), true),
                ],
            ),
        ],
    );
}

#[test]
fn reply() {
    let filter = |values: Vec<bool>| FlowFilter {
        reply: values,
        ..Default::default()
    };
    check(
        "reply",
        vec![
            (
                filter(vec![true]),
                vec![
                    (replied(Verdict::Forwarded, Some(true)), true),
                    (replied(Verdict::Forwarded, Some(false)), false),
                    (replied(Verdict::Forwarded, None), false),
                    (replied(Verdict::Dropped, None), false),
                ],
            ),
            (
                filter(vec![false]),
                vec![
                    (replied(Verdict::Forwarded, Some(false)), true),
                    (replied(Verdict::Forwarded, Some(true)), false),
                    // Unknown is no match, except on dropped flows, which
                    // Cilium reads as "not a reply" (the deprecated `reply`).
                    (replied(Verdict::Forwarded, None), false),
                    (replied(Verdict::Dropped, None), true),
                ],
            ),
            (
                filter(vec![true, false]),
                vec![
                    (replied(Verdict::Forwarded, Some(true)), true),
                    (replied(Verdict::Forwarded, Some(false)), true),
                    (replied(Verdict::Forwarded, None), false),
                ],
            ),
        ],
    );
}

#[test]
fn tcp_flags() {
    let filter = |f: Vec<Option<TcpFlags>>| FlowFilter {
        tcp_flags: f.into_iter().flatten().collect(),
        ..Default::default()
    };
    let syn = flags(|f| f.syn = true);
    let syn_ack = flags(|f| {
        f.syn = true;
        f.ack = true;
    });
    let fin_ack = flags(|f| {
        f.fin = true;
        f.ack = true;
    });
    check(
        "tcp_flags",
        vec![
            (
                filter(vec![syn]),
                vec![
                    (tcp(1, 2, syn), true),
                    (tcp(1, 2, syn_ack), true),
                    (tcp(1, 2, fin_ack), false),
                    (tcp(1, 2, None), false),
                    (udp(1, 2), false),
                ],
            ),
            (
                // All flags of one TCPFlags must be set.
                filter(vec![syn_ack]),
                vec![(tcp(1, 2, syn), false), (tcp(1, 2, syn_ack), true)],
            ),
            (
                filter(vec![syn_ack, fin_ack]),
                vec![(tcp(1, 2, fin_ack), true), (tcp(1, 2, syn), false)],
            ),
        ],
    );
}

#[test]
fn node_name() {
    let filter = |patterns: &[&str]| FlowFilter {
        node_name: strings(patterns),
        ..Default::default()
    };
    check(
        "node_name",
        vec![
            (
                filter(&["k8s*"]),
                vec![
                    (node("c1/k8s1"), true),
                    (node("k8s2"), true),
                    (node("c1/node1"), false),
                    (node(""), false),
                ],
            ),
            (
                filter(&["c1/"]),
                vec![
                    (node("c1/any"), true),
                    (node("c10/any"), false),
                    (node("any"), false),
                ],
            ),
            (
                filter(&["c1/node-a", "c2/*"]),
                vec![
                    (node("c1/node-a"), true),
                    (node("c1/node-b"), false),
                    (node("c2/node-b"), true),
                ],
            ),
            (
                filter(&["*.company.com"]),
                vec![
                    (node("c1/n1.company.com"), true),
                    (node("c1/n1.other.com"), false),
                ],
            ),
        ],
    );
}

#[test]
fn ip_version_and_encrypted() {
    let flow = |version: IpVersion, encrypted: bool| Flow {
        ip: Some(Ip {
            ip_version: version as i32,
            encrypted,
            ..Default::default()
        }),
        ..Default::default()
    };
    check(
        "ip_version",
        vec![
            (
                FlowFilter {
                    ip_version: vec![IpVersion::IPv6 as i32],
                    ..Default::default()
                },
                vec![
                    (flow(IpVersion::IPv6, false), true),
                    (flow(IpVersion::IPv4, false), false),
                    (Flow::default(), false),
                ],
            ),
            (
                // A flow without IP has the zero version, as in Go.
                FlowFilter {
                    ip_version: vec![IpVersion::IpNotUsed as i32],
                    ..Default::default()
                },
                vec![
                    (Flow::default(), true),
                    (flow(IpVersion::IPv4, false), false),
                ],
            ),
            (
                FlowFilter {
                    encrypted: vec![true],
                    ..Default::default()
                },
                vec![
                    (flow(IpVersion::IPv4, true), true),
                    (flow(IpVersion::IPv4, false), false),
                    (Flow::default(), false),
                ],
            ),
            (
                FlowFilter {
                    encrypted: vec![false],
                    ..Default::default()
                },
                vec![
                    (flow(IpVersion::IPv4, true), false),
                    (Flow::default(), true),
                ],
            ),
        ],
    );
}

#[test]
fn fqdn() {
    let flow = |source: &[&str], destination: &[&str]| Flow {
        source_names: strings(source),
        destination_names: strings(destination),
        ..Default::default()
    };
    check(
        "fqdn",
        vec![
            (
                FlowFilter {
                    source_fqdn: strings(&["*.cilium.io", "example.com"]),
                    ..Default::default()
                },
                vec![
                    (flow(&["docs.cilium.io"], &[]), true),
                    (flow(&["other.org", "example.com"], &[]), true),
                    (flow(&["cilium.io"], &[]), false),
                    (flow(&[], &["example.com"]), false),
                ],
            ),
            (
                FlowFilter {
                    destination_fqdn: strings(&["EXAMPLE.com."]),
                    ..Default::default()
                },
                vec![(flow(&[], &["example.com"]), true), (flow(&[], &[]), false)],
            ),
        ],
    );
}

#[test]
fn interface_trace_ids() {
    let iface = |index: u32, name: &str| NetworkInterface {
        index,
        name: name.into(),
    };
    let on = |index: u32, name: &str| Flow {
        interface: Some(iface(index, name)),
        ..Default::default()
    };
    let traced = |id: &str| Flow {
        trace_context: Some(TraceContext {
            parent: Some(TraceParent {
                trace_id: id.into(),
            }),
        }),
        ..Default::default()
    };
    let ip_traced = |id: u64| Flow {
        ip_trace_id: Some(IpTraceId {
            trace_id: id,
            ip_option_type: 0,
        }),
        ..Default::default()
    };
    check(
        "interface",
        vec![
            (
                FlowFilter {
                    interface: vec![iface(2, ""), iface(0, "cilium_vxlan")],
                    ..Default::default()
                },
                vec![
                    (on(2, "eth0"), true),
                    (on(7, "cilium_vxlan"), true),
                    (on(3, "eth1"), false),
                    (Flow::default(), false),
                ],
            ),
            (
                FlowFilter {
                    interface: vec![iface(2, "eth0")],
                    ..Default::default()
                },
                vec![(on(2, "eth0"), true), (on(2, "eth1"), false)],
            ),
            (
                FlowFilter {
                    trace_id: strings(&["abc"]),
                    ..Default::default()
                },
                vec![
                    (traced("abc"), true),
                    (traced("abd"), false),
                    (Flow::default(), false),
                ],
            ),
            (
                FlowFilter {
                    ip_trace_id: vec![42],
                    ..Default::default()
                },
                vec![
                    (ip_traced(42), true),
                    (ip_traced(43), false),
                    (Flow::default(), false),
                ],
            ),
        ],
    );
}

#[test]
fn l7_filters_are_checked_and_never_match() {
    let l7 = EventTypeFilter {
        r#type: 129,
        ..Default::default()
    };
    let cases = [
        FlowFilter {
            http_status_code: strings(&["404", "5+", "20+"]),
            ..Default::default()
        },
        FlowFilter {
            http_method: strings(&["GET"]),
            event_type: vec![l7],
            ..Default::default()
        },
        FlowFilter {
            http_path: strings(&["^/api/.*"]),
            ..Default::default()
        },
        FlowFilter {
            http_url: strings(&["https?://.*"]),
            ..Default::default()
        },
        FlowFilter {
            http_header: vec![HttpHeader {
                key: "x".into(),
                value: "y".into(),
            }],
            ..Default::default()
        },
        FlowFilter {
            dns_query: strings(&["kube.*local"]),
            ..Default::default()
        },
    ];
    let flow = tcp(1, 80, None);
    for filter in cases {
        check("l7", vec![(filter.clone(), vec![(flow.clone(), false)])]);
        // In a deny list they exclude nothing.
        let filters = FlowFilters::compile(&[], &[filter]).unwrap();
        assert!(filters.matches(&flow));
    }
}

#[test]
fn fields_of_one_filter_and() {
    let filter = FlowFilter {
        source_pod: strings(&["default/"]),
        verdict: vec![Verdict::Dropped as i32],
        destination_port: strings(&["80"]),
        ..Default::default()
    };
    let flow = |v: Verdict, port: u32| Flow {
        verdict: v as i32,
        source: ep("c1", "default", "a"),
        ..tcp(1, port, None)
    };
    check(
        "and",
        vec![(
            filter,
            vec![
                (flow(Verdict::Dropped, 80), true),
                (flow(Verdict::Forwarded, 80), false),
                (flow(Verdict::Dropped, 81), false),
            ],
        )],
    );
}

#[test]
fn allow_any_and_deny_none() {
    let a = FlowFilter {
        source_pod: strings(&["default/a"]),
        ..Default::default()
    };
    let b = FlowFilter {
        destination_pod: strings(&["default/b"]),
        ..Default::default()
    };
    let dropped = FlowFilter {
        verdict: vec![Verdict::Dropped as i32],
        ..Default::default()
    };
    let flow = |src: &str, dst: &str, v: Verdict| Flow {
        source: ep("c1", "default", src),
        destination: ep("c1", "default", dst),
        verdict: v as i32,
        ..Default::default()
    };

    let none = FlowFilters::compile(&[], &[]).unwrap();
    assert!(none.is_empty());
    assert!(none.matches(&Flow::default()));

    // An empty FlowFilter matches every flow.
    let empty = FlowFilters::compile(&[FlowFilter::default()], &[]).unwrap();
    assert!(empty.matches(&Flow::default()));
    let deny_all = FlowFilters::compile(&[], &[FlowFilter::default()]).unwrap();
    assert!(!deny_all.matches(&Flow::default()));

    let filters =
        FlowFilters::compile(&[a.clone(), b.clone()], std::slice::from_ref(&dropped)).unwrap();
    assert!(!filters.is_empty());
    assert!(filters.matches(&flow("a", "x", Verdict::Forwarded)));
    assert!(filters.matches(&flow("x", "b", Verdict::Forwarded)));
    assert!(!filters.matches(&flow("x", "y", Verdict::Forwarded)));
    assert!(!filters.matches(&flow("a", "b", Verdict::Dropped)));

    let deny_only = FlowFilters::compile(&[], &[a, b]).unwrap();
    assert!(deny_only.matches(&flow("x", "y", Verdict::Dropped)));
    assert!(!deny_only.matches(&flow("a", "y", Verdict::Forwarded)));
    assert!(!deny_only.matches(&flow("x", "b", Verdict::Forwarded)));
}

#[test]
fn compile_errors_name_the_field_and_value() {
    let http = |f: FlowFilter| FlowFilter {
        event_type: vec![EventTypeFilter {
            r#type: 4,
            ..Default::default()
        }],
        ..f
    };
    let cases: Vec<(FlowFilter, &str)> = vec![
        (
            FlowFilter {
                source_ip: strings(&["10.0.0.0/33"]),
                ..Default::default()
            },
            r#"invalid source_ip filter: "10.0.0.0/33" is neither an IP address nor a CIDR"#,
        ),
        (
            FlowFilter {
                destination_ip: strings(&["1.2.3"]),
                ..Default::default()
            },
            r#"invalid destination_ip filter: "1.2.3" is neither an IP address nor a CIDR"#,
        ),
        (
            FlowFilter {
                source_ip_xlated: strings(&["x/8"]),
                ..Default::default()
            },
            r#"invalid source_ip_xlated filter: "x/8""#,
        ),
        (
            FlowFilter {
                source_pod: strings(&[""]),
                ..Default::default()
            },
            r#"invalid source_pod filter: "" is empty; want [namespace/][name-prefix]"#,
        ),
        (
            FlowFilter {
                destination_pod: strings(&["/"]),
                ..Default::default()
            },
            r#"invalid destination_pod filter: "/" names no namespace and no name"#,
        ),
        (
            FlowFilter {
                source_pod: strings(&["a/b/c/d"]),
                ..Default::default()
            },
            r#"invalid source_pod filter: "a/b/c/d" has too many '/'"#,
        ),
        (
            FlowFilter {
                source_service: strings(&["c1/ns/svc"]),
                ..Default::default()
            },
            r#"invalid source_service filter: "c1/ns/svc" has too many '/'; want [namespace/][name-prefix]"#,
        ),
        (
            FlowFilter {
                source_label: strings(&["k8s:app=foo=bar"]),
                ..Default::default()
            },
            r#"invalid source_label filter: label selector "k8s:app=foo=bar": found '=', expected ',' or end of selector"#,
        ),
        (
            FlowFilter {
                destination_label: strings(&["app in ()"]),
                ..Default::default()
            },
            r#"invalid destination_label filter: label selector "app in ()""#,
        ),
        (
            FlowFilter {
                node_labels: strings(&["a b"]),
                ..Default::default()
            },
            r#"invalid node_labels filter: label selector "a b""#,
        ),
        (
            FlowFilter {
                source_port: strings(&["65536"]),
                ..Default::default()
            },
            r#"invalid source_port filter: "65536" is not a port number (0-65535)"#,
        ),
        (
            FlowFilter {
                destination_port: strings(&["+80"]),
                ..Default::default()
            },
            r#"invalid destination_port filter: "+80" is not a port number"#,
        ),
        (
            FlowFilter {
                destination_port: strings(&["http"]),
                ..Default::default()
            },
            r#"invalid destination_port filter: "http""#,
        ),
        (
            FlowFilter {
                protocol: strings(&["tcp", "quic"]),
                ..Default::default()
            },
            r#"invalid protocol filter: unknown protocol "quic""#,
        ),
        (
            FlowFilter {
                protocol: strings(&[""]),
                ..Default::default()
            },
            r#"invalid protocol filter: unknown protocol """#,
        ),
        (
            FlowFilter {
                source_cluster_name: strings(&["c1", ""]),
                ..Default::default()
            },
            "invalid source_cluster_name filter: cluster name must not be empty",
        ),
        (
            FlowFilter {
                destination_cluster_name: strings(&[""]),
                ..Default::default()
            },
            "invalid destination_cluster_name filter: cluster name must not be empty",
        ),
        (
            FlowFilter {
                node_name: strings(&["c1/n1/x"]),
                ..Default::default()
            },
            r#"invalid node_name filter: pattern "c1/n1/x": too many slashes in pattern"#,
        ),
        (
            FlowFilter {
                node_name: strings(&[""]),
                ..Default::default()
            },
            r#"invalid node_name filter: pattern "": empty pattern"#,
        ),
        (
            FlowFilter {
                source_fqdn: strings(&["a?.com"]),
                ..Default::default()
            },
            r#"invalid source_fqdn filter: pattern "a?.com": '?': invalid character in pattern"#,
        ),
        (
            FlowFilter {
                destination_fqdn: strings(&[""]),
                ..Default::default()
            },
            r#"invalid destination_fqdn filter: pattern "": empty pattern"#,
        ),
        (
            FlowFilter {
                http_status_code: strings(&["600"]),
                ..Default::default()
            },
            r#"invalid http_status_code filter: "600" is not a status code"#,
        ),
        (
            http(FlowFilter {
                http_method: strings(&["GET"]),
                ..Default::default()
            }),
            "invalid http_method filter: filtering on HTTP fields requires the event type filter to match l7 events (type 129)",
        ),
        (
            http(FlowFilter {
                http_header: vec![HttpHeader::default()],
                ..Default::default()
            }),
            "invalid http_header filter: filtering on HTTP fields requires",
        ),
        (
            FlowFilter {
                http_path: strings(&["(unclosed"]),
                ..Default::default()
            },
            r#"invalid http_path filter: regular expression "(unclosed""#,
        ),
        (
            FlowFilter {
                http_url: strings(&["[z-a]"]),
                ..Default::default()
            },
            r#"invalid http_url filter: regular expression "[z-a]""#,
        ),
        (
            FlowFilter {
                dns_query: strings(&["*"]),
                ..Default::default()
            },
            r#"invalid dns_query filter: regular expression "*""#,
        ),
        (
            FlowFilter {
                experimental: Some(Experimental {
                    cel_expression: strings(&["_flow.verdict == 1"]),
                }),
                ..Default::default()
            },
            "experimental.cel_expression filter is not supported by this server",
        ),
    ];
    for (filter, want) in cases {
        for (allow, deny) in [
            (std::slice::from_ref(&filter), &[][..]),
            (&[][..], std::slice::from_ref(&filter)),
        ] {
            let err = FlowFilters::compile(allow, deny)
                .err()
                .unwrap_or_else(|| panic!("{filter:?} compiled, want error {want:?}"));
            let message = err.to_string();
            assert!(
                message.starts_with(want),
                "{filter:?}\n got: {message}\nwant: {want}"
            );
        }
    }
    // An empty experimental section is fine.
    FlowFilters::compile(
        &[FlowFilter {
            experimental: Some(Experimental::default()),
            ..Default::default()
        }],
        &[],
    )
    .unwrap();
}

#[test]
fn regex_errors_keep_their_source() {
    let err = FlowFilters::compile(
        &[FlowFilter {
            http_path: strings(&["(x"]),
            ..Default::default()
        }],
        &[],
    )
    .unwrap_err();
    assert!(matches!(
        err,
        FilterError::InvalidRegex {
            field: "http_path",
            ..
        }
    ));
    assert!(std::error::Error::source(&err).is_some());
}

/// An L7 flow of the DNS proxy: `query` over UDP to port 53.
fn dns_flow(query: &str) -> Flow {
    Flow {
        l7: Some(hubble_api::flow::Layer7 {
            r#type: hubble_api::flow::L7FlowType::Request.into(),
            latency_ns: 0,
            record: Some(hubble_api::flow::layer7::Record::Dns(
                hubble_api::flow::Dns {
                    query: query.to_owned(),
                    ..Default::default()
                },
            )),
        }),
        ..udp(40000, 53)
    }
}

#[test]
fn dns_records() {
    let api = dns_flow("api.example.com.");
    let other = dns_flow("other.example.net.");
    check(
        "dns",
        vec![
            (
                FlowFilter {
                    protocol: strings(&["dns"]),
                    ..Default::default()
                },
                // a flow to port 53 without a record is not DNS
                vec![(api.clone(), true), (udp(1, 53), false)],
            ),
            (
                FlowFilter {
                    dns_query: strings(&[r"example\.com\.$"]),
                    ..Default::default()
                },
                vec![(api, true), (other, false), (udp(1, 53), false)],
            ),
        ],
    );
}
