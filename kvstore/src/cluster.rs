use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// Longest cluster name Cilium accepts.
pub const MAX_CLUSTER_NAME_LEN: usize = 32;

/// Why a cluster name or ID was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster name is empty")]
    EmptyName,
    #[error("cluster name {name:?} is longer than {MAX_CLUSTER_NAME_LEN} characters")]
    NameTooLong { name: String },
    #[error(
        "cluster name {name:?} is invalid: use lowercase letters, digits and '-', starting and ending with a letter or digit"
    )]
    InvalidName { name: String },
    #[error("cluster ID {id} is out of range 0..={max} (max-connected-clusters {max})")]
    IdOutOfRange { id: u32, max: u32 },
    #[error("max-connected-clusters must be 255 or 511, not {0}")]
    InvalidMaxConnectedClusters(u32),
}

/// A validated cluster name: `^([a-z0-9][-a-z0-9]*)?[a-z0-9]$`, at most 32
/// characters. Used in keys (`cilium/state/nodes/v1/<cluster>/…`) and as the
/// value of the `io.cilium.k8s.policy.cluster` label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClusterName(String);

impl ClusterName {
    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, ClusterError> {
        let name = name.into();
        if name.is_empty() {
            return Err(ClusterError::EmptyName);
        }
        if name.len() > MAX_CLUSTER_NAME_LEN {
            return Err(ClusterError::NameTooLong { name });
        }
        let bytes = name.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let valid = alnum(&bytes[0])
            && alnum(&bytes[bytes.len() - 1])
            && bytes.iter().all(|b| alnum(b) || *b == b'-');
        if !valid {
            return Err(ClusterError::InvalidName { name });
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ClusterName {
    type Err = ClusterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for ClusterName {
    type Error = ClusterError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<ClusterName> for String {
    fn from(name: ClusterName) -> Self {
        name.0
    }
}

impl AsRef<str> for ClusterName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// How many clusters a mesh may hold; decides how many identity bits carry the
/// cluster ID. Every cluster of a mesh must use the same mode.
///
/// | mode | cluster ID bits | local identity bits | IDs per cluster |
/// |---|---|---|---|
/// | 255 | 16–23 (8 bits) | 0–15 | 65,536 |
/// | 511 | 15–23 (9 bits) | 0–14 | 32,768 |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MaxConnectedClusters {
    #[default]
    C255,
    C511,
}

impl MaxConnectedClusters {
    /// From the number used in flags and in `cluster-config`
    /// (`maxConnectedClusters`; 0 means the default, 255).
    pub fn from_u32(n: u32) -> Result<Self, ClusterError> {
        match n {
            0 | 255 => Ok(Self::C255),
            511 => Ok(Self::C511),
            n => Err(ClusterError::InvalidMaxConnectedClusters(n)),
        }
    }

    pub fn as_u32(self) -> u32 {
        match self {
            Self::C255 => 255,
            Self::C511 => 511,
        }
    }

    /// Bit position of the lowest cluster-ID bit in an identity.
    pub fn cluster_shift(self) -> u32 {
        match self {
            Self::C255 => 16,
            Self::C511 => 15,
        }
    }

    /// Highest valid cluster ID.
    pub fn max_cluster_id(self) -> u32 {
        self.as_u32()
    }
}

impl fmt::Display for MaxConnectedClusters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_u32())
    }
}

impl FromStr for MaxConnectedClusters {
    type Err = ClusterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n = s
            .parse::<u32>()
            .map_err(|_| ClusterError::InvalidMaxConnectedClusters(u32::MAX))?;
        Self::from_u32(n)
    }
}

/// A cluster ID, 0..=255 (or 0..=511 in 511 mode). 0 is only valid for a
/// cluster that is not part of a mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClusterId(u32);

impl ClusterId {
    /// Validates `id` against the mode's maximum.
    pub fn new(id: u32, mode: MaxConnectedClusters) -> Result<Self, ClusterError> {
        let max = mode.max_cluster_id();
        if id > max {
            return Err(ClusterError::IdOutOfRange { id, max });
        }
        Ok(Self(id))
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// Whether the cluster can take part in a mesh (ID 0 cannot).
    pub fn is_meshable(self) -> bool {
        self.0 != 0
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names() {
        for ok in ["c1", "a", "0", "cluster-3", "a-b-c", &"x".repeat(32)] {
            assert!(ClusterName::new(ok).is_ok(), "{ok} should be valid");
        }
        assert_eq!(ClusterName::new(""), Err(ClusterError::EmptyName));
        assert!(matches!(
            ClusterName::new("x".repeat(33)),
            Err(ClusterError::NameTooLong { .. })
        ));
        for bad in ["-a", "a-", "A", "a_b", "a.b", "a b", "é"] {
            assert!(
                matches!(ClusterName::new(bad), Err(ClusterError::InvalidName { .. })),
                "{bad} should be invalid"
            );
        }
    }

    #[test]
    fn cluster_name_serde_validates() {
        let name: ClusterName = serde_json::from_str("\"c1\"").unwrap();
        assert_eq!(name.as_str(), "c1");
        assert!(serde_json::from_str::<ClusterName>("\"C1\"").is_err());
    }

    #[test]
    fn cluster_ids_by_mode() {
        assert!(ClusterId::new(255, MaxConnectedClusters::C255).is_ok());
        assert_eq!(
            ClusterId::new(256, MaxConnectedClusters::C255),
            Err(ClusterError::IdOutOfRange { id: 256, max: 255 })
        );
        assert!(ClusterId::new(511, MaxConnectedClusters::C511).is_ok());
        assert!(ClusterId::new(512, MaxConnectedClusters::C511).is_err());
        assert!(
            !ClusterId::new(0, MaxConnectedClusters::C255)
                .unwrap()
                .is_meshable()
        );
        assert_eq!(
            MaxConnectedClusters::from_u32(0).unwrap(),
            MaxConnectedClusters::C255
        );
        assert!(MaxConnectedClusters::from_u32(127).is_err());
        assert_eq!(
            "511".parse::<MaxConnectedClusters>().unwrap(),
            MaxConnectedClusters::C511
        );
    }
}
