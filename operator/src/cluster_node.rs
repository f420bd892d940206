use kvstore::{ClusterName, DecodeError, InvalidReason, StoreValue, values::Node};

/// A key under `cilium/state/nodes/v1/<cluster>/` (whose keys are bare node
/// names) and its decoded [`Node`], or why it did not decode.
///
/// For IPAM a node exists exactly while its key exists: that is what the
/// conditional writes in etcd check. So decoding never fails here; a value
/// that is not a valid node of this cluster is kept as an error for the
/// reconciler to log, instead of hiding the key (which would make the view
/// and the etcd guards disagree and a release retry forever).
///
/// (`Node`'s own decoding expects keys relative to `cilium/state/nodes/v1/`,
/// i.e. `<cluster>/<name>`, so a `WatchStore<Node>` on one cluster's prefix
/// would refuse every value; this wrapper decodes with the cluster the value
/// names and checks it against the watched one.)
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClusterNode {
    pub(crate) name: String,
    pub(crate) node: Result<Node, DecodeError>,
}

impl ClusterNode {
    /// The node, if its value is a valid node of `cluster`.
    pub(crate) fn check(&self, cluster: &ClusterName) -> Result<&Node, DecodeError> {
        let node = self.node.as_ref().map_err(Clone::clone)?;
        if node.cluster == cluster.as_str() {
            Ok(node)
        } else {
            Err(DecodeError::new(
                Node::KIND,
                &self.name,
                InvalidReason::KeyMismatch,
                format!("node of cluster {:?} under cluster {cluster}", node.cluster),
            ))
        }
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
        let node = serde_json::from_slice::<ClusterOnly>(bytes)
            .map_err(|e| DecodeError::new(Self::KIND, key, InvalidReason::Malformed, e))
            .and_then(|c| Node::decode(&format!("{}/{key}", c.cluster), bytes));
        Ok(Self {
            name: key.to_string(),
            node,
        })
    }

    fn encode(&self) -> Vec<u8> {
        self.node.as_ref().map(Node::encode).unwrap_or_default()
    }

    fn key(&self) -> String {
        self.name.clone()
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
        assert_eq!(decoded.check(&c1), Ok(&node));
        let c10 = ClusterName::new("c10").unwrap();
        assert_eq!(
            decoded.check(&c10).unwrap_err().reason,
            InvalidReason::KeyMismatch
        );
        // Invalid values still name a node key.
        let wrong_name = ClusterNode::decode("n2", &node.encode()).unwrap();
        assert_eq!(wrong_name.name, "n2");
        assert_eq!(
            wrong_name.check(&c1).unwrap_err().reason,
            InvalidReason::KeyMismatch
        );
        assert_eq!(
            ClusterNode::decode("n1", b"{")
                .unwrap()
                .check(&c1)
                .unwrap_err()
                .reason,
            InvalidReason::Malformed
        );
    }
}
