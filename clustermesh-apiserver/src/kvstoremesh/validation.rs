//! What kvstoremesh refuses to mirror: only what no cluster may publish.
//! Agents validate every value again, exactly as for a direct connection
//! (identity ranges, addresses, routes); kvstoremesh is not the place for
//! rules that depend on the local cluster.
//!
//! - every value decodes as its kind's type, with its key relative to
//!   [`StateKind::relative_to`] (nodes, services, identities, ipcache);
//!   service exports are JSON objects;
//! - nodes and services name the remote itself as their cluster
//!   ([`InvalidReason::InvalidCluster`]) and match their key
//!   ([`InvalidReason::KeyMismatch`]).

use std::sync::Arc;

use kvstore::{
    ClusterName, DecodeError, InvalidReason, RawEntry, StoreValue, Validator,
    keys::StateKind,
    values::{ClusterService, IdentityEntry, IpIdentityPair, Node},
};

/// The check of every value of `kind` read from `remote`.
pub(super) fn validator(kind: StateKind, remote: &ClusterName) -> Validator<RawEntry> {
    let remote = remote.clone();
    Arc::new(move |key: &str, entry: &RawEntry| check(kind, &remote, key, &entry.value))
}

/// Checks one value of `kind` at `key` (relative to the kind's
/// [`StateKind::relative_to`]).
pub(super) fn check(
    kind: StateKind,
    remote: &ClusterName,
    key: &str,
    bytes: &[u8],
) -> Result<(), DecodeError> {
    match kind {
        StateKind::Nodes => {
            names_remote(Node::KIND, "Cluster", remote, key, bytes)?;
            Node::decode(key, bytes).map(drop)
        }
        StateKind::Services => {
            names_remote(ClusterService::KIND, "cluster", remote, key, bytes)?;
            ClusterService::decode(key, bytes).map(drop)
        }
        StateKind::ServiceExports => {
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(bytes)
                .map(drop)
                .map_err(|e| DecodeError::new("service export", key, InvalidReason::Malformed, e))
        }
        StateKind::Identities => IdentityEntry::decode(key, bytes).map(drop),
        StateKind::Ip => IpIdentityPair::decode(key, bytes).map(drop),
    }
}

/// A value whose `field` names another cluster than `remote` is refused
/// as [`InvalidReason::InvalidCluster`] (before the key check, which would
/// call it a mismatch). Malformed JSON is left to the type's decoder.
fn names_remote(
    kind: &'static str,
    field: &str,
    remote: &ClusterName,
    key: &str,
    bytes: &[u8],
) -> Result<(), DecodeError> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Ok(());
    };
    match value.get(field).and_then(|c| c.as_str()) {
        Some(cluster) if cluster != remote.as_str() => Err(DecodeError::new(
            kind,
            key,
            InvalidReason::InvalidCluster,
            format!("{kind} of cluster {cluster:?}, read from {remote}"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use kvstore::{NumericIdentity, keys::Source};

    use super::*;

    fn reason(kind: StateKind, key: &str, bytes: &[u8]) -> Option<InvalidReason> {
        let c2 = ClusterName::new("c2").unwrap();
        check(kind, &c2, key, bytes).err().map(|e| e.reason)
    }

    #[test]
    fn refuses_only_what_no_cluster_may_publish() {
        let c2 = ClusterName::new("c2").unwrap();
        let c9 = ClusterName::new("c9").unwrap();
        let node = |c: &ClusterName| Node::new(c, "n1", 2).encode();
        assert_eq!(reason(StateKind::Nodes, "c2/n1", &node(&c2)), None);
        assert_eq!(
            reason(StateKind::Nodes, "c2/n1", &node(&c9)),
            Some(InvalidReason::InvalidCluster)
        );
        assert_eq!(
            reason(StateKind::Nodes, "c2/other", &node(&c2)),
            Some(InvalidReason::KeyMismatch)
        );
        assert_eq!(
            reason(StateKind::Nodes, "c2/n1", b"{not json"),
            Some(InvalidReason::Malformed)
        );
        let svc = |c: &ClusterName| ClusterService::new(c, 2, "ns", "s").encode();
        assert_eq!(reason(StateKind::Services, "c2/ns/s", &svc(&c2)), None);
        assert_eq!(
            reason(StateKind::Services, "c2/ns/s", &svc(&c9)),
            Some(InvalidReason::InvalidCluster)
        );
        assert_eq!(
            reason(StateKind::ServiceExports, "c2/ns/s", br#"{"any":"object"}"#),
            None
        );
        assert_eq!(
            reason(StateKind::ServiceExports, "c2/ns/s", b"[1]"),
            Some(InvalidReason::Malformed)
        );
        // Identities and ipcache entries of any range pass: agents judge
        // ranges against what they know.
        assert_eq!(
            reason(
                StateKind::Identities,
                "196708",
                b"k8s:app=a;k8s:io.cilium.k8s.policy.cluster=c2;"
            ),
            None
        );
        assert_eq!(
            reason(StateKind::Identities, "x", b"k8s:app=a;"),
            Some(InvalidReason::KeyMismatch)
        );
        let pair = IpIdentityPair::host(
            "10.2.0.5".parse().unwrap(),
            NumericIdentity::new(2 << 16 | 300),
            None,
        );
        assert_eq!(reason(StateKind::Ip, "10.2.0.5", &pair.encode()), None);
        assert_eq!(
            reason(StateKind::Ip, "10.2.0.6", &pair.encode()),
            Some(InvalidReason::KeyMismatch)
        );
        // Keys are the same relative to either source.
        let rel = StateKind::Nodes
            .relative_to(&c2, Source::Cache)
            .strip(&StateKind::Nodes.prefix(&c2, Source::Cache).key("n1"))
            .unwrap()
            .to_owned();
        assert_eq!(reason(StateKind::Nodes, &rel, &node(&c2)), None);
    }
}
