use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// First delay of [`Backoff::for_etcd`]: most etcd failures are blips (a
/// leader election, a restart), so the first retry comes soon.
pub(crate) const ETCD_RETRY_MIN: Duration = Duration::from_millis(100);

/// Longest delay of [`Backoff::for_etcd`]: while etcd stays down, a recovery
/// is noticed within 5 s, and a fleet of agents does not hammer it.
pub(crate) const ETCD_RETRY_MAX: Duration = Duration::from_secs(5);

/// First and longest pause between attempts of a request that failed on
/// one etcd member, before it is sent again (to another member, as the
/// channel balances): short, because a dead member refuses at once and the
/// others answer, yet growing, so that a cluster that is down entirely is
/// not hammered until the request's deadline.
const FAILOVER_MIN: Duration = Duration::from_millis(10);
const FAILOVER_MAX: Duration = Duration::from_millis(500);

/// Capped exponential backoff with jitter, for reconnects and retries.
///
/// Each delay is drawn uniformly from `[d/2, d]` where `d` doubles from `min`
/// up to `max`; the jitter keeps many agents from retrying in lockstep after a
/// shared outage.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    attempts: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            current: min,
            attempts: 0,
        }
    }

    /// The schedule for retrying etcd requests: from 100 ms, doubling, up to
    /// 5 s.
    pub fn for_etcd() -> Self {
        Self::new(ETCD_RETRY_MIN, ETCD_RETRY_MAX)
    }

    /// The schedule for sending a request again after one etcd member
    /// failed it: from 10 ms, doubling, up to 500 ms.
    pub fn for_failover() -> Self {
        Self::new(FAILOVER_MIN, FAILOVER_MAX)
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        self.attempts += 1;
        let low = d / 2;
        low + rand::rng().random_range(Duration::ZERO..=d - low)
    }

    /// Sleeps for the next delay; returns `false` if `shutdown` fired first.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    /// Back to the shortest delay, after a success.
    pub fn reset(&mut self) {
        self.current = self.min;
        self.attempts = 0;
    }

    /// Failed attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        for d in &delays[4..] {
            assert!(
                *d >= Duration::from_millis(500) && *d <= Duration::from_secs(1),
                "{d:?}"
            );
        }
        assert_eq!(b.attempts(), 8);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
