//! The services map: frontend (address, port, protocol) and slot -> backend.

use std::net::{IpAddr, SocketAddr};

use crate::{
    address::{decode, encode},
    protocol::Protocol,
    record::Record,
    typed_map::TypedMap,
};

/// Pin name of the services map.
pub const SERVICES_MAP: &str = "cm_services";

/// services key (`struct service_key`). Slot 0 is the frontend's master
/// entry (its value holds the number of slots); slots `1..=count` hold one
/// backend id each. Keys order by address, port, slot, protocol.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub(crate) addr: [u8; 16],
    pub(crate) dport: [u8; 2],
    /// 0 for the master entry, 1..=count for backend slots.
    pub slot: u16,
    pub(crate) protocol: u8,
    pub(crate) family: u8,
    pub(crate) pad: [u8; 2],
}

// SAFETY: repr(C), padding-free (24 bytes), any bits.
unsafe impl Record for ServiceKey {}

impl ServiceKey {
    /// The key of `slot` of the frontend `frontend`/`protocol`.
    pub fn new(frontend: SocketAddr, protocol: Protocol, slot: u16) -> Self {
        let (addr, family) = encode(frontend.ip());
        Self {
            addr,
            dport: frontend.port().to_be_bytes(),
            slot,
            protocol: protocol.number(),
            family,
            pad: [0; 2],
        }
    }

    /// The frontend address and port.
    pub fn frontend(&self) -> Option<SocketAddr> {
        let ip: IpAddr = decode(&self.addr, self.family)?;
        Some(SocketAddr::new(ip, u16::from_be_bytes(self.dport)))
    }

    /// The frontend protocol.
    pub fn protocol(&self) -> Protocol {
        Protocol::from_number(self.protocol)
    }
}

/// services value (`struct service_value`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceValue {
    /// Backend id (slots 1..=count); 0 in the master entry.
    pub backend_id: u32,
    /// Number of backend slots (master entry); 0 in slots.
    pub count: u16,
    /// Flags (reserved, 0).
    pub flags: u16,
}

// SAFETY: repr(C), padding-free (8 bytes), any bits.
unsafe impl Record for ServiceValue {}

/// Handle on the pinned services map.
pub type ServiceMap = TypedMap<ServiceKey, ServiceValue>;

/// The services-map entries of one frontend with `backend_ids` (in slot
/// order; a frontend without backends keeps a master entry with count 0, so
/// its connections are dropped instead of reaching the frontend address).
/// The datapath picks slot `hash(5-tuple) % count + 1` once per connection.
pub fn service_entries(
    frontend: SocketAddr,
    protocol: Protocol,
    backend_ids: &[u32],
) -> Vec<(ServiceKey, ServiceValue)> {
    let count = u16::try_from(backend_ids.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(backend_ids.len() + 1);
    out.push((
        ServiceKey::new(frontend, protocol, 0),
        ServiceValue {
            backend_id: 0,
            count,
            flags: 0,
        },
    ));
    for (slot, id) in (1..=count).zip(backend_ids) {
        out.push((
            ServiceKey::new(frontend, protocol, slot),
            ServiceValue {
                backend_id: *id,
                count: 0,
                flags: 0,
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::reconcile::plan;

    fn fe() -> SocketAddr {
        "10.96.0.10:80".parse().unwrap()
    }

    #[test]
    fn master_then_slots() {
        let e = service_entries(fe(), Protocol::Tcp, &[11, 12]);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].0.slot, 0);
        assert_eq!(e[0].1.count, 2);
        assert_eq!((e[1].0.slot, e[1].1.backend_id), (1, 11));
        assert_eq!((e[2].0.slot, e[2].1.backend_id), (2, 12));
        assert_eq!(e[0].0.frontend(), Some(fe()));
        assert_eq!(e[0].0.protocol(), Protocol::Tcp);
    }

    #[test]
    fn growing_writes_slots_before_master_and_shrinking_master_before_deletes() {
        let two: BTreeMap<_, _> = service_entries(fe(), Protocol::Tcp, &[11, 12])
            .into_iter()
            .collect();
        let three: BTreeMap<_, _> = service_entries(fe(), Protocol::Tcp, &[11, 12, 13])
            .into_iter()
            .collect();
        let grow = plan(&two, &three);
        let slots: Vec<u16> = grow.upserts.iter().map(|(k, _)| k.slot).collect();
        assert_eq!(slots, vec![3, 0], "new slot first, then the master count");
        let shrink = plan(&three, &two);
        assert_eq!(shrink.upserts.len(), 1);
        assert_eq!(shrink.upserts[0].0.slot, 0);
        assert_eq!(shrink.deletes.len(), 1);
        assert_eq!(shrink.deletes[0].slot, 3);
    }

    #[test]
    fn no_backends_keeps_master_with_zero_count() {
        let e = service_entries(fe(), Protocol::Udp, &[]);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].1.count, 0);
    }
}
