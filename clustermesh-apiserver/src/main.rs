//! `clustermesh-apiserver`: parses the flags, builds the apiserver, serves
//! until SIGTERM or SIGINT, then drains (see the library for everything else).
//! `clustermesh-apiserver kvstoremesh …` runs kvstoremesh instead.

use std::process::ExitCode;

use clap::Parser;
use clustermesh_apiserver::{Apiserver, Args, Kvstoremesh, KvstoremeshArgs};
use daemon::{Daemon, DaemonError, Exit, flags_error, parse_flags};

/// The subcommand that runs kvstoremesh; without it, the flat flags of the
/// apiserver.
const KVSTOREMESH: &str = "kvstoremesh";

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some(KVSTOREMESH) {
        return kvstoremesh();
    }
    let args = match parse_flags::<Args>() {
        Ok(args) => args,
        Err(exit) => return exit.into(),
    };
    Daemon::new("clustermesh-apiserver").run(|shutdown| async move {
        let config = args.into_config().map_err(DaemonError::usage)?;
        let apiserver = Apiserver::bind(config)
            .await
            .map_err(|e| bind_failed(e.is_config(), e))?;
        apiserver.run(shutdown).await?;
        Ok(())
    })
}

fn kvstoremesh() -> ExitCode {
    // The subcommand stands where the program name would.
    let args = match KvstoremeshArgs::try_parse_from(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(e) => return flags_error(e).into(),
    };
    Daemon::new("clustermesh-apiserver kvstoremesh").run(|shutdown| async move {
        let config = args.into_config().map_err(DaemonError::usage)?;
        let mesh = Kvstoremesh::bind(config)
            .await
            .map_err(|e| bind_failed(e.is_config(), e))?;
        mesh.run(shutdown).await?;
        Ok(())
    })
}

/// Starting failed: a usage error when the configuration is at fault (bad
/// files or flags), a failure otherwise (the environment).
fn bind_failed(is_config: bool, e: impl std::error::Error + Send + Sync + 'static) -> DaemonError {
    let exit = if is_config {
        Exit::Usage
    } else {
        Exit::Failure
    };
    DaemonError::new(exit, e)
}
