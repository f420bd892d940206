//! `FlowMask`: every top-level `Flow` field alone, the sub-fields of the
//! messages the CLI asks for, Hubble CLI default masks, and path errors.

// The deprecated fields (`Summary`, `reply`, `drop_reason`) are on the wire.
#![allow(deprecated)]

use hubble::field_mask::{FieldMaskError, FlowMask};
use hubble_api::flow::{
    Aggregate, CiliumEventType, Emitter, Endpoint, Ethernet, FileInfo, Flow, IcmPv4, Ip, IpTraceId,
    Layer4, NetworkInterface, Policy, Service, Tcp, TcpFlags, TraceContext, TraceParent, Tunnel,
    Udp, Workload, layer4::Protocol,
};
use prost_types::{Any, FieldMask, Timestamp};

fn mask(paths: &[&str]) -> Result<FlowMask, FieldMaskError> {
    FlowMask::compile(Some(&FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    }))
}

fn apply(paths: &[&str], flow: Flow) -> Flow {
    mask(paths)
        .unwrap_or_else(|e| panic!("{paths:?}: {e}"))
        .apply(flow)
}

fn endpoint(id: u32, cluster: &str, pod: &str) -> Endpoint {
    Endpoint {
        id,
        identity: id * 1000,
        cluster_name: cluster.into(),
        namespace: "default".into(),
        labels: vec!["k8s:app=x".into(), "reserved:world".into()],
        pod_name: pod.into(),
        workloads: vec![Workload {
            name: "w".into(),
            kind: "Deployment".into(),
        }],
    }
}

fn tcp() -> Layer4 {
    Layer4 {
        protocol: Some(Protocol::Tcp(Tcp {
            source_port: 40000,
            destination_port: 80,
            flags: Some(TcpFlags {
                syn: true,
                ack: true,
                ..Default::default()
            }),
        })),
    }
}

fn policy(name: &str) -> Policy {
    Policy {
        name: name.into(),
        namespace: "default".into(),
        labels: vec!["k8s:a=b".into()],
        revision: 7,
        kind: "CiliumNetworkPolicy".into(),
    }
}

/// A flow with every field set.
fn full() -> Flow {
    Flow {
        time: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        }),
        uuid: "u-1".into(),
        emitter: Some(Emitter {
            name: "clustermesh".into(),
            version: "0.1.0".into(),
        }),
        verdict: 2,
        drop_reason: 133,
        auth_type: 1,
        ethernet: Some(Ethernet {
            source: "aa:bb:cc:dd:ee:01".into(),
            destination: "aa:bb:cc:dd:ee:02".into(),
        }),
        ip: Some(Ip {
            source: "10.0.0.1".into(),
            source_xlated: "100.64.0.1".into(),
            destination: "10.0.1.2".into(),
            ip_version: 1,
            encrypted: true,
        }),
        l4: Some(tcp()),
        tunnel: Some(Tunnel {
            protocol: 1,
            ip: Some(Ip {
                source: "192.168.0.1".into(),
                ..Default::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(Protocol::Udp(Udp {
                    source_port: 1,
                    destination_port: 8472,
                })),
            }),
            vni: 9,
        }),
        source: Some(endpoint(1, "c1", "client")),
        destination: Some(endpoint(2, "c2", "server")),
        r#type: 1,
        node_name: "c1/node-1".into(),
        node_labels: vec!["kubernetes.io/hostname=node-1".into()],
        source_names: vec!["client.example".into()],
        destination_names: vec!["server.example".into()],
        l7: Some(hubble_api::flow::Layer7 {
            r#type: hubble_api::flow::L7FlowType::Response.into(),
            latency_ns: 1_500,
            record: Some(hubble_api::flow::layer7::Record::Dns(
                hubble_api::flow::Dns {
                    query: "api.example.com.".into(),
                    ips: vec!["192.0.2.1".into()],
                    ttl: 30,
                    ..Default::default()
                },
            )),
        }),
        reply: true,
        event_type: Some(CiliumEventType {
            r#type: 1,
            sub_type: 133,
        }),
        source_service: Some(Service {
            name: "client".into(),
            namespace: "default".into(),
        }),
        destination_service: Some(Service {
            name: "server".into(),
            namespace: "default".into(),
        }),
        traffic_direction: 1,
        policy_match_type: 3,
        trace_observation_point: 101,
        trace_reason: 1,
        file: Some(FileInfo {
            name: "bpf_lxc.c".into(),
            line: 42,
        }),
        ip_trace_id: Some(IpTraceId {
            trace_id: 77,
            ip_option_type: 136,
        }),
        drop_reason_desc: 133,
        is_reply: Some(false),
        debug_capture_point: 4,
        interface: Some(NetworkInterface {
            index: 3,
            name: "eth0".into(),
        }),
        proxy_port: 10000,
        trace_context: Some(TraceContext {
            parent: Some(TraceParent {
                trace_id: "abc".into(),
            }),
        }),
        sock_xlate_point: 2,
        socket_cookie: 11,
        cgroup_id: 12,
        summary: "TCP Flags: SYN, ACK".into(),
        extensions: Some(Any {
            type_url: "type.googleapis.com/x".into(),
            value: vec![1, 2, 3],
        }),
        egress_allowed_by: vec![policy("ea")],
        ingress_allowed_by: vec![policy("ia")],
        egress_denied_by: vec![policy("ed")],
        ingress_denied_by: vec![policy("id")],
        policy_log: vec!["log".into()],
        aggregate: Some(Aggregate {
            ingress_flow_count: 1,
            egress_flow_count: 2,
            unknown_direction_flow_count: 3,
        }),
    }
}

#[test]
fn no_mask_keeps_everything() {
    let none = FlowMask::compile(None).unwrap();
    assert!(none.is_empty());
    assert_eq!(none.apply(full()), full());
    let empty = FlowMask::compile(Some(&FieldMask::default())).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.apply(full()), full());
    assert!(!mask(&["time"]).unwrap().is_empty());
}

#[test]
fn every_top_level_field_alone() {
    type Keep = fn(Flow) -> Flow;
    let f = full;
    let cases: &[(&str, Keep)] = &[
        ("time", |s| Flow {
            time: s.time,
            ..Default::default()
        }),
        ("uuid", |s| Flow {
            uuid: s.uuid,
            ..Default::default()
        }),
        ("emitter", |s| Flow {
            emitter: s.emitter,
            ..Default::default()
        }),
        ("verdict", |s| Flow {
            verdict: s.verdict,
            ..Default::default()
        }),
        ("drop_reason", |s| Flow {
            drop_reason: s.drop_reason,
            ..Default::default()
        }),
        ("auth_type", |s| Flow {
            auth_type: s.auth_type,
            ..Default::default()
        }),
        ("ethernet", |s| Flow {
            ethernet: s.ethernet,
            ..Default::default()
        }),
        ("IP", |s| Flow {
            ip: s.ip,
            ..Default::default()
        }),
        ("l4", |s| Flow {
            l4: s.l4,
            ..Default::default()
        }),
        ("l7", |s| Flow {
            l7: s.l7,
            ..Default::default()
        }),
        ("tunnel", |s| Flow {
            tunnel: s.tunnel,
            ..Default::default()
        }),
        ("source", |s| Flow {
            source: s.source,
            ..Default::default()
        }),
        ("destination", |s| Flow {
            destination: s.destination,
            ..Default::default()
        }),
        ("Type", |s| Flow {
            r#type: s.r#type,
            ..Default::default()
        }),
        ("node_name", |s| Flow {
            node_name: s.node_name,
            ..Default::default()
        }),
        ("node_labels", |s| Flow {
            node_labels: s.node_labels,
            ..Default::default()
        }),
        ("source_names", |s| Flow {
            source_names: s.source_names,
            ..Default::default()
        }),
        ("destination_names", |s| Flow {
            destination_names: s.destination_names,
            ..Default::default()
        }),
        ("reply", |s| Flow {
            reply: s.reply,
            ..Default::default()
        }),
        ("event_type", |s| Flow {
            event_type: s.event_type,
            ..Default::default()
        }),
        ("source_service", |s| Flow {
            source_service: s.source_service,
            ..Default::default()
        }),
        ("destination_service", |s| Flow {
            destination_service: s.destination_service,
            ..Default::default()
        }),
        ("traffic_direction", |s| Flow {
            traffic_direction: s.traffic_direction,
            ..Default::default()
        }),
        ("policy_match_type", |s| Flow {
            policy_match_type: s.policy_match_type,
            ..Default::default()
        }),
        ("trace_observation_point", |s| Flow {
            trace_observation_point: s.trace_observation_point,
            ..Default::default()
        }),
        ("trace_reason", |s| Flow {
            trace_reason: s.trace_reason,
            ..Default::default()
        }),
        ("file", |s| Flow {
            file: s.file,
            ..Default::default()
        }),
        ("ip_trace_id", |s| Flow {
            ip_trace_id: s.ip_trace_id,
            ..Default::default()
        }),
        ("drop_reason_desc", |s| Flow {
            drop_reason_desc: s.drop_reason_desc,
            ..Default::default()
        }),
        ("is_reply", |s| Flow {
            is_reply: s.is_reply,
            ..Default::default()
        }),
        ("debug_capture_point", |s| Flow {
            debug_capture_point: s.debug_capture_point,
            ..Default::default()
        }),
        ("interface", |s| Flow {
            interface: s.interface,
            ..Default::default()
        }),
        ("proxy_port", |s| Flow {
            proxy_port: s.proxy_port,
            ..Default::default()
        }),
        ("trace_context", |s| Flow {
            trace_context: s.trace_context,
            ..Default::default()
        }),
        ("sock_xlate_point", |s| Flow {
            sock_xlate_point: s.sock_xlate_point,
            ..Default::default()
        }),
        ("socket_cookie", |s| Flow {
            socket_cookie: s.socket_cookie,
            ..Default::default()
        }),
        ("cgroup_id", |s| Flow {
            cgroup_id: s.cgroup_id,
            ..Default::default()
        }),
        ("Summary", |s| Flow {
            summary: s.summary,
            ..Default::default()
        }),
        ("extensions", |s| Flow {
            extensions: s.extensions,
            ..Default::default()
        }),
        ("egress_allowed_by", |s| Flow {
            egress_allowed_by: s.egress_allowed_by,
            ..Default::default()
        }),
        ("ingress_allowed_by", |s| Flow {
            ingress_allowed_by: s.ingress_allowed_by,
            ..Default::default()
        }),
        ("egress_denied_by", |s| Flow {
            egress_denied_by: s.egress_denied_by,
            ..Default::default()
        }),
        ("ingress_denied_by", |s| Flow {
            ingress_denied_by: s.ingress_denied_by,
            ..Default::default()
        }),
        ("policy_log", |s| Flow {
            policy_log: s.policy_log,
            ..Default::default()
        }),
        ("aggregate", |s| Flow {
            aggregate: s.aggregate,
            ..Default::default()
        }),
    ];
    for (path, keep) in cases {
        let got = apply(&[path], f());
        assert_eq!(got, keep(f()), "{path}");
        assert_ne!(got, Flow::default(), "{path}: the test flow must set it");
    }
    // Together they are the whole flow.
    let all: Vec<&str> = cases.iter().map(|(p, _)| *p).collect();
    assert_eq!(apply(&all, f()), f());
}

#[test]
fn endpoint_fields() {
    let src = endpoint(1, "c1", "client");
    type Keep = fn(Endpoint) -> Endpoint;
    let cases: &[(&str, Keep)] = &[
        ("ID", |e| Endpoint {
            id: e.id,
            ..Default::default()
        }),
        ("identity", |e| Endpoint {
            identity: e.identity,
            ..Default::default()
        }),
        ("cluster_name", |e| Endpoint {
            cluster_name: e.cluster_name,
            ..Default::default()
        }),
        ("namespace", |e| Endpoint {
            namespace: e.namespace,
            ..Default::default()
        }),
        ("labels", |e| Endpoint {
            labels: e.labels,
            ..Default::default()
        }),
        ("pod_name", |e| Endpoint {
            pod_name: e.pod_name,
            ..Default::default()
        }),
        ("workloads", |e| Endpoint {
            workloads: e.workloads,
            ..Default::default()
        }),
    ];
    for (field, keep) in cases {
        for side in ["source", "destination"] {
            let got = apply(&[&format!("{side}.{field}")], full());
            let ep = keep(if side == "source" {
                src.clone()
            } else {
                endpoint(2, "c2", "server")
            });
            let want = if side == "source" {
                Flow {
                    source: Some(ep),
                    ..Default::default()
                }
            } else {
                Flow {
                    destination: Some(ep),
                    ..Default::default()
                }
            };
            assert_eq!(got, want, "{side}.{field}");
        }
    }
    let got = apply(
        &[
            "source.identity",
            "source.pod_name",
            "destination.namespace",
        ],
        full(),
    );
    assert_eq!(
        got,
        Flow {
            source: Some(Endpoint {
                identity: 1000,
                pod_name: "client".into(),
                ..Default::default()
            }),
            destination: Some(Endpoint {
                namespace: "default".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    );
    // A part of an absent message leaves it absent.
    let no_source = Flow {
        source: None,
        ..full()
    };
    assert_eq!(apply(&["source.identity"], no_source), Flow::default());
}

#[test]
fn ip_and_ethernet_fields() {
    let ip = |f: fn(Ip) -> Ip| Flow {
        ip: full().ip.map(f),
        ..Default::default()
    };
    assert_eq!(
        apply(&["IP.source"], full()),
        ip(|i| Ip {
            source: i.source,
            ..Default::default()
        })
    );
    assert_eq!(
        apply(&["IP.source_xlated"], full()),
        ip(|i| Ip {
            source_xlated: i.source_xlated,
            ..Default::default()
        })
    );
    assert_eq!(
        apply(&["IP.destination"], full()),
        ip(|i| Ip {
            destination: i.destination,
            ..Default::default()
        })
    );
    assert_eq!(
        apply(&["IP.ipVersion"], full()),
        ip(|i| Ip {
            ip_version: i.ip_version,
            ..Default::default()
        })
    );
    assert_eq!(
        apply(&["IP.encrypted"], full()),
        ip(|i| Ip {
            encrypted: i.encrypted,
            ..Default::default()
        })
    );
    assert_eq!(
        apply(&["ethernet.source"], full()),
        Flow {
            ethernet: Some(Ethernet {
                source: "aa:bb:cc:dd:ee:01".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    );
    assert_eq!(
        apply(&["ethernet.destination"], full()),
        Flow {
            ethernet: Some(Ethernet {
                destination: "aa:bb:cc:dd:ee:02".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    );
}

#[test]
fn l4_fields() {
    let l4 = |p: Option<Protocol>| Flow {
        l4: Some(Layer4 { protocol: p }),
        ..Default::default()
    };
    assert_eq!(apply(&["l4.TCP"], full()), l4(tcp().protocol));
    assert_eq!(
        apply(&["l4.TCP.destination_port", "l4.TCP.flags.SYN"], full()),
        l4(Some(Protocol::Tcp(Tcp {
            destination_port: 80,
            flags: Some(TcpFlags {
                syn: true,
                ..Default::default()
            }),
            ..Default::default()
        })))
    );
    assert_eq!(
        apply(&["l4.TCP.source_port"], full()),
        l4(Some(Protocol::Tcp(Tcp {
            source_port: 40000,
            ..Default::default()
        })))
    );
    // Naming another protocol keeps none of this one.
    assert_eq!(apply(&["l4.UDP", "l4.ICMPv4.type"], full()), l4(None));
    let icmp = Flow {
        l4: Some(Layer4 {
            protocol: Some(Protocol::IcmPv4(IcmPv4 { r#type: 8, code: 1 })),
        }),
        ..Default::default()
    };
    assert_eq!(
        apply(&["l4.TCP", "l4.UDP", "l4.ICMPv4.type"], icmp),
        l4(Some(Protocol::IcmPv4(IcmPv4 { r#type: 8, code: 0 })))
    );
    for path in [
        "l4.UDP.source_port",
        "l4.UDP.destination_port",
        "l4.ICMPv6.code",
        "l4.SCTP.source_port",
        "l4.VRRP.vrid",
        "l4.VRRP.priority",
        "l4.IGMP.group_address",
        "l4.TCP.flags.NS",
        "l4.TCP.flags.CWR",
    ] {
        mask(&[path]).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

#[test]
fn other_nested_fields() {
    let got = apply(
        &[
            "time.seconds",
            "source_service.name",
            "event_type.sub_type",
            "tunnel.IP.source",
            "tunnel.l4.UDP.destination_port",
            "trace_context.parent.trace_id",
            "ip_trace_id.trace_id",
            "interface.name",
            "file.line",
            "emitter.version",
            "aggregate.egress_flow_count",
            "extensions.type_url",
            "is_reply.value",
        ],
        full(),
    );
    let want = Flow {
        time: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        source_service: Some(Service {
            name: "client".into(),
            namespace: String::new(),
        }),
        event_type: Some(CiliumEventType {
            r#type: 0,
            sub_type: 133,
        }),
        tunnel: Some(Tunnel {
            ip: Some(Ip {
                source: "192.168.0.1".into(),
                ..Default::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(Protocol::Udp(Udp {
                    source_port: 0,
                    destination_port: 8472,
                })),
            }),
            ..Default::default()
        }),
        trace_context: full().trace_context,
        ip_trace_id: Some(IpTraceId {
            trace_id: 77,
            ip_option_type: 0,
        }),
        interface: Some(NetworkInterface {
            index: 0,
            name: "eth0".into(),
        }),
        file: Some(FileInfo {
            name: String::new(),
            line: 42,
        }),
        emitter: Some(Emitter {
            name: String::new(),
            version: "0.1.0".into(),
        }),
        aggregate: Some(Aggregate {
            egress_flow_count: 2,
            ..Default::default()
        }),
        extensions: Some(Any {
            type_url: "type.googleapis.com/x".into(),
            value: vec![],
        }),
        is_reply: Some(false),
        ..Default::default()
    };
    assert_eq!(got, want);
}

#[test]
fn whole_field_absorbs_its_parts() {
    for paths in [
        &["source.identity", "source"][..],
        &["source", "source.identity"][..],
        &["source", "source"][..],
    ] {
        assert_eq!(
            apply(paths, full()),
            Flow {
                source: full().source,
                ..Default::default()
            },
            "{paths:?}"
        );
    }
    assert_eq!(
        apply(&["l4.TCP.flags.SYN", "l4.TCP"], full()),
        Flow {
            l4: Some(tcp()),
            ..Default::default()
        }
    );
}

#[test]
fn l7_paths_keep_the_dns_record() {
    let l7 = full().l7.unwrap();
    let with = |l7: hubble_api::flow::Layer7| Flow {
        l7: Some(l7),
        ..Default::default()
    };
    assert_eq!(apply(&["l7"], full()), with(l7.clone()));
    assert_eq!(
        apply(&["l7.latency_ns"], full()),
        with(hubble_api::flow::Layer7 {
            latency_ns: l7.latency_ns,
            ..Default::default()
        })
    );
    // A path into the DNS record keeps all of it.
    assert_eq!(
        apply(&["l7.dns.query"], full()),
        with(hubble_api::flow::Layer7 {
            record: l7.record.clone(),
            ..Default::default()
        })
    );
    // Records never produced: the paths compile and keep nothing of them.
    for path in ["l7.http.code", "l7.http.headers", "l7.kafka.topic"] {
        assert_eq!(
            apply(&[path], full()),
            with(hubble_api::flow::Layer7::default()),
            "{path}"
        );
    }
}

/// The mask Hubble's CLI v1.16 sends with `--use-default-field-masks` (on
/// by default for compact, dict and table output; its `defaults.FieldMask`),
/// then the further paths `hubble.md` lists and clients may add.
#[test]
fn hubble_cli_default_masks_compile() {
    let v1_16 = [
        "time",
        "source.identity",
        "source.namespace",
        "source.pod_name",
        "destination.identity",
        "destination.namespace",
        "destination.pod_name",
        "source_service",
        "destination_service",
        "l4",
        "IP",
        "ethernet",
        "l7",
        "Type",
        "node_name",
        "is_reply",
        "event_type",
        "verdict",
        "Summary",
    ];
    let more = [
        "time",
        "verdict",
        "drop_reason_desc",
        "ethernet",
        "IP",
        "l4",
        "source.ID",
        "source.identity",
        "source.cluster_name",
        "source.namespace",
        "source.labels",
        "source.pod_name",
        "source.workloads",
        "destination.ID",
        "destination.identity",
        "destination.cluster_name",
        "destination.namespace",
        "destination.labels",
        "destination.pod_name",
        "destination.workloads",
        "Type",
        "node_name",
        "node_labels",
        "l7",
        "event_type",
        "source_service",
        "destination_service",
        "traffic_direction",
        "policy_match_type",
        "trace_observation_point",
        "trace_reason",
        "is_reply",
        "interface",
        "Summary",
        "ip_trace_id",
        "egress_allowed_by",
        "ingress_allowed_by",
        "egress_denied_by",
        "ingress_denied_by",
        "source_names",
        "destination_names",
    ];
    let got = apply(&v1_16, full());
    let src = endpoint(1, "c1", "client");
    let dst = endpoint(2, "c2", "server");
    let f = full();
    assert_eq!(
        got,
        Flow {
            time: f.time,
            source: Some(Endpoint {
                identity: src.identity,
                namespace: src.namespace,
                pod_name: src.pod_name,
                ..Default::default()
            }),
            destination: Some(Endpoint {
                identity: dst.identity,
                namespace: dst.namespace,
                pod_name: dst.pod_name,
                ..Default::default()
            }),
            source_service: f.source_service,
            destination_service: f.destination_service,
            l4: f.l4,
            ip: f.ip,
            ethernet: f.ethernet,
            l7: f.l7,
            r#type: f.r#type,
            node_name: f.node_name,
            is_reply: f.is_reply,
            event_type: f.event_type,
            verdict: f.verdict,
            summary: f.summary,
            ..Default::default()
        }
    );
    mask(&more).unwrap();
}

#[test]
fn bad_paths_are_rejected_by_name() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["time", "invalid-field"],
            r#"invalid field mask path "invalid-field": flow.Flow has no field "invalid-field""#,
        ),
        (
            &["ip"],
            r#"invalid field mask path "ip": flow.Flow has no field "ip""#,
        ),
        (&["summary"], r#"flow.Flow has no field "summary""#),
        (&["type"], r#"flow.Flow has no field "type""#),
        (
            &[""],
            r#"invalid field mask path "": flow.Flow has no field """#,
        ),
        (
            &["source.id"],
            r#"invalid field mask path "source.id": flow.Endpoint has no field "id""#,
        ),
        (
            &["source."],
            r#"invalid field mask path "source.": flow.Endpoint has no field """#,
        ),
        (&[".source"], r#"flow.Flow has no field """#),
        (&["IP.version"], r#"flow.IP has no field "version""#),
        (&["l4.tcp"], r#"flow.Layer4 has no field "tcp""#),
        (&["l4.TCP.flags.syn"], r#"flow.TCPFlags has no field "syn""#),
        (
            &["verdict.x"],
            r#"invalid field mask path "verdict.x": flow.Flow.verdict is not a singular message"#,
        ),
        (
            &["node_name.x"],
            "flow.Flow.node_name is not a singular message",
        ),
        (
            &["source.labels.x"],
            "flow.Endpoint.labels is not a singular message",
        ),
        (
            &["source.workloads.name"],
            "flow.Endpoint.workloads is not a singular message",
        ),
        (
            &["egress_allowed_by.name"],
            "flow.Flow.egress_allowed_by is not a singular message",
        ),
        (
            &["l7.http.headers.key"],
            "flow.HTTP.headers is not a singular message",
        ),
        (&["l7.grpc"], r#"flow.Layer7 has no field "grpc""#),
        (
            &["time.seconds.x"],
            "google.protobuf.Timestamp.seconds is not a singular message",
        ),
        (
            &["is_reply.val"],
            r#"google.protobuf.BoolValue has no field "val""#,
        ),
    ];
    for (paths, want) in cases {
        let err = mask(paths)
            .err()
            .unwrap_or_else(|| panic!("{paths:?} compiled"));
        let message = err.to_string();
        assert!(
            message.contains(want),
            "{paths:?}\n got: {message}\nwant: {want}"
        );
    }
}
