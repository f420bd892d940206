//! The 16-byte address encoding shared with the C programs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `family` value of an IPv4 address in every map.
pub const FAMILY_V4: u8 = 4;
/// `family` value of an IPv6 address in every map.
pub const FAMILY_V6: u8 = 6;

/// Where the agent's proxy listens (on the node's `lo`): new connections
/// that policy sends through the proxy are redirected here
/// (`CM_PROXY_V4` in `c/datapath.h`).
pub const PROXY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 42, 2);
/// The IPv6 address of the agent's proxy.
pub const PROXY_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0xa9fe, 0x2a02);

/// An address as the maps store it: IPv4 in the first 4 bytes (the rest
/// zero), IPv6 in all 16; plus the family byte.
pub(crate) fn encode(addr: IpAddr) -> ([u8; 16], u8) {
    let mut out = [0u8; 16];
    match addr {
        IpAddr::V4(v4) => {
            out[..4].copy_from_slice(&v4.octets());
            (out, FAMILY_V4)
        }
        IpAddr::V6(v6) => (v6.octets(), FAMILY_V6),
    }
}

/// The inverse of [`encode`]; `None` for an unknown family.
pub(crate) fn decode(addr: &[u8; 16], family: u8) -> Option<IpAddr> {
    match family {
        FAMILY_V4 => Some(IpAddr::V4(Ipv4Addr::new(
            addr[0], addr[1], addr[2], addr[3],
        ))),
        FAMILY_V6 => Some(IpAddr::V6(Ipv6Addr::from(*addr))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_families() {
        for addr in ["10.1.2.3", "fd00::1", "::ffff:1.2.3.4"] {
            let addr: IpAddr = addr.parse().unwrap();
            let (bytes, family) = encode(addr);
            assert_eq!(decode(&bytes, family), Some(addr));
        }
        let (bytes, family) = encode("10.1.2.3".parse().unwrap());
        assert_eq!(family, FAMILY_V4);
        assert_eq!(&bytes[4..], &[0u8; 12]);
        assert_eq!(decode(&bytes, 9), None);
    }
}
