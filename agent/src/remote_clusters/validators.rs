//! What a remote's values must satisfy to be used (see "What a remote may
//! claim" in the module documentation of [`super`]), as
//! [`kvstore::Validator`]s its stores apply to every value.

use std::sync::Arc;

use kvstore::{
    ClusterId, ClusterName, DecodeError, IdentityRange, InvalidReason, MaxConnectedClusters,
    NumericIdentity, Validator,
    values::{ClusterService, IpIdentityPair, Node},
};

/// Reserved identities a remote's ipcache entry may name: its nodes (host,
/// rewritten to remote-node as Cilium does, or remote-node itself) and its
/// health endpoints. Any other reserved identity (world, kube-apiserver,
/// ingress, init, unmanaged, user-reserved…) would let a remote address
/// pass a local policy written for that entity.
pub(crate) const REMOTE_IPCACHE_RESERVED: [NumericIdentity; 3] = [
    NumericIdentity::HOST,
    NumericIdentity::REMOTE_NODE,
    NumericIdentity::HEALTH,
];

/// ipcache entries of a remote: one address (not a prefix), whose identity
/// is in the remote's block or one of [`REMOTE_IPCACHE_RESERVED`].
pub(crate) fn ipcache_validator(
    name: &ClusterName,
    id: ClusterId,
    mode: MaxConnectedClusters,
) -> Validator<IpIdentityPair> {
    let block = IdentityRange::block(id, mode);
    let name = name.clone();
    Arc::new(move |key: &str, pair: &IpIdentityPair| {
        let invalid =
            |reason, detail: String| Err(DecodeError::new("ipcache entry", key, reason, detail));
        let prefix = pair.prefix();
        if prefix.prefix_len() != prefix.max_prefix_len() {
            // An endpoint or node has one address; a prefix would claim
            // every address in it, local ones and the world included.
            return invalid(
                InvalidReason::PrefixNotAllowed,
                format!("{prefix} is a prefix; a remote cluster may only publish single addresses"),
            );
        }
        if pair.id.is_reserved() {
            if REMOTE_IPCACHE_RESERVED.contains(&pair.id) {
                return Ok(());
            }
            return invalid(
                InvalidReason::ReservedIdentity,
                format!(
                    "reserved identity {} ({}) is not one a remote address may have",
                    pair.id,
                    pair.id.reserved_name().unwrap_or("reserved")
                ),
            );
        }
        if block.contains(pair.id) {
            Ok(())
        } else {
            invalid(
                InvalidReason::IdentityOutOfRange,
                format!(
                    "identity {} is outside cluster {name}'s range {block}",
                    pair.id
                ),
            )
        }
    })
}

pub(crate) fn node_validator(name: &ClusterName, id: ClusterId) -> Validator<Node> {
    let name = name.clone();
    Arc::new(move |key: &str, node: &Node| {
        check_cluster("node", key, &node.cluster, node.cluster_id, &name, id, true)
    })
}

pub(crate) fn service_validator(name: &ClusterName, id: ClusterId) -> Validator<ClusterService> {
    let name = name.clone();
    Arc::new(move |key: &str, svc: &ClusterService| {
        check_cluster(
            "service",
            key,
            &svc.cluster,
            svc.cluster_id,
            &name,
            id,
            false,
        )?;
        if let Some((ip, _)) = svc.backend_ips().find(|(ip, _)| !is_routable_unicast(ip)) {
            return Err(DecodeError::new(
                "service",
                key,
                InvalidReason::InvalidAddress,
                format!("backend {ip} is not a unicast address another cluster can serve"),
            ));
        }
        Ok(())
    })
}

/// An address a remote backend may have: not loopback, unspecified,
/// link-local, multicast or broadcast (those would send a client to itself,
/// its node or nowhere).
fn is_routable_unicast(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast())
        }
        std::net::IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unicast_link_local())
        }
    }
}

/// A remote's value must name the remote and its ID (nodes may leave the
/// ID at 0, as older Cilium versions do).
fn check_cluster(
    kind: &'static str,
    key: &str,
    cluster: &str,
    cluster_id: u32,
    name: &ClusterName,
    id: ClusterId,
    zero_id_ok: bool,
) -> Result<(), DecodeError> {
    if cluster != name.as_str() {
        return Err(DecodeError::new(
            kind,
            key,
            InvalidReason::InvalidCluster,
            format!("{kind} of cluster {cluster:?}, not {name}"),
        ));
    }
    if cluster_id != id.get() && !(zero_id_ok && cluster_id == 0) {
        return Err(DecodeError::new(
            kind,
            key,
            InvalidReason::InvalidCluster,
            format!("cluster ID {cluster_id} is not {id}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validators() {
        let c2 = ClusterName::new("c2").unwrap();
        let mode = MaxConnectedClusters::C255;
        let id = ClusterId::new(2, mode).unwrap();
        let v = ipcache_validator(&c2, id, mode);
        let pair = |n: u32| {
            IpIdentityPair::host("10.0.0.1".parse().unwrap(), NumericIdentity::new(n), None)
        };
        assert!(v("k", &pair(2 << 16 | 300)).is_ok());
        assert!(v("k", &pair(6)).is_ok());
        assert!(v("k", &pair(1)).is_ok());
        for reserved in [0, 2, 3, 7, 8, 200, 255] {
            assert_eq!(
                v("k", &pair(reserved)).unwrap_err().reason,
                InvalidReason::ReservedIdentity,
                "{reserved}"
            );
        }
        let wide = IpIdentityPair::host(
            "0.0.0.0".parse().unwrap(),
            NumericIdentity::new(2 << 16 | 300),
            None,
        )
        .with_prefix_len(1);
        assert_eq!(
            v("k", &wide).unwrap_err().reason,
            InvalidReason::PrefixNotAllowed
        );
        assert_eq!(
            v("k", &pair(3 << 16 | 300)).unwrap_err().reason,
            InvalidReason::IdentityOutOfRange
        );
        let sv = service_validator(&c2, id);
        let svc = ClusterService::new(&c2, 2, "ns", "s");
        assert!(sv("k", &svc).is_ok());
        assert!(sv("k", &ClusterService::new(&c2, 3, "ns", "s")).is_err());
        let c3 = ClusterName::new("c3").unwrap();
        assert!(sv("k", &ClusterService::new(&c3, 2, "ns", "s")).is_err());
    }
}
