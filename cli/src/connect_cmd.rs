//! `clustermesh connect|disconnect --from A-admin.yaml --to B-admin.yaml`
//! and `clustermesh status --from A-admin.yaml`: clusters on real machines,
//! reached through their admin descriptors (`cluster export --admin`),
//! without a local mesh's `mesh.json`. The work is
//! [`cluster_setup::connection`]'s; this prints it.

use std::{
    io::Write,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow};
use certs::Ca;
use cluster_setup::{ClusterAdminDescriptor, ConnectError, ConnectMode, Progress, connection};

use crate::{
    command_error::CommandError,
    mesh_cmd::{Mode, StatusOutput},
    observe_cmd::runtime,
};

/// Whether a `--from`/`--to` value names an admin descriptor rather than a
/// cluster of the local mesh: cluster names have neither `.` nor `/`.
pub(crate) fn is_descriptor(value: &str) -> bool {
    value.contains('.') || value.contains('/') || Path::new(value).is_file()
}

pub(crate) fn load(path: &Path) -> Result<ClusterAdminDescriptor, CommandError> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))
        .map_err(CommandError::usage)?;
    ClusterAdminDescriptor::from_yaml(&text)
        .with_context(|| format!("{} is not a usable admin descriptor", path.display()))
        .map_err(CommandError::usage)
}

/// A refusal is a usage error (64: the input as given cannot be
/// connected), a cluster that does not answer is unavailable (69).
fn command_error(what: &str, e: ConnectError) -> CommandError {
    match e {
        ConnectError::Refused(_) => {
            CommandError::usage(anyhow!("{what} refused: {e}; nothing was changed"))
        }
        ConnectError::Unreachable { .. } => {
            CommandError::unavailable(anyhow!("{what} refused: {e}; nothing was changed"))
        }
    }
}

fn mode(mode: Mode) -> ConnectMode {
    match mode {
        Mode::Bidirectional => ConnectMode::Bidirectional,
        Mode::Unicast => ConnectMode::Unicast,
    }
}

fn arrow(mode: Mode) -> &'static str {
    match mode {
        Mode::Bidirectional => "<->",
        Mode::Unicast => "->",
    }
}

/// `connect --from A-admin.yaml --to B-admin.yaml --ca-dir DIR`.
pub(crate) fn connect(
    from: &Path,
    to: &Path,
    how: Mode,
    ca_dir: Option<&Path>,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    let (a, b) = (load(from)?, load(to)?);
    let ca_dir = ca_dir.ok_or_else(|| {
        CommandError::usage(anyhow!(
            "--ca-dir DIR is needed with admin descriptors: the mesh CA (ca.crt, ca.key) that \
             issues the remote-<cluster> certificates, e.g. the first cluster's OUT/mesh-ca"
        ))
    })?;
    let ca = Ca::load(ca_dir)
        .with_context(|| format!("cannot load the CA in {}", ca_dir.display()))
        .map_err(CommandError::usage)?;
    let rt = runtime()?;
    let result = with_progress(out, |progress| {
        rt.block_on(connection::connect(&a, &b, mode(how), &ca, progress))
    })?;
    result.map_err(|e| command_error("connect", e))?;
    writeln!(
        out,
        "connected {} {} {}; their agents pick up the remote configs from etcd now \
         (`clustermesh status --from {} --wait`)",
        a.name,
        arrow(how),
        b.name,
        from.display()
    )?;
    Ok(())
}

/// `disconnect --from A-admin.yaml --to B-admin.yaml`.
pub(crate) fn disconnect(
    from: &Path,
    to: &Path,
    how: Mode,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    let (a, b) = (load(from)?, load(to)?);
    let deleted = runtime()?
        .block_on(connection::disconnect(&a, &b, mode(how)))
        .map_err(|e| command_error("disconnect", e))?;
    for line in deleted {
        writeln!(out, "  ✔ {line}")?;
    }
    writeln!(out, "disconnected {} {} {}", a.name, arrow(how), b.name)?;
    Ok(())
}

/// `status --from A-admin.yaml [--wait]`.
pub(crate) fn status(
    from: &Path,
    wait: Option<Duration>,
    output: StatusOutput,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    let d = load(from)?;
    let rt = runtime()?;
    let read = || {
        rt.block_on(connection::status(&d)).map_err(|e| match e {
            ConnectError::Unreachable { .. } => CommandError::unavailable(anyhow!("{e}")),
            ConnectError::Refused(_) => CommandError::failed(anyhow!("{e}")),
        })
    };
    let mut status = read()?;
    if let Some(limit) = wait {
        let start = Instant::now();
        let mut last_report = Instant::now();
        loop {
            let missing = status.not_ready();
            if missing.is_empty() {
                break;
            }
            if start.elapsed() > limit {
                print(&status, output, out)?;
                return Err(CommandError::failed(anyhow!(
                    "not ready after {limit:?}; still waiting for:\n  {}",
                    missing.join("\n  ")
                )));
            }
            if last_report.elapsed() >= Duration::from_secs(5) {
                eprintln!("waiting for: {}", missing.join("; "));
                last_report = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(300));
            status = read()?;
        }
    }
    print(&status, output, out)
}

fn print(
    s: &connection::ClusterStatus,
    output: StatusOutput,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    if output == StatusOutput::Json {
        let json = serde_json::json!({
            "cluster": s.name,
            "clusterConfig": s.published.as_ref().ok().map(|c| serde_json::json!({
                "id": c.id, "maxConnectedClusters": c.capabilities.max_connected_clusters,
            })),
            "apiserverError": s.published.as_ref().err(),
            "remotes": s.remotes.iter().map(|r| serde_json::json!({
                "name": r.cluster, "id": r.id, "endpoints": r.endpoints,
            })).collect::<Vec<_>>(),
            "nodes": s.nodes,
            "agents": s.agents,
            "notReady": s.not_ready(),
        });
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json).map_err(CommandError::failed)?
        )?;
        return Ok(());
    }
    match &s.published {
        Ok(c) => writeln!(
            out,
            "cluster {} (id {}, max-connected-clusters {}): apiserver answers",
            s.name,
            c.id,
            c.mode().map(|m| m.as_u32()).unwrap_or_default()
        )?,
        Err(e) => writeln!(out, "cluster {}: apiserver NOT ANSWERING: {e}", s.name)?,
    }
    if s.remotes.is_empty() {
        writeln!(out, "  connected to no cluster")?;
    }
    for r in &s.remotes {
        writeln!(
            out,
            "  connected to {} (id {}) at {}",
            r.cluster,
            r.id,
            r.endpoints.join(",")
        )?;
    }
    let mut ready = (0, 0);
    for node in &s.nodes {
        if !s.agents.iter().any(|a| &a.node == node) {
            writeln!(out, "  node {node}: no agent report")?;
        }
    }
    for a in &s.agents {
        writeln!(
            out,
            "  node {}: {}, ipcache {} of {}",
            a.node,
            if a.synced { "synced" } else { "NOT synced" },
            a.maps.get("ipcache").copied().unwrap_or(0),
            a.map_capacity
                .get("ipcache")
                .map_or_else(|| "?".to_owned(), ToString::to_string)
        )?;
        for r in &a.remotes {
            ready.1 += 1;
            ready.0 += usize::from(r.ready);
            writeln!(
                out,
                "    remote {}: {} connected={}{}",
                r.name,
                if r.ready { "ready" } else { "NOT READY" },
                r.connected,
                r.error
                    .as_deref()
                    .map(|e| format!("\n      why: {e}"))
                    .unwrap_or_default()
            )?;
        }
    }
    writeln!(
        out,
        "{}/{} agents report, {}/{} remote connections ready",
        s.agents.len(),
        s.nodes.len().max(s.agents.len()),
        ready.0,
        ready.1
    )?;
    Ok(())
}

/// Runs `work`, printing each step it reports as a line (`✔` done, `!` a
/// warning) as it comes; the first failed write of `out` is the error.
pub(crate) fn with_progress<T>(
    out: &mut dyn Write,
    work: impl FnOnce(&mut dyn FnMut(Progress)) -> T,
) -> std::io::Result<T> {
    let mut io_error = None;
    let result = work(&mut |p| {
        let line = match p {
            Progress::Done(line) => format!("  ✔ {line}"),
            Progress::Warning(line) => format!("  ! {line}"),
        };
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            io_error.get_or_insert(e);
        }
    });
    match io_error {
        Some(e) => Err(e),
        None => Ok(result),
    }
}
