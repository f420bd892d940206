use std::{fmt, path::Path};

use rustls_pki_types::CertificateDer;

use crate::{
    CertName, CertificateInfo, CertificateInfoError, TlsFiles, WriteError,
    pem_file::{CERT_MODE, KEY_MODE, create_dir, write_atomic},
};

/// A freshly issued leaf certificate and its private key, both PEM.
pub struct IssuedCert {
    name: CertName,
    cert_pem: String,
    key_pem: String,
    cert_der: CertificateDer<'static>,
}

impl IssuedCert {
    pub(crate) fn new(
        name: CertName,
        cert_pem: String,
        key_pem: String,
        cert_der: CertificateDer<'static>,
    ) -> Self {
        Self {
            name,
            cert_pem,
            key_pem,
            cert_der,
        }
    }

    /// The certificate's name (its common name).
    pub fn name(&self) -> &CertName {
        &self.name
    }

    /// The certificate as PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key as PKCS#8 PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The certificate as DER.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// What the certificate says.
    pub fn info(&self) -> Result<CertificateInfo, CertificateInfoError> {
        CertificateInfo::from_der(&self.cert_der)
    }

    /// Writes `NAME.key` (mode 0600) and `NAME.crt` into `dir`, creating it if
    /// needed, and returns the files with `dir/ca.crt` as the CA bundle.
    pub fn write(&self, dir: &Path) -> Result<TlsFiles, WriteError> {
        create_dir(dir)?;
        let files = TlsFiles::in_dir(dir, &self.name);
        self.write_to(&files.cert, &files.key)?;
        Ok(files)
    }

    /// Writes the key (mode 0600) then the certificate, each replaced
    /// atomically. A watcher that reacts to the certificate sees the new key.
    pub fn write_to(&self, cert: &Path, key: &Path) -> Result<(), WriteError> {
        write_atomic(key, self.key_pem.as_bytes(), KEY_MODE)?;
        write_atomic(cert, self.cert_pem.as_bytes(), CERT_MODE)
    }
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
