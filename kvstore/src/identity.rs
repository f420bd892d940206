use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::cluster::{ClusterId, MaxConnectedClusters};

/// A numeric security identity.
///
/// Bit layout (24 bits travel on the wire):
///
/// ```text
///  31      24 23            16 15                0     (255 mode)
/// ┌──────────┬────────────────┬──────────────────┐
/// │  scope   │   cluster ID   │  local identity  │
/// └──────────┴────────────────┴──────────────────┘
///  31      24 23           15 14                 0     (511 mode)
/// ```
///
/// - `0..=255` are reserved (well-known 1–10, user-reserved 128–255) and mean the
///   same in every cluster.
/// - Scope `0x01` marks node-local CIDR identities: they never reach etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NumericIdentity(u32);

impl NumericIdentity {
    pub const UNKNOWN: Self = Self(0);
    pub const HOST: Self = Self(1);
    pub const WORLD: Self = Self(2);
    pub const UNMANAGED: Self = Self(3);
    pub const HEALTH: Self = Self(4);
    pub const INIT: Self = Self(5);
    pub const REMOTE_NODE: Self = Self(6);
    pub const KUBE_APISERVER: Self = Self(7);
    pub const INGRESS: Self = Self(8);
    pub const WORLD_IPV4: Self = Self(9);
    pub const WORLD_IPV6: Self = Self(10);

    /// Lowest identity the allocator may hand out; everything below is reserved.
    pub const MIN_ALLOCATABLE: u32 = 256;
    /// Scope bits of node-local CIDR identities.
    pub const LOCAL_SCOPE: u32 = 1 << 24;
    /// Identities use 24 bits (plus the scope byte for local ones).
    pub const MAX: u32 = (1 << 24) - 1;

    pub const fn new(id: u32) -> Self {
        Self(id)
    }

    pub const fn get(self) -> u32 {
        self.0
    }

    /// Reserved identities (below 256) are the same in every cluster.
    pub const fn is_reserved(self) -> bool {
        self.0 < Self::MIN_ALLOCATABLE
    }

    /// The name of a well-known reserved identity, e.g. `world` for 2.
    pub fn reserved_name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "unknown",
            1 => "host",
            2 => "world",
            3 => "unmanaged",
            4 => "health",
            5 => "init",
            6 => "remote-node",
            7 => "kube-apiserver",
            8 => "ingress",
            9 => "world-ipv4",
            10 => "world-ipv6",
            128..=255 => "user-reserved",
            _ => return None,
        })
    }

    /// A node-local CIDR identity (scope bit set); never stored in etcd.
    pub const fn is_local_scope(self) -> bool {
        self.0 & Self::LOCAL_SCOPE != 0
    }

    /// The cluster ID encoded in the identity (0 for reserved identities).
    pub const fn cluster_id(self, mode: MaxConnectedClusters) -> u32 {
        let shift = match mode {
            MaxConnectedClusters::C255 => 16,
            MaxConnectedClusters::C511 => 15,
        };
        (self.0 & Self::MAX) >> shift
    }
}

impl fmt::Display for NumericIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for NumericIdentity {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

/// An inclusive range of identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityRange {
    pub min: u32,
    pub max: u32,
}

impl IdentityRange {
    /// Where cluster `id` allocates: `[id<<shift | 256, ((id+1)<<shift) - 1]`.
    /// The low 256 IDs of every cluster block stay unused so that an identity's
    /// local part never looks like a reserved one; cluster 0 gets
    /// `[256, (1<<shift) - 1]`.
    pub fn allocation(cluster: ClusterId, mode: MaxConnectedClusters) -> Self {
        let block = Self::block(cluster, mode);
        Self {
            min: block.min | NumericIdentity::MIN_ALLOCATABLE,
            max: block.max,
        }
    }

    /// Every identity that belongs to cluster `id`:
    /// `[id<<shift, ((id+1)<<shift) - 1]`. Identities received from a remote
    /// cluster must fall in its block (or be reserved); this also accepts what
    /// a Cilium cluster, whose allocator starts at `id<<shift`, hands out.
    pub fn block(cluster: ClusterId, mode: MaxConnectedClusters) -> Self {
        let shift = mode.cluster_shift();
        let id = cluster.get();
        Self {
            min: id << shift,
            max: ((id + 1) << shift) - 1,
        }
    }

    pub fn contains(&self, id: NumericIdentity) -> bool {
        (self.min..=self.max).contains(&id.get())
    }

    /// Number of identities in the range.
    pub fn len(&self) -> u32 {
        self.max - self.min + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for IdentityRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(id: u32, mode: MaxConnectedClusters) -> ClusterId {
        ClusterId::new(id, mode).unwrap()
    }

    #[test]
    fn allocation_ranges() {
        use MaxConnectedClusters::*;
        let r = IdentityRange::allocation(cid(0, C255), C255);
        assert_eq!((r.min, r.max), (256, 65535));
        let r = IdentityRange::allocation(cid(3, C255), C255);
        assert_eq!((r.min, r.max), (3 << 16 | 256, 3 << 16 | 0xFFFF));
        let r = IdentityRange::allocation(cid(255, C255), C255);
        assert_eq!(r.max, 0xFF_FFFF);
        let r = IdentityRange::allocation(cid(0, C511), C511);
        assert_eq!((r.min, r.max), (256, 32767));
        let r = IdentityRange::allocation(cid(511, C511), C511);
        assert_eq!((r.min, r.max), (511 << 15 | 256, 0xFF_FFFF));
        assert_eq!(
            IdentityRange::allocation(cid(1, C511), C511).len(),
            32768 - 256
        );
    }

    #[test]
    fn cluster_of_identity() {
        // The interop vector: 199472 belongs to cluster 3, local ID 2864.
        let id = NumericIdentity::new(199_472);
        assert_eq!(id.cluster_id(MaxConnectedClusters::C255), 3);
        assert_eq!(id.get() & 0xFFFF, 2864);
        let block = IdentityRange::block(
            cid(3, MaxConnectedClusters::C255),
            MaxConnectedClusters::C255,
        );
        assert!(block.contains(id));
        assert!(!block.contains(NumericIdentity::new(4 << 16)));
        assert_eq!(
            NumericIdentity::new(5 << 15 | 7).cluster_id(MaxConnectedClusters::C511),
            5
        );
    }

    #[test]
    fn reserved_names() {
        assert_eq!(NumericIdentity::WORLD.reserved_name(), Some("world"));
        assert_eq!(
            NumericIdentity::REMOTE_NODE.reserved_name(),
            Some("remote-node")
        );
        assert_eq!(
            NumericIdentity::new(200).reserved_name(),
            Some("user-reserved")
        );
        assert_eq!(NumericIdentity::new(256).reserved_name(), None);
        assert!(NumericIdentity::new(255).is_reserved());
        assert!(!NumericIdentity::new(256).is_reserved());
        assert!(NumericIdentity::new(NumericIdentity::LOCAL_SCOPE | 5).is_local_scope());
    }
}
