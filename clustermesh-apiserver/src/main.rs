//! `clustermesh-apiserver`: parses the flags, builds the apiserver, serves
//! until SIGTERM or SIGINT, then drains (see the library for everything else).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use clustermesh_apiserver::{Apiserver, Args};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// `EX_USAGE`: bad flags or unreadable files.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
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
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // A log file (the local mesh, systemd) gets no colour codes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match args.into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("clustermesh-apiserver: {:#}", anyhow::Error::new(e));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("clustermesh-apiserver: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let apiserver = match Apiserver::bind(config).await {
            Ok(apiserver) => apiserver,
            Err(e) => {
                let code = if e.is_config() {
                    ExitCode::from(EXIT_USAGE)
                } else {
                    ExitCode::FAILURE
                };
                eprintln!("clustermesh-apiserver: {:#}", anyhow::Error::new(e));
                return code;
            }
        };
        let shutdown = CancellationToken::new();
        let run = apiserver.run(shutdown.clone());
        tokio::pin!(run);
        let result = tokio::select! {
            result = &mut run => result,
            signal = terminated() => {
                match signal {
                    Ok(name) => tracing::info!(signal = name, "shutting down"),
                    Err(e) => tracing::error!(error = %e, "cannot listen for signals; shutting down"),
                }
                shutdown.cancel();
                run.await
            }
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("clustermesh-apiserver: {:#}", anyhow::Error::new(e));
                ExitCode::FAILURE
            }
        }
    })
}

/// Waits for SIGTERM or SIGINT.
async fn terminated() -> anyhow::Result<&'static str> {
    let mut term = signal(SignalKind::terminate()).context("listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listen for SIGINT")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
