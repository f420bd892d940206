//! `clustermesh policy …` and `clustermesh service …`: policy documents and
//! service definitions of a cluster without Kubernetes, in its etcd.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand, ValueEnum};
use ipnet::IpNet;
use kvstore::{
    Client, ClientConfig, KeyPrefix, StoreValue, TlsConfig, keys,
    values::{IpIdentityPair, Node, PolicyDocument, Requirement, ServiceDef},
};

use crate::{command_error::CommandError, mesh_cmd::DEFAULT_DIR};

/// Which cluster's etcd: a cluster of a local mesh, or explicit endpoints.
#[derive(Debug, Args)]
pub(crate) struct Target {
    /// A cluster of the local mesh in --dir.
    #[arg(long, global = true)]
    cluster: Option<String>,
    /// Directory of the local mesh (where `up` wrote mesh.json).
    #[arg(long, default_value = DEFAULT_DIR, global = true)]
    dir: PathBuf,
    /// The cluster's etcd (instead of --cluster), comma-separated.
    #[arg(long, value_delimiter = ',', global = true)]
    etcd_endpoints: Vec<String>,
    /// CA bundle that signs the etcd server's certificate (enables TLS).
    #[arg(long, global = true)]
    etcd_ca: Option<PathBuf>,
    /// Client certificate for etcd (mutual TLS).
    #[arg(long, global = true)]
    etcd_cert: Option<PathBuf>,
    /// Key of the client certificate.
    #[arg(long, global = true)]
    etcd_key: Option<PathBuf>,
}

impl Target {
    fn client_config(&self) -> Result<ClientConfig, CommandError> {
        if !self.etcd_endpoints.is_empty() {
            let mut c = ClientConfig::new(self.etcd_endpoints.clone());
            if let Some(ca) = &self.etcd_ca {
                let tls = TlsConfig::from_optional_files(
                    ca,
                    self.etcd_cert.as_deref(),
                    self.etcd_key.as_deref(),
                );
                c.tls = Some(tls.map_err(CommandError::usage)?);
            }
            return Ok(c);
        }
        let cluster = self.cluster.as_deref().ok_or_else(|| {
            CommandError::usage(anyhow!(
                "give --cluster NAME (a local mesh) or --etcd-endpoints URL"
            ))
        })?;
        let mesh = localmesh::Mesh::load(&self.dir).map_err(CommandError::usage)?;
        let c = mesh.state.cluster(cluster).map_err(CommandError::usage)?;
        localmesh::etcd_admin_config(c).map_err(CommandError::failed)
    }

    /// The cluster's pod CIDR pool, when it is a cluster of a local mesh.
    /// The local mesh cluster's pod pools (IPv4, and IPv6 when it has one).
    fn pod_pools(&self) -> Vec<IpNet> {
        let Ok(mesh) = localmesh::Mesh::load(&self.dir) else {
            return Vec::new();
        };
        let Some(c) = self
            .cluster
            .as_deref()
            .and_then(|name| mesh.state.cluster(name).ok())
        else {
            return Vec::new();
        };
        c.pod_cidr_pools()
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ListOutput {
    /// One line per document: key, validity, what it selects.
    Table,
    /// The stored documents with what they select, as JSON.
    Json,
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Validate documents (YAML, several separated by `---`, or JSON) and
    /// store them; nothing is stored unless every one is valid.
    Apply {
        /// The file to apply; `-` reads standard input.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Delete by `[NAMESPACE/]NAME` (namespace `default` when left out, as
    /// `apply` defaults it), or what a file names.
    Delete {
        /// `NAMESPACE/NAME`, or `NAME` in namespace `default`.
        #[arg(required_unless_present = "file")]
        name: Option<String>,
        /// Delete every document this file names; `-` reads standard input.
        #[arg(short = 'f', long = "file", conflicts_with = "name")]
        file: Option<PathBuf>,
    },
    /// List what is stored and what each document selects.
    List {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: ListOutput,
    },
}

/// What kind of document the command manages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Policy,
    Service,
}

/// One parsed document: its key and stored value, and what it selects.
struct Parsed {
    key: String,
    value: Vec<u8>,
    selects: Vec<String>,
    service: Option<ServiceDef>,
}

impl Kind {
    fn prefix(self) -> KeyPrefix {
        match self {
            Self::Policy => keys::policies(),
            Self::Service => keys::service_defs(),
        }
    }

    fn parse(self, text: &str) -> anyhow::Result<Parsed> {
        Ok(match self {
            Self::Policy => PolicyDocument::parse(text).map(|d| Parsed {
                key: d.key(),
                value: d.encode(),
                selects: policy_selects(&d),
                service: None,
            })?,
            Self::Service => ServiceDef::parse(text).map(|d| Parsed {
                key: d.key(),
                value: d.encode(),
                selects: vec![format!(
                    "{} -> endpoints {}",
                    d.frontends()
                        .map(|f| f.to_string())
                        .collect::<Vec<_>>()
                        .join(" and "),
                    selector_words(&d.selector, &[])
                )],
                service: Some(d),
            })?,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::Service => "service",
        }
    }
}

fn selector_words(labels: &BTreeMap<String, String>, expressions: &[Requirement]) -> String {
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.extend(
        expressions
            .iter()
            .map(|r| format!("{} {:?} ({})", r.key, r.operator, r.values.join(","))),
    );
    if parts.is_empty() {
        "all".into()
    } else {
        parts.join(",")
    }
}

fn policy_selects(doc: &PolicyDocument) -> Vec<String> {
    doc.rules()
        .map(|rule| {
            let sel = &rule.endpoint_selector;
            let sections = [
                (
                    "ingress from",
                    rule.ingress
                        .iter()
                        .map(|r| r.peer_rule())
                        .collect::<Vec<_>>(),
                ),
                (
                    "ingress denied from",
                    rule.ingress_deny.iter().map(|r| r.peer_rule()).collect(),
                ),
                (
                    "egress to",
                    rule.egress.iter().map(|r| r.peer_rule()).collect(),
                ),
                (
                    "egress denied to",
                    rule.egress_deny.iter().map(|r| r.peer_rule()).collect(),
                ),
            ];
            let mut said: Vec<String> = sections
                .iter()
                .filter(|(_, peers)| !peers.is_empty())
                .map(|(what, peers)| format!("{what} {}", peer_words(peers)))
                .collect();
            if said.is_empty() {
                said.push("no ingress or egress rules (enforces nothing)".into());
            }
            format!(
                "endpoints {}: {}",
                selector_words(&sel.match_labels, &sel.match_expressions),
                said.join("; ")
            )
        })
        .collect()
}

/// Who the rules of one section name: `app=client | cidr 10.0.0.0/8 | entity
/// world | fqdn *.example.com | dns lookups *.example.com`.
fn peer_words(rules: &[kvstore::values::PeerRule<'_>]) -> String {
    let mut peers: Vec<String> = Vec::new();
    for rule in rules {
        if !rule.has_l3() {
            peers.push(if rule.has_l4() { "anyone" } else { "nobody" }.into());
        }
        for peer in rule.endpoints.into_iter().flatten() {
            peers.push(selector_words(&peer.match_labels, &peer.match_expressions));
        }
        for c in &rule.cidrs {
            let except = if c.except.is_empty() {
                String::new()
            } else {
                format!(
                    " except {}",
                    c.except
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                )
            };
            peers.push(format!("cidr {}{except}", c.cidr));
        }
        for entity in rule.entities.into_iter().flatten() {
            let name = serde_json::to_value(entity)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            peers.push(format!("entity {name}"));
        }
        for f in rule.fqdn_selectors() {
            if let Some(name) = &f.match_name {
                peers.push(format!("fqdn {name}"));
            }
            if let Some(pattern) = &f.match_pattern {
                peers.push(format!("fqdn {pattern}"));
            }
        }
        let dns: Vec<String> = rule
            .dns_rules()
            .flat_map(|d| d.match_name.iter().chain(d.match_pattern.iter()))
            .cloned()
            .collect();
        if !dns.is_empty() {
            peers.push(format!("dns lookups {}", dns.join(",")));
        }
    }
    peers.dedup();
    peers.join(" | ")
}

/// The documents of a file (or of standard input for `-`): YAML documents
/// separated by `---` lines, each parsed whole; errors name the document and
/// the line it starts on.
fn read_documents(kind: Kind, file: &Path) -> Result<Vec<Parsed>, CommandError> {
    let text = if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("read standard input")
            .map_err(CommandError::usage)?;
        text
    } else {
        std::fs::read_to_string(file)
            .with_context(|| format!("read {}", file.display()))
            .map_err(CommandError::usage)?
    };
    let name = if file == Path::new("-") {
        "<stdin>".to_string()
    } else {
        file.display().to_string()
    };
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    let mut chunks = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            chunks.push((start, std::mem::take(&mut current)));
            start = i + 2;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    chunks.push((start, current));
    let chunks: Vec<_> = chunks
        .into_iter()
        .filter(|(_, c)| {
            c.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect();
    if chunks.is_empty() {
        return Err(CommandError::usage(anyhow!("{name}: no document")));
    }
    let several = chunks.len() > 1;
    for (n, (line, chunk)) in chunks.iter().enumerate() {
        let parsed = kind.parse(chunk).map_err(|e| {
            let at = if several {
                format!("{name}: document {} (line {line})", n + 1)
            } else {
                name.clone()
            };
            CommandError::usage(anyhow!("{at}: {e}; nothing was applied"))
        })?;
        docs.push(parsed);
    }
    let mut seen = std::collections::BTreeSet::new();
    for d in &docs {
        if !seen.insert(d.key.as_str()) {
            return Err(CommandError::usage(anyhow!(
                "{name}: {} {} appears twice; nothing was applied",
                kind.name(),
                d.key
            )));
        }
    }
    Ok(docs)
}

/// Service frontends must be addresses of their own: not another service's
/// (in the store or in the same file), not a pod's, not inside a node's pod
/// CIDR or the cluster's pod pool.
async fn check_frontends(
    client: &Client,
    docs: &[Parsed],
    pod_pools: Vec<IpNet>,
) -> Result<(), CommandError> {
    let (stored, _) = client
        .list(&keys::service_defs(), 10_000)
        .await
        .map_err(|e| CommandError::unavailable(anyhow!("{}", e.full_message())))?;
    let mut taken: Vec<(IpAddr, String)> = stored
        .iter()
        .filter_map(|kv| {
            let key = keys::service_defs().strip(&kv.key)?.to_string();
            let def = ServiceDef::decode(&key, &kv.value).ok()?;
            Some(
                def.frontends()
                    .map(move |f| (f, key.clone()))
                    .collect::<Vec<_>>(),
            )
        })
        .flatten()
        .collect();
    let (pods, _) = client
        .list(&keys::ipcache(), 100_000)
        .await
        .map_err(|e| CommandError::unavailable(anyhow!("{}", e.full_message())))?;
    let pod_ips: Vec<IpAddr> = pods
        .iter()
        .filter_map(|kv| IpIdentityPair::decode(keys::ipcache().strip(&kv.key)?, &kv.value).ok())
        .map(|p| p.ip)
        .collect();
    let (nodes, _) = client
        .list(&keys::nodes(), 10_000)
        .await
        .map_err(|e| CommandError::unavailable(anyhow!("{}", e.full_message())))?;
    let mut cidrs: Vec<(IpNet, String)> = nodes
        .iter()
        .filter_map(|kv| Node::decode(keys::nodes().strip(&kv.key)?, &kv.value).ok())
        .flat_map(|n| {
            [n.ipv4_alloc_cidr.clone(), n.ipv6_alloc_cidr.clone()]
                .into_iter()
                .flatten()
                .filter_map(|c| c.to_net())
                .map(move |net| {
                    (
                        net,
                        format!("the pod CIDR of node {}/{}", n.cluster, n.name),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    for pool in pod_pools {
        cidrs.push((pool, "the cluster's pod CIDR pool".into()));
    }
    for (d, fe) in docs
        .iter()
        .filter_map(|d| Some((d, d.service.as_ref()?)))
        .flat_map(|(d, def)| def.frontends().map(move |fe| (d, fe)))
    {
        if let Some((_, other)) = taken.iter().find(|(ip, k)| *ip == fe && *k != d.key) {
            return Err(CommandError::usage(anyhow!(
                "service {}: frontend {fe} is already used by service {other}; nothing was applied",
                d.key
            )));
        }
        if pod_ips.contains(&fe) {
            return Err(CommandError::usage(anyhow!(
                "service {}: frontend {fe} is a pod's address; nothing was applied",
                d.key
            )));
        }
        if let Some((net, what)) = cidrs.iter().find(|(net, _)| net.contains(&fe)) {
            return Err(CommandError::usage(anyhow!(
                "service {}: frontend {fe} is inside {what} ({net}); nothing was applied",
                d.key
            )));
        }
        taken.push((fe, d.key.clone()));
    }
    Ok(())
}

/// `NAME` means `default/NAME`, as `apply` stores a document without a
/// namespace.
fn qualified(name: &str) -> String {
    if name.contains('/') {
        name.to_string()
    } else {
        format!("default/{name}")
    }
}

pub(crate) fn run(kind: Kind, args: StoreArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    // Read and validate input before connecting: a bad document is a usage
    // error whether or not the cluster answers.
    let docs = match &args.command {
        StoreCommand::Apply { file } => Some(read_documents(kind, file)?),
        StoreCommand::Delete {
            file: Some(file), ..
        } => Some(read_documents(kind, file)?),
        _ => None,
    };
    let config = args.target.client_config()?;
    let pod_pools = args.target.pod_pools();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CommandError::failed)?;
    rt.block_on(async move {
        match args.command {
            StoreCommand::Apply { .. } => {
                let docs = docs.unwrap_or_default();
                let client = connect(&config).await?;
                if matches!(kind, Kind::Service) {
                    check_frontends(&client, &docs, pod_pools).await?;
                }
                let ops: Vec<(String, Vec<u8>)> = docs
                    .iter()
                    .map(|d| (kind.prefix().key(&d.key), d.value.clone()))
                    .collect();
                client
                    .put_all(ops)
                    .await
                    .map_err(|e| CommandError::unavailable(anyhow!("{}", e.full_message())))?;
                for d in &docs {
                    writeln!(out, "{} {} applied", kind.name(), d.key)?;
                }
                Ok(())
            }
            StoreCommand::Delete { name, .. } => {
                let names: Vec<String> = match docs {
                    Some(docs) => docs.into_iter().map(|d| d.key).collect(),
                    None => vec![qualified(name.as_deref().unwrap_or_default())],
                };
                let client = connect(&config).await?;
                let mut missing = Vec::new();
                for name in &names {
                    let deleted = client
                        .delete(&kind.prefix().key(name))
                        .await
                        .map_err(|e| CommandError::unavailable(anyhow!("{}", e.full_message())))?;
                    if deleted {
                        writeln!(out, "{} {name} deleted", kind.name())?;
                    } else {
                        missing.push(name.clone());
                    }
                }
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(CommandError::usage(anyhow!(
                        "no {} {} (see `clustermesh {} list`)",
                        kind.name(),
                        missing.join(", "),
                        kind.name()
                    )))
                }
            }
            StoreCommand::List { output } => {
                let client = connect(&config).await?;
                let (kvs, _) = client
                    .list(&kind.prefix(), 10_000)
                    .await
                    .map_err(|e| CommandError::unavailable(anyhow!("{}", e.full_message())))?;
                let mut rows = Vec::new();
                for kv in kvs {
                    let key = kind.prefix().strip(&kv.key).unwrap_or_default().to_string();
                    let text = String::from_utf8_lossy(&kv.value).into_owned();
                    let (valid, selects, document) = match kind.parse(&text) {
                        Ok(p) => (
                            None,
                            p.selects,
                            serde_json::from_slice::<serde_json::Value>(&p.value).ok(),
                        ),
                        Err(e) => (Some(e.to_string()), Vec::new(), None),
                    };
                    rows.push(serde_json::json!({
                        "name": key,
                        "valid": valid.is_none(),
                        "error": valid,
                        "selects": selects,
                        "document": document,
                    }));
                }
                match output {
                    ListOutput::Json => {
                        writeln!(
                            out,
                            "{}",
                            serde_json::to_string_pretty(&rows).map_err(CommandError::failed)?
                        )?;
                    }
                    ListOutput::Table => {
                        if rows.is_empty() {
                            writeln!(out, "no {}", kind.name())?;
                        }
                        for r in rows {
                            let state = match r["error"].as_str() {
                                None => "valid".to_string(),
                                Some(e) => format!("INVALID: {e}"),
                            };
                            writeln!(out, "{}  {state}", r["name"].as_str().unwrap_or_default())?;
                            for s in r["selects"].as_array().into_iter().flatten() {
                                writeln!(out, "    {}", s.as_str().unwrap_or_default())?;
                            }
                        }
                    }
                }
                Ok(())
            }
        }
    })
}

async fn connect(config: &ClientConfig) -> Result<Client, CommandError> {
    Client::connect(config)
        .await
        .map_err(|e| CommandError::unavailable(anyhow!("{}", e.full_message())))
}
