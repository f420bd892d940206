//! `clustermesh cluster init|export`: one cluster on real hosts (its
//! certificates, configuration and systemd units) and the descriptors other
//! clusters connect with. The work is in the `cluster-setup` crate.

use std::{
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context;
use clap::{Args, Subcommand};
use cluster_setup::{
    ClusterSpec, DEFAULT_AGENT_HEALTH_LISTEN, DEFAULT_APISERVER_HEALTH_LISTEN,
    DEFAULT_APISERVER_LISTEN, DEFAULT_OPERATOR_HEALTH_LISTEN, InitError, InitOptions, Layout,
    cluster_tree,
};
use ipnet::IpNet;

use crate::command_error::CommandError;

#[derive(Debug, Args)]
pub(crate) struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Create the certificates, configuration files and systemd units of one
    /// cluster in DIR, laid out as the hosts' file system (etc/clustermesh,
    /// etc/systemd/system); see README "Run it on real machines".
    Init(Box<InitArgs>),
    /// Write the cluster descriptor (name, ID, apiserver endpoints, CA
    /// bundle: what other clusters need) or, with --admin, the admin
    /// descriptor (secret: adds the admin certificates and etcd access).
    Export(ExportArgs),
}

#[derive(Debug, Args)]
struct InitArgs {
    /// Cluster name: lowercase letters, digits and '-', at most 32, not
    /// "default".
    #[arg(long, value_name = "NAME")]
    name: String,
    /// Cluster ID in the mesh: 1-255, or 1-511 with --max-connected-clusters 511.
    #[arg(long, value_name = "ID")]
    id: u32,
    /// Mesh size, the same on every cluster of a mesh: 255 or 511.
    #[arg(long, value_name = "N", default_value_t = 255)]
    max_connected_clusters: u32,
    /// The cluster's etcd members (all http:// or all https://). With
    /// https:// the cluster gets an etcd CA, a server certificate for these
    /// hosts and client certificates for its components and admin.
    #[arg(
        long,
        value_name = "URL[,URL...]",
        value_delimiter = ',',
        required = true
    )]
    etcd_endpoints: Vec<String>,
    /// Where other clusters reach this cluster's apiserver (names in its
    /// certificate and in the descriptor).
    #[arg(long, value_name = "HOST:PORT[,...]", value_delimiter = ',')]
    apiserver_endpoints: Vec<String>,
    /// Reuse the mesh CA in DIR (ca.crt, ca.key), e.g. <first cluster's
    /// out>/mesh-ca, so that the clusters trust each other; default: create
    /// one in OUT/mesh-ca.
    #[arg(long, value_name = "DIR")]
    ca_dir: Option<PathBuf>,
    /// Reuse the etcd CA in DIR (https etcd only); default: create one in
    /// OUT/etcd-ca.
    #[arg(long, value_name = "DIR")]
    etcd_ca_dir: Option<PathBuf>,
    /// Address the apiserver serves mutual TLS on.
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_APISERVER_LISTEN)]
    apiserver_listen: SocketAddr,
    /// The apiserver's /healthz, /readyz and /metrics.
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_APISERVER_HEALTH_LISTEN)]
    apiserver_health_listen: SocketAddr,
    /// The operator's /healthz and /metrics.
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_OPERATOR_HEALTH_LISTEN)]
    operator_health_listen: SocketAddr,
    /// Each agent's /healthz and /metrics.
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_AGENT_HEALTH_LISTEN)]
    agent_health_listen: SocketAddr,
    /// The operator's pod CIDR pools (one IPv4, one IPv6 at most), from
    /// which it gives each node its pod CIDR; without it each node's
    /// node.env sets CLUSTERMESH_POD_CIDR.
    #[arg(long, value_name = "CIDR[,CIDR]", value_delimiter = ',')]
    pod_cidr_pool: Vec<IpNet>,
    /// The root the configuration files refer to: / for hosts; OUT itself
    /// to run the components in place.
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// Where the units expect the binaries.
    #[arg(long, value_name = "DIR", default_value = Layout::DEFAULT_BIN_DIR)]
    bin_dir: PathBuf,
    /// Output directory: new, empty, or made by an earlier init (with --force).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Write over a directory an earlier init made: its files are replaced
    /// (or removed if no longer made), its CAs kept, other files untouched.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// The directory `cluster init` wrote.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Write to FILE (the admin descriptor with mode 0600) instead of
    /// standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// The admin descriptor: adds the admin-<cluster> certificate and key
    /// and the etcd endpoints with the etcd admin's certificate. Secret.
    #[arg(long)]
    admin: bool,
}

pub(crate) fn run(args: ClusterArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    match args.command {
        ClusterCommand::Init(args) => init(*args, out),
        ClusterCommand::Export(args) => export(args, out),
    }
}

fn init(args: InitArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    let mut spec = ClusterSpec::new(
        &args.name,
        args.id,
        args.max_connected_clusters,
        &args.etcd_endpoints,
        &args.apiserver_endpoints,
    )
    .map_err(CommandError::usage)?;
    spec.apiserver_listen = args.apiserver_listen;
    spec.apiserver_health_listen = args.apiserver_health_listen;
    spec.operator_health_listen = args.operator_health_listen;
    spec.agent_health_listen = args.agent_health_listen;
    if args
        .pod_cidr_pool
        .iter()
        .filter(|p| p.addr().is_ipv4())
        .count()
        > 1
        || args
            .pod_cidr_pool
            .iter()
            .filter(|p| p.addr().is_ipv6())
            .count()
            > 1
    {
        return Err(CommandError::usage(anyhow::anyhow!(
            "--pod-cidr-pool takes at most one IPv4 and one IPv6 pool"
        )));
    }
    spec.pod_cidr_pools = args.pod_cidr_pool;
    if args.etcd_ca_dir.is_some() && !spec.etcd_https() {
        return Err(CommandError::usage(anyhow::anyhow!(
            "--etcd-ca-dir needs https:// --etcd-endpoints"
        )));
    }
    let options = InitOptions {
        out: args.out.clone(),
        layout: Layout::new(absolute(&args.root)?, absolute(&args.bin_dir)?),
        mesh_ca_dir: args.ca_dir,
        etcd_ca_dir: args.etcd_ca_dir,
        force: args.force,
    };
    let report = cluster_tree::init(&spec, &options).map_err(|e| match e {
        InitError::Write { .. } | InitError::Remove { .. } | InitError::Issue { .. } => {
            CommandError::failed(e)
        }
        _ => CommandError::usage(e),
    })?;
    let mut text = format!(
        "cluster {} (ID {}, max-connected-clusters {}) in {}:\n",
        spec.name,
        spec.id.get(),
        spec.mode.as_u32(),
        args.out.display()
    );
    for reused in &report.reused {
        text.push_str(&format!("  reused {reused}\n"));
    }
    for path in &report.written {
        text.push_str(&format!("  wrote {}\n", path.display()));
    }
    for path in &report.removed {
        text.push_str(&format!("  removed {} (no longer made)\n", path.display()));
    }
    text.push_str(&format!(
        "next: install {out}/etc on the hosts (README: \"Run it on real machines\"), then \
         `clustermesh cluster export --dir {out}`\n",
        out = args.out.display()
    ));
    out.write_all(text.as_bytes()).map_err(CommandError::failed)
}

fn export(args: ExportArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    let admin = cluster_tree::export(&args.dir).map_err(|e| match e {
        InitError::Read { .. } => CommandError::failed(e),
        _ => CommandError::usage(e),
    })?;
    let (yaml, mode) = if args.admin {
        (admin.to_yaml(), 0o600)
    } else {
        (admin.cluster().to_yaml(), 0o644)
    };
    match &args.out {
        None => out.write_all(yaml.as_bytes()).map_err(CommandError::failed),
        Some(file) => {
            write_with_mode(file, yaml.as_bytes(), mode)
                .with_context(|| format!("cannot write {}", file.display()))
                .map_err(CommandError::failed)?;
            writeln!(
                out,
                "wrote the {} of cluster {} to {}",
                if args.admin {
                    "admin descriptor (secret, mode 0600)"
                } else {
                    "cluster descriptor"
                },
                admin.name,
                file.display()
            )
            .map_err(CommandError::failed)
        }
    }
}

/// Replaces `path` with `data`; the new file has `mode` from its creation
/// (a secret is never readable by others, not even for a moment).
fn write_with_mode(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    certs::write_atomically(path, data, mode)
}

fn absolute(path: &Path) -> Result<PathBuf, CommandError> {
    std::path::absolute(path)
        .with_context(|| format!("cannot make {} absolute", path.display()))
        .map_err(CommandError::usage)
}
