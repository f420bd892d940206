//! `clustermesh-agent`: the node agent (`run`) and its debug client (`debug`).

use std::process::ExitCode;

use agent::{Agent, AgentArgs, DebugArgs, run_debug};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

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
        match AgentArgs::parse_with_file(run_args) {
            Ok(a) => Command::Run(Box::new(a)),
            Err(e) => exit_usage(e),
        }
    } else {
        match Cli::try_parse_from(&args) {
            Ok(cli) => cli.command,
            Err(e) => exit_usage(e),
        }
    };
    match command {
        Command::Debug(d) => match run_debug(&d) {
            Ok(out) => {
                use std::io::Write;
                match std::io::stdout().lock().write_all(out.as_bytes()) {
                    // `debug map conntrack | head`: the reader has enough.
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                        eprintln!("clustermesh-agent debug: write the output: {e}");
                        ExitCode::from(1)
                    }
                    _ => ExitCode::SUCCESS,
                }
            }
            Err(e) => {
                eprintln!("clustermesh-agent debug: {e}");
                ExitCode::from(debug_exit_code(&e))
            }
        },
        Command::Run(a) => {
            init_logging();
            let config = match a.into_config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("clustermesh-agent: {:#}", anyhow::Error::new(e));
                    return ExitCode::from(64);
                }
            };
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            runtime.block_on(async {
                let shutdown = CancellationToken::new();
                let signal = shutdown.clone();
                tokio::spawn(async move {
                    wait_for_signal().await;
                    signal.cancel();
                });
                match Agent::new(config).run(shutdown).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("clustermesh-agent: {e:#}");
                        ExitCode::from(1)
                    }
                }
            })
        }
    }
}

/// The same exit codes as every clustermesh command: 69 when the agent does
/// not answer, 64 when it refuses the request (an unknown endpoint or map),
/// 1 otherwise.
fn debug_exit_code(e: &agent::ClientError) -> u8 {
    match e {
        agent::ClientError::Connect { .. } | agent::ClientError::Io { .. } => 69,
        agent::ClientError::Status { status, .. } if (400..500).contains(status) => 64,
        _ => 1,
    }
}

fn exit_usage(e: clap::Error) -> ! {
    let code = match e.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
        _ => 64,
    };
    let _ = e.print();
    std::process::exit(code);
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(agent::env::LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log file (the local mesh, systemd) gets no colour codes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
