//! The one shutdown signal of every daemon: SIGTERM or SIGINT.

use std::{future::Future, io};

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// A future that waits for SIGTERM or SIGINT, then cancels `token` and
/// resolves to the signal's name (for the log).
///
/// The handlers are installed by this call, not when the future is first
/// polled, so a signal that arrives in between is not lost, and an error
/// here means they could not be installed. Call it inside a Tokio runtime.
pub fn shutdown(
    token: CancellationToken,
) -> io::Result<impl Future<Output = &'static str> + Send + 'static> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        token.cancel();
        name
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sigterm_cancels_the_token() {
        let token = CancellationToken::new();
        let signalled = shutdown(token.clone()).unwrap();
        assert!(!token.is_cancelled());
        // SAFETY: kill(2) on this process; the handler installed above
        // catches the signal.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGTERM);
        }
        assert_eq!(signalled.await, "SIGTERM");
        assert!(token.is_cancelled());
    }
}
