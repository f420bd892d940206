use serde::{Deserialize, Serialize};

use crate::{
    cluster::{ClusterError, ClusterId, MaxConnectedClusters},
    value::{DecodeError, InvalidReason, StoreValue, decode_json},
};

/// What a cluster publishes about itself at `cilium/cluster-config/<name>`
/// (Cilium's `CiliumClusterConfig`). Remote clusters read it before anything
/// else to check the cluster ID and the mesh mode.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClusterConfig {
    #[serde(default)]
    pub id: u32,
    #[serde(default)]
    pub capabilities: ClusterConfigCapabilities,
}

/// Capabilities of a cluster's published state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfigCapabilities {
    /// The cluster writes `cilium/synced/<cluster>/<store>` canaries.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub synced_canaries: bool,
    /// The data is a kvstoremesh mirror.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
    /// 255 or 511; 0 means 255.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_connected_clusters: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_exports_enabled: Option<bool>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl ClusterConfig {
    /// The config a clustermesh cluster publishes.
    pub fn new(id: ClusterId, mode: MaxConnectedClusters) -> Self {
        Self {
            id: id.get(),
            capabilities: ClusterConfigCapabilities {
                synced_canaries: true,
                cached: false,
                max_connected_clusters: mode.as_u32(),
                service_exports_enabled: None,
            },
        }
    }

    /// The mesh mode the cluster runs in.
    pub fn mode(&self) -> Result<MaxConnectedClusters, ClusterError> {
        MaxConnectedClusters::from_u32(self.capabilities.max_connected_clusters)
    }

    /// The cluster ID, validated against the cluster's own mode.
    pub fn cluster_id(&self) -> Result<ClusterId, ClusterError> {
        ClusterId::new(self.id, self.mode()?)
    }
}

impl StoreValue for ClusterConfig {
    const KIND: &'static str = "cluster config";

    /// `key` is the cluster name.
    fn decode(key: &str, bytes: &[u8]) -> Result<Self, DecodeError> {
        let config: Self = decode_json(Self::KIND, key, bytes)?;
        config
            .cluster_id()
            .map_err(|e| DecodeError::new(Self::KIND, key, InvalidReason::InvalidCluster, e))?;
        Ok(config)
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("cluster configs always serialize")
    }

    /// Cluster configs are not kept in keyed stores; the caller knows the name.
    fn key(&self) -> String {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn design_example() {
        let c = ClusterConfig::new(
            ClusterId::new(2, MaxConnectedClusters::C255).unwrap(),
            MaxConnectedClusters::C255,
        );
        assert_eq!(
            String::from_utf8(c.encode()).unwrap(),
            r#"{"id":2,"capabilities":{"syncedCanaries":true,"maxConnectedClusters":255}}"#
        );
        let parsed = ClusterConfig::decode("c2", br#"{"id":2,"capabilities":{"syncedCanaries":true,"maxConnectedClusters":255,"cached":false}}"#).unwrap();
        assert_eq!(parsed, c);
    }

    #[test]
    fn rejects_out_of_range() {
        let err = ClusterConfig::decode(
            "c",
            br#"{"id":300,"capabilities":{"maxConnectedClusters":255}}"#,
        )
        .unwrap_err();
        assert_eq!(err.reason, InvalidReason::InvalidCluster);
        assert!(
            ClusterConfig::decode(
                "c",
                br#"{"id":300,"capabilities":{"maxConnectedClusters":511}}"#
            )
            .is_ok()
        );
        assert!(
            ClusterConfig::decode(
                "c",
                br#"{"id":3,"capabilities":{"maxConnectedClusters":100}}"#
            )
            .is_err()
        );
        assert_eq!(
            ClusterConfig::decode("c", br#"{}"#)
                .unwrap()
                .mode()
                .unwrap(),
            MaxConnectedClusters::C255
        );
    }
}
