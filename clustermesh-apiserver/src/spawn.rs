use std::{fmt, future::Future};

use tokio_util::task::TaskTracker;
use tracing::error;

/// Runs `task` on `tasks`; if it fails, logs `what` (what its end means)
/// with the error. The process goes on: a failed background task is
/// visible in the log and in the health checks, not a crash.
pub(crate) fn spawn_logged<E: fmt::Display + Send + 'static>(
    tasks: &TaskTracker,
    what: &'static str,
    task: impl Future<Output = Result<(), E>> + Send + 'static,
) {
    tasks.spawn(async move {
        if let Err(e) = task.await {
            error!(error = %e, "{what}");
        }
    });
}
