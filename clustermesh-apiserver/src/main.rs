//! `clustermesh-apiserver`: parses the flags, builds the apiserver, serves
//! until SIGTERM or SIGINT, then drains (see the library for everything else).

use std::process::ExitCode;

use clustermesh_apiserver::{Apiserver, Args};
use daemon::{Daemon, DaemonError, Exit, parse_flags};

fn main() -> ExitCode {
    let args = match parse_flags::<Args>() {
        Ok(args) => args,
        Err(exit) => return exit.into(),
    };
    Daemon::new("clustermesh-apiserver").run(|shutdown| async move {
        let config = args.into_config().map_err(DaemonError::usage)?;
        let apiserver = Apiserver::bind(config).await.map_err(|e| {
            let exit = if e.is_config() {
                Exit::Usage
            } else {
                Exit::Failure
            };
            DaemonError::new(exit, e)
        })?;
        apiserver.run(shutdown).await?;
        Ok(())
    })
}
