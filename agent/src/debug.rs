//! `clustermesh-agent debug …`: the agent's state and its eBPF maps, read
//! over the API socket, as tables or JSON.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use crate::{
    api_client::{ApiClient, ClientError},
    config::{DEFAULT_API_SOCKET, env},
    endpoint::Endpoint,
    views::{IdentityView, IpCacheView, MapEntryView, PolicyView, ServiceView, StatusView},
};

#[derive(Debug, Args)]
pub struct DebugArgs {
    /// The agent's API socket.
    #[arg(long, env = env::API_SOCKET, default_value = DEFAULT_API_SOCKET, global = true)]
    pub api_socket: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table", global = true)]
    pub output: Output,
    #[command(subcommand)]
    pub what: DebugCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON with one field per value, for programs.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Node, sync state, remote clusters, map sizes.
    Status,
    /// Endpoints of this node.
    Endpoints,
    /// Every identity the agent knows (all clusters).
    Identities,
    /// The ipcache as programmed.
    Ipcache,
    /// The policy entries of an endpoint (by endpoint ID).
    Policy {
        /// The endpoint's ID (see `debug endpoints`).
        endpoint: crate::EndpointId,
    },
    /// Services with their backends and why.
    Services,
    /// Names and addresses learned from DNS answers: TTL left, the
    /// endpoint that looked them up, and the `toFQDNs` selectors that use
    /// them.
    Fqdn,
    /// Content of a BPF map as the kernel holds it, decoded.
    Map {
        /// ipcache, policy, endpoints, services, backends or conntrack.
        name: String,
    },
}

/// Runs a debug command; the output goes to stdout.
pub fn run_debug(args: &DebugArgs) -> Result<String, ClientError> {
    let client = ApiClient::new(&args.api_socket);
    let json = args.output == Output::Json;
    Ok(match &args.what {
        DebugCommand::Status => {
            render(json, &client.get::<StatusView>("/v1/status")?, status_table)
        }
        DebugCommand::Endpoints => render(
            json,
            &client.get::<Vec<Endpoint>>("/v1/endpoints")?,
            |eps| {
                table(
                    &[
                        "ID",
                        "NAME",
                        "NAMESPACE",
                        "IP",
                        "IDENTITY",
                        "INTERFACE",
                        "LABELS",
                    ],
                    eps.iter()
                        .map(|e| {
                            vec![
                                e.id.to_string(),
                                e.name.clone(),
                                e.namespace.clone(),
                                e.addresses()
                                    .map(|a| a.to_string())
                                    .collect::<Vec<_>>()
                                    .join(","),
                                e.identity.to_string(),
                                e.host_ifname.clone(),
                                e.labels
                                    .iter()
                                    .map(|(k, v)| format!("{k}={v}"))
                                    .collect::<Vec<_>>()
                                    .join(","),
                            ]
                        })
                        .collect(),
                )
            },
        ),
        DebugCommand::Identities => render(
            json,
            &client.get::<Vec<IdentityView>>("/v1/identities")?,
            |ids| {
                table(
                    &["ID", "LABELS"],
                    ids.iter()
                        .map(|i| vec![i.id.to_string(), i.labels.clone()])
                        .collect(),
                )
            },
        ),
        DebugCommand::Ipcache => render(
            json,
            &client.get::<Vec<IpCacheView>>("/v1/ipcache")?,
            |rows| {
                table(
                    &["PREFIX", "IDENTITY", "HOST"],
                    rows.iter()
                        .map(|r| {
                            vec![
                                r.prefix.clone(),
                                r.identity.to_string(),
                                r.host_ip.clone().unwrap_or("-".into()),
                            ]
                        })
                        .collect(),
                )
            },
        ),
        DebugCommand::Policy { endpoint } => render(
            json,
            &client.get::<PolicyView>(&format!("/v1/policy/{endpoint}"))?,
            |p| {
                let mode = |enforced: bool| {
                    if enforced {
                        "enforced (default deny)"
                    } else {
                        "not enforced (allow all)"
                    }
                };
                let mut out = format!(
                    "endpoint {} (policy {}): ingress {}, egress {}\npolicies: {}\n",
                    p.endpoint,
                    p.policy_id,
                    mode(p.ingress_enforced),
                    mode(p.egress_enforced),
                    if p.policies.is_empty() {
                        "-".into()
                    } else {
                        p.policies.join(", ")
                    }
                );
                if !p.unresolved_ports.is_empty() {
                    out.push_str(&format!(
                        "named ports the endpoint does not declare (nothing allowed): {}\n",
                        p.unresolved_ports.join(", ")
                    ));
                }
                out.push_str(&table(
                    &[
                        "DIRECTION",
                        "ACTION",
                        "IDENTITY",
                        "PROTOCOL",
                        "PORT",
                        "RULE",
                        "LABELS",
                    ],
                    p.entries
                        .iter()
                        .map(|e| {
                            vec![
                                e.direction.clone(),
                                e.action.clone(),
                                if e.identity == 0 {
                                    "any".into()
                                } else {
                                    e.identity.to_string()
                                },
                                e.protocol.clone(),
                                match (e.port, e.port_end) {
                                    (0, 0) => "any".into(),
                                    (a, _) if e.protocol.starts_with("icmp") => {
                                        format!("type {}", a >> 8)
                                    }
                                    (a, b) if a == b => a.to_string(),
                                    (a, b) => format!("{a}-{b}"),
                                },
                                e.rule.clone(),
                                e.identity_labels.clone().unwrap_or_default(),
                            ]
                        })
                        .collect(),
                ));
                out
            },
        ),
        DebugCommand::Services => render(
            json,
            &client.get::<Vec<ServiceView>>("/v1/services")?,
            |svcs| {
                let mut out = table(
                    &["SERVICE", "FRONTEND", "BACKENDS", "ACTIVE", "WHY"],
                    svcs.iter()
                        .map(|s| {
                            vec![
                                s.name.clone(),
                                format!("{}/{}", s.frontend, s.protocol),
                                s.backends
                                    .iter()
                                    .map(|b| format!("{} (c{})", b.address, b.cluster_id))
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                s.active_clusters.join(","),
                                s.reason.clone(),
                            ]
                        })
                        .collect(),
                );
                // Remote backends no frontend can use, once per service.
                let mut said = std::collections::BTreeSet::new();
                for s in svcs {
                    for k in &s.skipped {
                        if said.insert((&s.name, &k.address)) {
                            out.push_str(&format!("skipped in {}: {}\n", s.name, k.detail));
                        }
                    }
                }
                out
            },
        ),
        DebugCommand::Fqdn => render(
            json,
            &client.get::<Vec<crate::views::FqdnView>>("/v1/fqdn")?,
            |rows| {
                table(
                    &["ENDPOINT", "NAME", "IP", "TTL", "IDENTITY", "SELECTORS"],
                    rows.iter()
                        .map(|r| {
                            vec![
                                r.endpoint.to_string(),
                                r.name.clone(),
                                r.ip.clone(),
                                if r.in_use && r.ttl_left_s == 0 {
                                    "in use".to_string()
                                } else {
                                    format!("{}s", r.ttl_left_s)
                                },
                                r.identity.map_or("-".to_string(), |i| i.to_string()),
                                if r.selectors.is_empty() {
                                    "-".to_string()
                                } else {
                                    r.selectors.join(",")
                                },
                            ]
                        })
                        .collect(),
                )
            },
        ),
        DebugCommand::Map { name } => render(
            json,
            &client.get::<Vec<MapEntryView>>(&format!("/v1/maps/{name}"))?,
            |rows| {
                table(
                    &["KEY", "VALUE"],
                    rows.iter()
                        .map(|r| vec![r.key.clone(), r.value.clone()])
                        .collect(),
                )
            },
        ),
    })
}

fn render<T: Serialize>(json: bool, value: &T, human: impl Fn(&T) -> String) -> String {
    if json {
        serde_json::to_string_pretty(value).expect("views serialize") + "\n"
    } else {
        human(value)
    }
}

fn status_table(s: &StatusView) -> String {
    let mut out = format!(
        "cluster {} (id {}), node {} ({}), pod CIDR {}{}\nsynced: {}{}\nendpoints: {}\nmaps: {}\n",
        s.cluster,
        s.cluster_id,
        s.node,
        s.node_ip,
        s.pod_cidr.as_deref().unwrap_or("-"),
        s.pod_cidr_v6
            .as_deref()
            .map(|c| format!(", IPv6 pod CIDR {c}"))
            .unwrap_or_default(),
        s.synced,
        if s.sync_timed_out {
            " (sync timeout passed)"
        } else {
            ""
        },
        s.endpoints,
        s.maps
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if let Some(ct) = &s.conntrack {
        out.push_str(&format!(
            "conntrack: {} entries (last GC pass deleted {} in {} ms)\n",
            ct.entries, ct.last_gc_deleted, ct.last_gc_ms
        ));
    }
    out.push_str("\nsources:\n");
    out.push_str(&table(
        &["SOURCE", "SYNCED", "IPCACHE", "IDENTITIES"],
        s.sources
            .iter()
            .map(|src| {
                vec![
                    src.name.clone(),
                    src.synced
                        .iter()
                        .map(|(k, v)| format!("{k}:{}", if *v { "yes" } else { "no" }))
                        .collect::<Vec<_>>()
                        .join(" "),
                    src.ipcache_entries.to_string(),
                    src.identities.to_string(),
                ]
            })
            .collect(),
    ));
    if let Some(k) = &s.kubernetes {
        out.push_str(&format!(
            "\nkubernetes: {} ({}, {}), disconnects {}{}\n",
            if k.connected {
                "connected"
            } else {
                "UNREACHABLE"
            },
            k.access,
            k.version.as_deref().unwrap_or("version unknown"),
            k.disconnects,
            k.last_error
                .as_ref()
                .map(|e| format!(", last error: {e}"))
                .unwrap_or_default(),
        ));
        out.push_str(&table(
            &["RESOURCE", "SYNCED", "OBJECTS", "EVENTS", "LAST ERROR"],
            k.resources
                .iter()
                .map(|(name, r)| {
                    vec![
                        name.clone(),
                        if r.synced { "yes" } else { "no" }.into(),
                        r.objects.to_string(),
                        r.events.to_string(),
                        r.last_error.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect(),
        ));
        if !k.refused.is_empty() {
            out.push_str("refused (nothing of these is applied):\n");
            for (what, why) in &k.refused {
                out.push_str(&format!("  {what}: {why}\n"));
            }
        }
    }
    if !s.remotes.is_empty() {
        out.push_str("\nremote clusters:\n");
        out.push_str(&table(
            &[
                "REMOTE",
                "CONNECTED",
                "READY",
                "CONFIG",
                "ENTRIES",
                "INVALID",
                "LAST ERROR",
            ],
            s.remotes
                .iter()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        r.connected.to_string(),
                        r.ready.to_string(),
                        r.config.clone().unwrap_or("-".into()),
                        r.entries
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(" "),
                        r.invalid
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(" "),
                        match (&r.last_error_kind, &r.last_error) {
                            (Some(k), Some(e)) => format!("{k}: {e}"),
                            _ => "-".into(),
                        },
                    ]
                })
                .collect(),
        ));
        let refused: Vec<Vec<String>> = s
            .remotes
            .iter()
            .flat_map(|r| {
                r.refused_routes.iter().map(|x| {
                    vec![
                        r.name.clone(),
                        x.node.clone(),
                        x.cidr.clone(),
                        x.reason.clone(),
                    ]
                })
            })
            .collect();
        if !refused.is_empty() {
            out.push_str(
                "
refused routes (remote pod CIDRs not routed):
",
            );
            out.push_str(&table(&["REMOTE", "NODE", "CIDR", "REASON"], refused));
        }
    }
    out
}

/// A plain aligned table.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}
