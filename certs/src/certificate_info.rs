use std::{
    fmt::Write as _,
    fs, io,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rustls_pki_types::{CertificateDer, pem::PemObject};
use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer};

/// What a certificate says about itself, for display (`clustermesh certs show`,
/// `status`), metrics and authorization decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Subject distinguished name, e.g. `CN=remote-c1, O=clustermesh`.
    pub subject: String,
    /// The subject's first common name.
    pub common_name: Option<String>,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Serial number, hex bytes separated by `:`.
    pub serial: String,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP address subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Basic constraints say this is a CA.
    pub is_ca: bool,
    /// Extended key usage allows TLS server authentication.
    pub server_auth: bool,
    /// Extended key usage allows TLS client authentication.
    pub client_auth: bool,
}

/// Why a certificate could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum CertificateInfoError {
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a PEM certificate file: {reason}")]
    ParsePem { path: PathBuf, reason: String },
    #[error("{path} contains no certificate")]
    NoCertificate { path: PathBuf },
    #[error("failed to parse certificate: {reason}")]
    ParseDer { reason: String },
}

impl CertificateInfo {
    /// Parses one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, CertificateInfoError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|err| CertificateInfoError::ParseDer {
                reason: err.to_string(),
            })?;
        Ok(Self::from_parsed(&cert))
    }

    /// Parses every certificate of a PEM file (a leaf, a chain or a CA bundle),
    /// in file order.
    pub fn from_pem_file(path: &Path) -> Result<Vec<Self>, CertificateInfoError> {
        let pem = fs::read(path).map_err(|source| CertificateInfoError::Read {
            path: path.to_owned(),
            source,
        })?;
        let ders = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| CertificateInfoError::ParsePem {
                path: path.to_owned(),
                reason: err.to_string(),
            })?;
        if ders.is_empty() {
            return Err(CertificateInfoError::NoCertificate {
                path: path.to_owned(),
            });
        }
        ders.iter()
            .map(|der| {
                Self::from_der(der).map_err(|err| CertificateInfoError::ParsePem {
                    path: path.to_owned(),
                    reason: err.to_string(),
                })
            })
            .collect()
    }

    pub(crate) fn from_parsed(cert: &X509Certificate<'_>) -> Self {
        let mut dns_names = Vec::new();
        let mut ip_addresses = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_from_bytes(bytes) {
                            ip_addresses.push(ip);
                        }
                    }
                    _ => {}
                }
            }
        }
        let (server_auth, client_auth) = match cert.extended_key_usage() {
            Ok(Some(eku)) => (
                eku.value.any || eku.value.server_auth,
                eku.value.any || eku.value.client_auth,
            ),
            // No extension: any usage.
            _ => (true, true),
        };
        let serial = cert
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        Self {
            subject: cert.subject().to_string(),
            common_name: common_name(cert),
            issuer: cert.issuer().to_string(),
            serial,
            dns_names,
            ip_addresses,
            not_before: to_system_time(cert.validity().not_before.timestamp()),
            not_after: to_system_time(cert.validity().not_after.timestamp()),
            is_ca: cert.is_ca(),
            server_auth,
            client_auth,
        }
    }

    /// Seconds from `now` until not-after; negative once expired.
    pub fn seconds_left(&self, now: SystemTime) -> i64 {
        signed_seconds(self.not_after, now)
    }

    /// Whole days from `now` until not-after, rounded down; negative once expired.
    pub fn days_left(&self, now: SystemTime) -> i64 {
        self.seconds_left(now).div_euclid(86_400)
    }

    /// `now` lies inside the validity window.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// Not-before as RFC 3339 UTC, e.g. `2026-11-26T09:23:00Z`.
    pub fn not_before_rfc3339(&self) -> String {
        rfc3339(self.not_before)
    }

    /// Not-after as RFC 3339 UTC.
    pub fn not_after_rfc3339(&self) -> String {
        rfc3339(self.not_after)
    }
}

/// The common name of a peer's end-entity certificate (the first of the chain
/// rustls hands out after a verified handshake), which is the peer's identity
/// in the mesh: `remote-<cluster>`, `admin-<cluster>`, …
///
/// `None` when there is no certificate, it does not parse, or it has no CN.
pub fn peer_common_name(certs: &[CertificateDer<'_>]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(certs.first()?).ok()?;
    common_name(&cert)
}

fn common_name(cert: &X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

fn to_system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

fn signed_seconds(later: SystemTime, earlier: SystemTime) -> i64 {
    match later.duration_since(earlier) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Formats a time as RFC 3339 UTC with second resolution.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let secs = signed_seconds(time, UNIX_EPOCH);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant, "chrono-Compatible
    // Low-Level Date Algorithms").
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = String::with_capacity(20);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_684_980)),
            "2026-11-26T09:23:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(1)),
            "1969-12-31T23:59:59Z"
        );
    }

    #[test]
    fn days_left_rounds_down_and_goes_negative() {
        let now = SystemTime::now();
        let info = |not_after| CertificateInfo {
            subject: String::new(),
            common_name: None,
            issuer: String::new(),
            serial: String::new(),
            dns_names: vec![],
            ip_addresses: vec![],
            not_before: UNIX_EPOCH,
            not_after,
            is_ca: false,
            server_auth: true,
            client_auth: true,
        };
        assert_eq!(
            info(now + Duration::from_secs(86_400 * 2 - 10)).days_left(now),
            1
        );
        assert_eq!(info(now - Duration::from_secs(10)).days_left(now), -1);
        assert!(!info(now - Duration::from_secs(10)).is_valid_at(now));
    }

    #[test]
    fn no_certificate_means_no_peer_name() {
        assert_eq!(peer_common_name(&[]), None);
        assert_eq!(
            peer_common_name(&[CertificateDer::from(vec![1, 2, 3])]),
            None
        );
    }
}
