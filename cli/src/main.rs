//! The `clustermesh` command: the mesh PKI, one cluster on real hosts
//! (`cluster init|export`), a real local mesh (`up`,
//! `down`), connecting clusters, status, policies and services, and Hubble
//! (`observe`, `hubble status|nodes`). `main` only parses flags, runs the chosen
//! command and maps its error to an exit code: 64 for bad usage or
//! configuration, 1 for anything else.

mod certs_cmd;
mod cluster_cmd;
mod command_error;
mod connect_cmd;
mod flow_filter;
mod flow_printer;
mod flow_time;
mod hubble_client;
mod hubble_cmd;
mod hubble_server;
mod mesh_cmd;
mod observe_cmd;
mod store_cmd;
mod tab_writer;
mod tool_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::command_error::{CommandError, EXIT_USAGE};

#[derive(Debug, Parser)]
#[command(name = "clustermesh", version, about = "Join clusters into one mesh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the mesh CA, issue server and client certificates, inspect them.
    Certs(certs_cmd::CertsArgs),
    /// One cluster on real hosts: `init` writes its certificates,
    /// configuration and systemd units; `export` its descriptors.
    Cluster(cluster_cmd::ClusterArgs),
    /// Start a real local mesh: per cluster etcd, operator and apiserver; per
    /// node a network namespace with an agent; sample workloads.
    Up(mesh_cmd::UpArgs),
    /// Remove a local mesh: processes, namespaces, pinned maps, files.
    Down(mesh_cmd::DirArgs),
    /// Check that two clusters can be connected, then connect them.
    Connect(mesh_cmd::ConnectArgs),
    /// Remove the connection between two clusters.
    Disconnect(mesh_cmd::ConnectArgs),
    /// Per cluster, node and remote: connected, synced, entries, errors.
    Status(mesh_cmd::StatusArgs),
    /// Policies of a cluster without Kubernetes: apply, delete, list.
    Policy(store_cmd::StoreArgs),
    /// Service definitions of a cluster without Kubernetes: apply, delete, list.
    Service(store_cmd::StoreArgs),
    /// Drive a local mesh: stop/start components, partitions, workloads, requests.
    Mesh(mesh_cmd::MeshArgs),
    /// Observe flows from a Hubble server or relay, with Hubble's flags.
    Observe(Box<observe_cmd::ObserveArgs>),
    /// Hubble servers and relays: status, nodes.
    Hubble(hubble_cmd::HubbleArgs),
    /// Print the URL of the local mesh's Hubble UI (service map, flows,
    /// global services).
    Ui(mesh_cmd::DirArgs),
    /// Programs the local mesh runs inside pods.
    #[command(hide = true)]
    Tool(tool_cmd::ToolArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // --help and --version end up here too, on stdout with success.
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let out = &mut std::io::stdout().lock();
    let result: Result<(), CommandError> = match cli.command {
        Command::Certs(args) => certs_cmd::run(args, out),
        Command::Cluster(args) => cluster_cmd::run(args, out),
        Command::Up(args) => mesh_cmd::up(args, out),
        Command::Down(args) => mesh_cmd::down(args, out),
        Command::Connect(args) => mesh_cmd::connect(args, out, false),
        Command::Disconnect(args) => mesh_cmd::connect(args, out, true),
        Command::Status(args) => mesh_cmd::status(args, out),
        Command::Policy(args) => store_cmd::run(store_cmd::Kind::Policy, args, out),
        Command::Service(args) => store_cmd::run(store_cmd::Kind::Service, args, out),
        Command::Mesh(args) => mesh_cmd::mesh(args, out),
        Command::Observe(args) => observe_cmd::run(*args, out),
        Command::Hubble(args) => hubble_cmd::run(args, out),
        Command::Ui(args) => mesh_cmd::ui(args, out),
        Command::Tool(args) => tool_cmd::run(args, out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `clustermesh … | head`: the reader has all it wants.
        Err(err) if is_broken_pipe(err.error()) => ExitCode::SUCCESS,
        Err(err) if err.error().is::<localmesh::Interrupted>() => {
            eprintln!("clustermesh: interrupted; what was started has been removed");
            ExitCode::from(130)
        }
        Err(err) => {
            eprintln!("clustermesh: error: {}", err.message());
            ExitCode::from(err.exit_code())
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Arguments and subcommands without a one-line description, as paths.
    fn undescribed(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" || arg.is_hide_set() {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} <{id}>"));
            }
        }
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let sub_path = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_name() != "help" {
                missing.push(sub_path.clone());
            }
            undescribed(sub, &sub_path, missing);
        }
    }

    #[test]
    fn every_argument_and_subcommand_is_described() {
        let mut missing = Vec::new();
        undescribed(&Cli::command(), "clustermesh", &mut missing);
        assert!(
            missing.is_empty(),
            "no help text for:\n{}",
            missing.join("\n")
        );
        Cli::command().debug_assert();
    }
}
