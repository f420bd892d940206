//! Mesh PKI: the certificates that let clusters, agents and operators talk
//! mutual TLS to each other, and the rustls configurations that use them.
//!
//! - Issuance: [`Ca`] creates a mesh (or per-cluster) CA and signs server
//!   certificates for the `clustermesh-apiserver` ([`Ca::issue_server`]) and client
//!   certificates whose common name is the caller's identity, by convention
//!   `remote-<cluster>`, `admin-<cluster>` or `local-<cluster>`
//!   ([`Ca::issue_client`]). Files are written atomically, keys with mode 0600.
//! - Serving and connecting: [`ServerTls`] and [`ClientTls`] own a certificate,
//!   its key and a CA bundle ([`TlsFiles`]) and hand out rustls configurations
//!   that always use the current material. Their `run` method watches the files
//!   (including the `..data` symlink swap of Kubernetes secrets) and reloads them:
//!   new handshakes use the new material, established connections are untouched,
//!   and a broken file is logged and ignored.
//! - Authorization: [`peer_common_name`] gives the CN of the verified peer.
//! - Other TLS stacks (e.g. `etcd-client`, which takes PEM bytes):
//!   [`TlsMaterial::load`] validates the files and returns their PEM bytes.
//! - Monitoring: [`TlsMetrics`] exports seconds until expiry of every loaded
//!   certificate and reload counters to a `prometheus_client` registry.
//!
//! All TLS uses rustls with the `ring` provider, chosen explicitly, so that no
//! process-wide default provider has to be installed. Do not use this crate for
//! public web PKI: it trusts only the CA bundles it is given.

mod ca;
mod cert_name;
mod certificate_info;
mod client_tls;
mod config;
mod dir_watcher;
mod issued_cert;
mod metrics;
mod pem_file;
mod reloader;
mod server_tls;
mod tls_files;
mod tls_handle;
mod tls_listener;
mod tls_material;
mod validity;

use std::sync::{Arc, LazyLock};

use rustls::crypto::CryptoProvider;

pub use crate::{
    ca::{Ca, CaError},
    cert_name::{CertName, CertNameError},
    certificate_info::{CertificateInfo, CertificateInfoError, peer_common_name},
    client_tls::ClientTls,
    config::Config,
    dir_watcher::{WatchError, may_change_content},
    issued_cert::IssuedCert,
    metrics::TlsMetrics,
    pem_file::{WriteError, write_atomically},
    server_tls::ServerTls,
    tls_files::TlsFiles,
    tls_handle::{ReloadStats, TlsHandle},
    tls_listener::{HandshakeFailed, PeerInfo, PeerStream, TlsListener},
    tls_material::{LoadError, TlsMaterial},
    validity::{Validity, ValidityError},
};

/// The one crypto provider of the mesh. Passed explicitly everywhere so that a
/// second provider compiled into the same binary (another crate enabling
/// rustls' aws-lc-rs feature) cannot make `ServerConfig::builder()` ambiguous.
pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: LazyLock<Arc<CryptoProvider>> =
        LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));
    PROVIDER.clone()
}
