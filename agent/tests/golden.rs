//! Data-driven golden tests of the agent's pure decisions: policy resolution
//! (`testdata/policy/*.txt`) and service merging (`testdata/services/*.txt`).
//!
//! Each file has sections `-- name --`; the `expect` section is compared
//! with what the code computes. `UPDATE_GOLDEN=1` rewrites it.

use std::{collections::BTreeMap, fmt::Write, net::IpAddr, path::Path};

use agent::{
    EndpointId, NamedPorts, PortNames, RemoteService, RuleCookies, cidr_identity_labels,
    cidr_prefixes, merge, resolve, rules_for_endpoint,
};
use bpf::Protocol;
use kvstore::{
    Labels, NumericIdentity,
    values::{ClusterService, PolicyDocument, ServiceDef},
};

fn sections(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("-- ").and_then(|l| l.strip_suffix(" --")) {
            current = Some(name.to_string());
            out.insert(name.to_string(), String::new());
        } else if let Some(name) = &current {
            let body = out.get_mut(name).expect("section");
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

fn check(path: &Path, compute: impl Fn(&BTreeMap<String, String>) -> String) {
    let text = std::fs::read_to_string(path).unwrap();
    let s = sections(&text);
    let got = compute(&s);
    let want = s.get("expect").cloned().unwrap_or_default();
    if got.trim() == want.trim() {
        return;
    }
    if std::env::var("UPDATE_GOLDEN").is_ok() {
        let head = text.split("-- expect --").next().unwrap();
        std::fs::write(path, format!("{head}-- expect --\n{got}")).unwrap();
        return;
    }
    panic!("{}: computed\n{got}\nexpected\n{want}", path.display());
}

fn files(dir: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(dir);
    let mut all: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    all.sort();
    assert!(!all.is_empty(), "no golden files in {}", dir.display());
    all
}

/// `http=tcp/8080,dns=udp/53`
fn port_names(text: &str) -> NamedPorts {
    let mut named = NamedPorts::new();
    for p in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, spec) = p.trim().split_once('=').expect("name=proto/port");
        let (proto, port) = spec.split_once('/').expect("proto/port");
        let proto = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "sctp" => Protocol::Sctp,
            other => panic!("protocol {other}"),
        };
        named
            .entry(name.to_string())
            .or_default()
            .push((proto, port.parse().unwrap()));
    }
    named
}

#[test]
fn policy_resolution() {
    for path in files("policy") {
        check(&path, |s| {
            let cluster = s["cluster"].trim();
            let identities: Vec<(NumericIdentity, Labels)> = s["identities"]
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    let (id, labels) = l.trim().split_once(' ').expect("`<id> <labels>`");
                    (
                        NumericIdentity::new(id.parse().unwrap()),
                        Labels::parse_canonical(labels.trim()).unwrap(),
                    )
                })
                .collect();
            let policies: Vec<PolicyDocument> = s["policies"]
                .split("\n---\n")
                .filter(|d| !d.trim().is_empty())
                .map(|d| {
                    PolicyDocument::parse(d).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                })
                .collect();
            // CIDR prefixes get node-local identities as the agent gives them.
            let cidrs: Vec<(NumericIdentity, Labels)> = cidr_prefixes(&policies)
                .into_iter()
                .enumerate()
                .map(|(i, p)| {
                    (
                        NumericIdentity::new(NumericIdentity::LOCAL_SCOPE + 1 + i as u32),
                        cidr_identity_labels(p),
                    )
                })
                .collect();
            let mut out = String::new();
            for (id, labels) in &cidrs {
                writeln!(out, "cidr identity {id}: {}", labels.canonical()).unwrap();
            }
            // What the mesh's endpoints declare (egress rules name these).
            let mesh_ports = port_names(s.get("mesh ports").map_or("", |p| p.trim()));
            let mut cookies = RuleCookies::default();
            for line in s["endpoints"].lines().filter(|l| !l.trim().is_empty()) {
                let (id, rest) = line
                    .trim()
                    .split_once(' ')
                    .expect("`<endpoint id> <labels> [named ports]`");
                let id: EndpointId = id.parse().unwrap();
                let (labels, ports) = rest.trim().split_once(' ').unwrap_or((rest.trim(), ""));
                let labels = Labels::parse_canonical(labels.trim()).unwrap();
                let named = port_names(ports);
                let rules = rules_for_endpoint(
                    &labels,
                    &policies,
                    cluster,
                    PortNames {
                        own: &named,
                        mesh: &mesh_ports,
                    },
                    &mut cookies,
                );
                let entries = resolve(
                    id.get(),
                    &rules,
                    identities.iter().chain(&cidrs).map(|(i, l)| (*i, l)),
                );
                writeln!(
                    out,
                    "endpoint {id}: ingress={} egress={} policies={}",
                    rules.ingress.enforced,
                    rules.egress.enforced,
                    rules.policies.join(",")
                )
                .unwrap();
                if !rules.unresolved_ports.is_empty() {
                    writeln!(
                        out,
                        "  unresolved named ports: {}",
                        rules.unresolved_ports.join(",")
                    )
                    .unwrap();
                }
                for (k, v) in entries {
                    let peer = if k.sec_identity == 0 {
                        "any".to_string()
                    } else {
                        k.sec_identity.to_string()
                    };
                    let l4 = k.l4();
                    let l4 = match l4.protocol() {
                        None => "any".to_string(),
                        Some(p) => {
                            let p = bpf::protocol_name(p);
                            match l4.port_text().as_str() {
                                "any" => p,
                                port => format!("{p}/{port}"),
                            }
                        }
                    };
                    let rule = cookies
                        .rule(v.cookie)
                        .map(|r| format!("{} {}", r.policy, r.path))
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "  {} {} {peer} {l4} ({}) [{rule}]",
                        k.direction().as_str(),
                        v.action().map_or("?", |a| a.as_str()),
                        v.match_type().as_str(),
                    )
                    .unwrap();
                }
            }
            out
        });
    }
}

#[test]
fn service_merging() {
    for path in files("services") {
        check(&path, |s| {
            let local_cluster = s["cluster"].trim();
            let def = ServiceDef::parse(&s["service"])
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let local: Vec<IpAddr> = s
                .get("local-backends")
                .map(|b| b.split_whitespace().map(|ip| ip.parse().unwrap()).collect())
                .unwrap_or_default();
            let remotes: Vec<(String, u32, ClusterService)> = s
                .get("remote")
                .map(|r| {
                    r.lines()
                        .filter(|l| !l.trim().is_empty())
                        .map(|l| {
                            let mut parts = l.trim().splitn(4, ' ');
                            let cluster = parts.next().unwrap().to_string();
                            let id: u32 = parts.next().unwrap().parse().unwrap();
                            let shared = parts.next().unwrap() == "shared";
                            let name = kvstore::ClusterName::new(cluster.as_str()).unwrap();
                            let mut svc = ClusterService::new(&name, id, &def.namespace, &def.name);
                            svc.shared = shared;
                            for ip in parts.next().unwrap_or_default().split_whitespace() {
                                let ports = def
                                    .ports
                                    .iter()
                                    .map(|p| {
                                        (
                                            p.name.clone(),
                                            kvstore::values::L4Addr {
                                                protocol: p.protocol.as_str().into(),
                                                port: p.target(),
                                            },
                                        )
                                    })
                                    .collect();
                                svc.backends.insert(ip.to_string(), ports);
                            }
                            (cluster, id, svc)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let remote_refs: Vec<RemoteService<'_>> = remotes
                .iter()
                .map(|(c, id, svc)| RemoteService {
                    cluster: c,
                    cluster_id: *id,
                    service: svc,
                })
                .collect();
            let mut out = String::new();
            for fe in merge(&def, local_cluster, 1, &local, &remote_refs) {
                writeln!(
                    out,
                    "{} {:?}: {} [{}]",
                    fe.frontend,
                    fe.protocol,
                    fe.reason,
                    fe.active_clusters.join(",")
                )
                .unwrap();
                for slot in &fe.slots {
                    writeln!(out, "  {} cluster {}", slot.backend, slot.cluster_id).unwrap();
                }
                for s in &fe.skipped {
                    writeln!(
                        out,
                        "  skipped {} from {}: {}",
                        s.backend,
                        s.cluster,
                        s.reason.as_str()
                    )
                    .unwrap();
                }
            }
            out
        });
    }
}
