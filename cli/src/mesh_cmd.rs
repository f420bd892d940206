//! `clustermesh up | down | connect | disconnect | status | mesh …`: the local
//! mesh and the connections between its clusters.

use std::{
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::anyhow;
use clap::{Args, Subcommand, ValueEnum};
use localmesh::{Mesh, MeshSpec};

use crate::command_error::CommandError;

/// Where `up` puts the mesh unless told otherwise.
pub(crate) const DEFAULT_DIR: &str = ".mesh";

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// Number of clusters, 1-8 (c1…cN, IDs 1…N).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=8))]
    clusters: u8,
    /// Nodes per cluster, 1-8.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=8))]
    nodes: u8,
    /// Directory for the mesh (certificates, data, logs, mesh.json): new or
    /// empty; `down` removes only what `up` made in it.
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// Directory of the clustermesh binaries (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Leave out the sample client, echo servers and global service.
    #[arg(long)]
    no_workloads: bool,
    /// The fabric subnet, one of 172.16.0.0/16 … 172.31.0.0/16 (default: the
    /// first free one that clashes with no address or route of this host).
    #[arg(long)]
    subnet: Option<String>,
    /// Each cluster runs its own Kubernetes API server (v1.20, built once
    /// by scripts/kube-test-server.sh): pods are Pod objects, the global
    /// service a Service, policies CiliumNetworkPolicy objects; each
    /// cluster's admin kubeconfig is DIR/<cluster>/kube/admin.kubeconfig.
    #[arg(long)]
    kubernetes: bool,
    /// Each cluster runs kvstoremesh (`clustermesh-apiserver kvstoremesh`):
    /// it mirrors every remote cluster into the cluster's own etcd, and the
    /// agents read the remotes from their own apiserver only.
    #[arg(long)]
    kvstoremesh: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DirArgs {
    /// Directory of the mesh (where `up` wrote mesh.json).
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// Both directions.
    Bidirectional,
    /// Only from `--from` to `--to`.
    Unicast,
}

#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    /// The cluster whose agents connect (or disconnect): a cluster of the
    /// local mesh (c1), or the admin descriptor of a cluster on real
    /// machines (c1-admin.yaml, from `cluster export --admin`).
    #[arg(long)]
    from: String,
    /// The cluster they connect to (or disconnect from): a cluster of the
    /// local mesh, or an admin descriptor (as --from).
    #[arg(long)]
    to: String,
    /// With admin descriptors: the mesh CA directory (ca.crt, ca.key) that
    /// issues the remote-<cluster> certificates of the connection (the
    /// `--ca-dir` given to `cluster init`, or the first cluster's OUT/mesh-ca).
    #[arg(long)]
    ca_dir: Option<PathBuf>,
    /// `bidirectional` acts on both directions, `unicast` only on `--from` → `--to`.
    #[arg(long, value_enum, default_value = "bidirectional")]
    mode: Mode,
    /// Directory of the mesh (where `up` wrote mesh.json).
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StatusOutput {
    /// One line per cluster, node and remote.
    Summary,
    /// The agents' status as JSON.
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Directory of the mesh (where `up` wrote mesh.json).
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// A cluster on real machines, by its admin descriptor (from `cluster
    /// export --admin`): its apiserver, connected clusters and agents, read
    /// from its apiserver and etcd (no mesh.json).
    #[arg(long, conflicts_with = "dir")]
    from: Option<PathBuf>,
    /// Wait until every agent is synced and every configured remote is ready.
    #[arg(long)]
    wait: bool,
    /// How long `--wait` waits (e.g. 90s, 5m).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    wait_duration: Duration,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "summary")]
    output: StatusOutput,
}

#[derive(Debug, Args)]
pub(crate) struct MeshArgs {
    /// Directory of the mesh (where `up` wrote mesh.json).
    #[arg(long, default_value = DEFAULT_DIR, global = true)]
    dir: PathBuf,
    #[command(subcommand)]
    command: MeshCommand,
}

#[derive(Debug, Subcommand)]
enum MeshCommand {
    /// Stop a component of a cluster: etcd, operator, apiserver, kvstoremesh, relay, or agent NODE.
    Stop {
        /// etcd, operator, apiserver, kvstoremesh, relay or agent.
        component: String,
        /// The cluster (c1, c2, …).
        cluster: String,
        /// The node, for an agent (n1, n2, …).
        node: Option<String>,
    },
    /// Start a stopped component again (refused while it runs).
    Start {
        /// etcd, operator, apiserver, kvstoremesh, relay or agent.
        component: String,
        /// The cluster (c1, c2, …).
        cluster: String,
        /// The node, for an agent (n1, n2, …).
        node: Option<String>,
    },
    /// Partition two clusters (both directions, data and control plane).
    Cut {
        /// One cluster.
        a: String,
        /// Another cluster.
        b: String,
    },
    /// Heal a partition.
    Heal {
        /// One cluster.
        a: String,
        /// The other cluster.
        b: String,
    },
    /// Add a pod through the CNI plugin (with an echo server on --port).
    AddWorkload {
        /// The cluster.
        cluster: String,
        /// The node to run the pod on.
        node: String,
        /// The pod's name.
        name: String,
        /// A label KEY=VALUE (repeat for more).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Run an echo server in the pod on this TCP port.
        #[arg(long)]
        port: Option<u16>,
    },
    /// Remove a pod through the CNI plugin.
    RemoveWorkload {
        /// The cluster.
        cluster: String,
        /// The pod's name.
        name: String,
    },
    /// Send requests from a pod (`CLUSTER/POD`) to an address and print who answered.
    Request {
        /// The client pod, CLUSTER/POD.
        from: String,
        /// The address to connect to, IP:PORT (`[IPv6]:PORT`).
        to: SocketAddr,
        /// How many requests to send.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// How long each request may take (e.g. 500ms, 2s).
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

pub(crate) fn up(args: UpArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    require_root()?;
    // Ctrl-C stops at the next step and removes what was started so far.
    localmesh::catch_interrupts();
    let mut spec = MeshSpec::new(&args.dir);
    spec.clusters = args.clusters;
    spec.nodes = args.nodes;
    spec.workloads = !args.no_workloads;
    spec.kubernetes = args.kubernetes;
    spec.kvstoremesh = args.kvstoremesh;
    if let Some(subnet) = &args.subnet {
        spec.subnet = Some(localmesh::parse_subnet(subnet).map_err(CommandError::failed)?);
    }
    if let Some(b) = args.bin_dir {
        spec.bin_dir = b;
    }
    let start = Instant::now();
    let mut step = 0;
    let mesh = Mesh::up(&spec, &mut |msg| {
        step += 1;
        eprintln!("[{:>5.1}s] {step:>2}. {msg}", start.elapsed().as_secs_f64());
    })
    .map_err(CommandError::failed)?;
    writeln!(
        out,
        "mesh up in {:.1}s: {}",
        start.elapsed().as_secs_f64(),
        mesh.state.dir.join("mesh.json").display()
    )
    .map_err(CommandError::failed)?;
    for c in &mesh.state.clusters {
        writeln!(
            out,
            "  {} (id {}): apiserver {}, etcd {}, {}",
            c.name,
            c.id,
            c.apiserver_endpoint,
            c.etcd_endpoint,
            plural(c.nodes.len(), "node")
        )
        .map_err(CommandError::failed)?;
    }
    if let Some(fe) = &mesh.state.service_frontend {
        writeln!(out, "  global service demo/echo at {fe}; try: clustermesh mesh request c1/client {fe} --count 5 --dir {}", args.dir.display())
            .map_err(CommandError::failed)?;
    }
    if let Some(url) = &mesh.state.hubble_ui {
        writeln!(out, "  Hubble UI: {url}").map_err(CommandError::failed)?;
    }
    Ok(())
}

/// `clustermesh ui`: the URL of the mesh's Hubble UI (no root needed).
pub(crate) fn ui(args: DirArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    let state = localmesh::MeshState::load(&args.dir).map_err(CommandError::usage)?;
    let url = state.hubble_ui.as_deref().ok_or_else(|| {
        CommandError::usage(anyhow!(
            "the mesh at {} has no Hubble UI: it was made before the UI or without Hubble; \
             `clustermesh down --dir {0}` and `up` again",
            args.dir.display()
        ))
    })?;
    let running = state
        .ui
        .as_ref()
        .and_then(|ui| ui.process.as_ref())
        .is_some_and(localmesh::is_running);
    if !running {
        return Err(CommandError::failed(anyhow!(
            "the Hubble UI of the mesh at {} ({url}) is not running; see {}",
            args.dir.display(),
            args.dir.join("ui/ui.log").display()
        )));
    }
    writeln!(out, "{url}").map_err(CommandError::failed)
}

pub(crate) fn down(args: DirArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    require_root()?;
    Mesh::down(&args.dir, &mut |msg| eprintln!("  {msg}")).map_err(CommandError::failed)?;
    writeln!(out, "mesh at {} removed", args.dir.display()).map_err(CommandError::failed)
}

pub(crate) fn connect(
    args: ConnectArgs,
    out: &mut dyn Write,
    disconnect: bool,
) -> Result<(), CommandError> {
    use crate::connect_cmd::is_descriptor;
    match (is_descriptor(&args.from), is_descriptor(&args.to)) {
        (true, true) => {
            let (from, to) = (Path::new(&args.from), Path::new(&args.to));
            return if disconnect {
                crate::connect_cmd::disconnect(from, to, args.mode, out)
            } else {
                crate::connect_cmd::connect(from, to, args.mode, args.ca_dir.as_deref(), out)
            };
        }
        (false, false) => {}
        _ => {
            return Err(CommandError::usage(anyhow!(
                "--from and --to are both clusters of the local mesh (c1) or both admin \
                 descriptors (c1-admin.yaml)"
            )));
        }
    }
    if args.ca_dir.is_some() {
        return Err(CommandError::usage(anyhow!(
            "--ca-dir goes with admin descriptors; the local mesh has its own CA"
        )));
    }
    let mut mesh = Mesh::load(&args.dir).map_err(CommandError::usage)?;
    let both = args.mode == Mode::Bidirectional;
    if disconnect {
        mesh.disconnect(&args.from, &args.to, both)
            .map_err(CommandError::failed)?;
        writeln!(
            out,
            "disconnected {} {} {}",
            args.from,
            if both { "<->" } else { "->" },
            args.to
        )
        .map_err(CommandError::failed)?;
        return Ok(());
    }
    let checks = mesh
        .connect(&args.from, &args.to, both)
        .map_err(|e| CommandError::failed(e.context("connect refused; nothing was changed")))?;
    for c in checks {
        writeln!(out, "  ok  {c}").map_err(CommandError::failed)?;
    }
    writeln!(
        out,
        "connected {} {} {}; agents pick up the remote configs now",
        args.from,
        if both { "<->" } else { "->" },
        args.to
    )
    .map_err(CommandError::failed)
}

pub(crate) fn status(args: StatusArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    if let Some(from) = &args.from {
        let wait = args.wait.then_some(args.wait_duration);
        return crate::connect_cmd::status(from, wait, args.output, out);
    }
    let mesh = Mesh::load(&args.dir).map_err(CommandError::usage)?;
    if args.wait {
        let start = Instant::now();
        let mut last_report = Instant::now() - Duration::from_secs(10);
        loop {
            let missing = mesh.not_ready();
            if missing.is_empty() {
                break;
            }
            if start.elapsed() > args.wait_duration {
                print_status(&mesh, args.output, out)?;
                return Err(CommandError::failed(anyhow!(
                    "not ready after {:?}; still waiting for:\n  {}",
                    args.wait_duration,
                    missing.join("\n  ")
                )));
            }
            if last_report.elapsed() >= Duration::from_secs(5) {
                eprintln!("waiting for: {}", missing.join("; "));
                last_report = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    print_status(&mesh, args.output, out)
}

fn print_status(
    mesh: &Mesh,
    output: StatusOutput,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    let statuses = mesh.agent_statuses();
    if output == StatusOutput::Json {
        let mut json: Vec<serde_json::Value> = Vec::new();
        for c in mesh
            .state
            .clusters
            .iter()
            .filter(|c| c.kvstoremesh.is_some())
        {
            json.push(match mesh.kvstoremesh_status(&c.name) {
                Ok(status) => serde_json::json!({
                    "cluster": c.name, "component": "kvstoremesh", "kvstoremesh": status
                }),
                Err(e) => serde_json::json!({
                    "cluster": c.name, "component": "kvstoremesh", "kvstoremesh": null,
                    "error": format!("{e:#}")
                }),
            });
        }
        json.extend(statuses.iter().map(|(c, n, s)| match s {
            Ok(s) => serde_json::json!({"cluster": c, "component": "agent", "node": n, "agent": s}),
            Err(e) => serde_json::json!({
                "cluster": c, "component": "agent", "node": n, "agent": null, "error": e
            }),
        }));
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json).map_err(CommandError::failed)?
        )
        .map_err(CommandError::failed)?;
        return Ok(());
    }
    let mut agents_ok = 0;
    let mut remotes = (0, 0);
    if let Some(url) = &mesh.state.hubble_ui {
        let process = mesh.state.ui.as_ref().and_then(|ui| ui.process.as_ref());
        let state = if process.is_some_and(localmesh::is_running) {
            "running"
        } else {
            "NOT RUNNING"
        };
        writeln!(out, "Hubble UI {url}: {state}").map_err(CommandError::failed)?;
    }
    for c in &mesh.state.clusters {
        let days = cert_days_left(&c.certs.server_cert)
            .map(|d| format!(", certificates expire in {d} days"))
            .unwrap_or_default();
        writeln!(out, "cluster {} (id {}){days}", c.name, c.id).map_err(CommandError::failed)?;
        if let Some(addr) = &c.hubble_relay {
            let health = match &c.relay {
                None => "not running".to_owned(),
                Some(_) => crate::hubble_cmd::relay_summary(&mesh.state.dir, &c.name)
                    .unwrap_or_else(|e| format!("NOT ANSWERING: {e}")),
            };
            writeln!(out, "  Hubble relay {addr}: {health}").map_err(CommandError::failed)?;
        }
        if let Some(k) = &c.kvstoremesh {
            let line = match &k.process {
                None => "not running".to_owned(),
                Some(_) => match mesh.kvstoremesh_status(&c.name) {
                    Ok(Some(status)) => kvstoremesh_summary(&status),
                    Ok(None) => "not configured".to_owned(),
                    Err(e) => format!("NOT ANSWERING: {e:#}"),
                },
            };
            writeln!(out, "  kvstoremesh {}: {line}", k.health).map_err(CommandError::failed)?;
        }
        for (_, node, s) in statuses.iter().filter(|(cl, _, _)| cl == &c.name) {
            let s = match s {
                Ok(s) => s,
                Err(e) => {
                    writeln!(out, "  node {node}: agent not answering: {e}")?;
                    continue;
                }
            };
            agents_ok += usize::from(s.synced);
            writeln!(
                out,
                "  node {node}: {}{}, pod CIDR {}, {}, ipcache {}, policy {}",
                if s.synced { "synced" } else { "NOT synced" },
                if s.sync_timed_out {
                    " (sync timeout passed)"
                } else {
                    ""
                },
                match (&s.pod_cidr, &s.pod_cidr_v6) {
                    (Some(v4), Some(v6)) => format!("{v4} and {v6}"),
                    (Some(v4), None) => v4.clone(),
                    (None, _) => "-".into(),
                },
                plural(s.endpoints, "endpoint"),
                s.maps.get("ipcache").copied().unwrap_or(0),
                s.maps.get("policy").copied().unwrap_or(0)
            )
            .map_err(CommandError::failed)?;
            for r in &s.remotes {
                remotes.1 += 1;
                remotes.0 += usize::from(r.ready);
                let synced: Vec<String> = r
                    .synced
                    .iter()
                    .map(|(k, v)| format!("{k}:{}", if *v { "yes" } else { "no" }))
                    .collect();
                let entries: Vec<String> =
                    r.entries.iter().map(|(k, v)| format!("{k}={v}")).collect();
                writeln!(
                    out,
                    "    remote {}{}: {} connected={} config={} synced[{}] entries[{}]{}{}",
                    r.name,
                    r.via
                        .as_deref()
                        .map(|via| format!(" (via {via})"))
                        .unwrap_or_default(),
                    if r.ready { "ready" } else { "NOT READY" },
                    r.connected,
                    r.config.as_deref().unwrap_or("-"),
                    synced.join(" "),
                    entries.join(" "),
                    if r.invalid.is_empty() {
                        String::new()
                    } else {
                        let skipped: Vec<String> =
                            r.invalid.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        format!(" skipped[{}]", skipped.join(" "))
                    },
                    match (&r.last_error_kind, &r.last_error) {
                        (Some(k), Some(e)) if !r.ready => format!("\n      why: {k}: {e}"),
                        _ => String::new(),
                    }
                )
                .map_err(CommandError::failed)?;
            }
        }
    }
    let total: usize = statuses.len();
    writeln!(
        out,
        "{agents_ok}/{total} agents synced, {}/{} remote connections ready",
        remotes.0, remotes.1
    )
    .map_err(CommandError::failed)
}

/// One line of what kvstoremesh's `/status` says: ready or not, and each
/// remote it mirrors with its counts, or why it is not ready.
fn kvstoremesh_summary(status: &serde_json::Value) -> String {
    let ready = status["ready"].as_bool().unwrap_or(false);
    let remotes: Vec<String> = status["remotes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let name = r["name"].as_str().unwrap_or("?");
            let entries: Vec<String> = r["entries"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            if r["ready"].as_bool().unwrap_or(false) {
                format!("{name} ready [{}]", entries.join(" "))
            } else {
                format!(
                    "{name} NOT READY ({}: {})",
                    r["lastErrorKind"].as_str().unwrap_or("not-synced"),
                    r["lastError"].as_str().unwrap_or("not mirrored yet")
                )
            }
        })
        .collect();
    format!(
        "{}; {}",
        if ready { "ready" } else { "NOT READY" },
        if remotes.is_empty() {
            "no remotes".to_owned()
        } else {
            format!("mirrors {}", remotes.join(", "))
        }
    )
}

/// `1 endpoint`, `2 endpoints`.
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn cert_days_left(path: &Path) -> Option<i64> {
    let infos = certs::CertificateInfo::from_pem_file(path).ok()?;
    infos
        .first()
        .map(|i| i.days_left(std::time::SystemTime::now()))
}

pub(crate) fn mesh(args: MeshArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    require_root()?;
    let mut mesh = Mesh::load(&args.dir).map_err(CommandError::usage)?;
    let w = |out: &mut dyn Write, s: String| writeln!(out, "{s}").map_err(CommandError::failed);
    match args.command {
        MeshCommand::Stop {
            component,
            cluster,
            node,
        } => {
            start_or_stop(&mut mesh, false, &component, &cluster, node)?;
            w(out, format!("stopped {component} of {cluster}"))
        }
        MeshCommand::Start {
            component,
            cluster,
            node,
        } => {
            start_or_stop(&mut mesh, true, &component, &cluster, node)?;
            w(out, format!("started {component} of {cluster}"))
        }
        MeshCommand::Cut { a, b } => {
            mesh.cut(&a, &b).map_err(CommandError::failed)?;
            w(out, format!("{a} and {b} are partitioned"))
        }
        MeshCommand::Heal { a, b } => {
            mesh.heal(&a, &b).map_err(CommandError::failed)?;
            w(out, format!("partition between {a} and {b} healed"))
        }
        MeshCommand::AddWorkload {
            cluster,
            node,
            name,
            labels,
            port,
        } => {
            let pairs: Vec<(String, String)> = labels
                .iter()
                .map(|l| {
                    l.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| anyhow!("label {l:?} is not KEY=VALUE"))
                })
                .collect::<Result<_, _>>()
                .map_err(CommandError::usage)?;
            let refs: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let e = mesh
                .add_endpoint(&cluster, &node, &name, &refs, port)
                .map_err(CommandError::failed)?;
            let v6 = e.ipv6.map(|v6| format!(", {v6}")).unwrap_or_default();
            w(out, format!("{cluster}/{name} on {node}: {}{v6}", e.ip))
        }
        MeshCommand::RemoveWorkload { cluster, name } => {
            mesh.remove_endpoint(&cluster, &name)
                .map_err(CommandError::failed)?;
            w(out, format!("{cluster}/{name} removed"))
        }
        MeshCommand::Request {
            from,
            to,
            count,
            timeout,
        } => {
            let (cluster, pod) = from
                .split_once('/')
                .ok_or_else(|| CommandError::usage(anyhow!("--from is CLUSTER/POD")))?;
            let mut failures = 0;
            for i in 1..=count {
                match mesh.request(cluster, pod, to, timeout) {
                    Ok((server, peer)) => w(
                        out,
                        format!("  {i}: answered by {server} (client saw {peer})"),
                    )?,
                    Err(e) => {
                        failures += 1;
                        w(out, format!("  {i}: no answer: {}", chain(&e)))?
                    }
                }
            }
            if failures == count {
                return Err(CommandError::failed(anyhow!(
                    "no request from {from} to {to} was answered"
                )));
            }
            Ok(())
        }
    }
}

/// `mesh start|stop COMPONENT CLUSTER [NODE]`.
fn start_or_stop(
    mesh: &mut Mesh,
    start: bool,
    component: &str,
    cluster: &str,
    node: Option<String>,
) -> Result<(), CommandError> {
    mesh.state.cluster(cluster).map_err(CommandError::usage)?;
    match (component, node, start) {
        ("etcd", None, true) => mesh.start_etcd(cluster),
        ("etcd", None, false) => mesh.stop_etcd(cluster),
        ("apiserver", None, true) => mesh.start_apiserver(cluster),
        ("apiserver", None, false) => mesh.stop_apiserver(cluster),
        ("kvstoremesh", None, true) => mesh.start_kvstoremesh(cluster),
        ("kvstoremesh", None, false) => mesh.stop_kvstoremesh(cluster),
        ("operator", None, true) => mesh.start_operator(cluster),
        ("operator", None, false) => mesh.stop_operator(cluster),
        ("relay", None, true) => mesh.start_relay(cluster),
        ("relay", None, false) => mesh.stop_relay(cluster),
        ("agent", Some(node), true) => mesh.start_agent(cluster, &node),
        ("agent", Some(node), false) => mesh.kill_agent(cluster, &node),
        _ => return Err(CommandError::usage(anyhow!(COMPONENTS))),
    }
    .map_err(CommandError::failed)
}

const COMPONENTS: &str = "the component is etcd CLUSTER, operator CLUSTER, apiserver CLUSTER, \
                          kvstoremesh CLUSTER, relay CLUSTER or agent CLUSTER NODE";

fn chain(e: &anyhow::Error) -> String {
    format!("{e:#}")
}

fn require_root() -> Result<(), CommandError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(CommandError::usage(anyhow!(
            "this command needs root (network namespaces and eBPF)"
        )));
    }
    Ok(())
}
