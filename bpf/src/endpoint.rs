//! Per-endpoint configuration, keyed by the host-side interface index.

use crate::{record::Record, typed_map::TypedMap};

/// Pin name of the endpoints map.
pub const ENDPOINTS_MAP: &str = "cm_endpoints";

const POLICY_INGRESS: u32 = 1;
const POLICY_EGRESS: u32 = 2;

/// Which policy an endpoint follows, and in which directions it is
/// enforced (default deny). Endpoints whose rules resolve to the same
/// entries share a policy id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EndpointPolicy {
    /// Keys its entries in the policy map.
    pub policy_id: u32,
    /// Traffic delivered to the endpoint is default-deny.
    pub ingress: bool,
    /// Traffic sent by the endpoint is default-deny.
    pub egress: bool,
}

impl EndpointPolicy {
    /// Ingress enforced with the entries of `policy_id` (egress open).
    pub fn ingress(policy_id: u32) -> Self {
        Self {
            policy_id,
            ingress: true,
            egress: false,
        }
    }

    /// Nothing enforced.
    pub fn open() -> Self {
        Self::default()
    }

    /// Whether either direction is enforced.
    pub fn enforced(&self) -> bool {
        self.ingress || self.egress
    }
}

/// endpoints key (`struct endpoint_key`): the ifindex of the endpoint's
/// host-side veth (in the namespace the programs are attached in; one
/// datapath serves the interfaces of one namespace).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointKey {
    /// Interface index of the host-side veth.
    pub ifindex: u32,
}

// SAFETY: repr(C), one u32.
unsafe impl Record for EndpointKey {}

/// endpoints value (`struct endpoint_info`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointInfo {
    /// The endpoint's id (reported in flow events).
    pub endpoint_id: u32,
    /// The endpoint's own security identity (reported in flow events).
    pub sec_identity: u32,
    pub(crate) flags: u32,
    pub(crate) policy_id: u32,
}

// SAFETY: repr(C), padding-free (16 bytes), any bits.
unsafe impl Record for EndpointInfo {}

impl EndpointInfo {
    /// Configuration of an endpoint that follows `policy`.
    pub fn new(endpoint_id: u32, identity: u32, policy: EndpointPolicy) -> Self {
        Self {
            endpoint_id,
            sec_identity: identity,
            flags: 0,
            policy_id: 0,
        }
        .with_policy(policy)
    }

    /// The policy it follows.
    pub fn policy(&self) -> EndpointPolicy {
        EndpointPolicy {
            policy_id: self.policy_id,
            ingress: self.flags & POLICY_INGRESS != 0,
            egress: self.flags & POLICY_EGRESS != 0,
        }
    }

    /// The same endpoint following `policy`.
    pub fn with_policy(mut self, policy: EndpointPolicy) -> Self {
        self.policy_id = policy.policy_id;
        self.flags &= !(POLICY_INGRESS | POLICY_EGRESS);
        if policy.ingress {
            self.flags |= POLICY_INGRESS;
        }
        if policy.egress {
            self.flags |= POLICY_EGRESS;
        }
        self
    }
}

/// Handle on the pinned endpoints map.
pub type EndpointMap = TypedMap<EndpointKey, EndpointInfo>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_flags_round_trip() {
        let info = EndpointInfo::new(7, 300, EndpointPolicy::open());
        assert!(!info.policy().enforced());
        let both = EndpointPolicy {
            policy_id: 4,
            ingress: true,
            egress: true,
        };
        assert_eq!(info.with_policy(both).policy(), both);
        assert_eq!(info.with_policy(both).flags, POLICY_INGRESS | POLICY_EGRESS);
        let ingress = EndpointPolicy::ingress(4);
        assert_eq!(
            info.with_policy(both).with_policy(ingress).policy(),
            ingress
        );
    }
}
