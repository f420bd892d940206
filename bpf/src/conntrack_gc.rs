//! Garbage collection of the conntrack map: which entries have been idle
//! longer than their connection's state allows ([`CtLifetimes::expired`],
//! pure), and one pass over the pinned map that deletes them
//! ([`ConntrackMap::gc`]).
//!
//! The LRU map evicts on its own only when full; without a collector a
//! closed connection's entry keeps its slot (and a stale reverse
//! translation) until then.

use std::{collections::BTreeMap, ops::ControlFlow, time::Duration};

use crate::{
    conntrack::{ConntrackMap, CtKey, CtValue},
    protocol::Protocol,
    typed_map::MapError,
};

/// How long a conntrack entry may stay idle, by what the datapath saw of its
/// connection. Every scope (egress, ingress, service) follows its protocol's
/// lifetimes. The defaults are Cilium's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtLifetimes {
    /// TCP after a reply passed, until a FIN or RST (default 6 h, Cilium's
    /// `--bpf-ct-timeout-regular-tcp`).
    pub tcp_established: Duration,
    /// TCP before any reply: a SYN nobody answered (default 60 s, Cilium's
    /// `--bpf-ct-timeout-regular-tcp-syn`).
    pub tcp_syn: Duration,
    /// TCP after a FIN or RST in either direction (default 10 s, Cilium's
    /// `--bpf-ct-timeout-regular-tcp-fin`).
    pub tcp_closing: Duration,
    /// Every other protocol: UDP, ICMP, SCTP… (default 60 s, Cilium's
    /// `--bpf-ct-timeout-regular-any`).
    pub any: Duration,
}

impl Default for CtLifetimes {
    fn default() -> Self {
        Self {
            tcp_established: Duration::from_secs(6 * 3600),
            tcp_syn: Duration::from_secs(60),
            tcp_closing: Duration::from_secs(10),
            any: Duration::from_secs(60),
        }
    }
}

impl CtLifetimes {
    /// How long the entry may stay idle.
    pub fn lifetime(&self, key: &CtKey, value: &CtValue) -> Duration {
        match key.protocol() {
            Protocol::Tcp if value.closing() => self.tcp_closing,
            Protocol::Tcp if value.seen_reply() => self.tcp_established,
            Protocol::Tcp => self.tcp_syn,
            _ => self.any,
        }
    }

    /// Whether the entry has been idle longer than its lifetime at `now_ns`
    /// (`CLOCK_MONOTONIC`, the clock of the programs' `bpf_ktime_get_ns`).
    /// An entry seen after `now_ns` (a packet while the pass runs) is not.
    pub fn expired(&self, key: &CtKey, value: &CtValue, now_ns: u64) -> bool {
        let idle = now_ns.saturating_sub(value.last_seen_ns);
        u128::from(idle) > self.lifetime(key, value).as_nanos()
    }
}

/// What one GC pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CtGcStats {
    /// Entries left after the pass, by family byte
    /// ([`FAMILY_V4`](crate::FAMILY_V4), [`FAMILY_V6`](crate::FAMILY_V6)).
    pub remaining: BTreeMap<u8, usize>,
    /// Entries deleted, by protocol.
    pub deleted: BTreeMap<Protocol, usize>,
}

impl CtGcStats {
    /// Entries left after the pass.
    pub fn remaining_total(&self) -> usize {
        self.remaining.values().sum()
    }

    /// Entries deleted by the pass.
    pub fn deleted_total(&self) -> usize {
        self.deleted.values().sum()
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: what `bpf_ktime_get_ns` returns to the
/// programs at the same instant.
pub fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill; CLOCK_MONOTONIC always exists.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_MONOTONIC is always available");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl ConntrackMap {
    /// One GC pass: walks the map a batch at a time and deletes, batch by
    /// batch, the entries expired at `now_ns` (one batch of entries in
    /// memory, never the whole map).
    ///
    /// An entry that a packet refreshes between its read and its deletion
    /// is deleted all the same (as in Cilium's collector): it had been idle
    /// for its whole lifetime first, and its connection's next packet
    /// creates it again through policy.
    pub fn gc(&self, lifetimes: &CtLifetimes, now_ns: u64) -> Result<CtGcStats, MapError> {
        let mut stats = CtGcStats::default();
        let mut expired = Vec::new();
        let mut failed = None;
        self.walk(|chunk| {
            expired.clear();
            for (key, value) in chunk {
                if lifetimes.expired(key, value, now_ns) {
                    expired.push(*key);
                } else {
                    *stats.remaining.entry(key.family()).or_default() += 1;
                }
            }
            match self.batch_delete_present(&expired) {
                Ok(missing) => {
                    let mut missing = missing.into_iter().peekable();
                    for (i, key) in expired.iter().enumerate() {
                        if missing.next_if_eq(&i).is_none() {
                            *stats.deleted.entry(key.protocol()).or_default() += 1;
                        }
                    }
                    ControlFlow::Continue(())
                }
                Err(e) => {
                    failed = Some(e);
                    ControlFlow::Break(())
                }
            }
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::conntrack::CtScope;

    const S: u64 = 1_000_000_000;
    /// An arbitrary monotonic instant, far from 0.
    const T0: u64 = 1_000_000 * S;

    fn lifetimes() -> CtLifetimes {
        CtLifetimes {
            tcp_established: Duration::from_secs(1000),
            tcp_syn: Duration::from_secs(60),
            tcp_closing: Duration::from_secs(10),
            any: Duration::from_secs(30),
        }
    }

    fn key(protocol: Protocol, scope: CtScope) -> CtKey {
        let src: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let dst: SocketAddr = "10.0.0.2:80".parse().unwrap();
        CtKey::new(protocol, src, dst, scope)
    }

    /// (lifetime of the entry, whether it is expired after `idle` seconds)
    /// for every protocol, state and scope.
    #[test]
    fn every_protocol_and_state_has_its_lifetime() {
        let l = lifetimes();
        let syn = CtValue::new(T0, 1);
        let established = syn.with_reply_seen();
        let closing = established.with_closing();
        let closing_unanswered = syn.with_closing();
        let cases = [
            (Protocol::Tcp, syn, 60),
            (Protocol::Tcp, established, 1000),
            (Protocol::Tcp, closing, 10),
            // a RST answering nothing closes all the same
            (Protocol::Tcp, closing_unanswered, 10),
            (Protocol::Udp, syn, 30),
            (Protocol::Udp, established, 30),
            // the closing bit means nothing outside TCP
            (Protocol::Udp, closing, 30),
            (Protocol::Icmp, syn, 30),
            (Protocol::Icmpv6, established, 30),
            (Protocol::Sctp, established, 30),
            (Protocol::Other(47), syn, 30),
        ];
        for scope in [
            CtScope::Egress,
            CtScope::Ingress,
            CtScope::Service,
            CtScope::Proxy,
            CtScope::Other(9),
        ] {
            for (protocol, value, seconds) in cases {
                let k = key(protocol, scope);
                let what = format!("{protocol:?} {scope:?} {value:?}");
                assert_eq!(
                    l.lifetime(&k, &value),
                    Duration::from_secs(seconds),
                    "{what}"
                );
                assert!(!l.expired(&k, &value, T0), "fresh: {what}");
                assert!(
                    !l.expired(&k, &value, T0 + seconds * S),
                    "idle exactly its lifetime: {what}"
                );
                assert!(
                    l.expired(&k, &value, T0 + seconds * S + 1),
                    "idle longer: {what}"
                );
            }
        }
    }

    #[test]
    fn an_entry_seen_after_now_is_not_expired() {
        let l = CtLifetimes {
            any: Duration::ZERO,
            ..lifetimes()
        };
        let k = key(Protocol::Udp, CtScope::Egress);
        let v = CtValue::new(T0, 1);
        assert!(!l.expired(&k, &v, T0 - S), "refreshed during the pass");
        assert!(!l.expired(&k, &v, T0), "zero lifetime, zero idle");
        assert!(l.expired(&k, &v, T0 + 1));
    }

    #[test]
    fn lifetimes_count_from_the_last_refresh() {
        let l = lifetimes();
        let k = key(Protocol::Tcp, CtScope::Ingress);
        let mut v = CtValue::new(T0, 1).with_reply_seen();
        v.last_seen_ns = T0 + 5000 * S;
        assert!(!l.expired(&k, &v, T0 + 5999 * S));
        assert!(l.expired(&k, &v, T0 + 6001 * S));
    }

    #[test]
    fn defaults_are_ciliums() {
        let d = CtLifetimes::default();
        assert_eq!(d.tcp_established, Duration::from_secs(21600));
        assert_eq!(d.tcp_syn, Duration::from_secs(60));
        assert_eq!(d.tcp_closing, Duration::from_secs(10));
        assert_eq!(d.any, Duration::from_secs(60));
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = monotonic_now_ns();
        let b = monotonic_now_ns();
        assert!(b >= a && a > 0);
    }
}
