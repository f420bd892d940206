//! Waiting for a condition with a deadline instead of sleeping.

use std::time::{Duration, Instant};

/// Polls `condition` (every few milliseconds, backing off to 50 ms) until it
/// holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if condition() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_true_once_condition_holds() {
        let mut n = 0;
        assert!(wait_until(Duration::from_secs(5), || {
            n += 1;
            n == 3
        }));
    }

    #[test]
    fn gives_up_at_the_deadline() {
        assert!(!wait_until(Duration::from_millis(20), || false));
    }
}
