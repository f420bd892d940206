use serde::{Deserialize, Serialize};

use crate::{
    cluster::ClusterName,
    value::{DecodeError, InvalidReason, StoreValue, decode_json},
};

/// How kvstoremesh sees one remote cluster it mirrors, published for the
/// local agents at `cilium/kvstoremesh/v1/<remote>` (our extension): an
/// agent that reads the remote through the cache cannot see the remote
/// itself, and shows this instead ("unreachable as seen by kvstoremesh").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MirrorStatus {
    /// The remote cluster.
    pub cluster: String,
    /// kvstoremesh is connected to the remote and its config is accepted.
    pub connected: bool,
    /// Every kind of the remote's state is mirrored (its cache canaries are
    /// written) and the remote answers.
    pub ready: bool,
    /// Why it is not connected or not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The class of `last_error` (`unreachable`, `tls`, `not-synced`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_kind: Option<String>,
    /// Failed attempts so far.
    #[serde(default)]
    pub failures: u64,
    /// Since when the remote has not answered (RFC 3339), while it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_since: Option<String>,
}

impl StoreValue for MirrorStatus {
    const KIND: &'static str = "kvstoremesh status";

    fn decode(key: &str, bytes: &[u8]) -> Result<Self, DecodeError> {
        let status: Self = decode_json(Self::KIND, key, bytes)?;
        if let Err(e) = ClusterName::new(status.cluster.as_str()) {
            return Err(DecodeError::new(
                Self::KIND,
                key,
                InvalidReason::InvalidCluster,
                e,
            ));
        }
        if key != status.cluster {
            return Err(DecodeError::new(
                Self::KIND,
                key,
                InvalidReason::KeyMismatch,
                format!("value is for {}", status.cluster),
            ));
        }
        Ok(status)
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("statuses always serialize")
    }

    fn key(&self) -> String {
        self.cluster.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_checks_its_key() {
        let s = MirrorStatus {
            cluster: "c2".into(),
            connected: false,
            ready: false,
            last_error: Some("connection refused".into()),
            last_error_kind: Some("unreachable".into()),
            failures: 3,
            unreachable_since: Some("2026-12-02T05:00:00Z".into()),
        };
        let bytes = s.encode();
        assert_eq!(MirrorStatus::decode("c2", &bytes).unwrap(), s);
        let err = MirrorStatus::decode("c3", &bytes).unwrap_err();
        assert_eq!(err.reason, InvalidReason::KeyMismatch);
        assert_eq!(
            MirrorStatus::decode("c2", b"{").unwrap_err().reason,
            InvalidReason::Malformed
        );
        let minimal =
            MirrorStatus::decode("c2", br#"{"cluster":"c2","connected":true,"ready":true}"#)
                .unwrap();
        assert!(minimal.ready && minimal.failures == 0 && minimal.last_error.is_none());
    }
}
