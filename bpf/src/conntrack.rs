//! The conntrack map (LRU, both families): what the datapath remembers about
//! connections. Written by the programs; user space reads it (and may
//! flush it).

use std::net::SocketAddr;

use crate::{
    address::{decode, encode},
    protocol::Protocol,
    record::Record,
    typed_map::TypedMap,
};

/// Pin name of the conntrack map.
pub const CONNTRACK_MAP: &str = "cm_ct";

/// Which view of a 5-tuple a conntrack entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtScope {
    /// A connection an endpoint opened (after service translation); its
    /// replies pass the endpoint's ingress policy and get reverse-NATed.
    Egress,
    /// A connection an endpoint accepted after its ingress policy allowed it.
    Ingress,
    /// The frontend tuple of a service connection -> the chosen backend.
    Service,
    /// A connection redirected to the agent's proxy, keyed by its tuple to
    /// the proxy: where the endpoint was going (the proxy forwards there).
    Proxy,
    /// An unknown scope byte.
    Other(u8),
}

/// conntrack key (`struct ct_key`); ICMP echo uses the echo id as the
/// source port of requests and the destination port of replies.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CtKey {
    pub(crate) saddr: [u8; 16],
    pub(crate) daddr: [u8; 16],
    pub(crate) sport: [u8; 2],
    pub(crate) dport: [u8; 2],
    pub(crate) protocol: u8,
    pub(crate) family: u8,
    pub(crate) scope: u8,
    pub(crate) pad: u8,
}

// SAFETY: repr(C), padding-free (40 bytes), any bits.
unsafe impl Record for CtKey {}

impl CtKey {
    /// The key of `scope`'s entry for a packet from `src` to `dst` (ICMP
    /// echo: the echo id as the request's source port).
    pub fn new(protocol: Protocol, src: SocketAddr, dst: SocketAddr, scope: CtScope) -> Self {
        let (saddr, family) = encode(src.ip());
        let (daddr, _) = encode(dst.ip());
        Self {
            saddr,
            daddr,
            sport: src.port().to_be_bytes(),
            dport: dst.port().to_be_bytes(),
            protocol: protocol.number(),
            family,
            scope: match scope {
                CtScope::Egress => 0,
                CtScope::Ingress => 1,
                CtScope::Service => 2,
                CtScope::Proxy => 3,
                CtScope::Other(n) => n,
            },
            pad: 0,
        }
    }

    /// The address family: [`FAMILY_V4`](crate::FAMILY_V4) or
    /// [`FAMILY_V6`](crate::FAMILY_V6).
    pub fn family(&self) -> u8 {
        self.family
    }

    /// Source address and port.
    pub fn src(&self) -> Option<SocketAddr> {
        Some(SocketAddr::new(
            decode(&self.saddr, self.family)?,
            u16::from_be_bytes(self.sport),
        ))
    }

    /// Destination address and port.
    pub fn dst(&self) -> Option<SocketAddr> {
        Some(SocketAddr::new(
            decode(&self.daddr, self.family)?,
            u16::from_be_bytes(self.dport),
        ))
    }

    /// The L4 protocol.
    pub fn protocol(&self) -> Protocol {
        Protocol::from_number(self.protocol)
    }

    /// The view this entry records.
    pub fn scope(&self) -> CtScope {
        match self.scope {
            0 => CtScope::Egress,
            1 => CtScope::Ingress,
            2 => CtScope::Service,
            3 => CtScope::Proxy,
            n => CtScope::Other(n),
        }
    }
}

/// `CM_CT_F_REVNAT`: replies get their source rewritten.
const REVNAT: u16 = 1;
/// `CM_CT_F_SEEN_REPLY`: a reply passed (service entries: the client
/// acknowledged the handshake).
const SEEN_REPLY: u16 = 2;
/// `CM_CT_F_CLOSING`: TCP, a FIN or RST passed in either direction.
const CLOSING: u16 = 4;
/// `CM_CT_F_PROXY`: an egress entry redirected to the agent's proxy.
const PROXY: u16 = 16;

/// conntrack value (`struct ct_value`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtValue {
    /// `bpf_ktime_get_ns` at creation.
    pub created_ns: u64,
    /// `bpf_ktime_get_ns` when last seen (refreshed at most once a second).
    pub last_seen_ns: u64,
    pub(crate) rev_nat_addr: [u8; 16],
    pub(crate) rev_nat_port: [u8; 2],
    pub(crate) flags: u16,
    /// Chosen backend ([`CtScope::Service`] entries).
    pub backend_id: u32,
    /// Identity of the peer (ingress) or of the endpoint (egress) at creation.
    pub src_identity: u32,
    pub(crate) pad: u32,
}

// SAFETY: repr(C), padding-free (48 bytes), any bits.
unsafe impl Record for CtValue {}

impl CtValue {
    /// An entry as the datapath creates it at `now_ns` (`bpf_ktime_get_ns`):
    /// no reverse translation, nothing seen yet (for tests and benchmarks
    /// that fill the map from user space).
    pub fn new(now_ns: u64, src_identity: u32) -> Self {
        Self {
            created_ns: now_ns,
            last_seen_ns: now_ns,
            rev_nat_addr: [0; 16],
            rev_nat_port: [0; 2],
            flags: 0,
            backend_id: 0,
            src_identity,
            pad: 0,
        }
    }

    /// The same entry after a reply passed.
    pub fn with_reply_seen(mut self) -> Self {
        self.flags |= SEEN_REPLY;
        self
    }

    /// The same entry after a TCP FIN or RST passed.
    pub fn with_closing(mut self) -> Self {
        self.flags |= CLOSING;
        self
    }

    /// A reply passed (service entries: the client acknowledged the
    /// handshake, so the backend answered).
    pub fn seen_reply(&self) -> bool {
        self.flags & SEEN_REPLY != 0
    }

    /// A TCP FIN or RST passed, in either direction (a new SYN on the same
    /// tuple clears it).
    pub fn closing(&self) -> bool {
        self.flags & CLOSING != 0
    }

    /// An egress entry of a connection redirected to the agent's proxy.
    pub fn proxied(&self) -> bool {
        self.flags & PROXY != 0
    }

    /// Where a [`CtScope::Proxy`] entry's connection was going (after
    /// service translation): what the proxy forwards to.
    pub fn proxy_upstream(&self, key: &CtKey) -> Option<SocketAddr> {
        if key.scope() != CtScope::Proxy {
            return None;
        }
        Some(SocketAddr::new(
            decode(&self.rev_nat_addr, key.family)?,
            u16::from_be_bytes(self.rev_nat_port),
        ))
    }

    /// The frontend that replies are rewritten to (service connections),
    /// given the family of the entry's key.
    pub fn rev_nat(&self, key: &CtKey) -> Option<SocketAddr> {
        if self.flags & REVNAT == 0 {
            return None;
        }
        Some(SocketAddr::new(
            decode(&self.rev_nat_addr, key.family)?,
            u16::from_be_bytes(self.rev_nat_port),
        ))
    }
}

/// Handle on the pinned conntrack map.
pub type ConntrackMap = TypedMap<CtKey, CtValue>;
