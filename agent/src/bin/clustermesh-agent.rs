//! `clustermesh-agent`: the node agent (`run`) and its debug client (`debug`).

use std::process::ExitCode;

use agent::{Agent, AgentArgs, DebugArgs, run_debug};
use clap::{Parser, Subcommand};
use daemon::{Daemon, DaemonError, Exit, flags_error};

#[derive(Parser)]
#[command(
    name = "clustermesh-agent",
    version,
    about = "The clustermesh node agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (flags, CLUSTERMESH_* environment variables or --config FILE).
    Run(Box<AgentArgs>),
    /// Show the agent's state and eBPF maps.
    Debug(DebugArgs),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // `run` takes defaults from a config file, so parse it with them.
    let command = if args.get(1).map(String::as_str) == Some("run") {
        let mut run_args = vec![format!("{} run", args[0])];
        run_args.extend(args[2..].iter().cloned());
        AgentArgs::parse_with_file(run_args).map(|a| Command::Run(Box::new(a)))
    } else {
        Cli::try_parse_from(&args).map(|cli| cli.command)
    };
    match command {
        Err(e) => flags_error(e).into(),
        Ok(Command::Debug(d)) => debug(&d).into(),
        Ok(Command::Run(a)) => {
            agent::tune_heap();
            Daemon::new("clustermesh-agent")
                .log_env(agent::env::LOG)
                .run(|shutdown| async move {
                    let config = a.into_config().map_err(DaemonError::usage)?;
                    Agent::new(config).run(shutdown).await?;
                    Ok(())
                })
        }
    }
}

fn debug(args: &DebugArgs) -> Exit {
    match run_debug(args) {
        Ok(out) => {
            use std::io::Write;
            match std::io::stdout().lock().write_all(out.as_bytes()) {
                // `debug map conntrack | head`: the reader has enough.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("clustermesh-agent debug: write the output: {e}");
                    Exit::Failure
                }
                _ => Exit::Success,
            }
        }
        Err(e) => {
            eprintln!("clustermesh-agent debug: {e}");
            debug_exit(&e)
        }
    }
}

/// The same exit codes as every clustermesh command: unavailable when the
/// agent does not answer, usage when it refuses the request (an unknown
/// endpoint or map), failure otherwise.
fn debug_exit(e: &agent::ClientError) -> Exit {
    match e {
        agent::ClientError::Connect { .. } | agent::ClientError::Io { .. } => Exit::Unavailable,
        agent::ClientError::Status { status, .. } if (400..500).contains(status) => Exit::Usage,
        _ => Exit::Failure,
    }
}
