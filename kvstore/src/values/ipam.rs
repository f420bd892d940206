use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::value::{DecodeError, InvalidReason, StoreValue, decode_json};

/// The pod CIDRs the operator assigned to a node, at
/// `cilium/ipam/v1/nodes/<node>` (our extension; local to a cluster).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamAssignment {
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<IpNet>,
}

impl StoreValue for IpamAssignment {
    const KIND: &'static str = "IPAM assignment";

    /// `key` is the node name.
    fn decode(key: &str, bytes: &[u8]) -> Result<Self, DecodeError> {
        let a: Self = decode_json(Self::KIND, key, bytes)?;
        if a.node != key {
            return Err(DecodeError::new(
                Self::KIND,
                key,
                InvalidReason::KeyMismatch,
                format!("value is for node {:?}", a.node),
            ));
        }
        if a.ipv4.is_some_and(|n| !n.addr().is_ipv4())
            || a.ipv6.is_some_and(|n| !n.addr().is_ipv6())
        {
            return Err(DecodeError::new(
                Self::KIND,
                key,
                InvalidReason::InvalidAddress,
                "CIDR of the wrong family",
            ));
        }
        Ok(a)
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("IPAM assignments always serialize")
    }

    fn key(&self) -> String {
        self.node.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_validation() {
        let a = IpamAssignment {
            node: "n1".into(),
            ipv4: Some("10.1.3.0/24".parse().unwrap()),
            ipv6: None,
        };
        assert_eq!(
            String::from_utf8(a.encode()).unwrap(),
            r#"{"node":"n1","ipv4":"10.1.3.0/24"}"#
        );
        assert_eq!(IpamAssignment::decode("n1", &a.encode()).unwrap(), a);
        assert_eq!(
            IpamAssignment::decode("n2", &a.encode())
                .unwrap_err()
                .reason,
            InvalidReason::KeyMismatch
        );
        let bad = br#"{"node":"n1","ipv4":"fd00::/64"}"#;
        assert_eq!(
            IpamAssignment::decode("n1", bad).unwrap_err().reason,
            InvalidReason::InvalidAddress
        );
    }
}
