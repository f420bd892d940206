use std::{fmt, net::IpAddr};

use ipnet::IpNet;

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub const ALL: [Self; 2] = [Self::V4, Self::V6];

    pub fn of(net: &IpNet) -> Self {
        match net {
            IpNet::V4(_) => Self::V4,
            IpNet::V6(_) => Self::V6,
        }
    }

    /// `ipv4` or `ipv6`: the metric label and the name in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V4 => "ipv4",
            Self::V6 => "ipv6",
        }
    }

    fn bits(self) -> u8 {
        match self {
            Self::V4 => 32,
            Self::V6 => 128,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a pool was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrPoolError {
    #[error("pool {pool} is not an {expected} CIDR")]
    WrongFamily { pool: IpNet, expected: IpFamily },
    #[error("pool {pool} is not a network address; did you mean {}?", pool.trunc())]
    NotNetworkAddress { pool: IpNet },
    #[error("node CIDR mask size /{mask} must be between the pool's /{} and /{max}", pool.prefix_len())]
    InvalidMaskSize { pool: IpNet, mask: u8, max: u8 },
}

/// The pod CIDR pool of a cluster for one family: `pool` cut into node CIDRs
/// of `/mask` (e.g. `10.1.0.0/16` into 256 `/24`s).
///
/// Pure: the choice of a free CIDR depends only on the pool and on the CIDRs
/// in use, so every operator makes the same choice from the same facts (and
/// the create-only key in etcd settles a race between two of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidrPool {
    pool: IpNet,
    mask: u8,
}

impl CidrPool {
    /// A pool of `family`; `pool` must be a network address and `mask` at
    /// least as long as its prefix.
    pub fn new(family: IpFamily, pool: IpNet, mask: u8) -> Result<Self, CidrPoolError> {
        if IpFamily::of(&pool) != family {
            return Err(CidrPoolError::WrongFamily {
                pool,
                expected: family,
            });
        }
        if pool.trunc() != pool {
            return Err(CidrPoolError::NotNetworkAddress { pool });
        }
        if mask < pool.prefix_len() || mask > family.bits() {
            return Err(CidrPoolError::InvalidMaskSize {
                pool,
                mask,
                max: family.bits(),
            });
        }
        Ok(Self { pool, mask })
    }

    pub fn family(&self) -> IpFamily {
        IpFamily::of(&self.pool)
    }

    /// The whole pool, e.g. `10.1.0.0/16`.
    pub fn pool(&self) -> IpNet {
        self.pool
    }

    /// The prefix length of a node CIDR, e.g. 24.
    pub fn mask(&self) -> u8 {
        self.mask
    }

    /// How many node CIDRs the pool holds (saturating for huge IPv6 pools).
    pub fn capacity(&self) -> u128 {
        1u128
            .checked_shl(u32::from(self.mask - self.pool.prefix_len()))
            .unwrap_or(u128::MAX)
    }

    /// Whether `net` is one of the pool's node CIDRs.
    pub fn contains(&self, net: &IpNet) -> bool {
        net.prefix_len() == self.mask && self.pool.contains(net) && net.trunc() == *net
    }

    /// How many of the pool's node CIDRs overlap `used` (each counted once).
    pub fn count_used<'a>(&self, used: impl IntoIterator<Item = &'a IpNet>) -> u128 {
        self.covered(used)
            .into_iter()
            .map(|(first, last)| last - first + 1)
            .fold(0u128, u128::saturating_add)
    }

    /// The lowest node CIDR that overlaps none of `used` (CIDRs of any size;
    /// other families and addresses outside the pool are ignored), or `None`
    /// when the pool is exhausted.
    pub fn lowest_free<'a>(&self, used: impl IntoIterator<Item = &'a IpNet>) -> Option<IpNet> {
        self.free(used).next()
    }

    /// Every node CIDR that overlaps none of `used`, lowest first, computed
    /// lazily (one sort of `used`, then constant work per CIDR).
    pub fn free<'a>(&self, used: impl IntoIterator<Item = &'a IpNet>) -> FreeCidrs {
        let (pool_start, pool_end) = self.pool_range();
        FreeCidrs {
            pool: *self,
            covered: self.covered(used),
            pos: 0,
            next: Some(self.index_of(pool_start)),
            last: self.index_of(pool_end),
        }
    }

    /// Sorted, disjoint ranges of the indexes of node CIDRs that `used`
    /// overlaps.
    fn covered<'a>(&self, used: impl IntoIterator<Item = &'a IpNet>) -> Vec<(u128, u128)> {
        merge(
            self.ranges_in_pool(used)
                .into_iter()
                .map(|(s, e)| (self.index_of(s), self.index_of(e)))
                .collect(),
        )
    }

    /// Index of the node CIDR that holds address `addr` (as an integer).
    fn index_of(&self, addr: u128) -> u128 {
        let shift = u32::from(self.family().bits() - self.mask);
        addr.checked_shr(shift).unwrap_or(0)
    }

    fn pool_range(&self) -> (u128, u128) {
        range_of(&self.pool)
    }

    /// The parts of `used` inside the pool, as address ranges.
    fn ranges_in_pool<'a>(&self, used: impl IntoIterator<Item = &'a IpNet>) -> Vec<(u128, u128)> {
        let (pool_start, pool_end) = self.pool_range();
        used.into_iter()
            .filter(|n| IpFamily::of(n) == self.family())
            .map(range_of)
            .filter(|(s, e)| *e >= pool_start && *s <= pool_end)
            .map(|(s, e)| (s.max(pool_start), e.min(pool_end)))
            .collect()
    }

    fn net_at(&self, addr: u128) -> IpNet {
        let ip = match self.family() {
            IpFamily::V4 => IpAddr::from(std::net::Ipv4Addr::from(addr as u32)),
            IpFamily::V6 => IpAddr::from(std::net::Ipv6Addr::from(addr)),
        };
        IpNet::new(ip, self.mask).expect("mask validated on construction")
    }
}

impl fmt::Display for CidrPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (/{} per node)", self.pool, self.mask)
    }
}

/// The free node CIDRs of a pool, lowest first; see [`CidrPool::free`].
#[derive(Debug, Clone)]
pub struct FreeCidrs {
    pool: CidrPool,
    /// Sorted, disjoint ranges of node CIDR indexes in use.
    covered: Vec<(u128, u128)>,
    pos: usize,
    next: Option<u128>,
    last: u128,
}

impl Iterator for FreeCidrs {
    type Item = IpNet;

    fn next(&mut self) -> Option<IpNet> {
        loop {
            let candidate = self.next.filter(|c| *c <= self.last)?;
            while self.covered.get(self.pos).is_some_and(|r| r.1 < candidate) {
                self.pos += 1;
            }
            match self.covered.get(self.pos) {
                Some(&(start, end)) if start <= candidate => self.next = end.checked_add(1),
                _ => {
                    self.next = candidate.checked_add(1);
                    let shift = u32::from(self.pool.family().bits() - self.pool.mask);
                    return Some(self.pool.net_at(candidate.checked_shl(shift).unwrap_or(0)));
                }
            }
        }
    }
}

/// First and last address of `net` as integers.
fn range_of(net: &IpNet) -> (u128, u128) {
    match net {
        IpNet::V4(n) => (
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// Sorted, merged (overlapping or adjacent) ranges.
fn merge(mut ranges: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    ranges.sort_unstable();
    let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match merged.last_mut() {
            Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn v4(pool: &str, mask: u8) -> CidrPool {
        CidrPool::new(IpFamily::V4, net(pool), mask).unwrap()
    }

    #[test]
    fn validation() {
        assert_eq!(
            CidrPool::new(IpFamily::V4, net("fd00::/48"), 64),
            Err(CidrPoolError::WrongFamily {
                pool: net("fd00::/48"),
                expected: IpFamily::V4
            })
        );
        let e = CidrPool::new(IpFamily::V4, net("10.1.2.0/16"), 24).unwrap_err();
        assert_eq!(
            e.to_string(),
            "pool 10.1.2.0/16 is not a network address; did you mean 10.1.0.0/16?"
        );
        let e = CidrPool::new(IpFamily::V4, net("10.1.0.0/16"), 8).unwrap_err();
        assert_eq!(
            e.to_string(),
            "node CIDR mask size /8 must be between the pool's /16 and /32"
        );
        assert!(CidrPool::new(IpFamily::V4, net("10.1.0.0/16"), 33).is_err());
        assert!(CidrPool::new(IpFamily::V6, net("fd00::/48"), 64).is_ok());
    }

    #[test]
    fn lowest_free_skips_used_and_fills_gaps() {
        let p = v4("10.1.0.0/16", 24);
        assert_eq!(p.capacity(), 256);
        assert_eq!(p.lowest_free([]), Some(net("10.1.0.0/24")));
        let used = [net("10.1.0.0/24"), net("10.1.1.0/24"), net("10.1.3.0/24")];
        assert_eq!(p.lowest_free(&used), Some(net("10.1.2.0/24")));
        assert_eq!(p.count_used(&used), 3);
        // Used CIDRs of other sizes (a pool that changed) block what they overlap.
        let used = [net("10.1.0.0/23"), net("10.1.2.128/25")];
        assert_eq!(p.lowest_free(&used), Some(net("10.1.3.0/24")));
        assert_eq!(p.count_used(&used), 3);
        // Outside the pool and other families are ignored.
        let used = [net("10.2.0.0/24"), net("fd00::/64"), net("0.0.0.0/0")];
        assert_eq!(p.lowest_free(&used[..2]), Some(net("10.1.0.0/24")));
        assert_eq!(p.lowest_free(&used), None, "0.0.0.0/0 covers the pool");
    }

    #[test]
    fn free_lists_every_gap_in_order() {
        let p = v4("10.1.0.0/28", 30);
        let used = [net("10.1.0.4/30"), net("10.1.0.9/32"), net("10.1.0.11/32")];
        let free: Vec<IpNet> = p.free(&used).collect();
        assert_eq!(free, vec![net("10.1.0.0/30"), net("10.1.0.12/30")]);
        assert_eq!(p.count_used(&used), 2);
        assert_eq!(p.free([]).count(), 4);
    }

    #[test]
    fn exhaustion() {
        let p = v4("10.1.0.0/30", 31);
        assert_eq!(p.capacity(), 2);
        let a = p.lowest_free([]).unwrap();
        let b = p.lowest_free([&a]).unwrap();
        assert_eq!((a, b), (net("10.1.0.0/31"), net("10.1.0.2/31")));
        assert_eq!(p.lowest_free([&a, &b]), None);
        assert_eq!(p.count_used([&a, &b]), 2);
        let whole = v4("10.1.0.0/24", 24);
        assert_eq!(whole.lowest_free([]), Some(net("10.1.0.0/24")));
        assert_eq!(whole.lowest_free([&net("10.1.0.0/24")]), None);
    }

    #[test]
    fn ipv6_and_huge_pools() {
        let p = CidrPool::new(IpFamily::V6, net("fd00:1::/48"), 64).unwrap();
        assert_eq!(p.capacity(), 65_536);
        assert_eq!(
            p.lowest_free([&net("fd00:1::/64")]),
            Some(net("fd00:1:0:1::/64"))
        );
        let huge = CidrPool::new(IpFamily::V6, net("::/0"), 128).unwrap();
        assert_eq!(huge.capacity(), u128::MAX);
        assert_eq!(huge.lowest_free([]), Some(net("::/128")));
        let top = CidrPool::new(IpFamily::V4, net("255.255.255.0/24"), 32).unwrap();
        let all: Vec<IpNet> = vec![net("255.255.255.0/24")];
        assert_eq!(top.lowest_free(&all), None);
        assert!(p.contains(&net("fd00:1:0:5::/64")));
        assert!(!p.contains(&net("fd00:1:0:5::/65")));
        assert!(!p.contains(&net("fd00:2::/64")));
    }
}
