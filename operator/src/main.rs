//! `clustermesh-operator`: parses the flags, builds the operator, runs it
//! until SIGINT or SIGTERM, then drains with a grace timeout.

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use daemon::{Daemon, DaemonError, parse_flags};
use operator::{Flags, Operator, error_chain};
use tokio_util::task::AbortOnDropHandle;

/// How long the operator may take to stop its duties and resign after a signal.
const GRACE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let flags = match parse_flags::<Flags>() {
        Ok(flags) => flags,
        Err(exit) => return exit.into(),
    };
    Daemon::new("clustermesh-operator")
        .grace(GRACE)
        .run(|shutdown| async move {
            let config = flags
                .into_config()
                .map_err(|e| DaemonError::usage(anyhow::Error::msg(error_chain(&e))))?;
            let (operator, _handle) = Operator::new(config).await?;
            // A task, so that a panic is an error like any other; aborted
            // when the grace period runs out and this future is dropped.
            let task = AbortOnDropHandle::new(tokio::spawn(operator.run(shutdown)));
            task.await.context("operator task")??;
            Ok(())
        })
}
