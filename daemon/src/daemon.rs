//! Running a daemon binary: logging, the async runtime, the shutdown
//! signal, an optional grace period, and the exit code.

use std::{future::Future, io::IsTerminal, time::Duration};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::{DaemonError, Exit, shutdown};

/// Where the daemons read their log filter from unless told otherwise
/// (`tracing_subscriber`'s default).
pub const DEFAULT_LOG_ENV: &str = "RUST_LOG";
/// The log filter when the environment sets none.
const DEFAULT_LOG_FILTER: &str = "info";

/// How a daemon binary runs its async main (linkerd2-proxy's `main.rs` in
/// shape): log to stderr, start a multi-threaded runtime, run `main` with a
/// [`CancellationToken`] that SIGTERM or SIGINT cancels, wait for `main` to
/// drain (at most the grace period, when one is set; then it is dropped,
/// which aborts what it still owns), and exit with the code its result maps
/// to ([`DaemonError::exit`]), printing the error after the binary's name.
#[derive(Debug, Clone, Copy)]
pub struct Daemon {
    name: &'static str,
    log_env: &'static str,
    grace: Option<Duration>,
}

impl Daemon {
    /// A daemon called `name` (the prefix of the errors it prints), its log
    /// filter in [`DEFAULT_LOG_ENV`], draining as long as it takes.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            log_env: DEFAULT_LOG_ENV,
            grace: None,
        }
    }

    /// Reads the log filter (`tracing` `EnvFilter` syntax) from `var`.
    pub const fn log_env(mut self, var: &'static str) -> Self {
        self.log_env = var;
        self
    }

    /// After the signal, `main` may take at most `grace` to stop; then it is
    /// dropped and the daemon exits with [`Exit::Failure`].
    pub const fn grace(mut self, grace: Duration) -> Self {
        self.grace = Some(grace);
        self
    }

    /// Runs `main` (see the type) and returns the process's exit code.
    pub fn run<F, Fut>(&self, main: F) -> std::process::ExitCode
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), DaemonError>>,
    {
        self.init_logging();
        match self.block_on(main) {
            Ok(()) => Exit::Success.into(),
            Err(error) => {
                eprintln!("{}: {error}", self.name);
                error.exit().into()
            }
        }
    }

    fn init_logging(&self) {
        let mut filter = tracing_subscriber::EnvFilter::try_from_env(self.log_env)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
        // kube-client logs every failed request at ERROR (a retrying watch
        // while the API server is down: one line per attempt); the
        // Kubernetes watchers say once that it is gone and once that it is
        // back. A filter that names kube_client itself decides.
        if !std::env::var(self.log_env).is_ok_and(|f| f.contains("kube_client")) {
            filter = filter.add_directive(
                "kube_client::client::builder=off"
                    .parse()
                    .expect("a valid directive"),
            );
        }
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            // A log file (the local mesh, systemd) gets no colour codes.
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }

    fn block_on<F, Fut>(&self, main: F) -> Result<(), DaemonError>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), DaemonError>>,
    {
        let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
        runtime.block_on(async {
            let token = CancellationToken::new();
            let signalled =
                shutdown(token.clone()).context("cannot listen for SIGTERM and SIGINT")?;
            // Polled right here, not spawned: nothing of the daemon outlives
            // this function.
            let main = main(token);
            tokio::pin!(main);
            tokio::select! {
                result = &mut main => return result,
                signal = signalled => match self.grace {
                    Some(grace) => tracing::info!(signal, ?grace, "shutting down"),
                    None => tracing::info!(signal, "shutting down"),
                },
            }
            match self.grace {
                None => main.await,
                Some(grace) => tokio::time::timeout(grace, main).await.unwrap_or_else(|_| {
                    Err(anyhow::anyhow!(
                        "did not stop within {grace:?} of the signal; exiting anyway"
                    )
                    .into())
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };

    use super::*;

    fn terminate_self() {
        // SAFETY: kill(2) on this process; `Daemon` has installed its
        // handler by the time `main` runs.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGTERM);
        }
    }

    #[test]
    fn the_error_of_main_decides_the_exit() {
        let daemon = Daemon::new("test");
        let result = daemon.block_on(|_| async { Err(DaemonError::usage(anyhow::anyhow!("bad"))) });
        assert_eq!(result.unwrap_err().exit(), Exit::Usage);
        let result = daemon.block_on(|_| async { Err(anyhow::anyhow!("broken").into()) });
        assert_eq!(result.unwrap_err().exit(), Exit::Failure);
    }

    #[test]
    fn a_signal_cancels_main_which_drains() {
        let result = Daemon::new("test").block_on(|shutdown| async move {
            terminate_self();
            shutdown.cancelled().await;
            Ok(())
        });
        assert!(result.is_ok());
    }

    #[test]
    fn main_is_dropped_when_it_outlasts_the_grace_period() {
        let dropped = Arc::new(AtomicBool::new(false));
        struct SetOnDrop(Arc<AtomicBool>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let guard = SetOnDrop(dropped.clone());
        let result = Daemon::new("test")
            .grace(Duration::from_millis(50))
            .block_on(|_| async move {
                let _guard = guard;
                terminate_self();
                std::future::pending::<()>().await;
                Ok(())
            });
        let error = result.unwrap_err();
        assert_eq!(error.exit(), Exit::Failure);
        assert!(error.to_string().contains("did not stop within"), "{error}");
        assert!(dropped.load(Ordering::SeqCst));
    }
}
