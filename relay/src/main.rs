//! `clustermesh-relay`: parses the flags, builds the relay, runs it until
//! SIGINT or SIGTERM, then drains with a grace timeout.

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use daemon::{Daemon, DaemonError, parse_flags};
use relay::{Flags, Relay, error_chain};
use tokio_util::task::AbortOnDropHandle;

/// How long the relay may take to end its streams after a signal.
const GRACE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let flags = match parse_flags::<Flags>() {
        Ok(flags) => flags,
        Err(exit) => return exit.into(),
    };
    Daemon::new("clustermesh-relay")
        .grace(GRACE)
        .run(|shutdown| async move {
            let config = flags
                .into_config()
                .map_err(|e| DaemonError::usage(anyhow::Error::msg(error_chain(&e))))?;
            let (relay, _handle) = Relay::new(config)
                .map_err(|e| DaemonError::usage(anyhow::Error::msg(error_chain(&e))))?;
            // A task, so that a panic is an error like any other; aborted
            // when the grace period runs out and this future is dropped.
            let task = AbortOnDropHandle::new(tokio::spawn(relay.run(shutdown)));
            task.await
                .context("relay task")?
                .map_err(|e| anyhow::Error::msg(error_chain(&e)))?;
            Ok(())
        })
}
