//! `clustermesh-operator`: parses the flags, builds the operator, runs it
//! until SIGINT or SIGTERM, then drains with a grace timeout.

use std::{io::IsTerminal, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Parser;
use operator::{Flags, Operator, error_chain};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Exit code for bad flags or configuration files (BSD `EX_USAGE`).
const EXIT_USAGE: u8 = 64;
/// How long the operator may take to stop its duties and resign after a signal.
const GRACE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let flags = match Flags::try_parse() {
        Ok(f) => f,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let config = match flags.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("clustermesh-operator: {}", error_chain(&e));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("clustermesh-operator: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clustermesh-operator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: operator::OperatorConfig) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    let (operator, _handle) = Operator::new(config).await?;
    let shutdown = CancellationToken::new();
    let mut task = tokio::spawn(operator.run(shutdown.clone()));
    let signal = tokio::select! {
        r = &mut task => return Ok(r.context("operator task")??),
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    info!(signal, grace = ?GRACE, "shutting down");
    shutdown.cancel();
    match tokio::time::timeout(GRACE, &mut task).await {
        Ok(r) => Ok(r.context("operator task")??),
        Err(_) => {
            task.abort();
            anyhow::bail!("the operator did not stop within {GRACE:?}; exiting anyway")
        }
    }
}
