use std::path::{Path, PathBuf};

use crate::{Ca, CertName};

/// Where one TLS identity lives: a certificate (optionally followed by its
/// chain), its private key, and the bundle of CAs trusted to sign the peer.
///
/// The bundle may hold several CAs: one per cluster of a mesh whose clusters
/// have their own CAs, or the old and the new CA while a CA is being rotated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca_bundle: PathBuf,
}

impl TlsFiles {
    pub fn new(
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        ca_bundle: impl Into<PathBuf>,
    ) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            ca_bundle: ca_bundle.into(),
        }
    }

    /// The layout `clustermesh certs` writes: `DIR/NAME.crt`, `DIR/NAME.key` and
    /// `DIR/ca.crt`.
    pub fn in_dir(dir: &Path, name: &CertName) -> Self {
        Self::new(
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
            dir.join(Ca::CERT_FILE),
        )
    }

    /// The three paths, certificate first.
    pub fn paths(&self) -> [&Path; 3] {
        [&self.cert, &self.key, &self.ca_bundle]
    }
}
