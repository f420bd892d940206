//! The certificates of one cluster's Hubble, from a CA of their own, named
//! as Cilium names them: the nodes' servers (`*.<cluster>.hubble-grpc.cilium.io`),
//! the relay's server (`*.hubble-relay.cilium.io`), the relay's client
//! certificate towards the nodes, and a user's (the CLI's) towards the relay.
//!
//! For tests and benchmarks that run servers and a relay on one machine;
//! a mesh issues its certificates from the mesh CA instead.

use std::path::{Path, PathBuf};

use certs::{Ca, CaError, CertName, CertNameError, TlsFiles, Validity, ValidityError, WriteError};

use crate::names::server_cert_wildcard;

/// The DNS name a relay's server certificate carries.
pub const RELAY_CERT_WILDCARD: &str = "*.hubble-relay.cilium.io";

/// The name clients ask a relay for (matches [`RELAY_CERT_WILDCARD`]).
pub const RELAY_SERVER_NAME: &str = "relay.hubble-relay.cilium.io";

/// Issuing or writing a certificate failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("invalid certificate validity")]
    Validity(#[from] ValidityError),
    #[error("invalid certificate name")]
    Name(#[from] CertNameError),
    #[error("cannot issue the Hubble certificates")]
    Issue(#[from] CaError),
    #[error("cannot write the Hubble certificates")]
    Write(#[from] WriteError),
}

/// See the module documentation. Every [`TlsFiles`] names the CA as the
/// bundle to trust.
#[derive(Debug, Clone)]
pub struct HubblePki {
    /// The CA certificate (`ca.crt`).
    pub ca: PathBuf,
    /// Every node's Hubble server.
    pub node_server: TlsFiles,
    /// The relay, towards the nodes.
    pub relay_client: TlsFiles,
    /// The relay's own listener.
    pub relay_server: TlsFiles,
    /// A user (the CLI), towards the relay.
    pub user: TlsFiles,
}

impl HubblePki {
    /// Generates a CA and issues the certificates of `cluster`'s Hubble into
    /// `dir`, valid for a day.
    pub fn issue(dir: &Path, cluster: &str) -> Result<Self, PkiError> {
        let ca = Ca::generate("hubble test CA", Validity::days(2)?)?;
        ca.write(dir)?;
        let ca_file = dir.join(Ca::CERT_FILE);
        let day = Validity::days(1)?;
        let with_ca = |issued: TlsFiles| TlsFiles::new(issued.cert, issued.key, ca_file.clone());
        let server = |name: &str, dns: &str| -> Result<TlsFiles, PkiError> {
            let issued = ca.issue_server(&CertName::new(name)?, &[dns.to_owned()], &[], day)?;
            Ok(with_ca(issued.write(dir)?))
        };
        let client = |name: &str| -> Result<TlsFiles, PkiError> {
            let issued = ca.issue_client(&CertName::new(name)?, day)?;
            Ok(with_ca(issued.write(dir)?))
        };
        Ok(Self {
            node_server: server(
                &format!("hubble-server-{cluster}"),
                &server_cert_wildcard(cluster),
            )?,
            relay_server: server("hubble-relay-server", RELAY_CERT_WILDCARD)?,
            relay_client: client("hubble-relay-client")?,
            user: client("hubble-user")?,
            ca: ca_file,
        })
    }
}
