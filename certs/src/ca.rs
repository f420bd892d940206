use std::{
    fmt, fs, io,
    net::IpAddr,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, string::Ia5String,
};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use x509_parser::{certificate::X509Certificate, prelude::FromDer};

use crate::{
    CertName, CertificateInfo, IssuedCert, Validity, WriteError,
    certificate_info::rfc3339,
    pem_file::{CERT_MODE, KEY_MODE, create_dir, write_atomic},
};

/// Organization written into every subject we issue.
const ORGANIZATION: &str = "clustermesh";

/// A certificate authority that signs the mesh's server and client
/// certificates: the mesh CA, or one cluster's CA when each cluster has its own
/// and peers trust them through a bundle.
///
/// On disk it is `ca.crt` (public, shared with every peer that must trust it)
/// and `ca.key` (mode 0600, needed only to issue).
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
    info: CertificateInfo,
}

/// Why creating, loading, saving or using a CA failed.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("invalid CA common name {name:?}: must be 1 to 64 characters")]
    InvalidCommonName { name: String },
    #[error("failed to generate the CA")]
    Generate(#[source] rcgen::Error),
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to parse CA certificate {path}: {reason}")]
    ParseCertificate { path: PathBuf, reason: String },
    #[error("failed to parse CA key {path} (a PKCS#8 PEM key is expected)")]
    ParseKey {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("{path} is not a CA certificate (basic constraints do not allow signing)")]
    NotCa { path: PathBuf },
    #[error("CA key {key} does not belong to CA certificate {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("failed to write the CA")]
    Write(#[from] WriteError),
    #[error("invalid DNS name {name:?} for certificate {cert}")]
    InvalidDnsName { cert: CertName, name: String },
    #[error("server certificate {cert} needs at least one DNS name or IP address")]
    NoSubjectAltName { cert: CertName },
    #[error(
        "certificate {cert} would be valid until {not_after}, after its CA expires ({ca_not_after}); issue it for fewer days or rotate the CA"
    )]
    OutlivesCa {
        cert: CertName,
        not_after: String,
        ca_not_after: String,
    },
    #[error("failed to issue certificate {cert}")]
    Issue {
        cert: CertName,
        #[source]
        source: rcgen::Error,
    },
}

impl Ca {
    /// File name of the CA certificate inside a CA directory.
    pub const CERT_FILE: &str = "ca.crt";
    /// File name of the CA key inside a CA directory.
    pub const KEY_FILE: &str = "ca.key";
    /// Common name of a CA made by `clustermesh certs init` without `--common-name`.
    pub const DEFAULT_COMMON_NAME: &str = "clustermesh-ca";

    /// Creates a new CA (ECDSA P-256 key, self-signed) that may sign leaf
    /// certificates only (path length 0).
    pub fn generate(common_name: &str, validity: Validity) -> Result<Self, CaError> {
        if common_name.is_empty() || common_name.chars().count() > CertName::MAX_LEN {
            return Err(CaError::InvalidCommonName {
                name: common_name.to_owned(),
            });
        }
        let key = KeyPair::generate().map_err(CaError::Generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(common_name);
        params.not_before = validity.not_before().into();
        params.not_after = validity.not_after().into();
        params.serial_number = Some(random_serial());
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(CaError::Generate)?;
        let cert_der = cert.der().clone();
        let info =
            CertificateInfo::from_der(&cert_der).map_err(|err| CaError::ParseCertificate {
                path: PathBuf::from("<generated>"),
                reason: err.to_string(),
            })?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der,
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
            info,
        })
    }

    /// Loads `ca.crt` and `ca.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        Self::load_files(&dir.join(Self::CERT_FILE), &dir.join(Self::KEY_FILE))
    }

    /// Loads a CA from its certificate and key files, checking that the
    /// certificate is a CA and that the key is its key.
    pub fn load_files(cert_path: &Path, key_path: &Path) -> Result<Self, CaError> {
        let read = |path: &Path| {
            fs::read_to_string(path).map_err(|source| CaError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        let parse_err = |reason: String| CaError::ParseCertificate {
            path: cert_path.to_owned(),
            reason,
        };
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|err| parse_err(err.to_string()))?;
        let (_, parsed) =
            X509Certificate::from_der(&cert_der).map_err(|err| parse_err(err.to_string()))?;
        if !parsed.is_ca() {
            return Err(CaError::NotCa {
                path: cert_path.to_owned(),
            });
        }
        let key = KeyPair::from_pem(&key_pem).map_err(|source| CaError::ParseKey {
            path: key_path.to_owned(),
            source,
        })?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            });
        }
        let info = CertificateInfo::from_parsed(&parsed);
        let issuer =
            Issuer::from_ca_cert_der(&cert_der, key).map_err(|err| parse_err(err.to_string()))?;
        Ok(Self {
            cert_pem,
            cert_der: cert_der.into_owned(),
            key_pem,
            issuer,
            info,
        })
    }

    /// `dir` holds a CA certificate or key (so that `init` does not overwrite one
    /// by accident).
    pub fn exists_in(dir: &Path) -> bool {
        dir.join(Self::CERT_FILE).exists() || dir.join(Self::KEY_FILE).exists()
    }

    /// Writes `ca.key` (mode 0600) and `ca.crt` into `dir`, creating it if
    /// needed. Each file is replaced atomically.
    pub fn write(&self, dir: &Path) -> Result<(), CaError> {
        create_dir(dir)?;
        write_atomic(&dir.join(Self::KEY_FILE), self.key_pem.as_bytes(), KEY_MODE)?;
        write_atomic(
            &dir.join(Self::CERT_FILE),
            self.cert_pem.as_bytes(),
            CERT_MODE,
        )?;
        Ok(())
    }

    /// The CA certificate as PEM; concatenate several into one file to trust
    /// several CAs.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA key as PEM (PKCS#8), for writers that place the files
    /// themselves; [`Ca::write`] writes it with mode 0600.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The CA certificate as DER.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// What the CA certificate says.
    pub fn info(&self) -> &CertificateInfo {
        &self.info
    }

    /// Issues a server certificate (extended key usage `serverAuth`) with common
    /// name `name` and the given DNS and IP subject alternative names, which
    /// clients check against the address they dial. At least one is required.
    pub fn issue_server(
        &self,
        name: &CertName,
        dns_names: &[String],
        ip_addresses: &[IpAddr],
        validity: Validity,
    ) -> Result<IssuedCert, CaError> {
        if dns_names.is_empty() && ip_addresses.is_empty() {
            return Err(CaError::NoSubjectAltName { cert: name.clone() });
        }
        let mut sans = Vec::with_capacity(dns_names.len() + ip_addresses.len());
        for dns in dns_names {
            sans.push(SanType::DnsName(dns_name(name, dns)?));
        }
        sans.extend(ip_addresses.iter().copied().map(SanType::IpAddress));
        self.issue(name, sans, ExtendedKeyUsagePurpose::ServerAuth, validity)
    }

    /// Issues a client certificate (extended key usage `clientAuth`) whose common
    /// name `name` is the identity servers authorize, e.g. `remote-c1`.
    pub fn issue_client(&self, name: &CertName, validity: Validity) -> Result<IssuedCert, CaError> {
        self.issue(
            name,
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
            validity,
        )
    }

    fn issue(
        &self,
        name: &CertName,
        subject_alt_names: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
        validity: Validity,
    ) -> Result<IssuedCert, CaError> {
        if validity.not_after() > self.info.not_after {
            return Err(CaError::OutlivesCa {
                cert: name.clone(),
                not_after: rfc3339(validity.not_after()),
                ca_not_after: self.info.not_after_rfc3339(),
            });
        }
        let issue_err = |source| CaError::Issue {
            cert: name.clone(),
            source,
        };
        let key = KeyPair::generate().map_err(issue_err)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(name.as_str());
        params.subject_alt_names = subject_alt_names;
        params.not_before = validity.not_before().into();
        params.not_after = validity.not_after().into();
        params.serial_number = Some(random_serial());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).map_err(issue_err)?;
        Ok(IssuedCert::new(
            name.clone(),
            cert.pem(),
            key.serialize_pem(),
            cert.der().clone(),
        ))
    }
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("subject", &self.info.subject)
            .field("not_after", &self.info.not_after_rfc3339())
            .finish_non_exhaustive()
    }
}

fn subject(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn
}

/// 16 random bytes, the high bit cleared so that the DER integer stays positive
/// without padding. Random rather than derived from the key, so that issuing
/// twice never yields two certificates with one serial.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Checks a DNS subject alternative name: a host name, optionally with a
/// leading `*.` wildcard label.
fn dns_name(cert: &CertName, name: &str) -> Result<Ia5String, CaError> {
    let invalid = || CaError::InvalidDnsName {
        cert: cert.clone(),
        name: name.to_owned(),
    };
    let host = name.strip_prefix("*.").unwrap_or(name);
    if name.parse::<IpAddr>().is_ok() || rustls_pki_types::DnsName::try_from(host).is_err() {
        return Err(invalid());
    }
    Ia5String::try_from(name.to_owned()).map_err(|_| invalid())
}
