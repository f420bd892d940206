//! The policy map: one hash map shared by all endpoints, keyed by endpoint
//! id, peer identity, protocol, destination port and direction, with
//! identity and port wildcards; plus the pure evaluation the datapath does.

use std::collections::BTreeMap;

use crate::{protocol::Protocol, record::Record, typed_map::TypedMap};

/// Pin name of the policy map.
pub const POLICY_MAP: &str = "cm_policy";

/// `sec_identity` of a key that matches every identity.
pub const IDENTITY_ANY: u32 = 0;

/// Which traffic of the endpoint a policy entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Traffic delivered to the endpoint (enforced).
    Ingress,
    /// Traffic sent by the endpoint (stored, not enforced yet).
    Egress,
}

/// The L4 part of a policy entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4Match {
    /// Any protocol, any port.
    Any,
    /// Every port of one protocol (ICMP: all of it).
    Protocol(Protocol),
    /// One destination port of one protocol.
    Port(Protocol, u16),
}

/// policy key (`struct policy_key`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    /// The endpoint the entry belongs to.
    pub endpoint_id: u32,
    /// The peer identity, or [`IDENTITY_ANY`].
    pub sec_identity: u32,
    pub(crate) dport: [u8; 2],
    pub(crate) protocol: u8,
    pub(crate) direction: u8,
}

// SAFETY: repr(C), padding-free (12 bytes), any bits.
unsafe impl Record for PolicyKey {}

impl PolicyKey {
    /// An entry for `endpoint_id` about peers with `identity`
    /// ([`IDENTITY_ANY`] for all) and traffic matching `l4`.
    pub fn new(endpoint_id: u32, direction: Direction, identity: u32, l4: L4Match) -> Self {
        let (protocol, port) = match l4 {
            L4Match::Any => (0, 0),
            L4Match::Protocol(p) => (p.number(), 0),
            L4Match::Port(p, port) => (p.number(), port),
        };
        Self {
            endpoint_id,
            sec_identity: identity,
            dport: port.to_be_bytes(),
            protocol,
            direction: match direction {
                Direction::Ingress => 0,
                Direction::Egress => 1,
            },
        }
    }

    /// An ingress entry (the common case).
    pub fn ingress(endpoint_id: u32, identity: u32, l4: L4Match) -> Self {
        Self::new(endpoint_id, Direction::Ingress, identity, l4)
    }

    /// The L4 match of the entry.
    pub fn l4(&self) -> L4Match {
        match (self.protocol, u16::from_be_bytes(self.dport)) {
            (0, _) => L4Match::Any,
            (p, 0) => L4Match::Protocol(Protocol::from_number(p)),
            (p, port) => L4Match::Port(Protocol::from_number(p), port),
        }
    }

    /// The direction of the entry.
    pub fn direction(&self) -> Direction {
        if self.direction == 0 {
            Direction::Ingress
        } else {
            Direction::Egress
        }
    }
}

/// What a matching entry does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyAction {
    /// Allow (unless a deny entry also matches).
    Allow,
    /// Deny; wins over any allow.
    Deny,
}

/// policy value (`struct policy_value`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyValue {
    pub(crate) action: u8,
    pub(crate) pad: [u8; 3],
}

// SAFETY: repr(C), padding-free (4 bytes), any bits.
unsafe impl Record for PolicyValue {}

impl PolicyValue {
    /// An allow entry.
    pub const ALLOW: Self = Self {
        action: 1,
        pad: [0; 3],
    };
    /// A deny entry.
    pub const DENY: Self = Self {
        action: 2,
        pad: [0; 3],
    };

    /// The action (`None` for an unknown action byte, which the datapath
    /// ignores).
    pub fn action(&self) -> Option<PolicyAction> {
        match self.action {
            1 => Some(PolicyAction::Allow),
            2 => Some(PolicyAction::Deny),
            _ => None,
        }
    }
}

impl From<PolicyAction> for PolicyValue {
    fn from(action: PolicyAction) -> Self {
        match action {
            PolicyAction::Allow => Self::ALLOW,
            PolicyAction::Deny => Self::DENY,
        }
    }
}

/// Handle on the pinned policy map.
pub type PolicyMap = TypedMap<PolicyKey, PolicyValue>;

/// Whether a new inbound connection is allowed, exactly as the datapath
/// decides it (sans-IO; for tests, debugging and `explain` tools).
///
/// When `policy_enforced` is false everything is allowed. Otherwise six keys
/// are looked up: identity × {exact port, protocol, any} then
/// [`IDENTITY_ANY`] × the same; any deny match denies, else any allow match
/// allows, else the default is deny. ICMP has no port: it matches entries
/// for its protocol and for any protocol.
pub fn evaluate_ingress(
    entries: &BTreeMap<PolicyKey, PolicyValue>,
    endpoint_id: u32,
    policy_enforced: bool,
    identity: u32,
    protocol: Protocol,
    dport: u16,
) -> PolicyAction {
    if !policy_enforced {
        return PolicyAction::Allow;
    }
    let l4s = [
        L4Match::Port(protocol, dport),
        L4Match::Protocol(protocol),
        L4Match::Any,
    ];
    let mut allowed = false;
    for id in [identity, IDENTITY_ANY] {
        for l4 in l4s {
            let key = PolicyKey::ingress(endpoint_id, id, l4);
            match entries.get(&key).and_then(PolicyValue::action) {
                Some(PolicyAction::Deny) => return PolicyAction::Deny,
                Some(PolicyAction::Allow) => allowed = true,
                None => {}
            }
        }
    }
    if allowed {
        PolicyAction::Allow
    } else {
        PolicyAction::Deny
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EP: u32 = 7;
    const WEB: u32 = 300;
    const DB: u32 = 301;

    fn entries(list: &[(u32, L4Match, PolicyValue)]) -> BTreeMap<PolicyKey, PolicyValue> {
        list.iter()
            .map(|(id, l4, v)| (PolicyKey::ingress(EP, *id, *l4), *v))
            .collect()
    }

    fn verdict(
        e: &BTreeMap<PolicyKey, PolicyValue>,
        id: u32,
        p: Protocol,
        port: u16,
    ) -> PolicyAction {
        evaluate_ingress(e, EP, true, id, p, port)
    }

    #[test]
    fn not_enforced_allows_everything() {
        let e = BTreeMap::new();
        assert_eq!(
            evaluate_ingress(&e, EP, false, 2, Protocol::Tcp, 22),
            PolicyAction::Allow
        );
        assert_eq!(verdict(&e, 2, Protocol::Tcp, 22), PolicyAction::Deny);
    }

    #[test]
    fn exact_port_and_identity() {
        let e = entries(&[(WEB, L4Match::Port(Protocol::Tcp, 80), PolicyValue::ALLOW)]);
        assert_eq!(verdict(&e, WEB, Protocol::Tcp, 80), PolicyAction::Allow);
        assert_eq!(verdict(&e, WEB, Protocol::Tcp, 81), PolicyAction::Deny);
        assert_eq!(verdict(&e, WEB, Protocol::Udp, 80), PolicyAction::Deny);
        assert_eq!(verdict(&e, DB, Protocol::Tcp, 80), PolicyAction::Deny);
    }

    #[test]
    fn wildcards() {
        let e = entries(&[
            (WEB, L4Match::Protocol(Protocol::Udp), PolicyValue::ALLOW),
            (
                IDENTITY_ANY,
                L4Match::Port(Protocol::Tcp, 443),
                PolicyValue::ALLOW,
            ),
            (DB, L4Match::Any, PolicyValue::ALLOW),
        ]);
        assert_eq!(verdict(&e, WEB, Protocol::Udp, 5353), PolicyAction::Allow);
        assert_eq!(verdict(&e, 2, Protocol::Tcp, 443), PolicyAction::Allow);
        assert_eq!(verdict(&e, DB, Protocol::Icmp, 0), PolicyAction::Allow);
        assert_eq!(verdict(&e, WEB, Protocol::Tcp, 80), PolicyAction::Deny);
    }

    #[test]
    fn deny_wins_over_more_specific_allow() {
        let e = entries(&[
            (WEB, L4Match::Port(Protocol::Tcp, 80), PolicyValue::ALLOW),
            (WEB, L4Match::Any, PolicyValue::DENY),
        ]);
        assert_eq!(verdict(&e, WEB, Protocol::Tcp, 80), PolicyAction::Deny);
    }

    #[test]
    fn key_round_trips_l4_and_direction() {
        for l4 in [
            L4Match::Any,
            L4Match::Protocol(Protocol::Icmp),
            L4Match::Port(Protocol::Udp, 53),
        ] {
            let k = PolicyKey::new(1, Direction::Egress, 5, l4);
            assert_eq!(k.l4(), l4);
            assert_eq!(k.direction(), Direction::Egress);
        }
        let k = PolicyKey::ingress(1, 5, L4Match::Port(Protocol::Tcp, 0x1234));
        assert_eq!(k.dport, [0x12, 0x34], "network byte order");
    }
}
