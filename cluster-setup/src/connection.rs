//! Connecting two clusters from their admin descriptors, outside any
//! harness: `clustermesh connect|disconnect --from A-admin.yaml --to
//! B-admin.yaml` and `clustermesh status --from A-admin.yaml`.
//!
//! [`connect`] checks first, against the live clusters, and changes nothing
//! unless every check passes (each passed check is reported through the
//! `progress` callback, a failed one is the error):
//!
//! 1. names valid and distinct, IDs distinct (a clash is refused before
//!    anything is reached), the same max-connected-clusters;
//! 2. every certificate involved valid now (both CA bundles, both admin
//!    certificates, the CA that issues the connection's certificates);
//! 3. the issuing CA is in the peer's CA bundle (otherwise the peer's
//!    apiserver would refuse its certificates: "CA mismatch");
//! 4. each apiserver, reached with mutual TLS as its admin, publishes the ID
//!    and mode its descriptor says;
//! 5. a real handshake in each connected direction: `remote-A`, issued now,
//!    reads `cilium/cluster-config/B` through B's apiserver, trusting B's
//!    server through B's bundle only (what A's agents will do);
//! 6. not connected already, and no remote of either side has the peer's ID;
//! 7. pod CIDRs disjoint: both descriptors' pools and both clusters' node
//!    CIDRs (read from their etcd);
//! 8. identity headroom (allocated identities against the cluster's range)
//!    and ipcache headroom (both clusters' ipcache entries against the
//!    smallest ipcache map the agents report, [`AgentReport`]).
//!
//! Then it stores, in each connecting cluster's OWN etcd, the record
//! ([`RemoteClusterRecord`]) its agents mirror into their config directory
//! (`clustermesh/admin/remote-clusters/<peer>`, create-only: a concurrent
//! connect loses; bidirectionally, the first record is deleted again when
//! the second cannot be stored). A second `connect` of clusters already
//! connected is refused (even an identical one: the certificates would be
//! new), so is a unicast connect where the reverse direction only exists;
//! `disconnect` first. [`disconnect`] deletes the record(s).

use std::{
    collections::BTreeSet,
    time::{Duration, SystemTime},
};

use certs::{Ca, CertName, CertificateInfo, Validity};
use ipnet::IpNet;
use kvstore::{
    Client, ClientConfig, ClusterName, ErrorKind, KeyPrefix, MaxConnectedClusters, StoreValue,
    TlsConfig, keys,
    values::{AgentReport, ClusterConfig, Node, RemoteClusterRecord},
};
use rustls_pki_types::{CertificateDer, pem::PemObject};

use crate::{ClusterAdminDescriptor, connect_checks as checks};

/// How long the remote-cluster certificates `connect` issues are valid
/// (as `cluster init`'s).
const REMOTE_CERT_VALIDITY_DAYS: u32 = 365;
/// Deadlines for the checks: a cluster that does not answer is reported in
/// seconds.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const PAGE_SIZE: usize = 1_000;

/// Both directions, or only `from` → `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectMode {
    Bidirectional,
    Unicast,
}

/// One line of what [`connect`] checked or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A check passed, or a change was made.
    Done(String),
    /// Something could not be checked (said, not refused).
    Warning(String),
}

/// Why connecting (or disconnecting, or reading the status) did not happen.
/// Whatever the variant, nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A check failed: the reason, in one line.
    #[error("{0}")]
    Refused(String),
    /// A cluster's apiserver or etcd did not answer.
    #[error("{what} at {endpoint} does not answer ({kind}): {detail}")]
    Unreachable {
        what: String,
        endpoint: String,
        kind: &'static str,
        detail: String,
    },
}

pub(crate) fn refused(reason: impl Into<String>) -> ConnectError {
    ConnectError::Refused(reason.into())
}

/// A cluster as its admin descriptor reaches it.
pub(crate) struct Side<'a> {
    pub(crate) d: &'a ClusterAdminDescriptor,
    pub(crate) name: ClusterName,
}

impl Side<'_> {
    fn apiserver_config(&self) -> ClientConfig {
        with_deadlines(
            ClientConfig::new(self.d.apiserver_endpoints.clone()).with_tls(TlsConfig {
                ca_pem: self.d.ca_bundle.as_bytes().to_vec(),
                identity_pem: Some((
                    self.d.admin.cert.as_bytes().to_vec(),
                    self.d.admin.key.as_bytes().to_vec(),
                )),
                server_name: None,
            }),
        )
    }

    pub(crate) fn etcd_config(&self) -> ClientConfig {
        let etcd = &self.d.etcd;
        let mut config = ClientConfig::new(etcd.endpoints.clone());
        if let Some(ca) = &etcd.ca_bundle {
            config = config.with_tls(TlsConfig {
                ca_pem: ca.as_bytes().to_vec(),
                identity_pem: etcd
                    .client
                    .as_ref()
                    .map(|c| (c.cert.as_bytes().to_vec(), c.key.as_bytes().to_vec())),
                server_name: None,
            });
        }
        with_deadlines(config)
    }

    /// The cluster's etcd, as its administrator.
    pub(crate) async fn etcd(&self) -> Result<Client, ConnectError> {
        let what = format!("{}'s etcd", self.name);
        let config = self.etcd_config();
        let client = Client::connect(&config)
            .await
            .map_err(|e| classify(&what, &config, &e))?;
        // A first request proves the endpoint and TLS.
        client
            .status()
            .await
            .map_err(|e| classify(&what, &config, &e))?;
        Ok(client)
    }
}

fn with_deadlines(mut config: ClientConfig) -> ClientConfig {
    config.connect_timeout = CONNECT_TIMEOUT;
    config.request_timeout = REQUEST_TIMEOUT;
    config.keepalive_interval = CONNECT_TIMEOUT;
    config.keepalive_timeout = CONNECT_TIMEOUT;
    config
}

/// Nothing answering is [`ConnectError::Unreachable`]; a TLS or
/// authorization refusal is a refusal with the reason.
pub(crate) fn classify(what: &str, config: &ClientConfig, e: &kvstore::Error) -> ConnectError {
    let endpoint = config.endpoints.join(",");
    match e.kind() {
        ErrorKind::Unreachable | ErrorKind::Timeout | ErrorKind::UpstreamUnavailable => {
            ConnectError::Unreachable {
                what: what.to_owned(),
                endpoint,
                kind: e.kind().as_str(),
                detail: e.full_message(),
            }
        }
        ErrorKind::ConnectionClosed => refused(format!(
            "{what} at {endpoint} closed the connection after the TLS handshake: it does not \
             accept the client certificate ({})",
            e.full_message()
        )),
        ErrorKind::UnknownCa => refused(format!(
            "{what} at {endpoint} presents a certificate that the CA bundle does not sign \
             (CA mismatch): {}",
            e.full_message()
        )),
        kind => refused(format!(
            "{what} at {endpoint}: {}: {}",
            kind.as_str(),
            e.full_message()
        )),
    }
}

/// Reads `cilium/cluster-config/<name>` through an apiserver.
async fn read_cluster_config(
    what: &str,
    config: &ClientConfig,
    name: &ClusterName,
) -> Result<ClusterConfig, ConnectError> {
    let client = Client::connect(config)
        .await
        .map_err(|e| classify(what, config, &e))?;
    let kv = client
        .get(&keys::cluster_config(name))
        .await
        .map_err(|e| classify(what, config, &e))?
        .ok_or_else(|| refused(format!("{what} publishes no cilium/cluster-config/{name}")))?;
    ClusterConfig::decode(name.as_str(), &kv.value)
        .map_err(|e| refused(format!("{what}: cilium/cluster-config/{name}: {e}")))
}

/// The certificates of a PEM text.
pub(crate) fn pem_infos(pem: &str) -> Vec<CertificateInfo> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .filter_map(|der| CertificateInfo::from_der(&der).ok())
        .collect()
}

/// Refuses a certificate that is not valid now.
pub(crate) fn check_valid(
    what: &str,
    info: &CertificateInfo,
    now: SystemTime,
) -> Result<(), ConnectError> {
    if now < info.not_before {
        return Err(refused(format!(
            "{what} ({}) is not valid before {}",
            info.subject,
            info.not_before_rfc3339()
        )));
    }
    if now > info.not_after {
        return Err(refused(format!(
            "{what} ({}) expired on {}",
            info.subject,
            info.not_after_rfc3339()
        )));
    }
    Ok(())
}

/// The pod CIDRs a cluster uses: its descriptor's pools and its nodes'
/// CIDRs as they are in its etcd.
async fn pod_cidrs(side: &Side<'_>, etcd: &Client) -> Result<Vec<IpNet>, ConnectError> {
    let mut nets = side.d.pod_cidr_pools.clone();
    let (nodes, _) = etcd
        .list(&keys::nodes_of(&side.name), PAGE_SIZE)
        .await
        .map_err(|e| classify(&format!("{}'s etcd", side.name), &side.etcd_config(), &e))?;
    for kv in nodes {
        let Ok(node) = serde_json::from_slice::<Node>(&kv.value) else {
            continue;
        };
        let cidrs = [node.ipv4_alloc_cidr, node.ipv6_alloc_cidr];
        for net in cidrs.iter().flatten().filter_map(|c| c.to_net()) {
            // A node's CIDR inside one of the pools adds nothing.
            if !nets.iter().any(|p| p.contains(&net)) {
                nets.push(net);
            }
        }
    }
    Ok(nets)
}

/// The agents' reports in a cluster's etcd.
async fn agent_reports(etcd: &Client) -> Result<Vec<AgentReport>, kvstore::Error> {
    let prefix = keys::agent_reports();
    let (kvs, _) = etcd.list(&prefix, PAGE_SIZE).await?;
    Ok(kvs
        .iter()
        .filter_map(|kv| {
            let key = prefix.strip(&kv.key)?;
            AgentReport::decode(key, &kv.value).ok()
        })
        .collect())
}

/// The remote-cluster records in a cluster's etcd.
pub(crate) async fn records(etcd: &Client) -> Result<Vec<RemoteClusterRecord>, kvstore::Error> {
    let prefix = keys::remote_cluster_records();
    let (kvs, _) = etcd.list(&prefix, PAGE_SIZE).await?;
    Ok(kvs
        .iter()
        .filter_map(|kv| {
            let key = prefix.strip(&kv.key)?;
            RemoteClusterRecord::decode(key, &kv.value).ok()
        })
        .collect())
}

/// Checks that `from` and `to` can be connected (see the module docs),
/// then stores each connecting side's record in its own etcd. `ca` issues
/// the `remote-<cluster>` certificates.
pub async fn connect(
    from: &ClusterAdminDescriptor,
    to: &ClusterAdminDescriptor,
    mode: ConnectMode,
    ca: &Ca,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), ConnectError> {
    let mut done = |line: String| progress(Progress::Done(line));
    // 1. Names, IDs and mode, as the descriptors say.
    let a = side(from)?;
    let b = side(to)?;
    done(checks::names(&from.name, &to.name)?);
    let mode_of = |d: &ClusterAdminDescriptor| {
        MaxConnectedClusters::from_u32(d.max_connected_clusters)
            .map_err(|e| refused(format!("{}: {e}", d.name)))
    };
    let (mode_a, mode_b) = (mode_of(from)?, mode_of(to)?);
    let ids_line = checks::ids((&from.name, from.id), (&to.name, to.id), mode_a)?;
    let modes_line = checks::modes((&from.name, mode_a), (&to.name, mode_b))?;

    // 2. Certificates valid now.
    let now = SystemTime::now();
    for s in [&a, &b] {
        for info in pem_infos(&s.d.ca_bundle) {
            check_valid(&format!("a CA of {}'s bundle", s.name), &info, now)?;
        }
        for info in pem_infos(&s.d.admin.cert).iter().take(1) {
            check_valid(&format!("{}'s admin certificate", s.name), info, now)?;
        }
        if let Some(client) = &s.d.etcd.client {
            for info in pem_infos(&client.cert).iter().take(1) {
                check_valid(&format!("{}'s etcd admin certificate", s.name), info, now)?;
            }
        }
    }
    check_valid("the issuing CA", ca.info(), now)?;
    done(format!(
        "certificates valid now: {}'s and {}'s CA bundles and admin certificates, the issuing CA ({})",
        a.name,
        b.name,
        ca.info().subject
    ));

    // 3. The issuing CA is trusted by each side that is connected to.
    let directions: Vec<(&Side<'_>, &Side<'_>)> = match mode {
        ConnectMode::Bidirectional => vec![(&a, &b), (&b, &a)],
        ConnectMode::Unicast => vec![(&a, &b)],
    };
    for (_, target) in &directions {
        let trusted = pem_infos(&target.d.ca_bundle)
            .iter()
            .any(|info| info.subject == ca.info().subject && info.serial == ca.info().serial);
        if !trusted {
            return Err(refused(format!(
                "CA mismatch: {}'s CA bundle does not hold the issuing CA ({}), so {}'s \
                 apiserver would refuse the certificates issued for this connection",
                target.name,
                ca.info().subject,
                target.name
            )));
        }
    }
    done(format!(
        "the issuing CA is in {}'s CA bundle",
        directions
            .iter()
            .map(|(_, t)| t.name.to_string())
            .collect::<Vec<_>>()
            .join("'s and ")
    ));

    // 4. Each apiserver publishes what its descriptor says.
    for s in [&a, &b] {
        let what = format!("{}'s apiserver", s.name);
        let published = read_cluster_config(&what, &s.apiserver_config(), &s.name).await?;
        if published.id != s.d.id {
            return Err(refused(format!(
                "{what} publishes cluster ID {} but its descriptor says {}",
                published.id, s.d.id
            )));
        }
        let published_mode = published
            .mode()
            .map_err(|e| refused(format!("{what}: {e}")))?;
        if published_mode.as_u32() != s.d.max_connected_clusters {
            return Err(refused(format!(
                "{what} publishes max-connected-clusters {published_mode} but its descriptor says {}",
                s.d.max_connected_clusters
            )));
        }
        done(format!(
            "{what} ({}) publishes ID {}, max-connected-clusters {published_mode} (mutual TLS as admin-{})",
            s.d.apiserver_endpoints.join(","),
            published.id,
            s.name
        ));
    }
    done(ids_line);
    done(modes_line);

    // 5. A real handshake per direction, with the certificate its agents
    // will use.
    let mut issued = Vec::new();
    for (source, target) in &directions {
        let cn = format!("remote-{}", source.name);
        let cert_name = CertName::new(cn.clone())
            .map_err(|e| refused(format!("certificate name {cn}: {e}")))?;
        let validity = Validity::days(REMOTE_CERT_VALIDITY_DAYS).expect("a valid validity");
        let cert = ca
            .issue_client(&cert_name, validity)
            .map_err(|e| refused(format!("issuing {cn}: {e}")))?;
        let config = with_deadlines(
            ClientConfig::new(target.d.apiserver_endpoints.clone()).with_tls(TlsConfig {
                ca_pem: target.d.ca_bundle.as_bytes().to_vec(),
                identity_pem: Some((
                    cert.cert_pem().as_bytes().to_vec(),
                    cert.key_pem().as_bytes().to_vec(),
                )),
                server_name: None,
            }),
        );
        let what = format!("{}'s apiserver (as {cn})", target.name);
        let published = read_cluster_config(&what, &config, &target.name).await?;
        if published.id != target.d.id {
            return Err(refused(format!(
                "{what} publishes cluster ID {} but {}'s descriptor says {}",
                published.id, target.name, target.d.id
            )));
        }
        done(format!(
            "mutual TLS {} -> {}: {}'s apiserver accepts {cn} and its certificate chains to {}'s bundle",
            source.name, target.name, target.name, target.name
        ));
        issued.push((*source, *target, cert));
    }

    // 6. Not connected yet; no remote of a connecting side has the peer's ID.
    let etcd_a = a.etcd().await?;
    let etcd_b = b.etcd().await?;
    let etcd_of = |s: &Side<'_>| if s.name == a.name { &etcd_a } else { &etcd_b };
    for s in [&a, &b] {
        let peer = if s.name == a.name { &b } else { &a };
        let existing = records(etcd_of(s))
            .await
            .map_err(|e| classify(&format!("{}'s etcd", s.name), &s.etcd_config(), &e))?;
        if existing.iter().any(|r| r.cluster == peer.name.as_str()) {
            return Err(refused(format!(
                "{} is already connected to {} ({} in {}'s etcd); disconnect first",
                s.name,
                peer.name,
                keys::remote_cluster_record(&peer.name),
                s.name
            )));
        }
        let connecting = directions.iter().any(|(src, _)| src.name == s.name);
        if connecting && let Some(other) = existing.iter().find(|r| r.id == peer.d.id) {
            return Err(refused(format!(
                "cluster ID clash: {} is connected to {}, which has ID {} as {} does",
                s.name, other.cluster, other.id, peer.name
            )));
        }
        if connecting && existing.iter().any(|r| r.id == s.d.id) {
            return Err(refused(format!(
                "cluster ID clash: a remote of {} has its own ID {}",
                s.name, s.d.id
            )));
        }
    }
    done(format!(
        "{} and {} are not connected yet, and no remote of theirs has a clashing ID",
        a.name, b.name
    ));

    // 7. Pod CIDRs disjoint.
    let cidrs_a = pod_cidrs(&a, &etcd_a).await?;
    let cidrs_b = pod_cidrs(&b, &etcd_b).await?;
    progress(checks::pod_cidrs(
        (&from.name, &cidrs_a),
        (&to.name, &cidrs_b),
    )?);

    // 8. Headroom, for each side that receives the other's entries.
    for (source, target) in &directions {
        let (etcd_s, etcd_t) = (etcd_of(source), etcd_of(target));
        let err = |e: kvstore::Error| {
            classify(
                &format!("{}'s etcd", source.name),
                &source.etcd_config(),
                &e,
            )
        };
        let used = etcd_s.count(&keys::identity_masters()).await.map_err(err)?;
        progress(Progress::Done(checks::identity_headroom(
            source.name.as_str(),
            source.d.id,
            mode_of(source.d)?,
            used,
        )?));
        let entries = etcd_s.count(&keys::ipcache()).await.map_err(err)?
            + etcd_t.count(&keys::ipcache()).await.map_err(|e| {
                classify(
                    &format!("{}'s etcd", target.name),
                    &target.etcd_config(),
                    &e,
                )
            })?;
        let capacities: Vec<(String, usize)> = agent_reports(etcd_s)
            .await
            .map_err(err)?
            .into_iter()
            .filter_map(|r| Some((r.node, *r.map_capacity.get("ipcache")?)))
            .collect();
        progress(checks::ipcache_headroom(
            source.name.as_str(),
            entries,
            &capacities,
        )?);
    }

    // Store each connecting side's record in its own etcd.
    let mut stored: Vec<(&Client, String)> = Vec::new();
    for (source, target, cert) in &issued {
        let record = RemoteClusterRecord {
            cluster: target.name.to_string(),
            id: target.d.id,
            endpoints: target.d.apiserver_endpoints.clone(),
            ca_bundle: target.d.ca_bundle.clone(),
            cert: cert.cert_pem().to_owned(),
            key: cert.key_pem().to_owned(),
            pod_cidr_pools: target.d.pod_cidr_pools.clone(),
            service_cache_ttl: None,
        };
        let key = keys::remote_cluster_record(&target.name);
        let etcd = etcd_of(source);
        let result = etcd.create(&key, record.encode(), None).await;
        let failure = match result {
            Ok(true) => None,
            Ok(false) => Some(refused(format!(
                "{} is already connected to {} ({key} appeared meanwhile)",
                source.name, target.name
            ))),
            Err(e) => Some(classify(
                &format!("{}'s etcd", source.name),
                &source.etcd_config(),
                &e,
            )),
        };
        if let Some(error) = failure {
            // Take back what this run stored, so that nothing is changed.
            for (etcd, key) in stored {
                let _ = etcd.delete(&key).await;
            }
            return Err(error);
        }
        progress(Progress::Done(format!(
            "stored {}'s config for {} in {}'s etcd ({key}); its agents mirror it into their config directory",
            source.name, target.name, source.name
        )));
        stored.push((etcd, key));
    }
    Ok(())
}

/// Deletes `from`'s record of `to` (and, bidirectionally, `to`'s of
/// `from`); the agents remove the mirrored files and drain that cluster's
/// entries. Refused when none of them exists. Returns what it deleted.
pub async fn disconnect(
    from: &ClusterAdminDescriptor,
    to: &ClusterAdminDescriptor,
    mode: ConnectMode,
) -> Result<Vec<String>, ConnectError> {
    let a = side(from)?;
    let b = side(to)?;
    if a.name == b.name {
        return Err(refused(format!("cannot disconnect {} from itself", a.name)));
    }
    let mut pairs = vec![(&a, &b)];
    if mode == ConnectMode::Bidirectional {
        pairs.push((&b, &a));
    }
    // Reach every etcd involved before deleting anything.
    let mut clients = Vec::new();
    for (s, _) in &pairs {
        clients.push(s.etcd().await?);
    }
    let mut deleted = Vec::new();
    for ((s, peer), etcd) in pairs.iter().zip(&clients) {
        let key = keys::remote_cluster_record(&peer.name);
        let gone = etcd
            .delete(&key)
            .await
            .map_err(|e| classify(&format!("{}'s etcd", s.name), &s.etcd_config(), &e))?;
        if gone {
            deleted.push(format!(
                "deleted {}'s config for {} ({key} in {}'s etcd); its agents remove the mirrored file",
                s.name, peer.name, s.name
            ));
        }
    }
    if deleted.is_empty() {
        return Err(refused(format!(
            "{} and {} are not connected (no {} record in either etcd)",
            a.name,
            b.name,
            KeyPrefix::new(keys::REMOTE_CLUSTER_RECORDS)
        )));
    }
    Ok(deleted)
}

pub(crate) fn side(d: &ClusterAdminDescriptor) -> Result<Side<'_>, ConnectError> {
    let name = ClusterName::new(d.name.as_str())
        .map_err(|e| refused(format!("cluster name {:?}: {e}", d.name)))?;
    Ok(Side { d, name })
}

/// A cluster as `status --from` shows it, read from its apiserver and etcd.
#[derive(Debug, Clone)]
pub struct ClusterStatus {
    pub name: String,
    /// What the apiserver publishes, or why it could not be read.
    pub published: Result<ClusterConfig, String>,
    /// The connected remotes (records in its etcd).
    pub remotes: Vec<RemoteClusterRecord>,
    /// Nodes registered in its etcd.
    pub nodes: Vec<String>,
    /// The agents' reports.
    pub agents: Vec<AgentReport>,
}

impl ClusterStatus {
    /// What is not ready yet: nodes without a report, agents not synced,
    /// configured remotes an agent does not follow or has not made ready,
    /// and remotes an agent still follows though disconnected. Empty when
    /// everything is.
    pub fn not_ready(&self) -> Vec<String> {
        let mut missing = Vec::new();
        if let Err(e) = &self.published {
            missing.push(format!("{}'s apiserver: {e}", self.name));
        }
        if self.agents.is_empty() {
            missing.push(format!("no agent of {} reports yet", self.name));
        }
        for node in &self.nodes {
            if !self.agents.iter().any(|a| &a.node == node) {
                missing.push(format!("node {node}: no agent report"));
            }
        }
        let wanted: BTreeSet<&str> = self.remotes.iter().map(|r| r.cluster.as_str()).collect();
        for agent in &self.agents {
            if !agent.synced {
                missing.push(format!("node {}: agent not synced", agent.node));
            }
            for name in &wanted {
                match agent.remotes.iter().find(|r| r.name == *name) {
                    None => missing.push(format!(
                        "node {}: remote {name} not picked up yet",
                        agent.node
                    )),
                    Some(r) if !r.ready => missing.push(format!(
                        "node {}: remote {name} not ready ({})",
                        agent.node,
                        r.error.as_deref().unwrap_or("not synced")
                    )),
                    Some(_) => {}
                }
            }
            for r in &agent.remotes {
                if !wanted.contains(r.name.as_str()) {
                    missing.push(format!(
                        "node {}: still follows {} (not connected)",
                        agent.node, r.name
                    ));
                }
            }
        }
        missing
    }
}

/// Reads a cluster's status from its apiserver and etcd (no node is
/// reached: the agents report themselves in etcd).
pub async fn status(d: &ClusterAdminDescriptor) -> Result<ClusterStatus, ConnectError> {
    let s = side(d)?;
    let published = read_cluster_config(
        &format!("{}'s apiserver", s.name),
        &s.apiserver_config(),
        &s.name,
    )
    .await
    .map_err(|e| e.to_string());
    let etcd = s.etcd().await?;
    let err = |e: kvstore::Error| classify(&format!("{}'s etcd", s.name), &s.etcd_config(), &e);
    let remotes = records(&etcd).await.map_err(err)?;
    let agents = agent_reports(&etcd).await.map_err(err)?;
    let prefix = keys::nodes_of(&s.name);
    let (kvs, _) = etcd.list(&prefix, PAGE_SIZE).await.map_err(err)?;
    let nodes = kvs
        .iter()
        .filter_map(|kv| prefix.strip(&kv.key).map(str::to_owned))
        .collect();
    Ok(ClusterStatus {
        name: s.name.to_string(),
        published,
        remotes,
        nodes,
        agents,
    })
}
