use std::{
    hash::Hash,
    net::IpAddr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::{CacheConfig, CacheDiff, DnsName, NameCache};

/// The version written in snapshots; a snapshot of another version is not
/// restored.
pub const SNAPSHOT_VERSION: u32 = 1;

/// A [`NameCache`] as kept in the agent's state directory (serde: JSON or
/// bincode), so that an agent restart keeps the learned addresses allowed.
///
/// Expiries are wall-clock times (`Instant`s do not survive a restart);
/// in-use marks are kept too, so that what an open connection held before
/// the restart stays held until the agent's first conntrack walk
/// ([`NameCache::set_in_use`]) says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheSnapshot<E> {
    /// [`SNAPSHOT_VERSION`].
    pub version: u32,
    /// Every entry.
    pub entries: Vec<SnapshotEntry<E>>,
}

/// One (endpoint, name, address) entry of a [`CacheSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEntry<E> {
    /// The endpoint.
    pub endpoint: E,
    /// The name, as [`DnsName::as_str`]; checked again on restore (the
    /// file is input like any other).
    pub name: String,
    /// The address.
    pub ip: IpAddr,
    /// The expiry, in milliseconds since the Unix epoch.
    pub expires_unix_ms: u64,
    /// Whether an open connection used the address.
    #[serde(default)]
    pub in_use: bool,
}

/// What a restore could not use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// The snapshot is of another version: nothing was restored.
    pub wrong_version: Option<u32>,
    /// Entries whose name is not a DNS name.
    pub bad_names: usize,
    /// Entries past the cache's limits.
    pub over_limits: usize,
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl<E: Copy + Eq + Hash + Ord> NameCache<E> {
    /// The cache at `now`, whose wall-clock time is `wall`.
    pub fn snapshot(&self, now: Instant, wall: SystemTime) -> CacheSnapshot<E> {
        let base = unix_ms(wall);
        let entries = self
            .entries()
            .into_iter()
            .map(|e| {
                let left = e.expires.saturating_duration_since(now);
                SnapshotEntry {
                    endpoint: e.endpoint,
                    name: e.name.as_str().to_string(),
                    ip: e.ip,
                    expires_unix_ms: base
                        .saturating_add(u64::try_from(left.as_millis()).unwrap_or(u64::MAX)),
                    in_use: e.in_use,
                }
            })
            .collect();
        CacheSnapshot {
            version: SNAPSHOT_VERSION,
            entries,
        }
    }

    /// A cache of `snapshot`'s entries at `now` (wall-clock `wall`), and
    /// the diff that puts all of them in the maps.
    ///
    /// As Cilium does with its restored DNS history, entries whose TTL
    /// passed while the agent was down are restored too, as expired: they
    /// stay allowed until the first [`NameCache::expire`], and past it if
    /// in use. The agent's order at start is therefore: restore, write the
    /// diff, walk conntrack ([`NameCache::set_in_use`] per endpoint), then
    /// expire on its timer. Limits apply as in `learn`.
    pub fn restore(
        config: CacheConfig,
        snapshot: &CacheSnapshot<E>,
        now: Instant,
        wall: SystemTime,
    ) -> (Self, CacheDiff, RestoreReport) {
        let mut cache = Self::new(config);
        let mut diff = CacheDiff::default();
        let mut report = RestoreReport::default();
        if snapshot.version != SNAPSHOT_VERSION {
            report.wrong_version = Some(snapshot.version);
            return (cache, diff, report);
        }
        let base = unix_ms(wall);
        for entry in &snapshot.entries {
            let Ok(name) = DnsName::new(&entry.name) else {
                report.bad_names += 1;
                continue;
            };
            if !cache.has_name(entry.endpoint, &name)
                && cache.endpoint_names(entry.endpoint) >= config.max_names_per_endpoint
            {
                report.over_limits += 1;
                continue;
            }
            let left = Duration::from_millis(entry.expires_unix_ms.saturating_sub(base));
            let expires = now.checked_add(left).unwrap_or(now);
            cache.restore_entry(entry.endpoint, &name, entry.ip, expires, &mut diff);
            if entry.in_use {
                cache.mark_in_use(entry.endpoint, entry.ip);
            }
            report.over_limits += cache.enforce_ip_limit(entry.endpoint, &name, &mut diff);
        }
        (cache, diff, report)
    }
}
