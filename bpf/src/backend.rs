//! The backends map: backend id -> address, port, protocol, cluster.

use std::net::SocketAddr;

use crate::{
    address::{decode, encode},
    protocol::Protocol,
    record::Record,
    typed_map::TypedMap,
};

/// Pin name of the backends map.
pub const BACKENDS_MAP: &str = "cm_backends";

/// backends key (`struct backend_key`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    /// Mesh-wide backend id chosen by the control plane (non-zero).
    pub backend_id: u32,
}

// SAFETY: repr(C), one u32.
unsafe impl Record for BackendKey {}

/// backends value (`struct backend_value`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendValue {
    pub(crate) addr: [u8; 16],
    pub(crate) port: [u8; 2],
    pub(crate) protocol: u8,
    pub(crate) family: u8,
    /// Cluster the backend lives in.
    pub cluster_id: u16,
    /// Flags (reserved, 0).
    pub flags: u16,
}

// SAFETY: repr(C), padding-free (24 bytes), any bits.
unsafe impl Record for BackendValue {}

impl BackendValue {
    /// A backend at `addr` in cluster `cluster_id`.
    pub fn new(addr: SocketAddr, protocol: Protocol, cluster_id: u16) -> Self {
        let (bytes, family) = encode(addr.ip());
        Self {
            addr: bytes,
            port: addr.port().to_be_bytes(),
            protocol: protocol.number(),
            family,
            cluster_id,
            flags: 0,
        }
    }

    /// The backend address and port.
    pub fn addr(&self) -> Option<SocketAddr> {
        Some(SocketAddr::new(
            decode(&self.addr, self.family)?,
            u16::from_be_bytes(self.port),
        ))
    }

    /// The backend protocol.
    pub fn protocol(&self) -> Protocol {
        Protocol::from_number(self.protocol)
    }
}

/// Handle on the pinned backends map.
pub type BackendMap = TypedMap<BackendKey, BackendValue>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let addr: SocketAddr = "[fd00::5]:8080".parse().unwrap();
        let v = BackendValue::new(addr, Protocol::Tcp, 3);
        assert_eq!(v.addr(), Some(addr));
        assert_eq!(v.protocol(), Protocol::Tcp);
        assert_eq!(v.port, [0x1f, 0x90]);
    }
}
