//! The ipcache: IP prefix -> security identity (+ tunnel endpoint), an LPM
//! trie shared by both families.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::{
    address::{decode, encode},
    record::Record,
    typed_map::TypedMap,
};

/// Pin name of the ipcache map.
pub const IPCACHE_MAP: &str = "cm_ipcache";

/// Bits of [`IpCacheKey`] before the address that every lookup matches
/// (cluster id, pad, family).
const HEADER_BITS: u32 = 32;

/// ipcache key (`struct ipcache_key`): `prefixlen` counts the bits after
/// itself, i.e. 32 + the prefix length of the address. Host bits beyond the
/// prefix are always zero (construction truncates), so equal prefixes are
/// equal keys. The datapath looks up with cluster id 0.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpCacheKey {
    pub(crate) prefixlen: u32,
    pub(crate) cluster_id: u16,
    pub(crate) pad: u8,
    pub(crate) family: u8,
    pub(crate) addr: [u8; 16],
}

// SAFETY: repr(C), padding-free (24 bytes, checked against the BTF), any bits.
unsafe impl Record for IpCacheKey {}

impl IpCacheKey {
    /// The key for a prefix (`10.0.0.1/32`, `fd00::/64`, ...).
    pub fn new(net: IpNet) -> Self {
        let net = net.trunc();
        let (addr, family) = encode(net.addr());
        Self {
            prefixlen: HEADER_BITS + u32::from(net.prefix_len()),
            cluster_id: 0,
            pad: 0,
            family,
            addr,
        }
    }

    /// The key for one address (a /32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        Self::new(IpNet::from(addr))
    }

    /// The prefix this key matches.
    pub fn net(&self) -> Option<IpNet> {
        let addr = decode(&self.addr, self.family)?;
        let len = u8::try_from(self.prefixlen.checked_sub(HEADER_BITS)?).ok()?;
        IpNet::new(addr, len).ok()
    }
}

/// ipcache value (`struct ipcache_value`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpCacheValue {
    /// Security identity of the prefix (24 bits used).
    pub sec_identity: u32,
    pub(crate) tunnel_endpoint: [u8; 16],
    pub(crate) tunnel_family: u8,
    /// Encryption key index (reserved, 0).
    pub key: u8,
    /// Flags (reserved, 0).
    pub flags: u8,
    pub(crate) pad: u8,
}

// SAFETY: repr(C), padding-free (24 bytes), any bits.
unsafe impl Record for IpCacheValue {}

impl IpCacheValue {
    /// An entry with `identity` and no tunnel endpoint.
    pub fn new(identity: u32) -> Self {
        Self {
            sec_identity: identity,
            tunnel_endpoint: [0; 16],
            tunnel_family: 0,
            key: 0,
            flags: 0,
            pad: 0,
        }
    }

    /// The same entry with the node (host IP) that hosts the prefix.
    pub fn with_tunnel_endpoint(mut self, node: IpAddr) -> Self {
        (self.tunnel_endpoint, self.tunnel_family) = encode(node);
        self
    }

    /// The node hosting the prefix, if set.
    pub fn tunnel_endpoint(&self) -> Option<IpAddr> {
        decode(&self.tunnel_endpoint, self.tunnel_family)
    }
}

/// Handle on the pinned ipcache.
pub type IpCacheMap = TypedMap<IpCacheKey, IpCacheValue>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::FAMILY_V4;

    #[test]
    fn key_truncates_host_bits_and_round_trips() {
        let a = IpCacheKey::new("10.1.2.3/24".parse().unwrap());
        let b = IpCacheKey::new("10.1.2.0/24".parse().unwrap());
        assert_eq!(a, b);
        assert_eq!(a.net(), Some("10.1.2.0/24".parse().unwrap()));
        assert_eq!(a.prefixlen, 32 + 24);
        assert_eq!(a.family, FAMILY_V4);
        let h = IpCacheKey::host("fd00::7".parse().unwrap());
        assert_eq!(h.prefixlen, 32 + 128);
        assert_eq!(h.net(), Some("fd00::7/128".parse().unwrap()));
    }

    #[test]
    fn value_tunnel_endpoint() {
        let v = IpCacheValue::new(300);
        assert_eq!(v.tunnel_endpoint(), None);
        let v = v.with_tunnel_endpoint("192.0.2.1".parse().unwrap());
        assert_eq!(v.tunnel_endpoint(), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(v.sec_identity, 300);
    }
}
