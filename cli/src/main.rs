//! The `clustermesh` command: manage the mesh PKI (and, later, connect
//! clusters and show their status). `main` only parses flags, runs the chosen
//! command and maps its error to an exit code: 64 for bad usage or
//! configuration, 1 for anything else.

mod certs_cmd;
mod command_error;

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
    let result: Result<(), CommandError> = match cli.command {
        Command::Certs(args) => certs_cmd::run(args, &mut std::io::stdout().lock()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("clustermesh: error: {:#}", err.error());
            ExitCode::from(err.exit_code())
        }
    }
}
