use std::sync::Arc;

use kvstore::{ClusterName, DecodeError, InvalidReason, StoreValue, Validator, values::Node};

/// A [`Node`] read under `cilium/state/nodes/v1/<cluster>/`, whose keys are
/// bare node names.
///
/// `Node`'s own decoding expects keys relative to `cilium/state/nodes/v1/`
/// (`<cluster>/<name>`), so a `WatchStore<Node>` on one cluster's prefix
/// would refuse every value; this wrapper decodes with the cluster the value
/// names and [`ClusterNode::validator`] checks that it is the watched one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClusterNode(pub(crate) Node);

impl ClusterNode {
    /// Refuses nodes of another cluster under `cluster`'s prefix.
    pub(crate) fn validator(cluster: &ClusterName) -> Validator<Self> {
        let cluster = cluster.clone();
        Arc::new(move |key: &str, node: &ClusterNode| {
            if node.0.cluster == cluster.as_str() {
                Ok(())
            } else {
                Err(DecodeError::new(
                    Node::KIND,
                    key,
                    InvalidReason::KeyMismatch,
                    format!(
                        "node of cluster {:?} under cluster {cluster}",
                        node.0.cluster
                    ),
                ))
            }
        })
    }
}

impl StoreValue for ClusterNode {
    const KIND: &'static str = Node::KIND;

    /// `key` is the node name.
    fn decode(key: &str, bytes: &[u8]) -> Result<Self, DecodeError> {
        #[derive(serde::Deserialize)]
        struct ClusterOnly {
            #[serde(rename = "Cluster", default)]
            cluster: String,
        }
        let ClusterOnly { cluster } = serde_json::from_slice(bytes)
            .map_err(|e| DecodeError::new(Self::KIND, key, InvalidReason::Malformed, e))?;
        Node::decode(&format!("{cluster}/{key}"), bytes).map(Self)
    }

    fn encode(&self) -> Vec<u8> {
        self.0.encode()
    }

    fn key(&self) -> String {
        self.0.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_by_bare_name_and_checks_the_cluster() {
        let c1 = ClusterName::new("c1").unwrap();
        let node = Node::new(&c1, "n1", 1);
        let decoded = ClusterNode::decode("n1", &node.encode()).unwrap();
        assert_eq!(decoded.0, node);
        assert!(ClusterNode::validator(&c1)("n1", &decoded).is_ok());
        let c10 = ClusterName::new("c10").unwrap();
        assert_eq!(
            ClusterNode::validator(&c10)("n1", &decoded)
                .unwrap_err()
                .reason,
            InvalidReason::KeyMismatch
        );
        assert_eq!(
            ClusterNode::decode("n2", &node.encode())
                .unwrap_err()
                .reason,
            InvalidReason::KeyMismatch
        );
        assert_eq!(
            ClusterNode::decode("n1", b"{").unwrap_err().reason,
            InvalidReason::Malformed
        );
    }
}
