//! The mesh's certificates: one CA, and per cluster the apiserver's server
//! certificate, an `admin-<cluster>` and a `remote-<cluster>` client
//! certificate, the Hubble servers' certificate and the Hubble relay's
//! client certificate; per cluster also a CA of its own for its etcd, so that only
//! that cluster's components and its admin reach it (a certificate of the
//! mesh CA, another cluster's included, is refused).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use certs::{Ca, CertName, Validity};

use crate::state::{ClusterCerts, EtcdCerts, HubbleCerts};

/// How long the mesh's CAs are valid.
const CA_VALIDITY_DAYS: u32 = 3650;
/// How long the certificates they issue are valid.
const CERT_VALIDITY_DAYS: u32 = 365;

/// Creates the mesh CA in `dir` (or loads it when present).
/// The Hubble UI's client certificate towards every cluster's relay
/// (`hubble-ui`, issued by the mesh CA into `dir`): certificate and key.
pub(crate) fn hubble_ui(ca: &Ca, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let issued = ca
        .issue_client(
            &CertName::new("hubble-ui")?,
            Validity::days(CERT_VALIDITY_DAYS)?,
        )?
        .write(dir)?;
    Ok((issued.cert, issued.key))
}

pub(crate) fn ca(dir: &Path) -> Result<Ca> {
    load_or_generate(dir, "clustermesh local mesh CA", "the mesh CA")
}

/// Loads the CA in `dir`, or generates one named `common_name` and writes
/// it there; `what` names it in errors.
fn load_or_generate(dir: &Path, common_name: &str, what: &str) -> Result<Ca> {
    if Ca::exists_in(dir) {
        return Ca::load(dir).with_context(|| format!("load {what}"));
    }
    let ca = Ca::generate(common_name, Validity::days(CA_VALIDITY_DAYS)?)
        .with_context(|| format!("generate {what}"))?;
    ca.write(dir).with_context(|| format!("write {what}"))?;
    Ok(ca)
}

/// Issues a cluster's certificates into `dir`.
pub(crate) fn cluster(
    ca: &Ca,
    ca_path: &Path,
    dir: &Path,
    cluster: &str,
    apiserver_ip: IpAddr,
) -> Result<ClusterCerts> {
    std::fs::create_dir_all(dir)?;
    let validity = Validity::days(CERT_VALIDITY_DAYS)?;
    let server = ca.issue_server(
        &CertName::new(format!("clustermesh-apiserver-{cluster}"))?,
        &[
            "clustermesh-apiserver.cilium.io".to_string(),
            format!("{cluster}.mesh.cilium.io"),
        ],
        &[apiserver_ip, IpAddr::from([127, 0, 0, 1])],
        validity,
    )?;
    let server_files = server.write(dir)?;
    let admin = ca
        .issue_client(&CertName::new(format!("admin-{cluster}"))?, validity)?
        .write(dir)?;
    let remote = ca
        .issue_client(&CertName::new(format!("remote-{cluster}"))?, validity)?
        .write(dir)?;
    let hubble_server = ca
        .issue_server(
            &CertName::new(format!("hubble-server-{cluster}"))?,
            &[hubble::names::server_cert_wildcard(cluster)],
            &[],
            validity,
        )?
        .write(dir)?;
    let hubble_relay = ca
        .issue_client(&CertName::new(format!("hubble-relay-{cluster}"))?, validity)?
        .write(dir)?;
    Ok(ClusterCerts {
        server_cert: server_files.cert,
        server_key: server_files.key,
        admin_cert: admin.cert,
        admin_key: admin.key,
        remote_cert: remote.cert,
        remote_key: remote.key,
        ca: ca_path.to_path_buf(),
        hubble: Some(HubbleCerts {
            server_cert: hubble_server.cert,
            server_key: hubble_server.key,
            relay_client_cert: hubble_relay.cert,
            relay_client_key: hubble_relay.key,
        }),
    })
}

/// Issues the `local-<cluster>` client certificate (the agents' reader of
/// the kvstoremesh cache on their own apiserver) into `dir`: certificate and
/// key.
pub(crate) fn local_reader(ca: &Ca, dir: &Path, cluster: &str) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let issued = ca
        .issue_client(
            &CertName::new(format!("local-{cluster}"))?,
            Validity::days(CERT_VALIDITY_DAYS)?,
        )?
        .write(dir)?;
    Ok((issued.cert, issued.key))
}

/// Issues a cluster's etcd CA, server and client certificates into `dir`.
pub(crate) fn etcd(dir: &Path, cluster: &str, etcd_ip: IpAddr) -> Result<EtcdCerts> {
    let ca_dir = dir.join("etcd-ca");
    let ca = load_or_generate(
        &ca_dir,
        &format!("etcd CA of cluster {cluster}"),
        "the etcd CA",
    )?;
    let validity = Validity::days(CERT_VALIDITY_DAYS)?;
    let server = ca
        .issue_server(
            &CertName::new(format!("etcd-{cluster}"))?,
            &["localhost".to_string()],
            &[etcd_ip, IpAddr::from([127, 0, 0, 1])],
            validity,
        )?
        .write(dir)?;
    let components = ca
        .issue_client(
            &CertName::new(format!("etcd-components-{cluster}"))?,
            validity,
        )?
        .write(dir)?;
    let admin = ca
        .issue_client(&CertName::new(format!("etcd-admin-{cluster}"))?, validity)?
        .write(dir)?;
    Ok(EtcdCerts {
        ca: ca_dir.join("ca.crt"),
        server_cert: server.cert,
        server_key: server.key,
        client_cert: components.cert,
        client_key: components.key,
        admin_cert: admin.cert,
        admin_key: admin.key,
    })
}
