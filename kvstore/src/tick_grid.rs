//! Deadlines rounded up to a shared grid, so that the periodic checks of
//! many connections (probes, watch progress requests) come due together: one
//! wakeup of the runtime serves all that are due, instead of one wakeup each
//! at scattered instants. With hundreds of remote clusters, the scattered
//! wakeups (a worker thread unparked, the timer wheel and epoll polled, for
//! each) cost more than the checks themselves.

use std::{sync::LazyLock, time::Duration};

use tokio::time::Instant;

/// The grid's origin: the first use in the process.
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

/// `deadline`, rounded up to the next multiple of `step` since the grid's
/// origin (unchanged if `step` is zero). At most `step` later.
pub fn on_grid(deadline: Instant, step: Duration) -> Instant {
    let origin = *ORIGIN;
    let step_ns = step.as_nanos();
    if step_ns == 0 {
        return deadline;
    }
    if deadline < origin {
        // The grid extends before its origin too.
        let before = origin.duration_since(deadline).as_nanos();
        return origin - nanos(before / step_ns * step_ns);
    }
    let since = deadline.duration_since(origin).as_nanos();
    deadline + nanos(since.div_ceil(step_ns) * step_ns - since)
}

fn nanos(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_come_due_together() {
        let step = Duration::from_secs(1);
        let base = on_grid(Instant::now(), step);
        assert_eq!(on_grid(base, step), base, "a deadline on the grid stays");
        let a = on_grid(base + Duration::from_millis(200), step);
        let b = on_grid(base + Duration::from_millis(900), step);
        assert_eq!(a, b, "both in the same step");
        assert_eq!(a, base + step);
        let c = on_grid(base + Duration::from_millis(1_300), step);
        assert_eq!(c, base + 2 * step, "the next step");
        let now = Instant::now();
        assert_eq!(on_grid(now, Duration::ZERO), now);
    }
}
