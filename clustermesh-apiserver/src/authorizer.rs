use kvstore::{ClusterName, keys};

use crate::{key_range::KeyRange, role::Role};

/// What a request wants to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Read (range or watch) these keys.
    Read(KeyRange),
    /// Change keys (put, delete, txn, compaction).
    Write,
    /// Leases and locks.
    Lease,
    /// Server status (`Maintenance.Status`), which health checks use.
    Status,
}

/// The decision on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
}

impl Verdict {
    pub fn is_allowed(self) -> bool {
        self == Self::Allowed
    }

    /// Label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
        }
    }
}

/// Who may do what on the apiserver of one cluster (sans-IO).
///
/// - [`Role::Admin`] may do everything.
/// - [`Role::Remote`] may read (range and watch) only inside the ranges a
///   remote cluster needs, as Cilium's `remote` etcd role grants them:
///   the prefixes `cilium/state/`, `cilium/cache/`,
///   `cilium/synced/<this cluster>/` and `cilium/.heartbeat` (a prefix, so
///   that a prefix watch of the heartbeat key works), and the single key
///   `cilium/cluster-config/<this cluster>`. The whole requested interval
///   must lie inside one of them: a from-key read, or a prefix that is
///   shorter than an allowed one (`cilium/`), is refused. It may also ask
///   for the server status. Writes, leases and locks are refused.
/// - [`Role::Local`] (this cluster's agents reading remote clusters
///   through kvstoremesh) may read what kvstoremesh writes: the prefixes
///   `cilium/cache/`, `cilium/synced/` (every cluster's canaries),
///   `cilium/cluster-config/` (the remotes' configs kvstoremesh publishes),
///   `cilium/kvstoremesh/` (how kvstoremesh sees each remote) and
///   `cilium/.heartbeat`, and the server status. Nothing else, and no
///   writes, leases or locks.
/// - [`Role::Unknown`] is refused everything.
#[derive(Debug, Clone)]
pub struct Authorizer {
    local: ClusterName,
    remote_readable: Vec<KeyRange>,
    local_readable: Vec<KeyRange>,
}

impl Authorizer {
    pub fn new(local: ClusterName) -> Self {
        let remote_readable = vec![
            KeyRange::prefix(format!("{}/", keys::STATE)),
            KeyRange::prefix(format!("{}/", keys::CACHE)),
            KeyRange::prefix(keys::canaries_of(&local).as_str()),
            KeyRange::Key(keys::cluster_config(&local).into_bytes()),
            KeyRange::prefix(keys::HEARTBEAT),
        ];
        let local_readable = vec![
            KeyRange::prefix(format!("{}/", keys::CACHE)),
            KeyRange::prefix(format!("{}/", keys::SYNCED)),
            KeyRange::prefix(format!("{}/", keys::CLUSTER_CONFIG)),
            KeyRange::prefix(format!("{}/", keys::KVSTOREMESH)),
            KeyRange::prefix(keys::HEARTBEAT),
        ];
        Self {
            local,
            remote_readable,
            local_readable,
        }
    }

    /// The cluster this apiserver serves.
    pub fn local_cluster(&self) -> &ClusterName {
        &self.local
    }

    /// The role of a client with this certificate common name.
    pub fn role(&self, common_name: &str) -> Role {
        Role::from_common_name(common_name, &self.local)
    }

    /// Whether `role` may do `access`.
    pub fn decide(&self, role: &Role, access: &Access) -> Verdict {
        let allowed = match (role, access) {
            (Role::Admin, _) => true,
            (Role::Remote(_), Access::Status) => true,
            (Role::Remote(_), Access::Read(range)) => {
                self.remote_readable.iter().any(|r| r.contains(range))
            }
            (Role::Remote(_), Access::Write | Access::Lease) => false,
            (Role::Local, Access::Status) => true,
            (Role::Local, Access::Read(range)) => {
                self.local_readable.iter().any(|r| r.contains(range))
            }
            (Role::Local, Access::Write | Access::Lease) => false,
            (Role::Unknown, _) => false,
        };
        if allowed {
            Verdict::Allowed
        } else {
            Verdict::Denied
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(key: &str, end: &str) -> Access {
        Access::Read(KeyRange::from_request(key.as_bytes(), end.as_bytes()))
    }

    fn prefix(p: &str) -> Access {
        Access::Read(KeyRange::prefix(p))
    }

    #[test]
    fn remote_reads_only_what_it_needs() {
        let authz = Authorizer::new(ClusterName::new("c1").unwrap());
        let remote = authz.role("remote-c2");
        let ok = |a: &Access| authz.decide(&remote, a).is_allowed();

        assert!(ok(&prefix("cilium/state/")));
        assert!(ok(&prefix("cilium/state/ip/v1/")));
        assert!(ok(&read("cilium/state/ip/v1/default/10.0.0.1", "")));
        assert!(ok(&prefix("cilium/cache/")));
        assert!(ok(&prefix("cilium/synced/c1/")));
        assert!(ok(&read("cilium/synced/c1/cilium/state/ip/v1", "")));
        assert!(ok(&read("cilium/cluster-config/c1", "")));
        assert!(ok(&read("cilium/.heartbeat", "")));
        assert!(ok(&prefix("cilium/.heartbeat")));
        assert!(ok(&Access::Status));

        assert!(!ok(&prefix("cilium/")));
        assert!(!ok(&prefix("cilium/state")), "prefix without the slash");
        assert!(!ok(&read("cilium/state/", "\0")), "from-key");
        assert!(!ok(&read("", "\0")), "everything");
        assert!(!ok(&read("cilium/state/a", "cilium/synced/c1/x")));
        assert!(!ok(&prefix("cilium/synced/c2/")));
        assert!(!ok(&prefix("cilium/synced/")));
        assert!(!ok(&prefix("cilium/synced/c1")), "would cover c10");
        assert!(!ok(&prefix("cilium/cluster-config/c1")), "would cover c10");
        assert!(!ok(&read("cilium/cluster-config/c2", "")));
        assert!(!ok(&prefix("cilium/cluster-config/")));
        assert!(!ok(&read("cilium/policies/v1/p", "")));
        assert!(!ok(&Access::Write));
        assert!(!ok(&Access::Lease));
    }

    #[test]
    fn local_readers_read_only_the_cache() {
        let authz = Authorizer::new(ClusterName::new("c1").unwrap());
        let local = authz.role("local-c1");
        assert_eq!(local, Role::Local);
        let ok = |a: &Access| authz.decide(&local, a).is_allowed();
        assert!(ok(&prefix("cilium/cache/nodes/v1/c2/")));
        assert!(ok(&prefix("cilium/cache/identities/v1/c2/id/")));
        assert!(ok(&read("cilium/synced/c2/cilium/cache/ip/v1", "")));
        assert!(ok(&prefix("cilium/synced/c2/")));
        assert!(ok(&read("cilium/cluster-config/c2", "")));
        assert!(ok(&read("cilium/kvstoremesh/v1/c2", "")));
        assert!(ok(&read("cilium/.heartbeat", "")));
        assert!(ok(&Access::Status));

        assert!(!ok(&prefix("cilium/state/")), "the local state is etcd's");
        assert!(!ok(&prefix("cilium/")));
        assert!(!ok(&prefix("cilium/cache")), "prefix without the slash");
        assert!(!ok(&read("cilium/policies/v1/p", "")));
        assert!(!ok(&Access::Write));
        assert!(!ok(&Access::Lease));
        // Another cluster's local readers are nobody here.
        assert_eq!(authz.role("local-c2"), Role::Unknown);
    }

    #[test]
    fn admin_of_this_cluster_only() {
        let authz = Authorizer::new(ClusterName::new("c1").unwrap());
        let admin = authz.role("admin-c1");
        assert_eq!(admin, Role::Admin);
        for access in [read("", "\0"), Access::Write, Access::Lease, Access::Status] {
            assert!(authz.decide(&admin, &access).is_allowed());
        }
        for cn in ["admin-c2", "local-c2", "c1", "remote-", ""] {
            let role = authz.role(cn);
            assert_eq!(role, Role::Unknown, "{cn}");
            for access in [prefix("cilium/state/"), Access::Write, Access::Status] {
                assert!(!authz.decide(&role, &access).is_allowed(), "{cn}");
            }
        }
    }
}
