//! The decisions `connect` makes before changing anything, as pure
//! functions of what was measured: shared by `clustermesh connect --from
//! A-admin.yaml` ([`crate::connection`]) and the local mesh harness
//! (`deploy/localmesh`), which measure the same things in their own ways.
//! Each returns the line to print when the check passes, or the one-line
//! reason it fails.

use ipnet::IpNet;
use kvstore::{ClusterId, ClusterName, IdentityRange, MaxConnectedClusters};

use crate::connection::{ConnectError, Progress};

fn refused(reason: impl Into<String>) -> ConnectError {
    ConnectError::Refused(reason.into())
}

/// Both names are valid cluster names, and not the same.
pub fn names(a: &str, b: &str) -> Result<String, ConnectError> {
    for name in [a, b] {
        ClusterName::new(name).map_err(|e| refused(format!("cluster name {name:?}: {e}")))?;
    }
    if a == b {
        return Err(refused(format!("cannot connect {a} to itself")));
    }
    Ok(format!("names {a} and {b} are valid and distinct"))
}

/// Both IDs are non-zero, within the mesh mode, and distinct.
pub fn ids(
    (a, a_id): (&str, u32),
    (b, b_id): (&str, u32),
    mode: MaxConnectedClusters,
) -> Result<String, ConnectError> {
    if a_id == b_id {
        return Err(refused(format!(
            "cluster ID clash: {a} and {b} both have ID {a_id}"
        )));
    }
    for (name, id) in [(a, a_id), (b, b_id)] {
        if id == 0 {
            return Err(refused(format!(
                "{name} has cluster ID 0, which is refused: a meshed cluster needs an ID from 1"
            )));
        }
        ClusterId::new(id, mode)
            .map_err(|e| refused(format!("{name} has cluster ID {id}, which is refused: {e}")))?;
    }
    Ok(format!(
        "IDs {a_id} and {b_id} are distinct, non-zero and within max-connected-clusters {mode}"
    ))
}

/// Both clusters run in the same mesh mode, as each publishes it.
pub fn modes(
    (a, a_mode): (&str, MaxConnectedClusters),
    (b, b_mode): (&str, MaxConnectedClusters),
) -> Result<String, ConnectError> {
    if a_mode != b_mode {
        return Err(refused(format!(
            "max-connected-clusters differs: {a} {a_mode}, {b} {b_mode}"
        )));
    }
    Ok(format!(
        "max-connected-clusters is {a_mode} on {a} and {b_mode} on {b} (their cluster-config)"
    ))
}

/// No pod CIDR of one cluster overlaps one of the other's. With nothing
/// known of a side, a warning says so.
pub fn pod_cidrs(
    (a, a_nets): (&str, &[IpNet]),
    (b, b_nets): (&str, &[IpNet]),
) -> Result<Progress, ConnectError> {
    for x in a_nets {
        for y in b_nets {
            if x.contains(&y.network()) || y.contains(&x.network()) {
                return Err(refused(format!("pod CIDRs overlap: {a} {x}, {b} {y}")));
            }
        }
    }
    let list = |v: &[IpNet]| {
        if v.is_empty() {
            "none known".to_owned()
        } else {
            v.iter()
                .map(IpNet::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let line = format!("{a} {}, {b} {}", list(a_nets), list(b_nets));
    Ok(if a_nets.is_empty() || b_nets.is_empty() {
        Progress::Warning(format!(
            "pod CIDRs: {line}; overlap checked only where known"
        ))
    } else {
        Progress::Done(format!("pod CIDRs do not overlap: {line}"))
    })
}

/// `used` identities leave room in the cluster's allocation range.
pub fn identity_headroom(
    name: &str,
    id: u32,
    mode: MaxConnectedClusters,
    used: i64,
) -> Result<String, ConnectError> {
    let id = ClusterId::new(id, mode).map_err(|e| refused(format!("{name}: {e}")))?;
    let range = IdentityRange::allocation(id, mode);
    if used >= i64::from(range.len()) {
        return Err(refused(format!(
            "no identity headroom in {name}: {used} of {} used",
            range.len()
        )));
    }
    Ok(format!(
        "identity headroom in {name}: {used} of {} used",
        range.len()
    ))
}

/// Every agent of `name` will hold `entries` ipcache entries (its own
/// cluster's and the peer's): they fit the smallest ipcache map among
/// `capacities` (node → map size, as the agents report it). With no
/// agent reporting, a warning says so.
pub fn ipcache_headroom(
    name: &str,
    entries: i64,
    capacities: &[(String, usize)],
) -> Result<Progress, ConnectError> {
    let Some((node, capacity)) = capacities.iter().min_by_key(|(_, c)| *c) else {
        return Ok(Progress::Warning(format!(
            "no agent of {name} reports its map sizes yet; ipcache headroom not checked"
        )));
    };
    if entries > i64::try_from(*capacity).unwrap_or(i64::MAX) {
        return Err(refused(format!(
            "ipcache map would overflow: {entries} entries for {capacity} slots on {name}/{node}"
        )));
    }
    Ok(Progress::Done(format!(
        "ipcache headroom in {name}: {entries} entries of {capacity} (smallest of {} {name} agents: {node})",
        capacities.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const M255: MaxConnectedClusters = MaxConnectedClusters::C255;

    fn reason(r: Result<impl std::fmt::Debug, ConnectError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn names_and_ids() {
        assert!(names("c1", "c2").is_ok());
        assert_eq!(reason(names("c1", "c1")), "cannot connect c1 to itself");
        assert!(reason(names("C1", "c2")).starts_with("cluster name \"C1\""));
        assert!(ids(("c1", 1), ("c2", 2), M255).is_ok());
        assert_eq!(
            reason(ids(("c1", 1), ("c2", 1), M255)),
            "cluster ID clash: c1 and c2 both have ID 1"
        );
        assert!(reason(ids(("c1", 1), ("c2", 0), M255)).starts_with("c2 has cluster ID 0"));
        assert!(reason(ids(("c1", 1), ("c2", 300), M255)).starts_with("c2 has cluster ID 300"));
        assert!(
            reason(modes(("c1", M255), ("c2", MaxConnectedClusters::C511))).contains("differs")
        );
    }

    #[test]
    fn pod_cidrs_and_headroom() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let (a, b) = (
            [net("10.1.0.0/16")],
            [net("10.2.0.0/16"), net("10.1.3.0/24")],
        );
        assert_eq!(
            reason(pod_cidrs(("c1", &a), ("c2", &b))),
            "pod CIDRs overlap: c1 10.1.0.0/16, c2 10.1.3.0/24"
        );
        assert!(matches!(
            pod_cidrs(("c1", &a), ("c2", &b[..1])).unwrap(),
            Progress::Done(_)
        ));
        assert!(matches!(
            pod_cidrs(("c1", &a), ("c2", &[])).unwrap(),
            Progress::Warning(_)
        ));
        assert!(identity_headroom("c1", 1, M255, 10).is_ok());
        assert!(
            reason(identity_headroom("c1", 1, M255, 1 << 20)).starts_with("no identity headroom")
        );
        let caps = [("n1".to_owned(), 100), ("n2".to_owned(), 50)];
        assert_eq!(
            reason(ipcache_headroom("c1", 51, &caps)),
            "ipcache map would overflow: 51 entries for 50 slots on c1/n2"
        );
        assert_eq!(
            ipcache_headroom("c1", 50, &caps).unwrap(),
            Progress::Done(
                "ipcache headroom in c1: 50 entries of 50 (smallest of 2 c1 agents: n2)".into()
            )
        );
        assert!(matches!(
            ipcache_headroom("c1", 50, &[]).unwrap(),
            Progress::Warning(_)
        ));
    }
}
