//! The files one cluster hands to others (`clustermesh cluster export`).
//!
//! A [`ClusterDescriptor`] says what another cluster needs to connect to
//! this one and holds nothing secret: name, ID, mesh size, where the
//! apiserver is, and the CA bundle that signs the apiserver's certificate
//! (and that its clients' certificates must chain to). A
//! [`ClusterAdminDescriptor`] is the same plus what the cluster's own
//! administrator needs to change it: the `admin-<cluster>` client
//! certificate of the apiserver, and the etcd endpoints with their CA and
//! the etcd admin's client certificate. It is secret (written with mode
//! 0600).
//!
//! Both are YAML with `version: 1` and a `kind`; unknown fields are refused,
//! and every value is checked on reading (name, ID range, endpoints, that
//! each PEM holds what it should).

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde::{Deserialize, Serialize};

use crate::cluster_spec::{HostPort, SpecError, validate_cluster};

/// The one format version this code reads and writes.
pub const DESCRIPTOR_VERSION: u32 = 1;

/// Why a descriptor is refused.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    #[error("not a descriptor (YAML)")]
    Yaml(#[source] serde_norway::Error),
    #[error("unsupported descriptor version {0} (this clustermesh reads version 1)")]
    Version(u32),
    #[error("the file is a {found}, expected a {expected}")]
    Kind {
        found: String,
        expected: &'static str,
    },
    #[error("invalid cluster")]
    Cluster(#[source] SpecError),
    #[error("no apiserver endpoint")]
    NoApiserverEndpoint,
    #[error("invalid apiserver endpoint {endpoint:?}: {reason}")]
    ApiserverEndpoint {
        endpoint: String,
        reason: &'static str,
    },
    #[error("invalid {field}: {reason}")]
    Pem { field: &'static str, reason: String },
    #[error("invalid etcd: {0}")]
    Etcd(&'static str),
}

/// What another cluster needs to connect to this one. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterDescriptor {
    /// Always [`DESCRIPTOR_VERSION`].
    pub version: u32,
    /// Always `ClusterDescriptor`.
    pub kind: String,
    pub name: String,
    pub id: u32,
    pub max_connected_clusters: u32,
    /// `https://host:port` URLs of the apiserver.
    pub apiserver_endpoints: Vec<String>,
    /// PEM: the CA certificate(s) the apiserver's certificate chains to,
    /// which also issue the clients it accepts.
    pub ca_bundle: String,
    /// The pools the cluster's pods take addresses from (its operator's
    /// `--pod-cidr-pool`); `connect` checks that they do not overlap the
    /// peer's, and the peer's agents route its nodes only inside them.
    /// Empty when nodes bring their own pod CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_cidr_pools: Vec<ipnet::IpNet>,
}

/// What the cluster's administrator needs. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterAdminDescriptor {
    /// Always [`DESCRIPTOR_VERSION`].
    pub version: u32,
    /// Always `ClusterAdminDescriptor`.
    pub kind: String,
    pub name: String,
    pub id: u32,
    pub max_connected_clusters: u32,
    pub apiserver_endpoints: Vec<String>,
    pub ca_bundle: String,
    /// See [`ClusterDescriptor::pod_cidr_pools`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_cidr_pools: Vec<ipnet::IpNet>,
    /// The `admin-<cluster>` client certificate and key of the apiserver.
    pub admin: ClientCert,
    /// The cluster's etcd, as its administrator reaches it.
    pub etcd: EtcdAccess,
}

/// A client certificate and its key, PEM.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClientCert {
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCert")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

/// How to reach a cluster's etcd as its administrator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EtcdAccess {
    /// `http://` or `https://` URLs.
    pub endpoints: Vec<String>,
    /// PEM CA bundle of etcd's server certificate (https only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// The etcd admin's client certificate (when etcd wants one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientCert>,
}

impl ClusterDescriptor {
    pub const KIND: &str = "ClusterDescriptor";

    /// Parses and validates a descriptor.
    pub fn from_yaml(text: &str) -> Result<Self, DescriptorError> {
        parse(text, Self::KIND, Self::validate)
    }

    pub fn to_yaml(&self) -> String {
        to_yaml(self)
    }

    /// Checks every field (see the module docs).
    pub fn validate(&self) -> Result<(), DescriptorError> {
        check_version_kind(self.version, &self.kind, Self::KIND)?;
        validate_public(
            &self.name,
            self.id,
            self.max_connected_clusters,
            &self.apiserver_endpoints,
            &self.ca_bundle,
        )
    }
}

impl ClusterAdminDescriptor {
    pub const KIND: &str = "ClusterAdminDescriptor";

    /// Parses and validates an admin descriptor.
    pub fn from_yaml(text: &str) -> Result<Self, DescriptorError> {
        parse(text, Self::KIND, Self::validate)
    }

    pub fn to_yaml(&self) -> String {
        to_yaml(self)
    }

    /// The public part: what to give other clusters.
    pub fn cluster(&self) -> ClusterDescriptor {
        ClusterDescriptor {
            version: DESCRIPTOR_VERSION,
            kind: ClusterDescriptor::KIND.to_owned(),
            name: self.name.clone(),
            id: self.id,
            max_connected_clusters: self.max_connected_clusters,
            apiserver_endpoints: self.apiserver_endpoints.clone(),
            ca_bundle: self.ca_bundle.clone(),
            pod_cidr_pools: self.pod_cidr_pools.clone(),
        }
    }

    /// Checks every field: the public part, the admin certificate (a
    /// client certificate named `admin-<name>` issued by a CA of the
    /// bundle, with a key) and the etcd access.
    pub fn validate(&self) -> Result<(), DescriptorError> {
        check_version_kind(self.version, &self.kind, Self::KIND)?;
        validate_public(
            &self.name,
            self.id,
            self.max_connected_clusters,
            &self.apiserver_endpoints,
            &self.ca_bundle,
        )?;
        let cas = ca_subjects("ca-bundle", &self.ca_bundle)?;
        validate_client(
            "admin",
            &self.admin,
            Some(&format!("admin-{}", self.name)),
            &cas,
        )?;
        let etcd = &self.etcd;
        if etcd.endpoints.is_empty() {
            return Err(DescriptorError::Etcd("no endpoint"));
        }
        let mut https = None;
        for e in &etcd.endpoints {
            let endpoint = crate::cluster_spec::EtcdEndpoint::parse(e).map_err(|_| {
                DescriptorError::Etcd("endpoints are http://host:port or https://host:port")
            })?;
            if *https.get_or_insert(endpoint.https) != endpoint.https {
                return Err(DescriptorError::Etcd(
                    "the endpoints mix http:// and https://",
                ));
            }
        }
        match (https == Some(true), &etcd.ca_bundle, &etcd.client) {
            (true, None, _) => Err(DescriptorError::Etcd("https:// endpoints need a ca-bundle")),
            (false, Some(_), _) | (false, _, Some(_)) => Err(DescriptorError::Etcd(
                "a ca-bundle and a client certificate need https:// endpoints",
            )),
            (true, Some(bundle), client) => {
                let cas = ca_subjects("etcd.ca-bundle", bundle)?;
                if let Some(client) = client {
                    validate_client("etcd.client", client, None, &cas)?;
                }
                Ok(())
            }
            (false, None, None) => Ok(()),
        }
    }
}

/// Reads `version` and `kind` first, so that a descriptor of another kind
/// or version is named as such rather than as an unknown field.
/// Reads a descriptor of `kind` from YAML and checks it with `validate`.
fn parse<D: serde::de::DeserializeOwned>(
    text: &str,
    kind: &'static str,
    validate: impl Fn(&D) -> Result<(), DescriptorError>,
) -> Result<D, DescriptorError> {
    check_header(text, kind)?;
    let d: D = serde_norway::from_str(text).map_err(DescriptorError::Yaml)?;
    validate(&d)?;
    Ok(d)
}

fn to_yaml(d: &impl Serialize) -> String {
    serde_norway::to_string(d).expect("a descriptor serializes")
}

fn check_header(text: &str, expected: &'static str) -> Result<(), DescriptorError> {
    #[derive(Deserialize)]
    struct Header {
        version: Option<u32>,
        kind: Option<String>,
    }
    let header: Header = serde_norway::from_str(text).map_err(DescriptorError::Yaml)?;
    if let Some(version) = header.version
        && version != DESCRIPTOR_VERSION
    {
        return Err(DescriptorError::Version(version));
    }
    match header.kind {
        Some(kind) if kind != expected => Err(DescriptorError::Kind {
            found: kind,
            expected,
        }),
        _ => Ok(()),
    }
}

fn check_version_kind(
    version: u32,
    kind: &str,
    expected: &'static str,
) -> Result<(), DescriptorError> {
    if version != DESCRIPTOR_VERSION {
        return Err(DescriptorError::Version(version));
    }
    if kind != expected {
        return Err(DescriptorError::Kind {
            found: kind.to_owned(),
            expected,
        });
    }
    Ok(())
}

fn validate_public(
    name: &str,
    id: u32,
    max_connected_clusters: u32,
    apiserver_endpoints: &[String],
    ca_bundle: &str,
) -> Result<(), DescriptorError> {
    validate_cluster(name, id, max_connected_clusters).map_err(DescriptorError::Cluster)?;
    if apiserver_endpoints.is_empty() {
        return Err(DescriptorError::NoApiserverEndpoint);
    }
    for endpoint in apiserver_endpoints {
        let bad = |reason| DescriptorError::ApiserverEndpoint {
            endpoint: endpoint.clone(),
            reason,
        };
        let rest = endpoint
            .strip_prefix("https://")
            .ok_or_else(|| bad("use https://host:port"))?;
        HostPort::parse(rest).map_err(bad)?;
    }
    ca_subjects("ca-bundle", ca_bundle)?;
    Ok(())
}

/// The subjects of the CA certificates of a PEM bundle; refused when it
/// holds none or a certificate that is not a CA.
fn ca_subjects(field: &'static str, pem: &str) -> Result<Vec<String>, DescriptorError> {
    let certs = certificates(field, pem)?;
    certs
        .iter()
        .map(|info| {
            if info.is_ca {
                Ok(info.subject.clone())
            } else {
                Err(DescriptorError::Pem {
                    field,
                    reason: format!("{} is not a CA certificate", info.subject),
                })
            }
        })
        .collect()
}

fn certificates(
    field: &'static str,
    pem: &str,
) -> Result<Vec<certs::CertificateInfo>, DescriptorError> {
    let bad = |reason: String| DescriptorError::Pem { field, reason };
    let ders = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM: {e}")))?;
    if ders.is_empty() {
        return Err(bad("no PEM certificate".into()));
    }
    ders.iter()
        .map(|der| certs::CertificateInfo::from_der(der).map_err(|e| bad(e.to_string())))
        .collect()
}

/// A client certificate issued by one of `cas` (by subject), named
/// `common_name` when given, with a PEM key.
fn validate_client(
    field: &'static str,
    client: &ClientCert,
    common_name: Option<&str>,
    cas: &[String],
) -> Result<(), DescriptorError> {
    let bad = |reason: String| DescriptorError::Pem { field, reason };
    let certs = certificates(field, &client.cert)?;
    let leaf = &certs[0];
    if leaf.is_ca || !leaf.client_auth {
        return Err(bad(format!("{} is not a client certificate", leaf.subject)));
    }
    if let Some(cn) = common_name
        && leaf.common_name.as_deref() != Some(cn)
    {
        return Err(bad(format!(
            "the certificate is {}, expected common name {cn}",
            leaf.subject
        )));
    }
    if !cas.contains(&leaf.issuer) {
        return Err(bad(format!(
            "the certificate was issued by {}, which is not in the CA bundle",
            leaf.issuer
        )));
    }
    PrivateKeyDer::from_pem_slice(client.key.as_bytes())
        .map_err(|e| bad(format!("key: not a PEM private key: {e}")))?;
    Ok(())
}
