//! `clustermesh certs rotate`: replacing the mesh CA of one cluster made by
//! `cluster init`, while every connection stays up, in three phases.
//!
//! "The cluster's CA" is the CA bundle of its descriptor: what its
//! apiserver's server certificate chains to (peers' agents verify it) and
//! what the apiserver's clients must chain to (its admin, the peers'
//! `remote-<peer>` certificates). The files that hold it or chain to it:
//!
//! - bundles: `admin/ca.crt` (the descriptor's `ca-bundle`), the apiserver's
//!   client CA `etc/clustermesh/apiserver/ca.crt`, the agents'
//!   `etc/clustermesh/agent/ca.crt`; and in every peer's etcd, its record of
//!   this cluster (`clustermesh/admin/remote-clusters/<this>`, mirrored by
//!   the peer's agents into their config directory);
//! - leaves: `etc/clustermesh/apiserver/server.crt`,
//!   `etc/clustermesh/agent/remote.crt`, `admin/admin.crt`; and the
//!   `remote-<peer>` certificate in each peer's record of this cluster.
//!
//! The phases ([`Phase`]); each one checks everything first and changes
//! nothing when a check fails, and each is idempotent (an interrupted run
//! is completed by running it again):
//!
//! 1. **begin**: a new CA beside the old one (`<dir>/ca-rotation/ca-<n>/`, or
//!    the one of `--new-ca-dir`); every bundle holds old and new. Servers
//!    and clients reload their bundles; nothing chains to the new CA yet.
//! 2. **reissue**: every leaf is issued again by the new CA (same name,
//!    names and length of validity), the certificate and key of a pair
//!    renamed into place one right after the other. Refused until every
//!    bundle trusts the new CA.
//! 3. **finish**: the old CA leaves every bundle. Refused while a leaf still
//!    chains only to the old CA.
//!
//! The state is `<dir>/ca-rotation/state.yaml` (which phase ran last, where
//! the new CA is); a phase out of order is refused with the one to run.
//! Connections made before keep going: TLS checks certificates at the
//! handshake only, and the reloaders (apiserver) and the agents (remote
//! configs whose TLS files change) keep established connections.

use std::{
    collections::BTreeSet,
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::SystemTime,
};

use certs::{Ca, CertName, CertificateInfo, Validity};
use kvstore::{StoreValue, keys, values::RemoteClusterRecord};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use serde::{Deserialize, Serialize};

use crate::{
    ClusterAdminDescriptor, ConnectError, InitRecord, Layout, Progress, cluster_tree,
    connection::{self, Side},
};

/// The rotation's own directory in the `cluster init` output.
pub const ROTATION_DIR: &str = "ca-rotation";
/// Its state file, in [`ROTATION_DIR`].
pub const STATE_FILE: &str = "state.yaml";
/// How long a CA made by `begin` is valid (as `cluster init`'s).
const NEW_CA_VALIDITY_DAYS: u32 = 3650;

/// The files holding the cluster's CA bundle, relative to the output
/// directory.
const BUNDLES: [&str; 3] = [
    "admin/ca.crt",
    "etc/clustermesh/apiserver/ca.crt",
    "etc/clustermesh/agent/ca.crt",
];
/// The leaves issued by the cluster's CA: directory and file stem.
const LEAVES: [(&str, &str); 3] = [
    ("etc/clustermesh/apiserver", "server"),
    ("etc/clustermesh/agent", "remote"),
    ("admin", "admin"),
];

/// One phase of the rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A new CA beside the old one in every bundle.
    Begin,
    /// Every leaf issued again by the new CA.
    Reissue,
    /// The old CA dropped from every bundle.
    Finish,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Begin => "begin",
            Self::Reissue => "reissue",
            Self::Finish => "finish",
        }
    }
}

/// What a rotation phase is given.
#[derive(Debug, Clone)]
pub struct RotateOptions {
    /// The `cluster init` output of the cluster.
    pub dir: PathBuf,
    /// `begin` only: the new CA (`ca.crt`, `ca.key`) instead of a new one
    /// made in `<dir>/ca-rotation/ca-<n>` (e.g. one new CA for several
    /// clusters).
    pub new_ca_dir: Option<PathBuf>,
    /// The admin descriptors of the clusters connected to this one: their
    /// records of this cluster follow each phase.
    pub peers: Vec<ClusterAdminDescriptor>,
}

/// Why a phase did not run or did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// A check failed: the reason, in one line. Nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// An etcd did not answer. Nothing was changed.
    #[error("{0}")]
    Unreachable(String),
    /// Writing failed partway; the phase completes when run again.
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A peer's record could not be written; the phase completes when run
    /// again.
    #[error("cannot update {key} in {cluster}'s etcd: {detail}")]
    Update {
        cluster: String,
        key: String,
        detail: String,
    },
}

impl From<ConnectError> for RotateError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Refused(reason) => Self::Refused(reason),
            e @ ConnectError::Unreachable { .. } => Self::Unreachable(e.to_string()),
        }
    }
}

fn refused(reason: impl Into<String>) -> RotateError {
    RotateError::Refused(reason.into())
}

/// `<dir>/ca-rotation/state.yaml`: the last phase that completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RotationState {
    /// Always 1.
    version: u32,
    /// Always `CaRotation`.
    kind: String,
    /// 1 for the first rotation of this cluster, then 2, …
    rotation: u32,
    phase: StatePhase,
    /// Where the new CA's `ca.crt` and `ca.key` are.
    new_ca_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum StatePhase {
    Begun,
    Reissued,
    Finished,
}

impl RotationState {
    const KIND: &str = "CaRotation";

    fn load(dir: &Path) -> Result<Option<Self>, RotateError> {
        let path = dir.join(ROTATION_DIR).join(STATE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(refused(format!("cannot read {}: {e}", path.display()))),
        };
        let state: Self = serde_norway::from_str(&text).map_err(|e| {
            refused(format!(
                "{} is not a CA rotation state: {e}",
                path.display()
            ))
        })?;
        if state.version != 1 || state.kind != Self::KIND {
            return Err(refused(format!(
                "{} is a state of another version or kind",
                path.display()
            )));
        }
        Ok(Some(state))
    }

    fn to_yaml(&self) -> String {
        let body = serde_norway::to_string(self).expect("the state serializes");
        format!(
            "# The CA rotation of this cluster (`clustermesh certs rotate`): the last\n\
             # phase that completed and where the new CA is.\n{body}"
        )
    }
}

/// One certificate of a PEM text: its block (ending with a newline), DER
/// and what it says.
#[derive(Debug, Clone)]
struct PemCert {
    pem: String,
    der: Vec<u8>,
    info: CertificateInfo,
}

/// The certificates of a PEM text, in order.
fn pem_certs(text: &str) -> Vec<PemCert> {
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in text.lines() {
        let line = line.trim_end();
        if line == "-----BEGIN CERTIFICATE-----" {
            block = Some(format!("{line}\n"));
        } else if let Some(b) = block.as_mut() {
            b.push_str(line);
            b.push('\n');
            if line == "-----END CERTIFICATE-----" {
                let pem = block.take().expect("a block");
                if let Ok(der) = CertificateDer::from_pem_slice(pem.as_bytes())
                    && let Ok(info) = CertificateInfo::from_der(&der)
                {
                    out.push(PemCert {
                        pem,
                        der: der.to_vec(),
                        info,
                    });
                }
            }
        }
    }
    out
}

fn bundle_text(cas: &[&PemCert]) -> String {
    cas.iter().map(|c| c.pem.as_str()).collect()
}

/// The subjects of `cas` (which have commas of their own), joined by ` + `.
fn subjects(cas: &[PemCert]) -> String {
    cas.iter()
        .map(|c| c.info.subject.as_str())
        .collect::<Vec<_>>()
        .join(" + ")
}

/// A leaf certificate and its key in the output directory.
struct Leaf {
    what: String,
    cert_path: PathBuf,
    key_path: PathBuf,
    info: CertificateInfo,
}

/// A peer's record of this cluster, as read.
struct PeerRecord<'a> {
    side: Side<'a>,
    etcd: kvstore::Client,
    key: String,
    record: RemoteClusterRecord,
    mod_revision: i64,
}

/// The cluster's tree as read before a phase.
struct Tree {
    name: String,
    /// The bundle files: path and contents.
    bundles: Vec<(PathBuf, String)>,
    leaves: Vec<Leaf>,
}

impl Tree {
    fn load(dir: &Path) -> Result<Self, RotateError> {
        let record = InitRecord::load(dir)
            .map_err(|e| refused(full_message(&e)))?
            .ok_or_else(|| {
                refused(format!(
                    "{} is not a `cluster init` output (no {})",
                    dir.display(),
                    Layout::RECORD_FILE
                ))
            })?;
        let read = |relative: &Path| {
            if !record.files.iter().any(|f| f == relative) {
                return Err(refused(format!(
                    "{} has no {} made by `cluster init`",
                    dir.display(),
                    relative.display()
                )));
            }
            let path = dir.join(relative);
            fs::read_to_string(&path)
                .map(|text| (path.clone(), text))
                .map_err(|e| refused(format!("cannot read {}: {e}", path.display())))
        };
        let mut bundles = Vec::new();
        for relative in BUNDLES {
            let (path, text) = read(Path::new(relative))?;
            if pem_certs(&text).is_empty() {
                return Err(refused(format!(
                    "{} holds no PEM certificate",
                    path.display()
                )));
            }
            bundles.push((path, text));
        }
        let mut leaves = Vec::new();
        for (sub, stem) in LEAVES {
            let sub = Path::new(sub);
            let (cert_path, text) = read(&sub.join(format!("{stem}.crt")))?;
            let (key_path, _) = read(&sub.join(format!("{stem}.key")))?;
            let info = pem_certs(&text)
                .into_iter()
                .next()
                .ok_or_else(|| {
                    refused(format!("{} holds no PEM certificate", cert_path.display()))
                })?
                .info;
            leaves.push(Leaf {
                what: cert_path.display().to_string(),
                cert_path,
                key_path,
                info,
            });
        }
        Ok(Self {
            name: record.name,
            bundles,
            leaves,
        })
    }

    /// Every CA of the bundle files, each once, in file order.
    fn cas(&self) -> Vec<PemCert> {
        let mut out: Vec<PemCert> = Vec::new();
        for (_, text) in &self.bundles {
            for ca in pem_certs(text) {
                if !out.iter().any(|c| c.der == ca.der) {
                    out.push(ca);
                }
            }
        }
        out
    }
}

fn full_message(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// Runs one phase of the rotation of the cluster in `options.dir`. Every
/// check comes first; each line of `progress` says what was checked,
/// changed, or found already done.
pub async fn rotate(
    phase: Phase,
    options: &RotateOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), RotateError> {
    let mut done = |line: String| progress(Progress::Done(line));
    let dir = &options.dir;
    let tree = Tree::load(dir)?;
    let state = RotationState::load(dir)?;
    let name = tree.name.clone();

    // The phase in order.
    let last = state.as_ref().map(|s| s.phase);
    check_order(phase, last).map_err(|why| {
        refused(format!(
            "phase {} out of order for cluster {name}: {why}",
            phase.as_str()
        ))
    })?;
    let starting = phase == Phase::Begin && last.is_none_or(|p| p == StatePhase::Finished);
    if options.new_ca_dir.is_some() && phase != Phase::Begin {
        return Err(refused(
            "--new-ca-dir is for begin only (later phases use the CA begin recorded)",
        ));
    }

    // The new CA: the one under way, the one given, or a new one.
    let rotation = match (&state, starting) {
        (Some(s), true) => s.rotation + 1,
        (Some(s), false) => s.rotation,
        (None, _) => 1,
    };
    let own_ca_dir = dir.join(ROTATION_DIR).join(format!("ca-{rotation}"));
    let (new_ca, new_ca_dir, generated) = match (&state, starting, &options.new_ca_dir) {
        (Some(s), false, given) => {
            if let Some(given) = given
                && given != &s.new_ca_dir
            {
                return Err(refused(format!(
                    "a rotation is under way with the new CA in {}; --new-ca-dir {} differs \
                     (finish it first)",
                    s.new_ca_dir.display(),
                    given.display()
                )));
            }
            let ca = Ca::load(&s.new_ca_dir).map_err(|e| {
                refused(format!(
                    "cannot use the new CA in {}: {}",
                    s.new_ca_dir.display(),
                    full_message(&e)
                ))
            })?;
            (ca, s.new_ca_dir.clone(), false)
        }
        (_, _, Some(given)) => {
            let ca = Ca::load(given).map_err(|e| {
                refused(format!(
                    "cannot use the new CA in {}: {}",
                    given.display(),
                    full_message(&e)
                ))
            })?;
            (ca, given.clone(), false)
        }
        // A begin interrupted before it recorded its state made this one.
        (_, _, None) if Ca::exists_in(&own_ca_dir) => {
            let ca = Ca::load(&own_ca_dir).map_err(|e| {
                refused(format!(
                    "cannot use the CA an earlier begin made in {}: {}",
                    own_ca_dir.display(),
                    full_message(&e)
                ))
            })?;
            (ca, own_ca_dir.clone(), false)
        }
        (_, _, None) => {
            let validity = Validity::days(NEW_CA_VALIDITY_DAYS).expect("a valid validity");
            let ca = Ca::generate(
                &format!("{} {name} rotation {rotation}", Ca::DEFAULT_COMMON_NAME),
                validity,
            )
            .map_err(|e| refused(format!("cannot create the new CA: {}", full_message(&e))))?;
            (ca, own_ca_dir.clone(), true)
        }
    };
    let now = SystemTime::now();
    connection::check_valid("the new CA", new_ca.info(), now)?;
    let new_der = new_ca.certificate().to_vec();
    let new_subject = new_ca.info().subject.clone();
    let all_cas = tree.cas();
    let old: Vec<PemCert> = all_cas
        .iter()
        .filter(|c| c.der != new_der)
        .cloned()
        .collect();
    if starting && all_cas.iter().any(|c| c.der == new_der) {
        return Err(refused(format!(
            "the new CA ({new_subject}) is already in {name}'s bundle: give a CA that is not \
             in use"
        )));
    }
    if let Some(same) = old.iter().find(|c| c.info.subject == new_subject) {
        return Err(refused(format!(
            "the new CA has the subject of a CA in use ({}): certificates could not tell \
             them apart; give the new CA another common name",
            same.info.subject
        )));
    }
    done(format!(
        "{name}'s CA bundle: {}; the new CA: {new_subject} (in {}), valid until {}",
        subjects(&all_cas),
        new_ca_dir.display(),
        new_ca.info().not_after_rfc3339()
    ));

    // The peers and their records of this cluster; every etcd is reached
    // before anything changes.
    let own = cluster_tree::export(dir).map_err(|e| refused(full_message(&e)))?;
    let own_side = connection::side(&own)?;
    let mut peer_names = BTreeSet::new();
    for p in &options.peers {
        if p.name == name {
            return Err(refused(format!(
                "--peer {}: that is this cluster's own descriptor",
                p.name
            )));
        }
        if !peer_names.insert(p.name.clone()) {
            return Err(refused(format!("--peer {} is given twice", p.name)));
        }
        if let Some(client) = &p.etcd.client {
            for info in connection::pem_infos(&client.cert).iter().take(1) {
                connection::check_valid(
                    &format!("{}'s etcd admin certificate", p.name),
                    info,
                    now,
                )?;
            }
        }
    }
    let own_etcd = own_side.etcd().await?;
    let connected = connection::records(&own_etcd).await.map_err(|e| {
        RotateError::from(connection::classify(
            &format!("{name}'s etcd"),
            &own_side.etcd_config(),
            &e,
        ))
    })?;
    for r in &connected {
        if !peer_names.contains(&r.cluster) {
            return Err(refused(format!(
                "{name} is connected to {} ({} in {name}'s etcd): give {}'s admin descriptor \
                 with --peer, so that its record of {name} follows the rotation",
                r.cluster,
                keys::remote_cluster_records().key(&r.cluster),
                r.cluster
            )));
        }
    }
    let mut records = Vec::new();
    for p in &options.peers {
        let side = connection::side(p)?;
        let etcd = side.etcd().await?;
        let key = keys::remote_cluster_record(&own_side.name);
        let kv = etcd.get(&key).await.map_err(|e| {
            RotateError::from(connection::classify(
                &format!("{}'s etcd", side.name),
                &side.etcd_config(),
                &e,
            ))
        })?;
        match kv {
            None => progress(Progress::Warning(format!(
                "{} holds no record of {name} ({key}): nothing to update there",
                side.name
            ))),
            Some(kv) => {
                let record = RemoteClusterRecord::decode(own_side.name.as_str(), &kv.value)
                    .map_err(|e| refused(format!("{}'s {key}: {}", side.name, full_message(&e))))?;
                records.push(PeerRecord {
                    side,
                    etcd,
                    key,
                    record,
                    mod_revision: kv.mod_revision,
                });
            }
        }
    }
    let mut done = |line: String| progress(Progress::Done(line));
    done(format!(
        "reached {name}'s etcd{}",
        records
            .iter()
            .map(|r| format!(" and {}'s (its record of {name})", r.side.name))
            .collect::<String>()
    ));

    match phase {
        Phase::Begin => {
            // What reissue will do must work: no leaf may outlive the new CA.
            for leaf in &tree.leaves {
                reissue(&leaf.what, &leaf.info, &new_ca, now)?;
            }
            for r in &records {
                let what = format!("{}'s certificate for {name}", r.side.name);
                if let Some(cert) = pem_certs(&r.record.cert).into_iter().next() {
                    reissue(&what, &cert.info, &new_ca, now)?;
                }
            }
            if generated {
                new_ca.write(&new_ca_dir).map_err(|e| RotateError::Write {
                    path: new_ca_dir.clone(),
                    source: std::io::Error::other(full_message(&e)),
                })?;
                done(format!(
                    "created the new CA {new_subject} in {} (keep its key with the admin, \
                     never on hosts)",
                    new_ca_dir.display()
                ));
            }
            write_state(dir, rotation, StatePhase::Begun, &new_ca_dir)?;
            let mut bundle: Vec<&PemCert> = old.iter().collect();
            let new_pem = pem_certs(new_ca.cert_pem());
            bundle.extend(new_pem.iter());
            install_bundle(&tree, &records, &name, &bundle, &mut done).await?;
        }
        Phase::Reissue => {
            for (path, text) in &tree.bundles {
                if !pem_certs(text).iter().any(|c| c.der == new_der) {
                    return Err(refused(format!(
                        "{} does not hold the new CA yet: run begin again",
                        path.display()
                    )));
                }
            }
            for r in &records {
                if !pem_certs(&r.record.ca_bundle)
                    .iter()
                    .any(|c| c.der == new_der)
                {
                    return Err(refused(format!(
                        "{}'s record of {name} does not trust the new CA yet: run begin again \
                         with --peer for {}",
                        r.side.name, r.side.name
                    )));
                }
            }
            // Issue everything first: a leaf that would outlive the new CA
            // is refused before any file changes.
            let mut issued = Vec::new();
            for leaf in &tree.leaves {
                if leaf.info.issuer == new_subject {
                    done(format!("{} is already issued by the new CA", leaf.what));
                    continue;
                }
                issued.push((leaf, reissue(&leaf.what, &leaf.info, &new_ca, now)?));
            }
            let mut peer_certs = Vec::new();
            for r in &records {
                let what = format!("{}'s certificate for {name}", r.side.name);
                let info = pem_certs(&r.record.cert)
                    .into_iter()
                    .next()
                    .ok_or_else(|| refused(format!("{what} holds no PEM certificate")))?
                    .info;
                if info.issuer == new_subject {
                    done(format!("{what} is already issued by the new CA"));
                    continue;
                }
                peer_certs.push((
                    r.side.name.to_string(),
                    reissue(&what, &info, &new_ca, now)?,
                ));
            }
            for (leaf, cert) in &issued {
                write_pair(leaf, cert.cert_pem(), cert.key_pem())?;
                done(format!(
                    "re-issued {} ({}) with the new CA, valid until {}",
                    leaf.what,
                    leaf.info.subject,
                    cert.info()
                        .map(|i| i.not_after_rfc3339())
                        .unwrap_or_default()
                ));
            }
            update_records(&records, &name, &mut done, |p| {
                peer_certs
                    .iter()
                    .find(|(peer, _)| *peer == p.side.name.as_str())
                    .map(|(_, cert)| RemoteClusterRecord {
                        cert: cert.cert_pem().to_owned(),
                        key: cert.key_pem().to_owned(),
                        ..p.record.clone()
                    })
            })
            .await?;
            write_state(dir, rotation, StatePhase::Reissued, &new_ca_dir)?;
        }
        Phase::Finish => {
            for leaf in &tree.leaves {
                if leaf.info.issuer != new_subject {
                    return Err(refused(format!(
                        "{} ({}) still chains only to the old CA ({}): run reissue first",
                        leaf.what, leaf.info.subject, leaf.info.issuer
                    )));
                }
            }
            for r in &records {
                let info = pem_certs(&r.record.cert).into_iter().next();
                if info.as_ref().is_none_or(|c| c.info.issuer != new_subject) {
                    return Err(refused(format!(
                        "{}'s certificate for {name} ({}) still chains only to the old CA: \
                         run reissue first with --peer for {}",
                        r.side.name,
                        info.map(|c| c.info.issuer).unwrap_or_default(),
                        r.side.name
                    )));
                }
            }
            let new_pem = pem_certs(new_ca.cert_pem());
            let bundle: Vec<&PemCert> = new_pem.iter().collect();
            install_bundle(&tree, &records, &name, &bundle, &mut done).await?;
            write_state(dir, rotation, StatePhase::Finished, &new_ca_dir)?;
            if !old.is_empty() {
                done(format!(
                    "retired {} from {name}'s bundles; {name}'s CA is now {new_subject} (in {}: \
                     use it for `connect --ca-dir` and `cluster init --ca-dir`)",
                    subjects(&old),
                    new_ca_dir.display()
                ));
            }
        }
    }
    Ok(())
}

/// Whether `phase` may run after `last` (the last phase that completed),
/// or why not.
fn check_order(phase: Phase, last: Option<StatePhase>) -> Result<(), &'static str> {
    use StatePhase::{Begun, Finished, Reissued};
    match (phase, last) {
        (Phase::Begin, None | Some(Begun | Finished))
        | (Phase::Reissue, Some(Begun | Reissued))
        | (Phase::Finish, Some(Reissued | Finished)) => Ok(()),
        (Phase::Begin, Some(Reissued)) => Err(
            "the leaves are already issued by the new CA (reissue ran): run finish, or reissue again",
        ),
        (Phase::Finish, Some(Begun)) => {
            Err("the leaves are not issued by the new CA yet: run reissue first")
        }
        (Phase::Reissue | Phase::Finish, None | Some(Finished)) => {
            Err("no rotation is under way: run begin first")
        }
    }
}

/// Whether `pem` holds exactly the CAs of `cas`.
fn same_cas(pem: &str, cas: &[&PemCert]) -> bool {
    let have: BTreeSet<Vec<u8>> = pem_certs(pem).into_iter().map(|c| c.der).collect();
    let want: BTreeSet<Vec<u8>> = cas.iter().map(|c| c.der.clone()).collect();
    have == want
}

/// `info`'s certificate issued again by `ca`: the same common name, names
/// and usage, valid as long as before from now on.
fn reissue(
    what: &str,
    info: &CertificateInfo,
    ca: &Ca,
    now: SystemTime,
) -> Result<certs::IssuedCert, RotateError> {
    let cn = info
        .common_name
        .clone()
        .ok_or_else(|| refused(format!("{what} ({}) has no common name", info.subject)))?;
    let name = CertName::new(cn.clone())
        .map_err(|e| refused(format!("{what}: certificate name {cn}: {e}")))?;
    let length = info
        .not_after
        .duration_since(info.not_before)
        .map_err(|_| refused(format!("{what} ends before it begins")))?;
    let not_before = now - Validity::BACKDATE;
    let not_after = not_before + length;
    if not_after > ca.info().not_after {
        return Err(refused(format!(
            "{what} ({}) would outlive the new CA: re-issued for {} days it would end on {}, \
             after the new CA ({}) ends on {}",
            info.subject,
            length.as_secs() / 86_400,
            certs::CertificateInfo {
                not_after,
                ..info.clone()
            }
            .not_after_rfc3339(),
            ca.info().subject,
            ca.info().not_after_rfc3339()
        )));
    }
    let validity =
        Validity::between(not_before, not_after).map_err(|e| refused(format!("{what}: {e}")))?;
    let issued = if info.server_auth && !(info.dns_names.is_empty() && info.ip_addresses.is_empty())
    {
        ca.issue_server(&name, &info.dns_names, &info.ip_addresses, validity)
    } else {
        ca.issue_client(&name, validity)
    };
    issued.map_err(|e| refused(format!("{what}: {}", full_message(&e))))
}

/// Writes every bundle file that does not hold `text` yet.
/// `bundle` becomes the CA bundle of every file of the tree and of every
/// peer's record of this cluster (those already equal are left alone).
async fn install_bundle(
    tree: &Tree,
    records: &[PeerRecord<'_>],
    name: &str,
    bundle: &[&PemCert],
    done: &mut dyn FnMut(String),
) -> Result<(), RotateError> {
    let text = bundle_text(bundle);
    write_bundles(tree, &text, done)?;
    update_records(records, name, done, |p| {
        (!same_cas(&p.record.ca_bundle, bundle)).then(|| RemoteClusterRecord {
            ca_bundle: text.clone(),
            ..p.record.clone()
        })
    })
    .await
}

fn write_bundles(tree: &Tree, text: &str, done: &mut dyn FnMut(String)) -> Result<(), RotateError> {
    for (path, old) in &tree.bundles {
        if old == text {
            done(format!("{} is already up to date", path.display()));
            continue;
        }
        let mode = fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0o644);
        let tmp = temporary(path)?;
        rename(&tmp, path, text, mode)?;
        done(format!(
            "wrote {} ({})",
            path.display(),
            subjects(&pem_certs(text))
        ));
    }
    Ok(())
}

/// Replaces a leaf's certificate and key: both written to temporary files
/// first, then renamed into place one right after the other (the key
/// first). A reloader that reads between the two renames finds a key that
/// does not belong to the certificate, refuses the pair and keeps the one
/// in use until the certificate follows.
fn write_pair(leaf: &Leaf, cert_pem: &str, key_pem: &str) -> Result<(), RotateError> {
    let mode = |path: &Path, default| {
        fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(default)
    };
    let (cert_mode, key_mode) = (mode(&leaf.cert_path, 0o644), mode(&leaf.key_path, 0o600));
    let cert_tmp = temporary(&leaf.cert_path)?;
    let key_tmp = temporary(&leaf.key_path)?;
    let staged =
        stage(&key_tmp, key_pem, key_mode).and_then(|()| stage(&cert_tmp, cert_pem, cert_mode));
    if let Err(e) = staged {
        let _ = fs::remove_file(&key_tmp);
        let _ = fs::remove_file(&cert_tmp);
        return Err(e);
    }
    for (tmp, path) in [(&key_tmp, &leaf.key_path), (&cert_tmp, &leaf.cert_path)] {
        fs::rename(tmp, path).map_err(|source| RotateError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

fn temporary(path: &Path) -> Result<PathBuf, RotateError> {
    let name = path.file_name().ok_or_else(|| RotateError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other("no file name"),
    })?;
    Ok(path.with_file_name(format!(
        ".{}.rotate-{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// Writes `tmp` with `mode` from its creation, synced.
fn stage(tmp: &Path, text: &str, mode: u32) -> Result<(), RotateError> {
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(tmp)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()
    })();
    result.map_err(|source| RotateError::Write {
        path: tmp.to_path_buf(),
        source,
    })
}

/// Writes `path` through `tmp` and a rename.
fn rename(tmp: &Path, path: &Path, text: &str, mode: u32) -> Result<(), RotateError> {
    if let Err(e) = stage(tmp, text, mode) {
        let _ = fs::remove_file(tmp);
        return Err(e);
    }
    fs::rename(tmp, path).map_err(|source| RotateError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn write_state(
    dir: &Path,
    rotation: u32,
    phase: StatePhase,
    new_ca_dir: &Path,
) -> Result<(), RotateError> {
    let state = RotationState {
        version: 1,
        kind: RotationState::KIND.to_owned(),
        rotation,
        phase,
        new_ca_dir: new_ca_dir.to_path_buf(),
    };
    let path = dir.join(ROTATION_DIR).join(STATE_FILE);
    fs::create_dir_all(dir.join(ROTATION_DIR)).map_err(|source| RotateError::Write {
        path: dir.join(ROTATION_DIR),
        source,
    })?;
    let tmp = temporary(&path)?;
    rename(&tmp, &path, &state.to_yaml(), 0o644)
}

/// Writes each peer's record that `change` changes, only if it is still
/// the one read (a concurrent change is refused: run the phase again).
async fn update_records(
    records: &[PeerRecord<'_>],
    name: &str,
    done: &mut dyn FnMut(String),
    change: impl Fn(&PeerRecord<'_>) -> Option<RemoteClusterRecord>,
) -> Result<(), RotateError> {
    for p in records {
        let Some(record) = change(p) else {
            done(format!(
                "{}'s record of {name} is already up to date",
                p.side.name
            ));
            continue;
        };
        let update_error = |detail: String| RotateError::Update {
            cluster: p.side.name.to_string(),
            key: p.key.clone(),
            detail,
        };
        let written = p
            .etcd
            .update_if(&p.key, record.encode(), p.mod_revision, None)
            .await
            .map_err(|e| update_error(e.full_message()))?;
        if !written {
            return Err(update_error(
                "it changed meanwhile; run the phase again".to_owned(),
            ));
        }
        done(format!(
            "updated {}'s record of {name} ({} in {}'s etcd; CA bundle {}, certificate issued \
             by {}); its agents mirror it",
            p.side.name,
            p.key,
            p.side.name,
            subjects(&pem_certs(&record.ca_bundle)),
            pem_certs(&record.cert)
                .first()
                .map(|c| c.info.issuer.clone())
                .unwrap_or_default()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_run_in_order_and_again() {
        use StatePhase::*;
        let ok = [
            (Phase::Begin, None),
            (Phase::Begin, Some(Begun)),
            (Phase::Begin, Some(Finished)),
            (Phase::Reissue, Some(Begun)),
            (Phase::Reissue, Some(Reissued)),
            (Phase::Finish, Some(Reissued)),
            (Phase::Finish, Some(Finished)),
        ];
        for (phase, last) in ok {
            assert_eq!(check_order(phase, last), Ok(()), "{phase:?} after {last:?}");
        }
        for (phase, last, why) in [
            (Phase::Begin, Some(Reissued), "reissue ran"),
            (Phase::Reissue, None, "run begin first"),
            (Phase::Reissue, Some(Finished), "run begin first"),
            (Phase::Finish, None, "run begin first"),
            (Phase::Finish, Some(Begun), "run reissue first"),
        ] {
            let err = check_order(phase, last).unwrap_err();
            assert!(err.contains(why), "{phase:?} after {last:?}: {err}");
        }
    }

    #[test]
    fn a_reissued_leaf_keeps_its_names_usage_and_length_and_never_outlives_its_ca() {
        let old = Ca::generate("old", Validity::days(3650).unwrap()).unwrap();
        let new = Ca::generate("new", Validity::days(3650).unwrap()).unwrap();
        let server = old
            .issue_server(
                &CertName::new("clustermesh-apiserver-c1").unwrap(),
                &["c1.mesh.cilium.io".to_owned()],
                &["10.0.0.1".parse().unwrap()],
                Validity::days(365).unwrap(),
            )
            .unwrap()
            .info()
            .unwrap();
        let now = SystemTime::now();
        let again = reissue("server.crt", &server, &new, now)
            .unwrap()
            .info()
            .unwrap();
        assert_eq!(again.subject, server.subject);
        assert_eq!(again.issuer, new.info().subject);
        assert_eq!(again.dns_names, server.dns_names);
        assert_eq!(again.ip_addresses, server.ip_addresses);
        assert!(again.server_auth && !again.is_ca);
        assert_eq!(
            again.not_after.duration_since(again.not_before).unwrap(),
            server.not_after.duration_since(server.not_before).unwrap()
        );
        let client = old
            .issue_client(
                &CertName::new("admin-c1").unwrap(),
                Validity::days(365).unwrap(),
            )
            .unwrap()
            .info()
            .unwrap();
        let again = reissue("admin.crt", &client, &new, now)
            .unwrap()
            .info()
            .unwrap();
        assert!(again.client_auth && !again.server_auth);

        let short = Ca::generate("short", Validity::days(30).unwrap()).unwrap();
        let Err(RotateError::Refused(why)) = reissue("admin.crt", &client, &short, now) else {
            panic!("a leaf outliving its CA was issued");
        };
        assert!(why.contains("would outlive the new CA"), "{why}");
        assert!(why.contains("365 days"), "{why}");
    }

    #[test]
    fn bundles_are_compared_by_their_certificates() {
        let a = Ca::generate("a", Validity::days(10).unwrap()).unwrap();
        let b = Ca::generate("b", Validity::days(10).unwrap()).unwrap();
        let text = format!("{}\n{}", a.cert_pem(), b.cert_pem());
        let certs = pem_certs(&text);
        assert_eq!(certs.len(), 2);
        let refs: Vec<&PemCert> = certs.iter().collect();
        assert!(same_cas(&bundle_text(&refs), &refs));
        assert!(same_cas(
            &format!("{}{}", b.cert_pem(), a.cert_pem()),
            &refs
        ));
        assert!(!same_cas(a.cert_pem(), &refs));
        assert_eq!(pem_certs(&bundle_text(&refs)).len(), 2);
    }
}
