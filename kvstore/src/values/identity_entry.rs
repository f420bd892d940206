use crate::{
    identity::NumericIdentity,
    keys,
    labels::Labels,
    value::{DecodeError, InvalidReason, StoreValue},
};

/// An identity master key: `cilium/state/identities/v1/id/<ID>` → the
/// canonical label string. Decoded relative to `…/identities/v1/id/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdentityEntry {
    pub id: NumericIdentity,
    pub labels: Labels,
}

impl StoreValue for IdentityEntry {
    const KIND: &'static str = "identity";

    fn decode(key: &str, bytes: &[u8]) -> Result<Self, DecodeError> {
        let invalid = |reason, detail: String| DecodeError::new(Self::KIND, key, reason, detail);
        let id = keys::parse_identity_master(key)
            .ok_or_else(|| invalid(InvalidReason::KeyMismatch, "key is not a number".into()))?;
        if id.get() > NumericIdentity::MAX {
            return Err(invalid(
                InvalidReason::IdentityOutOfRange,
                format!("{id} has more than 24 bits"),
            ));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| invalid(InvalidReason::Malformed, e.to_string()))?;
        let labels = Labels::parse_canonical(text)
            .map_err(|e| invalid(InvalidReason::InvalidLabels, e.to_string()))?;
        if labels.is_empty() {
            return Err(invalid(InvalidReason::InvalidLabels, "no labels".into()));
        }
        Ok(Self { id, labels })
    }

    fn encode(&self) -> Vec<u8> {
        self.labels.canonical().into_bytes()
    }

    fn key(&self) -> String {
        self.id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_master_keys() {
        let e = IdentityEntry::decode(
            "196915",
            b"k8s:app=baz;k8s:io.cilium.k8s.policy.cluster=cluster3;",
        )
        .unwrap();
        assert_eq!(e.id.get(), 196915);
        assert_eq!(e.labels.cluster(), Some("cluster3"));
        assert_eq!(
            IdentityEntry::decode("x", b"k8s:a=b;").unwrap_err().reason,
            InvalidReason::KeyMismatch
        );
        assert_eq!(
            IdentityEntry::decode("5", b"").unwrap_err().reason,
            InvalidReason::InvalidLabels
        );
        assert_eq!(
            IdentityEntry::decode("16777216", b"k8s:a=b;")
                .unwrap_err()
                .reason,
            InvalidReason::IdentityOutOfRange
        );
    }
}
