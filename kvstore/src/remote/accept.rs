use crate::{
    cluster::{ClusterId, MaxConnectedClusters},
    values::ClusterConfig,
};

use super::failure::{Failure, FailureKind};

/// Checks a remote's `cilium/cluster-config/<name>` against this cluster:
/// same max-connected-clusters mode, an ID that is not 0, in range and not
/// ours. Returns the remote's ID. (Whether another remote holds the same ID
/// is the caller's to check: it knows the others.)
pub fn accept_cluster_config(
    config: &ClusterConfig,
    local_id: ClusterId,
    mode: MaxConnectedClusters,
) -> Result<ClusterId, Failure> {
    let invalid = |message: String| Failure::new(FailureKind::ClusterConfigInvalid, message);
    let remote_mode = config.mode().map_err(|e| invalid(e.to_string()))?;
    if remote_mode != mode {
        return Err(invalid(format!(
            "max-connected-clusters differs: remote {remote_mode}, local {mode}"
        )));
    }
    let id = ClusterId::new(config.id, mode).map_err(|e| invalid(e.to_string()))?;
    if !id.is_meshable() {
        return Err(invalid("remote cluster ID is 0".into()));
    }
    if id == local_id {
        return Err(Failure::new(
            FailureKind::IdConflict,
            format!("remote cluster ID {id} is this cluster's own ID"),
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_cannot_be_meshed() {
        let mode = MaxConnectedClusters::C255;
        let local = ClusterId::new(1, mode).unwrap();
        let config = |id, m| ClusterConfig::new(ClusterId::new(id, m).unwrap(), m);
        assert_eq!(
            accept_cluster_config(&config(2, mode), local, mode)
                .unwrap()
                .get(),
            2
        );
        let kind = |c: &ClusterConfig| accept_cluster_config(c, local, mode).unwrap_err().kind;
        assert_eq!(kind(&config(1, mode)), FailureKind::IdConflict);
        assert_eq!(kind(&config(0, mode)), FailureKind::ClusterConfigInvalid);
        assert_eq!(
            kind(&config(300, MaxConnectedClusters::C511)),
            FailureKind::ClusterConfigInvalid
        );
    }
}
