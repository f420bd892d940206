//! `clustermesh-ui`: parses the flags, serves the UI until SIGINT or SIGTERM.

use std::{process::ExitCode, time::Duration};

use daemon::{Daemon, DaemonError, parse_flags};
use tracing::info;
use ui::{Flags, Ui};

/// How long the UI may take to close its streams after a signal.
const GRACE: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let flags = match parse_flags::<Flags>() {
        Ok(flags) => flags,
        Err(exit) => return exit.into(),
    };
    Daemon::new("clustermesh-ui")
        .grace(GRACE)
        .run(|shutdown| async move {
            let config = flags.into_config().map_err(DaemonError::usage)?;
            let ui = Ui::bind(config).await.map_err(DaemonError::usage)?;
            let addr = ui
                .local_addr()
                .map_err(|e| DaemonError::usage(anyhow::Error::new(e)))?;
            info!(url = %format!("http://{addr}/"), "serving the Hubble UI");
            ui.run(shutdown).await?;
            Ok(())
        })
}
