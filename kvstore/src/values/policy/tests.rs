use super::*;

const YAML: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: allow-client
  namespace: demo
  labels: {team: a}
spec:
  endpointSelector:
    matchLabels: {app: echo}
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: client
        io.cilium.k8s.policy.cluster: c1
    toPorts:
    - ports:
      - port: "8080"
        protocol: TCP
  - fromEntities: [world]
"#;

/// Every rule kind clustermesh reads, in one document.
const FULL: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: everything
  namespace: demo
spec:
  description: every rule kind
  endpointSelector:
    matchLabels: {app: echo}
  enableDefaultDeny: {ingress: true, egress: false}
  labels: [{key: team, value: a, source: k8s}]
  ingress:
  - fromEndpoints:
    - matchLabels: {app: client, io.cilium.k8s.policy.cluster: c2}
    toPorts:
    - ports:
      - {port: "8080", protocol: TCP}
      - {port: 9000, endPort: 9100, protocol: UDP}
      - {port: "http"}
      - {port: 3868, protocol: SCTP}
      - {port: 443, endPort: 443, protocol: any}
  - fromCIDR: [192.0.2.7, 198.51.100.0/24, "2001:db8::/32"]
    icmps:
    - fields:
      - {type: 8}
      - {type: EchoRequest, family: IPv6}
  - fromEntities: [all, world, world-ipv4, world-ipv6, cluster, host, init, ingress, unmanaged, remote-node, health, none, kube-apiserver]
  ingressDeny:
  - fromCIDRSet:
    - cidr: 10.0.0.0/8
      except: [10.96.0.0/12, 10.1.2.3]
    toPorts: [{ports: [{port: "22", protocol: TCP}]}]
  egress:
  - toEndpoints: [{matchLabels: {app: db}}]
    toPorts: [{ports: [{port: "5432", endPort: 5440, protocol: TCP}]}]
  - toCIDR: [20.1.1.1/32]
  - toCIDRSet:
    - cidr: "fd00::/8"
      except: ["fd00:1::/32"]
  - toEntities: [kube-apiserver]
    toPorts: [{ports: [{port: "0", protocol: ANY}]}]
  - icmps:
    - fields:
      - {type: "0", family: IPv4}
      - {type: TimeExceeded, family: IPv4}
      - {type: 135, family: IPv6}
      - {type: PacketTooBig, family: IPv6}
  egressDeny:
  - toEntities: [world]
    toPorts: [{ports: [{port: "25"}]}]
  - toCIDR: [203.0.113.0/24]
    icmps: [{fields: [{type: DestinationUnreachable}]}]
specs:
- endpointSelector: {}
  egress:
  - toEndpoints: [{}]
"#;

fn cidr(text: &str) -> Cidr {
    text.parse().unwrap()
}

/// The refusal of `text`: its path and its message.
fn refusal(text: &str) -> (String, String) {
    let e = PolicyDocument::parse(text).expect_err("the document is refused");
    (e.path().unwrap_or_default().to_string(), e.to_string())
}

/// Asserts that `text` is refused at `path` for a reason containing `reason`.
#[track_caller]
fn assert_refused(text: &str, path: &str, reason: &str) {
    let (got_path, message) = refusal(text);
    assert_eq!(got_path, path, "{message}");
    assert!(message.contains(reason), "{message:?} lacks {reason:?}");
    assert!(message.contains(path), "{message:?} lacks its path");
}

/// A document of one spec with `rules` under it (indented by two spaces).
fn spec_with(rules: &str) -> String {
    format!(
        "kind: CiliumNetworkPolicy\nmetadata: {{name: p, namespace: demo}}\nspec:\n  endpointSelector: {{}}\n{rules}"
    )
}

#[test]
fn parses_yaml_and_round_trips_as_json() {
    let doc = PolicyDocument::parse(YAML).unwrap();
    assert_eq!(doc.key(), "demo/allow-client");
    assert_eq!(doc.namespace(), Some("demo"));
    let rule = doc.rules().next().unwrap();
    assert_eq!(
        rule.ingress[0].to_ports[0].ports[0].port,
        Port::Number(8080)
    );
    assert_eq!(
        rule.ingress[0].to_ports[0].ports[0].protocol,
        L4Protocol::Tcp
    );
    assert_eq!(
        rule.ingress[1].from_entities.as_deref(),
        Some(&[Entity::World][..])
    );
    let again = PolicyDocument::decode("demo/allow-client", &doc.encode()).unwrap();
    assert_eq!(again, doc);
    assert!(doc.metadata.extra.contains_key("labels"));
    // Ports are written as strings, as Cilium does.
    let json: serde_json::Value = serde_json::from_slice(&doc.encode()).unwrap();
    assert_eq!(
        json["spec"]["ingress"][0]["toPorts"][0]["ports"][0]["port"],
        "8080"
    );
}

#[test]
fn full_document_parses_and_round_trips() {
    let doc = PolicyDocument::parse(FULL).unwrap();
    let spec = doc.spec.as_ref().unwrap();
    assert_eq!(doc.rules().count(), 2);
    assert_eq!(spec.description.as_deref(), Some("every rule kind"));
    assert_eq!(
        spec.enable_default_deny,
        Some(DefaultDeny {
            ingress: Some(true),
            egress: Some(false)
        })
    );
    assert_eq!(spec.labels.as_ref().unwrap()[0]["key"], "team");

    // Ports: numbers, ranges, names, SCTP, ANY.
    let ports = &spec.ingress[0].to_ports[0].ports;
    assert_eq!(ports.len(), 5);
    assert_eq!(
        ports[1],
        PortProtocol {
            port: Port::Number(9000),
            end_port: Some(9100),
            protocol: L4Protocol::Udp,
        }
    );
    assert_eq!(ports[2].port, Port::Name("http".into()));
    assert_eq!(ports[2].protocol, L4Protocol::Any);
    assert_eq!(ports[3].protocol, L4Protocol::Sctp);
    assert_eq!(
        ports[4].end_port,
        Some(443),
        "endPort equal to port is a range of one"
    );
    assert_eq!(ports[4].protocol, L4Protocol::Any, "read in any case");

    // fromCIDR: bare addresses are host prefixes.
    let peers = spec.ingress[1].peer_rule();
    assert_eq!(
        peers.cidrs,
        vec![
            CidrRule::new(cidr("192.0.2.7/32")),
            CidrRule::new(cidr("198.51.100.0/24")),
            CidrRule::new(cidr("2001:db8::/32")),
        ]
    );
    assert!(peers.has_l3() && peers.has_l4());
    let fields = &spec.ingress[1].icmps[0].fields;
    assert_eq!(fields[0].family, IcmpFamily::Ipv4);
    assert_eq!(fields[0].type_number(), 8);
    assert_eq!(fields[1].icmp_type, IcmpType::Name("EchoRequest".into()));
    assert_eq!(fields[1].type_number(), 128);

    // Every entity.
    assert_eq!(spec.ingress[2].from_entities.as_ref().unwrap().len(), 13);
    assert_eq!(
        spec.ingress[2].from_entities.as_ref().unwrap()[12],
        Entity::KubeApiserver
    );

    // Deny rules, CIDR sets with exceptions.
    let deny = spec.ingress_deny[0].peer_rule();
    assert_eq!(
        deny.cidrs,
        vec![CidrRule {
            cidr: cidr("10.0.0.0/8"),
            except: vec![cidr("10.96.0.0/12"), cidr("10.1.2.3/32")],
        }]
    );
    assert!(deny.has_l3() && deny.has_l4());

    // Egress in every form.
    assert_eq!(spec.egress.len(), 5);
    assert_eq!(
        spec.egress[1].peer_rule().cidrs,
        vec![CidrRule::new(cidr("20.1.1.1/32"))]
    );
    assert_eq!(
        spec.egress[2].to_cidr_set.as_ref().unwrap()[0].except,
        vec![cidr("fd00:1::/32")]
    );
    let icmp: Vec<(IcmpFamily, u8)> = spec.egress[4].icmps[0]
        .fields
        .iter()
        .map(|f| (f.family, f.type_number()))
        .collect();
    assert_eq!(
        icmp,
        [
            (IcmpFamily::Ipv4, 0),
            (IcmpFamily::Ipv4, 11),
            (IcmpFamily::Ipv6, 135),
            (IcmpFamily::Ipv6, 2),
        ]
    );
    let egress_icmp = spec.egress[4].peer_rule();
    assert!(!egress_icmp.has_l3() && egress_icmp.has_l4());
    assert_eq!(spec.egress_deny.len(), 2);
    assert_eq!(spec.egress_deny[1].icmps[0].fields[0].type_number(), 3);
    let open = doc.specs[0].egress[0].peer_rule();
    assert_eq!(open.endpoints.map(<[_]>::len), Some(1));
    assert!(open.has_l3() && !open.has_l4());

    // Encode → decode gives the same document, through JSON and YAML alike.
    let again = PolicyDocument::decode("demo/everything", &doc.encode()).unwrap();
    assert_eq!(again, doc);
    let yaml = serde_norway::to_string(&doc).unwrap();
    assert_eq!(PolicyDocument::parse(&yaml).unwrap(), doc);
    let json: serde_json::Value = serde_json::from_slice(&doc.encode()).unwrap();
    assert_eq!(PolicyDocument::from_json_value(json.clone()).unwrap(), doc);
    assert_eq!(
        json["spec"]["ingress"][1]["icmps"][0]["fields"][1],
        serde_json::json!({"family": "IPv6", "type": "EchoRequest"})
    );
    assert_eq!(
        json["spec"]["ingress"][0]["toPorts"][0]["ports"][4],
        serde_json::json!({"port": "443", "endPort": 443, "protocol": "ANY"})
    );
    assert_eq!(
        json["spec"]["ingressDeny"][0]["fromCIDRSet"][0]["except"][1],
        "10.1.2.3/32"
    );
}

/// `examples/policies/l3/cidr/cidr.yaml` of Cilium, as written there.
#[test]
fn cilium_docs_cidr_example() {
    let doc = PolicyDocument::parse(
        r#"apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "cidr-rule"
spec:
  endpointSelector:
    matchLabels:
      app: myService
  egress:
  - toCIDR:
    - 20.1.1.1/32
  - toCIDRSet:
    - cidr: 10.0.0.0/8
      except:
      - 10.96.0.0/12
"#,
    )
    .unwrap();
    let spec = doc.spec.as_ref().unwrap();
    assert_eq!(
        spec.egress[1].peer_rule().cidrs,
        vec![CidrRule {
            cidr: cidr("10.0.0.0/8"),
            except: vec![cidr("10.96.0.0/12")],
        }]
    );
    assert_eq!(
        PolicyDocument::decode("default/cidr-rule", &doc.encode()).unwrap(),
        doc
    );
}

/// `examples/policies/l4/icmp.yaml` of Cilium, as written there.
#[test]
fn cilium_docs_icmp_example() {
    let doc = PolicyDocument::parse(
        r#"apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "icmp-rule"
spec:
  endpointSelector:
    matchLabels:
      app: myService
  egress:
  - icmps:
    - fields:
      - type: 8
        family: IPv4
      - type: EchoRequest
        family: IPv6
"#,
    )
    .unwrap();
    let fields = &doc.spec.as_ref().unwrap().egress[0].icmps[0].fields;
    assert_eq!(
        fields
            .iter()
            .map(|f| (f.family.protocol(), f.type_number()))
            .collect::<Vec<_>>(),
        [(L4Protocol::Icmp, 8), (L4Protocol::IcmpV6, 128)]
    );
    assert_eq!(
        PolicyDocument::decode("default/icmp-rule", &doc.encode()).unwrap(),
        doc
    );
}

/// `examples/policies/l4/l4_port_range.yaml` of Cilium, as written there.
#[test]
fn cilium_docs_port_range_example() {
    let doc = PolicyDocument::parse(
        r#"apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "l4-port-range-rule"
spec:
  endpointSelector:
    matchLabels:
      app: myService
  egress:
    - toPorts:
      - ports:
        - port: "80"
          endPort: 444
          protocol: TCP
"#,
    )
    .unwrap();
    let port = &doc.spec.as_ref().unwrap().egress[0].to_ports[0].ports[0];
    assert_eq!((&port.port, port.end_port), (&Port::Number(80), Some(444)));
}

#[test]
fn cidrs_are_normalized_like_go() {
    assert_eq!(cidr("10.1.2.3/8").to_string(), "10.0.0.0/8");
    assert_eq!(cidr("10.1.2.3"), cidr("10.1.2.3/32"));
    assert_eq!(cidr("fd00::1").to_string(), "fd00::1/128");
    assert_eq!(cidr("fd00::1:2/64").to_string(), "fd00::/64");
    assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
    for (text, reason) in [
        ("10.0.0.0/33", "prefix length 33 is above 32"),
        ("fd00::/129", "prefix length 129 is above 128"),
        ("10.0.0.0/99999999999", "is above 32"),
        ("10.0.0/8", "is not an IPv4 or IPv6 address"),
        ("10.0.0.0/", "is not a number"),
        ("10.0.0.0/+8", "is not a number"),
        ("", "is not an IPv4 or IPv6 address"),
    ] {
        let e = text.parse::<Cidr>().unwrap_err().to_string();
        assert!(e.contains(reason), "{text}: {e}");
    }
    // Parse errors name the field.
    assert_refused(
        &spec_with("  egress:\n  - toCIDR: [10.0.0.0/8, 10.0.0.0/33]\n"),
        "spec.egress[0].toCIDR[1]",
        "prefix length 33 is above 32",
    );
    // The YAML parser's own, shorter path is not repeated.
    let (_, message) = refusal(&spec_with("  egress:\n  - toCIDR: [10.0.0.0/33]\n"));
    assert_eq!(message.matches("spec.egress").count(), 1, "{message}");
    assert_refused(
        &spec_with("  ingress:\n  - fromCIDRSet: [{cidr: 10.0.0.0/8, except: [nonsense]}]\n"),
        "spec.ingress[0].fromCIDRSet[0].except[0]",
        "invalid CIDR \"nonsense\"",
    );
}

#[test]
fn cidr_exceptions_lie_inside_their_cidr() {
    assert_refused(
        &spec_with(
            "  egress:\n  - toCIDRSet:\n    - cidr: 10.1.0.0/16\n    - cidr: 10.1.0.0/16\n      except: [10.2.0.0/16]\n",
        ),
        "spec.egress[0].toCIDRSet[1].except[0]",
        "10.2.0.0/16 is not inside 10.1.0.0/16",
    );
    // Wider than the CIDR, though starting inside it.
    assert_refused(
        &spec_with("  egress:\n  - toCIDRSet: [{cidr: 10.1.0.0/16, except: [10.0.0.0/8]}]\n"),
        "spec.egress[0].toCIDRSet[0].except[0]",
        "10.0.0.0/8 is not inside 10.1.0.0/16",
    );
    assert_refused(
        &spec_with(
            "  ingressDeny:\n  - fromCIDRSet: [{cidr: 10.0.0.0/8, except: [\"fd00::/64\"]}]\n",
        ),
        "spec.ingressDeny[0].fromCIDRSet[0].except[0]",
        "fd00::/64 is not in the family of 10.0.0.0/8",
    );
    // The CIDR itself, and host bits in an except, are fine.
    PolicyDocument::parse(&spec_with(
        "  egress:\n  - toCIDRSet: [{cidr: 10.1.0.0/16, except: [10.1.0.0/16, 10.1.2.3/24]}]\n",
    ))
    .unwrap();
}

#[test]
fn port_ranges_and_numbers() {
    let doc = |ports: &str| {
        format!(
            "kind: CiliumNetworkPolicy\nmetadata: {{name: p}}\nspec:\n  endpointSelector: {{}}\nspecs:\n- endpointSelector: {{}}\n- endpointSelector: {{}}\n  ingress:\n  - toPorts:\n    - ports: [{{port: \"22\"}}, {{port: 53, protocol: UDP}}, {ports}]\n"
        )
    };
    assert_refused(
        &doc("{port: 80, endPort: 79}"),
        "specs[1].ingress[0].toPorts[0].ports[2].endPort",
        "79 is below port 80",
    );
    assert_refused(
        &doc("{port: http, endPort: 90}"),
        "specs[1].ingress[0].toPorts[0].ports[2].endPort",
        "a named port (http) cannot have an endPort",
    );
    assert_refused(
        &doc("{endPort: 90}"),
        "specs[1].ingress[0].toPorts[0].ports[2].endPort",
        "endPort needs a non-zero port",
    );
    assert_refused(
        &doc("{port: 80, endPort: 70000}"),
        "specs[1].ingress[0].toPorts[0].ports[2].endPort",
        "endPort 70000 is out of range 0-65535",
    );
    assert_refused(
        &doc("{port: 70000}"),
        "specs[1].ingress[0].toPorts[0].ports[2].port",
        "port 70000 is out of range 0-65535",
    );
    assert_refused(
        &doc("{port: \"70000\"}"),
        "specs[1].ingress[0].toPorts[0].ports[2].port",
        "port 70000 is out of range 0-65535",
    );
    assert_refused(
        &doc("{port: -1}"),
        "specs[1].ingress[0].toPorts[0].ports[2].port",
        "port -1 is out of range",
    );
    assert_refused(
        &doc("{port: \"\"}"),
        "specs[1].ingress[0].toPorts[0].ports[2].port",
        "port is empty",
    );
    assert_refused(
        &doc("{port: \"080\"}"),
        "specs[1].ingress[0].toPorts[0].ports[2].port",
        "leading zero",
    );
    assert_refused(
        &doc("{port: 80, protocol: TCPX}"),
        "specs[1].ingress[0].toPorts[0].ports[2].protocol",
        "unknown variant `TCPX`",
    );
    assert_refused(
        &doc("{port: 80, protocol: VRRP}"),
        "specs[1].ingress[0].toPorts[0].ports[2].protocol",
        "protocol VRRP is not supported yet",
    );
    // Every port, three ways; a range of one; 65535.
    for ok in [
        "{port: 0}",
        "{port: \"0\"}",
        "{protocol: TCP}",
        "{port: 80, endPort: 80}",
        "{port: 1, endPort: 65535}",
        "{port: 80, endPort: 0}",
    ] {
        let parsed = PolicyDocument::parse(&doc(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
        let port = &parsed.specs[1].ingress[0].to_ports[0].ports[2];
        if ok.contains("endPort: 0") {
            assert_eq!(port.end_port, None, "endPort 0 is no range, as in Go");
        }
    }
    let omitted = PolicyDocument::parse(&doc("{protocol: TCP}")).unwrap();
    assert_eq!(
        omitted.specs[1].ingress[0].to_ports[0].ports[2].port,
        Port::Number(0)
    );
}

#[test]
fn named_ports_are_iana_service_names() {
    let doc = |port: &str| {
        spec_with(&format!(
            "  ingress:\n  - toPorts: [{{ports: [{{port: {port}, protocol: ANY}}]}}]\n"
        ))
    };
    // "0x10" is a name, as in Cilium (YAML's unquoted 0x10 is the number 16).
    for ok in ["http", "http-alt", "h2c", "a", "\"0x10\"", "dns-tcp-123456"] {
        let parsed = PolicyDocument::parse(&doc(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
        assert_eq!(
            parsed.spec.unwrap().ingress[0].to_ports[0].ports[0].port,
            Port::Name(ok.trim_matches('"').into())
        );
    }
    for (bad, reason) in [
        ("Http", "lowercase"),
        ("http_alt", "lowercase"),
        ("a-very-long-name1", "longer than 15"),
        ("-http", "start or end"),
        ("http-", "start or end"),
        ("http--alt", "\"--\""),
        ("123-456", "must contain a letter"),
    ] {
        assert_refused(
            &doc(bad),
            "spec.ingress[0].toPorts[0].ports[0].port",
            reason,
        );
    }
}

#[test]
fn icmp_goes_in_icmps() {
    for protocol in ["ICMP", "ICMPv6"] {
        assert_refused(
            &spec_with(&format!(
                "  ingress:\n  - toPorts: [{{ports: [{{port: \"8\", protocol: {protocol}}}]}}]\n"
            )),
            "spec.ingress[0].toPorts[0].ports[0].protocol",
            "has no ports (got port 8); match ICMP types with icmps",
        );
    }
    assert_refused(
        &spec_with(
            "  egress:\n  - toPorts: [{ports: [{port: \"1\", endPort: 5, protocol: ICMP}]}]\n",
        ),
        "spec.egress[0].toPorts[0].ports[0].protocol",
        "got port 1-5",
    );
    // All of ICMP, as clustermesh policies allowed ping before `icmps`.
    let doc = PolicyDocument::parse(&spec_with(
        "  ingress:\n  - toPorts: [{ports: [{port: \"0\", protocol: ICMP}, {protocol: ICMPV6}]}]\n",
    ))
    .unwrap();
    assert_eq!(
        doc.spec.unwrap().ingress[0].to_ports[0].ports[1].protocol,
        L4Protocol::IcmpV6
    );
    assert_refused(
        &spec_with(
            "  ingress:\n  - toPorts: [{ports: [{port: \"80\"}]}]\n    icmps: [{fields: [{type: 8}]}]\n",
        ),
        "spec.ingress[0]",
        "the icmps block may only be present without toPorts",
    );
}

#[test]
fn icmp_types_by_number_and_name() {
    let doc =
        |fields: &str| spec_with(&format!("  egress:\n  - icmps: [{{fields: [{fields}]}}]\n"));
    assert_refused(
        &doc("{type: 8}, {type: 256}"),
        "spec.egress[0].icmps[0].fields[1].type",
        "ICMP type 256 is out of range 0-255",
    );
    assert_refused(
        &doc("{type: \"300\"}"),
        "spec.egress[0].icmps[0].fields[0].type",
        "ICMP type 300 is out of range 0-255",
    );
    assert_refused(
        &doc("{type: 8}, {type: Bogus, family: IPv6}"),
        "spec.egress[0].icmps[0].fields[1].type",
        "\"Bogus\" is not an IPv6 ICMP type name; known names: DestinationUnreachable",
    );
    assert_refused(
        &doc("{type: PacketTooBig}"),
        "spec.egress[0].icmps[0].fields[0].type",
        "it is an IPv6 type: set family: IPv6",
    );
    assert_refused(
        &doc("{type: 8, family: IPv5}"),
        "spec.egress[0].icmps[0].fields[0].family",
        "unknown variant `IPv5`",
    );
    assert_refused(
        &doc("{family: IPv4}"),
        "spec.egress[0].icmps[0].fields[0]",
        "missing field `type`",
    );
    let many = vec!["{type: 8}"; 41].join(", ");
    assert_refused(
        &doc(&many),
        "spec.egress[0].icmps[0].fields",
        "41 types; at most 40",
    );
    // Every name resolves in its family, to Cilium's numbers.
    for family in [IcmpFamily::Ipv4, IcmpFamily::Ipv6] {
        for (name, number) in icmp::names(family) {
            let field = IcmpField {
                family,
                icmp_type: IcmpType::Name(name.to_string()),
            };
            assert_eq!(field.type_number(), *number, "{family} {name}");
        }
    }
    let v4 = |name: &str| IcmpFamily::Ipv4.type_by_name(name);
    let v6 = |name: &str| IcmpFamily::Ipv6.type_by_name(name);
    assert_eq!(
        [
            v4("EchoReply"),
            v4("DestinationUnreachable"),
            v4("Redirect"),
            v4("EchoRequest")
        ],
        [Some(0), Some(3), Some(5), Some(8)]
    );
    assert_eq!(
        [
            v4("RouterAdvertisement"),
            v4("RouterSolicitation"),
            v4("TimeExceeded")
        ],
        [Some(9), Some(10), Some(11)]
    );
    assert_eq!(
        [
            v4("ParameterProblem"),
            v4("Timestamp"),
            v4("TimestampReply"),
            v4("Photuris")
        ],
        [Some(12), Some(13), Some(14), Some(40)]
    );
    assert_eq!(
        [v4("ExtendedEchoRequest"), v4("ExtendedEchoReply")],
        [Some(42), Some(43)]
    );
    assert_eq!(
        [
            v6("DestinationUnreachable"),
            v6("PacketTooBig"),
            v6("TimeExceeded")
        ],
        [Some(1), Some(2), Some(3)]
    );
    assert_eq!(
        [v6("ParameterProblem"), v6("EchoRequest"), v6("EchoReply")],
        [Some(4), Some(128), Some(129)]
    );
    assert_eq!(
        [
            v6("MulticastListenerQuery"),
            v6("MulticastListenerReport"),
            v6("MulticastListenerDone")
        ],
        [Some(130), Some(131), Some(132)]
    );
    assert_eq!(
        [
            v6("RouterSolicitation"),
            v6("RouterAdvertisement"),
            v6("NeighborSolicitation"),
            v6("NeighborAdvertisement"),
            v6("RedirectMessage")
        ],
        [Some(133), Some(134), Some(135), Some(136), Some(137)]
    );
    assert_eq!(v4("PacketTooBig"), None);
}

#[test]
fn at_most_forty_ports() {
    let ports = vec!["{port: 80}"; 41].join(", ");
    assert_refused(
        &spec_with(&format!(
            "  ingress:\n  - toPorts: [{{ports: [{ports}]}}]\n"
        )),
        "spec.ingress[0].toPorts[0].ports",
        "41 ports; at most 40",
    );
    let ports = vec!["{port: 80}"; 40].join(", ");
    PolicyDocument::parse(&spec_with(&format!(
        "  ingress:\n  - toPorts: [{{ports: [{ports}]}}]\n"
    )))
    .unwrap();
}

#[test]
fn one_kind_of_peer_per_rule() {
    assert_refused(
        &spec_with(
            "  egress:\n  - toEndpoints: [{matchLabels: {app: db}}]\n    toCIDR: [10.0.0.0/8]\n",
        ),
        "spec.egress[0]",
        "combining toEndpoints and toCIDR is not supported",
    );
    assert_refused(
        &spec_with(
            "  ingress:\n  - {}\n  - fromCIDRSet: [{cidr: 10.0.0.0/8}]\n    fromEntities: [world]\n",
        ),
        "spec.ingress[1]",
        "combining fromCIDRSet and fromEntities is not supported",
    );
    assert_refused(
        &spec_with("  ingressDeny:\n  - fromEndpoints: [{}]\n    fromCIDR: [10.0.0.0/8]\n"),
        "spec.ingressDeny[0]",
        "combining fromEndpoints and fromCIDR is not supported",
    );
    assert_refused(
        &spec_with(
            "  egressDeny:\n  - toCIDR: [10.0.0.0/8]\n    toCIDRSet: [{cidr: 10.0.0.0/8}]\n",
        ),
        "spec.egressDeny[0]",
        "combining toCIDR and toCIDRSet is not supported",
    );
    // An empty list is no peer kind (Cilium counts entries).
    PolicyDocument::parse(&spec_with(
        "  ingress:\n  - fromEndpoints: []\n    fromCIDR: [10.0.0.0/8]\n",
    ))
    .unwrap();
}

#[test]
fn cilium_fields_not_supported_yet_are_refused_by_name() {
    for (rules, path, reason) in [
        (
            "  nodeSelector: {matchLabels: {a: b}}\n",
            "spec",
            "nodeSelector is not supported yet",
        ),
        ("  log: {value: x}\n", "spec", "log is not supported yet"),
        (
            "  ingress:\n  - fromRequires: [{}]\n",
            "spec.ingress[0].fromRequires",
            "fromRequires is not supported yet (nothing was applied)",
        ),
        (
            "  ingress:\n  - fromGroups: [{aws: {}}]\n",
            "spec.ingress[0].fromGroups",
            "fromGroups is not supported yet",
        ),
        (
            "  ingress:\n  - fromNodes: [{}]\n",
            "spec.ingress[0].fromNodes",
            "fromNodes is not supported yet",
        ),
        (
            "  ingress:\n  - authentication: {mode: required}\n",
            "spec.ingress[0].authentication",
            "authentication is not supported yet",
        ),
        (
            "  egress:\n  - toRequires: [{}]\n",
            "spec.egress[0].toRequires",
            "toRequires is not supported yet",
        ),
        (
            "  egress:\n  - toGroups: [{aws: {}}]\n",
            "spec.egress[0].toGroups",
            "toGroups is not supported yet",
        ),
        (
            "  egress:\n  - toNodes: [{}]\n",
            "spec.egress[0].toNodes",
            "toNodes is not supported yet",
        ),
        (
            "  egress:\n  - toServices: [{k8sService: {serviceName: a, namespace: b}}]\n",
            "spec.egress[0].toServices",
            "toServices is not supported yet",
        ),
        (
            "  egressDeny:\n  - toFQDNs: [{matchName: example.com}]\n",
            "spec.egressDeny[0].toFQDNs",
            "toFQDNs is not allowed in egressDeny rules",
        ),
        (
            "  egress:\n  - toCIDRSet: [{cidrGroupRef: office}]\n",
            "spec.egress[0].toCIDRSet[0]",
            "cidrGroupRef is not supported yet",
        ),
        (
            "  ingress:\n  - fromCIDRSet: [{cidr: 10.0.0.0/8, cidrGroupSelector: {}}]\n",
            "spec.ingress[0].fromCIDRSet[0]",
            "cidrGroupSelector is not supported yet",
        ),
        (
            "  ingress:\n  - toPorts: [{ports: [{port: \"80\"}], rules: {http: [{method: GET}]}}]\n",
            "spec.ingress[0].toPorts[0].rules",
            "rules is not supported yet (nothing was applied)",
        ),
        (
            "  ingressDeny:\n  - toPorts: [{ports: [{port: \"80\"}], rules: {http: [{}]}}]\n",
            "spec.ingressDeny[0].toPorts[0].rules",
            "rules is not allowed in ingressDeny rules",
        ),
        (
            "  egress:\n  - toPorts: [{ports: [{port: \"443\"}], terminatingTLS: {secret: {name: a}}}]\n",
            "spec.egress[0].toPorts[0].terminatingTLS",
            "terminatingTLS is not supported yet",
        ),
        (
            "  egress:\n  - toPorts: [{ports: [{port: \"443\"}], originatingTLS: {secret: {name: a}}}]\n",
            "spec.egress[0].toPorts[0].originatingTLS",
            "originatingTLS is not supported yet",
        ),
        (
            "  egress:\n  - toPorts: [{ports: [{port: \"443\"}], serverNames: [example.com]}]\n",
            "spec.egress[0].toPorts[0].serverNames",
            "serverNames is not supported yet",
        ),
        (
            "  egress:\n  - toPorts: [{ports: [{port: \"80\"}], listener: {name: l, envoyConfig: {name: c}}}]\n",
            "spec.egress[0].toPorts[0].listener",
            "listener is not supported yet",
        ),
    ] {
        assert_refused(&spec_with(rules), path, reason);
    }
    // A host policy has a nodeSelector instead of an endpointSelector.
    assert_refused(
        "kind: CiliumClusterwideNetworkPolicy\nmetadata: {name: host}\nspec:\n  nodeSelector: {}\n  ingress: [{}]\n",
        "spec",
        "nodeSelector is not supported yet (host policies",
    );
    assert_refused(
        "kind: CiliumClusterwideNetworkPolicy\nmetadata: {name: host}\nspec:\n  ingress: [{}]\n",
        "spec",
        "missing field `endpointSelector`",
    );
}

#[test]
fn unknown_fields_and_bad_values_name_their_path() {
    assert_refused(
        &YAML.replace("fromEndpoints", "fromEndpoint"),
        "spec.ingress[0].fromEndpoint",
        "unknown field `fromEndpoint`",
    );
    assert_refused(
        &spec_with("  ingress: [{}]\n  egres: []\n"),
        "spec.egres",
        "unknown field `egres`",
    );
    assert_refused(
        &spec_with("  egress:\n  - toEntities: [world, everyone]\n"),
        "spec.egress[0].toEntities[1]",
        "unknown variant `everyone`",
    );
    assert_refused(
        &spec_with("  enableDefaultDeny: {ingress: true, both: false}\n"),
        "spec.enableDefaultDeny.both",
        "unknown field `both`",
    );
    // JSON: the same paths, and the JSON parser's words.
    let json = r#"{"kind":"CiliumNetworkPolicy","metadata":{"name":"p"},"spec":{"endpointSelector":{},"egress":[{"toPorts":[{"ports":[{"port":"80","protocl":"TCP"}]}]}]}}"#;
    let (path, message) = refusal(json);
    assert_eq!(path, "spec.egress[0].toPorts[0].ports[0].protocl");
    assert!(
        message.starts_with("invalid JSON policy: spec.egress[0]"),
        "{message}"
    );
    let e = PolicyDocument::parse("{\"kind\": ").unwrap_err();
    assert!(matches!(e, PolicyError::Json { .. }), "{e}");
    assert!(bad(&YAML.replace("CiliumNetworkPolicy", "NetworkPolicy")).contains("unknown variant"));
}

fn bad(text: &str) -> String {
    PolicyDocument::parse(text).unwrap_err().to_string()
}

#[test]
fn selectors_are_checked_where_they_are() {
    let expr = YAML.replace(
        "matchLabels: {app: echo}",
        "matchExpressions: [{key: app, operator: In}]",
    );
    assert!(bad(&expr).contains("at least one value"));
    assert!(matches!(
        PolicyDocument::parse(&expr),
        Err(PolicyError::Selector {
            path,
            error: LabelSelectorError::MissingValues { .. }
        }) if path == "spec.endpointSelector"
    ));
    assert_refused(
        &spec_with(
            "  egress:\n  - toEndpoints: [{}, {matchExpressions: [{key: app, operator: Exists, values: [x]}]}]\n",
        ),
        "spec.egress[0].toEndpoints[1]",
        "takes no values",
    );
    assert_refused(
        &spec_with("  ingressDeny:\n  - fromEndpoints: [{matchLabels: {\"k8s:\": x}}]\n"),
        "spec.ingressDeny[0].fromEndpoints[0]",
        "empty key",
    );
}

#[test]
fn refuses_bad_documents_with_a_reason() {
    assert!(
        bad("{\"kind\":\"CiliumNetworkPolicy\",\"metadata\":{\"name\":\"x\"}}")
            .contains("neither spec nor specs")
    );
    assert!(matches!(
        PolicyDocument::parse(&YAML.replace("name: allow-client", "name: a/b")),
        Err(PolicyError::InvalidName { .. })
    ));
    assert!(matches!(
        PolicyDocument::parse(&YAML.replace("namespace: demo", "namespace: _x")),
        Err(PolicyError::InvalidNamespace { .. })
    ));
    // Egress is accepted now.
    let egress =
        PolicyDocument::parse(&YAML.replace("  ingress:", "  egress: [{}]\n  ingress:")).unwrap();
    assert_eq!(egress.spec.unwrap().egress, vec![EgressRule::default()]);
}

/// One bad field anywhere refuses the whole document; nothing of it is
/// returned or stored.
#[test]
fn a_bad_rule_refuses_the_whole_document() {
    let mut text = FULL.to_string();
    text.push_str("- endpointSelector: {}\n  egressDeny:\n  - toPorts: [{ports: [{port: \"90\", endPort: 10}]}]\n");
    assert_refused(
        &text,
        "specs[1].egressDeny[0].toPorts[0].ports[0].endPort",
        "10 is below port 90",
    );
    // The same through the store and through validate() of a built value.
    let mut doc = PolicyDocument::parse(FULL).unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(&doc.encode()).unwrap();
    json["specs"][0]["egress"][0]["toPorts"] =
        serde_json::json!([{"ports": [{"port": "http", "endPort": 90}]}]);
    let e = PolicyDocument::decode("demo/everything", json.to_string().as_bytes()).unwrap_err();
    assert_eq!(e.reason, InvalidReason::Malformed);
    assert!(
        e.to_string()
            .contains("specs[0].egress[0].toPorts[0].ports[0].endPort"),
        "{e}"
    );
    doc.specs[0].egress[0].icmps = vec![IcmpRule {
        fields: vec![IcmpField {
            family: IcmpFamily::Ipv6,
            icmp_type: IcmpType::Name("Timestamp".into()),
        }],
    }];
    let e = doc.validate().unwrap_err();
    assert_eq!(e.path(), Some("specs[0].egress[0].icmps[0].fields[0].type"));
}

#[test]
fn json_values_get_the_same_paths() {
    let value = serde_json::json!({
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "p", "namespace": "demo"},
        "spec": {"endpointSelector": {}, "egress": [{"toCIDR": ["10.0.0.0/40"]}]},
    });
    let e = PolicyDocument::from_json_value(value).unwrap_err();
    assert_eq!(e.path(), Some("spec.egress[0].toCIDR[0]"));
    assert!(
        e.to_string().contains("prefix length 40 is above 32"),
        "{e}"
    );
    let value = serde_json::json!({
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "p", "namespace": "demo"},
        "spec": {"endpointSelector": {}, "egress": [{"toEndpoints": [{}], "toEntities": ["world"]}]},
    });
    let e = PolicyDocument::from_json_value(value).unwrap_err();
    assert_eq!(
        e.to_string(),
        "spec.egress[0]: combining toEndpoints and toEntities is not supported; write one rule for each"
    );
}

#[test]
fn clusterwide_and_default_namespace() {
    let cw = YAML.replace(
        "kind: CiliumNetworkPolicy",
        "kind: CiliumClusterwideNetworkPolicy",
    );
    assert_eq!(
        PolicyDocument::parse(&cw).unwrap().key(),
        "_clusterwide/allow-client"
    );
    let no_ns = YAML.replace("  namespace: demo\n", "");
    assert_eq!(
        PolicyDocument::parse(&no_ns).unwrap().key(),
        "default/allow-client"
    );
    let doc = PolicyDocument::parse(YAML).unwrap();
    assert_eq!(
        PolicyDocument::decode("demo/other", &doc.encode())
            .unwrap_err()
            .reason,
        InvalidReason::KeyMismatch
    );
}

/// `examples/policies/l7/dns/dns.yaml` of Cilium, in its shape: lookups of
/// any name through kube-dns, connections to the names looked up.
const DNS_POLICY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: fqdn
  namespace: demo
spec:
  endpointSelector:
    matchLabels: {app: client}
  egress:
  - toEndpoints:
    - matchLabels:
        "k8s:io.kubernetes.pod.namespace": kube-system
        "k8s:k8s-app": kube-dns
    toPorts:
    - ports:
      - port: "53"
        protocol: ANY
      rules:
        dns:
        - matchPattern: "*"
  - toFQDNs:
    - matchName: api.example.com
    - matchPattern: "*.backup.example.net"
    toPorts:
    - ports:
      - {port: "443", protocol: TCP}
  - toFQDNs: [{matchPattern: "**.Example.ORG."}]
  - toCIDR: [10.0.0.53/32]
    toPorts:
    - ports: [{port: "53", protocol: UDP}, {port: "53", protocol: TCP}]
      rules:
        dns:
        - matchName: api.example.com
        - {matchName: db.example.com, matchPattern: "db-*.example.com"}
"#;

#[test]
fn fqdn_rules_parse_and_round_trip() {
    let doc = PolicyDocument::parse(DNS_POLICY).unwrap();
    let spec = doc.spec.as_ref().unwrap();

    // The DNS rule: the lookups, on which ports, to which peers.
    let dns = spec.egress[0].peer_rule();
    assert!(dns.has_l3() && dns.has_l4() && dns.has_dns_rules());
    assert_eq!(
        dns.dns_rules().collect::<Vec<_>>(),
        [&FqdnSelector::pattern("*")]
    );
    assert_eq!(dns.fqdn_selectors(), &[] as &[FqdnSelector]);
    assert_eq!(
        spec.egress[0].to_ports[0].dns_rules(),
        &[FqdnSelector::pattern("*")]
    );

    // toFQDNs: peers by name, with or without ports.
    let fqdns = spec.egress[1].peer_rule();
    assert!(fqdns.has_l3() && fqdns.has_l4() && !fqdns.has_dns_rules());
    assert_eq!(
        fqdns.fqdn_selectors(),
        &[
            FqdnSelector::name("api.example.com"),
            FqdnSelector::pattern("*.backup.example.net"),
        ]
    );
    assert!(fqdns.endpoints.is_none() && fqdns.cidrs.is_empty());
    // A rule of toFQDNs alone names peers: a resolver that knows no name
    // yet allows nothing, rather than everything as for a rule without L3.
    let alone = spec.egress[2].peer_rule();
    assert!(alone.has_l3() && !alone.has_l4());
    assert_eq!(
        alone.fqdns.unwrap()[0].match_pattern.as_deref(),
        Some("**.Example.ORG."),
        "kept as written; the fqdn crate normalizes"
    );

    // DNS rules on UDP and TCP, an entry with both a name and a pattern.
    let both = spec.egress[3].peer_rule();
    assert_eq!(both.dns_rules().count(), 2);
    assert_eq!(
        spec.egress[3].to_ports[0].dns_rules()[1],
        FqdnSelector {
            match_name: Some("db.example.com".into()),
            match_pattern: Some("db-*.example.com".into()),
        }
    );

    // Other rules have no DNS rules and no names.
    let plain = PolicyDocument::parse(FULL).unwrap();
    for rule in plain.rules() {
        for r in &rule.egress {
            assert!(!r.peer_rule().has_dns_rules());
            assert!(r.peer_rule().fqdn_selectors().is_empty());
        }
    }

    // JSON and YAML round trips, in Cilium's field names.
    let again = PolicyDocument::decode("demo/fqdn", &doc.encode()).unwrap();
    assert_eq!(again, doc);
    let yaml = serde_norway::to_string(&doc).unwrap();
    assert_eq!(PolicyDocument::parse(&yaml).unwrap(), doc);
    let json: serde_json::Value = serde_json::from_slice(&doc.encode()).unwrap();
    assert_eq!(PolicyDocument::from_json_value(json.clone()).unwrap(), doc);
    assert_eq!(
        json["spec"]["egress"][1]["toFQDNs"],
        serde_json::json!([{"matchName": "api.example.com"}, {"matchPattern": "*.backup.example.net"}])
    );
    assert_eq!(
        json["spec"]["egress"][0]["toPorts"][0]["rules"],
        serde_json::json!({"dns": [{"matchPattern": "*"}]})
    );
}

#[test]
fn fqdn_names_and_patterns_are_checked_as_cilium_does() {
    let egress = |fqdns: &str| spec_with(&format!("  egress:\n  - toFQDNs: {fqdns}\n"));
    let long = format!("{}.com", "a".repeat(MAX_FQDN_LENGTH - 4));
    assert_eq!(long.len(), MAX_FQDN_LENGTH);
    for ok in [
        "[{matchName: api.example.com}]",
        "[{matchName: API.Example.com.}]",
        "[{matchName: _http._tcp.example.com}]",
        "[{matchName: www.xn--e28h.com}]",
        "[{matchPattern: \"*\"}]",
        "[{matchPattern: \"**\"}]",
        "[{matchPattern: \"*.\"}]",
        "[{matchPattern: \"**.example.com\"}]",
        "[{matchPattern: \"sub*.example.*\"}]",
        "[{matchPattern: \"*example.com\"}]",
        "[]",
    ] {
        PolicyDocument::parse(&egress(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    PolicyDocument::parse(&egress(&format!("[{{matchName: {long}}}]"))).unwrap();

    for (fqdns, path, reason) in [
        (
            "[{matchName: a.com}, {matchPattern: \"*.b.com\", matchName: b.com}]",
            "spec.egress[0].toFQDNs[1]",
            "matchName and matchPattern are mutually exclusive",
        ),
        (
            "[{}]",
            "spec.egress[0].toFQDNs[0]",
            "one of matchName and matchPattern is required",
        ),
        (
            "[{matchName: a.com}, {matchPattern: \"*.ex ample.net\"}]",
            "spec.egress[0].toFQDNs[1].matchPattern",
            "has the character ' '; a pattern may only contain letters, digits, '-', '_', '.' and '*'",
        ),
        (
            "[{matchName: \"*.example.com\"}]",
            "spec.egress[0].toFQDNs[0].matchName",
            "has the character '*'; a name may only contain",
        ),
        (
            "[{matchName: \"exämple.com\"}]",
            "spec.egress[0].toFQDNs[0].matchName",
            "has the character 'ä'",
        ),
        (
            "[{matchPattern: \"[a-z]+.com\"}]",
            "spec.egress[0].toFQDNs[0].matchPattern",
            "has the character '['",
        ),
        (
            "[{matchName: \"a..com\"}]",
            "spec.egress[0].toFQDNs[0].matchName",
            "has an empty label",
        ),
        (
            "[{matchPattern: \".example.com\"}]",
            "spec.egress[0].toFQDNs[0].matchPattern",
            "has an empty label",
        ),
        (
            "[{matchName: \"\"}]",
            "spec.egress[0].toFQDNs[0].matchName",
            "the name is empty",
        ),
        (
            "[{matchName: a.com, matchLabels: {}}]",
            "spec.egress[0].toFQDNs[0].matchLabels",
            "unknown field `matchLabels`",
        ),
    ] {
        assert_refused(&egress(fqdns), path, reason);
    }
    assert_refused(
        &egress(&format!("[{{matchPattern: \"x{long}\"}}]")),
        "spec.egress[0].toFQDNs[0].matchPattern",
        "the pattern is 256 characters long; at most 255 are allowed",
    );
}

#[test]
fn fqdn_peers_follow_ciliums_rule_shapes() {
    // One kind of peer per rule, toFQDNs included.
    assert_refused(
        &spec_with("  egress:\n  - toCIDR: [10.0.0.0/8]\n    toFQDNs: [{matchName: a.com}]\n"),
        "spec.egress[0]",
        "combining toCIDR and toFQDNs is not supported; write one rule for each",
    );
    assert_refused(
        &spec_with(
            "  egress:\n  - toFQDNs: [{matchName: a.com}]\n    toEndpoints: [{matchLabels: {a: b}}]\n",
        ),
        "spec.egress[0]",
        "combining toEndpoints and toFQDNs is not supported",
    );
    // Deny rules have no names (Cilium's EgressDenyRule has no toFQDNs).
    assert_refused(
        &spec_with("  egressDeny:\n  - toFQDNs: [{matchName: example.com}]\n"),
        "spec.egressDeny[0].toFQDNs",
        "toFQDNs is not allowed in egressDeny rules",
    );
    // Ingress rules have no names at all.
    assert_refused(
        &spec_with("  ingress:\n  - fromFQDNs: [{matchName: example.com}]\n"),
        "spec.ingress[0].fromFQDNs",
        "unknown field `fromFQDNs`",
    );
    // toFQDNs with icmps, as any peer kind.
    PolicyDocument::parse(&spec_with(
        "  egress:\n  - toFQDNs: [{matchName: a.com}]\n    icmps: [{fields: [{type: 8}]}]\n",
    ))
    .unwrap();
}

#[test]
fn dns_rules_sit_on_dns_ports_of_egress_rules() {
    let dns = |ports: &str| {
        spec_with(&format!(
            "  egress:\n  - toPorts:\n    - ports: {ports}\n      rules:\n        dns: [{{matchPattern: \"*\"}}]\n"
        ))
    };
    for ok in [
        "[{port: \"53\", protocol: UDP}]",
        "[{port: \"53\", protocol: TCP}, {port: 53, protocol: udp}]",
        "[{port: \"53\"}]",
        "[{port: \"5353\", protocol: ANY}]",
        "[{port: 53, endPort: 0}]",
    ] {
        PolicyDocument::parse(&dns(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for (ports, path, reason) in [
        (
            "[]",
            "spec.egress[0].toPorts[0].ports",
            "DNS rules need their port (53) listed in ports",
        ),
        (
            "[{port: \"53\"}, {port: \"0\", protocol: UDP}]",
            "spec.egress[0].toPorts[0].ports[1].port",
            "DNS rules need a port number (53); port 0 is every port",
        ),
        (
            "[{protocol: UDP}]",
            "spec.egress[0].toPorts[0].ports[0].port",
            "port 0 is every port",
        ),
        (
            "[{port: 53, endPort: 54}]",
            "spec.egress[0].toPorts[0].ports[0].endPort",
            "DNS rules do not support port ranges",
        ),
        (
            "[{port: domain}]",
            "spec.egress[0].toPorts[0].ports[0].port",
            "not the named port domain",
        ),
        (
            "[{port: 53, protocol: SCTP}]",
            "spec.egress[0].toPorts[0].ports[0].protocol",
            "DNS rules apply to UDP, TCP or ANY, not SCTP",
        ),
    ] {
        assert_refused(&dns(ports), path, reason);
    }

    for (rules, path, reason) in [
        (
            "  ingress:\n  - toPorts: [{ports: [{port: \"53\"}], rules: {dns: [{matchName: a.com}]}}]\n",
            "spec.ingress[0].toPorts[0].rules.dns",
            "DNS rules are not allowed on ingress",
        ),
        (
            "  egressDeny:\n  - toPorts: [{ports: [{port: \"53\"}], rules: {dns: [{matchName: a.com}]}}]\n",
            "spec.egressDeny[0].toPorts[0].rules",
            "rules is not allowed in egressDeny rules (L4 only)",
        ),
        (
            "  egress:\n  - toPorts: [{ports: [{port: \"53\"}], rules: {dns: [{matchName: a.com}, {}]}}]\n",
            "spec.egress[0].toPorts[0].rules.dns[1]",
            "one of matchName and matchPattern is required",
        ),
        (
            "  egress:\n  - toPorts: [{ports: [{port: \"53\"}], rules: {dns: [{matchPattern: \"a.*.c/d\"}]}}]\n",
            "spec.egress[0].toPorts[0].rules.dns[0].matchPattern",
            "has the character '/'",
        ),
        (
            "  egress:\n  - toPorts: [{ports: [{port: \"80\", protocol: TCP}], rules: {kafka: [{topic: t}]}}]\n",
            "spec.egress[0].toPorts[0].rules",
            "rules is not supported yet (nothing was applied) for kafka",
        ),
        (
            "  egress:\n  - toPorts: [{ports: [{port: \"53\"}], rules: {dns: [{matchName: a.com}], http: [{}]}}]\n",
            "spec.egress[0].toPorts[0].rules",
            "for http; clustermesh enforces L3/L4 and DNS rules only",
        ),
        (
            "  egress:\n  - toPorts: [{ports: [{port: \"80\"}], rules: {l7proto: r, l7: [{}]}}]\n",
            "spec.egress[0].toPorts[0].rules",
            "for l7proto",
        ),
        (
            "  egress:\n  - toPorts: [{ports: [{port: \"80\"}], rules: {grpc: [{}]}}]\n",
            "spec.egress[0].toPorts[0].rules.grpc",
            "unknown field `grpc`",
        ),
    ] {
        assert_refused(&spec_with(rules), path, reason);
    }

    // `dns: []` and `rules: {}` are no L7 rules, as in Cilium: any port goes.
    for rules in ["{dns: []}", "{}"] {
        let doc = PolicyDocument::parse(&spec_with(&format!(
            "  egress:\n  - toPorts: [{{ports: [{{port: \"0\"}}], rules: {rules}}}]\n"
        )))
        .unwrap();
        let rule = doc.spec.as_ref().unwrap().egress[0].peer_rule();
        assert!(!rule.has_dns_rules(), "{rules}");
    }
}
