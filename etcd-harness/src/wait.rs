//! Waiting for a condition with a deadline instead of sleeping.

use std::{future::Future, time::Duration};

use tokio::time::Instant;

/// How often a condition is checked.
const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it returns a value; panics with `what` once
/// `deadline` has passed.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `condition` until it holds; panics with `what` once `deadline`
/// has passed.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(what, deadline, || {
        let holds = condition();
        async move { holds.await.then_some(()) }
    })
    .await
}
