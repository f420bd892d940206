use std::fmt;

use kvstore::ClusterName;

/// What a client is, decided from the common name of its verified
/// certificate (the mesh's naming convention, DESIGN §10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// `admin-<this cluster>`: the local cluster's operator and tooling.
    Admin,
    /// `remote-<cluster>`: an agent (or kvstoremesh) of another cluster.
    Remote(ClusterName),
    /// `local-<this cluster>`: an agent of this cluster reading remote
    /// clusters through the kvstoremesh cache (Cilium's `local` user).
    Local,
    /// Any other common name (or none): refused everything.
    Unknown,
}

impl Role {
    /// Prefix of the common name of a remote cluster's client certificate.
    pub const REMOTE_PREFIX: &str = "remote-";
    /// Prefix of the common name of the local admin certificate.
    pub const ADMIN_PREFIX: &str = "admin-";
    /// Prefix of the common name of the local agents' cache readers.
    pub const LOCAL_PREFIX: &str = "local-";

    /// The role of `common_name` on the apiserver of cluster `local`.
    pub fn from_common_name(common_name: &str, local: &ClusterName) -> Self {
        if let Some(cluster) = common_name.strip_prefix(Self::ADMIN_PREFIX)
            && cluster == local.as_str()
        {
            return Self::Admin;
        }
        if let Some(cluster) = common_name.strip_prefix(Self::LOCAL_PREFIX)
            && cluster == local.as_str()
        {
            return Self::Local;
        }
        if let Some(cluster) = common_name.strip_prefix(Self::REMOTE_PREFIX)
            && let Ok(cluster) = ClusterName::new(cluster)
        {
            return Self::Remote(cluster);
        }
        Self::Unknown
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Admin => f.write_str("admin"),
            Self::Remote(cluster) => write!(f, "remote cluster {cluster}"),
            Self::Local => f.write_str("local cache reader"),
            Self::Unknown => f.write_str("unknown client"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_from_common_names() {
        let c1 = ClusterName::new("c1").unwrap();
        assert_eq!(Role::from_common_name("admin-c1", &c1), Role::Admin);
        assert_eq!(Role::from_common_name("admin-c2", &c1), Role::Unknown);
        assert_eq!(
            Role::from_common_name("remote-c2", &c1),
            Role::Remote(ClusterName::new("c2").unwrap())
        );
        assert_eq!(Role::from_common_name("remote-", &c1), Role::Unknown);
        assert_eq!(Role::from_common_name("remote-C2", &c1), Role::Unknown);
        assert_eq!(Role::from_common_name("local-c1", &c1), Role::Local);
        assert_eq!(Role::from_common_name("local-c2", &c1), Role::Unknown);
        assert_eq!(Role::from_common_name("", &c1), Role::Unknown);
    }
}
