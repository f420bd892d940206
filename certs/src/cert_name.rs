use std::{fmt, str::FromStr};

/// The name of an issued certificate: its common name and the stem of its files
/// (`NAME.crt`, `NAME.key`). Client names are identities checked by servers,
/// by convention `remote-<cluster>`, `admin-<cluster>` or `local-<cluster>`.
///
/// Lowercase letters, digits, `-` and `.`, starting and ending with a letter or
/// digit, at most 64 characters (the X.509 limit for a common name), and not
/// `ca` (whose files hold the CA).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertName(String);

/// Why a string is not a [`CertName`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertNameError {
    #[error(
        "invalid certificate name {name:?}: {reason} (use lowercase letters, digits, '-' and '.', e.g. remote-c1)"
    )]
    Invalid { name: String, reason: &'static str },
}

impl CertName {
    /// The longest common name X.509 allows (RFC 5280 `ub-common-name`).
    pub const MAX_LEN: usize = 64;

    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, CertNameError> {
        let name = name.into();
        let invalid = |reason| CertNameError::Invalid {
            name: name.clone(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("it is empty"));
        }
        if name.len() > Self::MAX_LEN {
            return Err(invalid("it is longer than 64 characters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return Err(invalid("it contains a character that is not allowed"));
        }
        let edge_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if !edge_ok(name.as_bytes()[0]) || !edge_ok(name.as_bytes()[name.len() - 1]) {
            return Err(invalid("it must start and end with a letter or digit"));
        }
        if name == "ca" {
            return Err(invalid("the name 'ca' is reserved for the CA's own files"));
        }
        Ok(Self(name))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CertName {
    type Err = CertNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for CertName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for CertName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_mesh_identities() {
        for name in [
            "remote-c1",
            "admin-c2",
            "local-cluster-9",
            "apiserver.c1.mesh",
            "a",
        ] {
            assert_eq!(CertName::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn rejects_names_unfit_for_files_or_common_names() {
        for name in [
            "",
            "ca",
            "Remote-c1",
            "-c1",
            "c1-",
            "c1/../x",
            "c 1",
            "c_1",
            ".hidden",
            &"a".repeat(65),
        ] {
            assert!(CertName::new(name).is_err(), "{name:?} was accepted");
        }
    }

    #[test]
    fn error_names_the_input() {
        let err = CertName::new("Bad/Name").unwrap_err().to_string();
        assert!(err.contains("\"Bad/Name\""), "{err}");
    }
}
