use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use rustls::{
    RootCertStore,
    client::WebPkiServerVerifier,
    server::{VerifierBuilderError, WebPkiClientVerifier, danger::ClientCertVerifier},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::{CertificateInfo, TlsFiles, certificate_info::rfc3339, crypto_provider};

/// One TLS identity read from its [`TlsFiles`] and validated: the certificate
/// and CA bundle parse, the key parses and belongs to the certificate, the
/// certificate is valid now and at least one CA of the bundle is.
///
/// It keeps the PEM bytes for TLS stacks that take PEM (e.g. `etcd-client`'s
/// `Identity::from_pem` and `Certificate::from_pem`), and the parsed forms that
/// [`ServerTls`](crate::ServerTls) and [`ClientTls`](crate::ClientTls) use.
pub struct TlsMaterial {
    files: TlsFiles,
    pem: PemBytes,
    certified_key: Arc<CertifiedKey>,
    certificate: CertificateInfo,
    ca_certificates: Vec<CertificateInfo>,
    client_verifier: Arc<dyn ClientCertVerifier>,
    server_verifier: Arc<WebPkiServerVerifier>,
}

/// The raw contents of the three files, compared to tell a real change from a
/// file event that changed nothing.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PemBytes {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

/// Why TLS files could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to parse certificate file {path}: {reason}")]
    ParseCertificate { path: PathBuf, reason: String },
    #[error("{path} contains no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("failed to parse private key {path}: {reason}")]
    ParseKey { path: PathBuf, reason: String },
    #[error("unsupported private key {path}")]
    UnsupportedKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("private key {key} does not belong to certificate {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("certificate {path} is not valid before {not_before}")]
    NotYetValid { path: PathBuf, not_before: String },
    #[error("certificate {path} expired at {not_after}")]
    Expired { path: PathBuf, not_after: String },
    #[error("failed to parse CA bundle {path}: {reason}")]
    ParseCaBundle { path: PathBuf, reason: String },
    #[error("CA bundle {path} contains no PEM certificate")]
    EmptyCaBundle { path: PathBuf },
    #[error("every CA in bundle {path} has expired")]
    CaBundleExpired { path: PathBuf },
    #[error("failed to build a certificate verifier from CA bundle {path}")]
    BuildVerifier {
        path: PathBuf,
        #[source]
        source: VerifierBuilderError,
    },
}

impl TlsMaterial {
    /// Reads and validates `files` at the current time.
    pub fn load(files: &TlsFiles) -> Result<Self, LoadError> {
        Self::from_pem(files, PemBytes::read(files)?, SystemTime::now())
    }

    pub(crate) fn from_pem(
        files: &TlsFiles,
        pem: PemBytes,
        now: SystemTime,
    ) -> Result<Self, LoadError> {
        let chain = parse_certs(&files.cert, &pem.cert, |path, reason| {
            LoadError::ParseCertificate { path, reason }
        })?;
        if chain.is_empty() {
            return Err(LoadError::NoCertificate {
                path: files.cert.clone(),
            });
        }
        let certificate =
            CertificateInfo::from_der(&chain[0]).map_err(|err| LoadError::ParseCertificate {
                path: files.cert.clone(),
                reason: err.to_string(),
            })?;
        if now < certificate.not_before {
            return Err(LoadError::NotYetValid {
                path: files.cert.clone(),
                not_before: certificate.not_before_rfc3339(),
            });
        }
        if now > certificate.not_after {
            return Err(LoadError::Expired {
                path: files.cert.clone(),
                not_after: certificate.not_after_rfc3339(),
            });
        }

        let key = PrivateKeyDer::from_pem_slice(&pem.key).map_err(|err| LoadError::ParseKey {
            path: files.key.clone(),
            reason: err.to_string(),
        })?;
        let provider = crypto_provider();
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|source| LoadError::UnsupportedKey {
                path: files.key.clone(),
                source,
            })?;
        let certified_key = CertifiedKey::new(chain, signing_key);
        if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) =
            certified_key.keys_match()
        {
            return Err(LoadError::KeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            });
        }

        let ca_path = &files.ca_bundle;
        let cas = parse_certs(ca_path, &pem.ca, |path, reason| LoadError::ParseCaBundle {
            path,
            reason,
        })?;
        if cas.is_empty() {
            return Err(LoadError::EmptyCaBundle {
                path: ca_path.clone(),
            });
        }
        let mut roots = RootCertStore::empty();
        let mut ca_certificates = Vec::with_capacity(cas.len());
        for ca in cas {
            let bad_ca = |reason: String| LoadError::ParseCaBundle {
                path: ca_path.clone(),
                reason,
            };
            ca_certificates
                .push(CertificateInfo::from_der(&ca).map_err(|e| bad_ca(e.to_string()))?);
            roots.add(ca).map_err(|e| bad_ca(e.to_string()))?;
        }
        if !ca_certificates.iter().any(|ca| now <= ca.not_after) {
            return Err(LoadError::CaBundleExpired {
                path: ca_path.clone(),
            });
        }
        let roots = Arc::new(roots);
        let verifier_err = |source| LoadError::BuildVerifier {
            path: ca_path.clone(),
            source,
        };
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(verifier_err)?;
        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(verifier_err)?;

        Ok(Self {
            files: files.clone(),
            pem,
            certified_key: Arc::new(certified_key),
            certificate,
            ca_certificates,
            client_verifier,
            server_verifier,
        })
    }

    /// The files this was loaded from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The certificate file's PEM bytes (the certificate and any chain).
    pub fn cert_pem(&self) -> &[u8] {
        &self.pem.cert
    }

    /// The key file's PEM bytes.
    pub fn key_pem(&self) -> &[u8] {
        &self.pem.key
    }

    /// The CA bundle's PEM bytes.
    pub fn ca_pem(&self) -> &[u8] {
        &self.pem.ca
    }

    /// What the (end-entity) certificate says.
    pub fn certificate(&self) -> &CertificateInfo {
        &self.certificate
    }

    /// What each CA of the bundle says, in file order.
    pub fn ca_certificates(&self) -> &[CertificateInfo] {
        &self.ca_certificates
    }

    /// The certificate chain and signing key, as rustls uses them.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified_key
    }

    pub(crate) fn pem(&self) -> &PemBytes {
        &self.pem
    }

    pub(crate) fn client_verifier(&self) -> &Arc<dyn ClientCertVerifier> {
        &self.client_verifier
    }

    pub(crate) fn server_verifier(&self) -> &Arc<WebPkiServerVerifier> {
        &self.server_verifier
    }
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("files", &self.files)
            .field("subject", &self.certificate.subject)
            .field("not_after", &rfc3339(self.certificate.not_after))
            .field("cas", &self.ca_certificates.len())
            .finish_non_exhaustive()
    }
}

impl PemBytes {
    pub(crate) fn read(files: &TlsFiles) -> Result<Self, LoadError> {
        let read = |path: &Path| {
            fs::read(path).map_err(|source| LoadError::Read {
                path: path.to_owned(),
                source,
            })
        };
        Ok(Self {
            cert: read(&files.cert)?,
            key: read(&files.key)?,
            ca: read(&files.ca_bundle)?,
        })
    }
}

fn parse_certs(
    path: &Path,
    pem: &[u8],
    err: impl Fn(PathBuf, String) -> LoadError,
) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(path.to_owned(), e.to_string()))
}
