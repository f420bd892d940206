//! Per-endpoint configuration, keyed by the host-side interface index.

use crate::{record::Record, typed_map::TypedMap};

/// Pin name of the endpoints map.
pub const ENDPOINTS_MAP: &str = "cm_endpoints";

const POLICY_INGRESS: u32 = 1;

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
    /// The endpoint id that keys its policy entries.
    pub endpoint_id: u32,
    /// The endpoint's own security identity (reported in flow events).
    pub sec_identity: u32,
    pub(crate) flags: u32,
    pub(crate) pad: u32,
}

// SAFETY: repr(C), padding-free (16 bytes), any bits.
unsafe impl Record for EndpointInfo {}

impl EndpointInfo {
    /// Configuration of an endpoint. With `policy_enforced` false (no rule
    /// selects the endpoint) all ingress traffic is allowed; with true,
    /// ingress is default-deny and only policy-map entries allow.
    pub fn new(endpoint_id: u32, identity: u32, policy_enforced: bool) -> Self {
        Self {
            endpoint_id,
            sec_identity: identity,
            flags: if policy_enforced { POLICY_INGRESS } else { 0 },
            pad: 0,
        }
    }

    /// Whether ingress policy is enforced (default deny).
    pub fn policy_enforced(&self) -> bool {
        self.flags & POLICY_INGRESS != 0
    }

    /// The same configuration with enforcement switched.
    pub fn with_policy_enforced(mut self, enforced: bool) -> Self {
        self.flags = (self.flags & !POLICY_INGRESS) | if enforced { POLICY_INGRESS } else { 0 };
        self
    }
}

/// Handle on the pinned endpoints map.
pub type EndpointMap = TypedMap<EndpointKey, EndpointInfo>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforcement_flag() {
        let info = EndpointInfo::new(7, 300, false);
        assert!(!info.policy_enforced());
        assert!(info.with_policy_enforced(true).policy_enforced());
        assert_eq!(info.with_policy_enforced(true).flags, POLICY_INGRESS);
    }
}
