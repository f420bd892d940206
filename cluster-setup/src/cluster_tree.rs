//! `cluster init`: one cluster's certificates, configuration files and
//! systemd units, written into an output directory laid out as the hosts'
//! file system ([`crate::layout`]); and `cluster export`: its descriptors,
//! read back from that directory.
//!
//! Everything is planned in memory first (certificates issued, files
//! rendered), then checked against what is on disk, then written: the
//! record (`cluster-init.yaml`) first, so that an interrupted run still
//! knows its files. A directory with files init did not make is refused;
//! a directory init made is refused unless forced, and a forced run
//! replaces only files of its record, removes the ones of its record it no
//! longer makes, and keeps the CAs it made before (so that certificates
//! already handed out stay trusted).

use std::{
    collections::BTreeSet,
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
};

use certs::{Ca, CaError, CertName, IssuedCert, Validity};

use crate::{
    ClusterAdminDescriptor, ClusterSpec, Component, Layout,
    cluster_spec::Host,
    descriptor::{ClientCert, DESCRIPTOR_VERSION, EtcdAccess},
    init_record::{InitRecord, RecordError},
    unit_file,
};

/// How long the CAs init creates are valid.
const CA_VALIDITY_DAYS: u32 = 3650;
/// How long the certificates it issues are valid.
const CERT_VALIDITY_DAYS: u32 = 365;
/// Keys only root reads (the agent's, the admin's, the CAs').
const KEY_MODE: u32 = 0o600;
/// Keys of the components that run as the `clustermesh` user: readable by
/// its group once installed (`chgrp clustermesh`).
const GROUP_KEY_MODE: u32 = 0o640;
const PUBLIC_MODE: u32 = 0o644;

/// What `cluster init` is asked to do besides the cluster itself.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The output directory (created if missing).
    pub out: PathBuf,
    /// The paths the configuration refers to.
    pub layout: Layout,
    /// A mesh CA to reuse (`ca.crt`, `ca.key`); without it init creates one
    /// in `<out>/mesh-ca` (or keeps the one it created before).
    pub mesh_ca_dir: Option<PathBuf>,
    /// An etcd CA to reuse (https etcd only); without it init creates one
    /// in `<out>/etcd-ca` (or keeps the one it created before).
    pub etcd_ca_dir: Option<PathBuf>,
    /// Replace a tree init made before.
    pub force: bool,
}

/// What `cluster init` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    /// Files written, relative to the output directory, in order.
    pub written: Vec<PathBuf>,
    /// Files of an earlier run that this one no longer makes, removed.
    pub removed: Vec<PathBuf>,
    /// CAs used as they were, in words (`mesh CA from /x`).
    pub reused: Vec<String>,
}

/// Why `cluster init` or `cluster export` refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "{dir} already holds cluster {name} made by `cluster init`; use --force to write it again \
         (its CAs are kept)"
    )]
    Exists { dir: PathBuf, name: String },
    #[error(
        "{dir} is not empty and was not made by `cluster init`; choose a new or empty directory"
    )]
    NotOurs { dir: PathBuf },
    #[error("{path} exists and was not made by `cluster init`; move it away first")]
    ForeignFile { path: PathBuf },
    #[error("{what} {path:?} cannot be written into environment and unit files: {reason}")]
    UnsafePath {
        what: &'static str,
        path: PathBuf,
        reason: &'static str,
    },
    #[error("cannot use the {what} in {dir}")]
    LoadCa {
        what: &'static str,
        dir: PathBuf,
        #[source]
        source: CaError,
    },
    #[error("cannot create the {what}")]
    CreateCa {
        what: &'static str,
        #[source]
        source: CaError,
    },
    #[error("cannot issue certificate {name}")]
    Issue {
        name: String,
        #[source]
        source: CaError,
    },
    #[error("invalid certificate name {name}")]
    CertName {
        name: String,
        #[source]
        source: certs::CertNameError,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("{dir} was not made by `cluster init` (no {})", Layout::RECORD_FILE)]
    NoRecord { dir: PathBuf },
    #[error(
        "cluster {name} has no apiserver endpoints: run `cluster init --force` with --apiserver-endpoints"
    )]
    NoApiserverEndpoints { name: String },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the descriptor made from {dir} is invalid")]
    Descriptor {
        dir: PathBuf,
        #[source]
        source: crate::DescriptorError,
    },
}

/// One entry of the plan.
enum Entry {
    File {
        data: Vec<u8>,
        mode: u32,
    },
    Dir,
    /// A file of an earlier run that stays as it is (a CA made before).
    Keep,
}

/// The files of a cluster, relative to the output directory, in order.
struct Plan {
    entries: Vec<(PathBuf, Entry)>,
    reused: Vec<String>,
}

impl Plan {
    fn file(&mut self, path: impl Into<PathBuf>, data: impl Into<Vec<u8>>, mode: u32) {
        self.entries.push((
            path.into(),
            Entry::File {
                data: data.into(),
                mode,
            },
        ));
    }

    /// A certificate and its key as `<dir>/<stem>.crt` and `.key`.
    fn cert(&mut self, dir: &Path, stem: &str, issued: &IssuedCert, key_mode: u32) {
        self.file(
            dir.join(format!("{stem}.crt")),
            issued.cert_pem(),
            PUBLIC_MODE,
        );
        self.file(dir.join(format!("{stem}.key")), issued.key_pem(), key_mode);
    }
}

/// Writes one cluster's tree into `options.out`. See the module docs.
pub fn init(spec: &ClusterSpec, options: &InitOptions) -> Result<InitReport, InitError> {
    for (what, path) in [
        ("--root", options.layout.root()),
        ("--bin-dir", options.layout.bin_dir()),
    ] {
        check_path(what, path)?;
    }
    let out = &options.out;
    let previous = InitRecord::load(out)?;
    match &previous {
        Some(record) if !options.force => {
            return Err(InitError::Exists {
                dir: out.clone(),
                name: record.name.clone(),
            });
        }
        None if fs::read_dir(out).is_ok_and(|mut entries| entries.next().is_some()) => {
            return Err(InitError::NotOurs { dir: out.clone() });
        }
        _ => {}
    }
    let ours: BTreeSet<PathBuf> = previous
        .as_ref()
        .map(|r| r.files.iter().cloned().collect())
        .unwrap_or_default();

    let plan = plan(spec, options, &ours)?;
    for (path, entry) in &plan.entries {
        let full = out.join(path);
        let exists = fs::symlink_metadata(&full).is_ok();
        let allowed = ours.contains(path) || matches!(entry, Entry::Dir) && full.is_dir();
        if exists && !allowed {
            return Err(InitError::ForeignFile { path: full });
        }
    }

    let files: Vec<PathBuf> = plan.entries.iter().map(|(p, _)| p.clone()).collect();
    let record = InitRecord {
        version: 1,
        kind: InitRecord::KIND.to_owned(),
        name: spec.name.to_string(),
        id: spec.id.get(),
        max_connected_clusters: spec.mode.as_u32(),
        etcd_endpoints: spec.etcd_endpoints.iter().map(|e| e.to_string()).collect(),
        apiserver_endpoints: spec.apiserver_urls(),
        pod_cidr_pools: spec.pod_cidr_pools.clone(),
        root: options.layout.root().to_path_buf(),
        bin_dir: options.layout.bin_dir().to_path_buf(),
        files: files.clone(),
    };
    fs::create_dir_all(out).map_err(|source| InitError::Write {
        path: out.clone(),
        source,
    })?;
    write_file(
        &out.join(Layout::RECORD_FILE),
        record.to_yaml().as_bytes(),
        PUBLIC_MODE,
    )?;

    let mut written = vec![PathBuf::from(Layout::RECORD_FILE)];
    for (path, entry) in &plan.entries {
        let full = out.join(path);
        match entry {
            Entry::Dir => fs::create_dir_all(&full).map_err(|source| InitError::Write {
                path: full.clone(),
                source,
            })?,
            Entry::File { data, mode } => {
                if let Some(parent) = full.parent() {
                    fs::create_dir_all(parent).map_err(|source| InitError::Write {
                        path: parent.to_path_buf(),
                        source,
                    })?;
                }
                write_file(&full, data, *mode)?;
                written.push(path.clone());
            }
            Entry::Keep => {}
        }
    }

    // What an earlier run made and this one does not: files first, then
    // the directories they leave empty (deepest first).
    let now: BTreeSet<&PathBuf> = files.iter().collect();
    let mut removed = Vec::new();
    let mut stale: Vec<&PathBuf> = ours.iter().filter(|p| !now.contains(p)).collect();
    stale.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for path in stale {
        let full = out.join(path);
        let result = if full.is_dir() {
            fs::remove_dir(&full)
        } else {
            fs::remove_file(&full)
        };
        match result {
            Ok(()) => removed.push(path.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // A directory someone put files into stays.
            Err(_) if full.is_dir() => {}
            Err(source) => return Err(InitError::Remove { path: full, source }),
        }
    }
    // The directories those files leave empty (never one that holds
    // anything, nor one this run uses).
    let used: BTreeSet<&Path> = files.iter().flat_map(|p| p.ancestors()).collect();
    for path in &removed {
        for dir in path.ancestors().skip(1) {
            if dir.as_os_str().is_empty() || used.contains(dir) {
                break;
            }
            if fs::remove_dir(out.join(dir)).is_err() {
                break;
            }
        }
    }
    Ok(InitReport {
        written,
        removed,
        reused: plan.reused,
    })
}

/// Issues every certificate and renders every file of the cluster.
fn plan(
    spec: &ClusterSpec,
    options: &InitOptions,
    ours: &BTreeSet<PathBuf>,
) -> Result<Plan, InitError> {
    let layout = &options.layout;
    let name = spec.name.as_str();
    let mut plan = Plan {
        entries: Vec::new(),
        reused: Vec::new(),
    };
    let validity = Validity::days(CERT_VALIDITY_DAYS).expect("a valid validity");

    let mesh_ca = ca(
        &mut plan,
        options,
        ours,
        "mesh CA",
        options.mesh_ca_dir.as_deref(),
        Layout::MESH_CA_DIR,
        Ca::DEFAULT_COMMON_NAME,
    )?;
    let etcd_ca = if spec.etcd_https() {
        Some(ca(
            &mut plan,
            options,
            ours,
            "etcd CA",
            options.etcd_ca_dir.as_deref(),
            Layout::ETCD_CA_DIR,
            &format!("etcd CA of cluster {name}"),
        )?)
    } else {
        None
    };

    let issue_client = |ca: &Ca, cn: String| {
        let cert_name = CertName::new(cn.clone()).map_err(|source| InitError::CertName {
            name: cn.clone(),
            source,
        })?;
        ca.issue_client(&cert_name, validity)
            .map_err(|source| InitError::Issue { name: cn, source })
    };
    let issue_server = |ca: &Ca, cn: String, dns: Vec<String>, ips: Vec<IpAddr>| {
        let cert_name = CertName::new(cn.clone()).map_err(|source| InitError::CertName {
            name: cn.clone(),
            source,
        })?;
        ca.issue_server(&cert_name, &dns, &ips, validity)
            .map_err(|source| InitError::Issue { name: cn, source })
    };
    let (mut dns, mut ips) = (
        vec![
            "clustermesh-apiserver.cilium.io".to_owned(),
            format!("{name}.mesh.cilium.io"),
        ],
        Vec::new(),
    );
    for endpoint in &spec.apiserver_endpoints {
        match &endpoint.host {
            Host::Dns(host) => dns.push(host.clone()),
            Host::Ip(ip) => ips.push(*ip),
        }
    }
    if !spec.apiserver_listen.ip().is_unspecified() {
        ips.push(spec.apiserver_listen.ip());
    }
    dedupe(&mut dns);
    dedupe(&mut ips);
    let server = issue_server(&mesh_ca, format!("clustermesh-apiserver-{name}"), dns, ips)?;
    let admin = issue_client(&mesh_ca, format!("admin-{name}"))?;
    let remote = issue_client(&mesh_ca, format!("remote-{name}"))?;
    let mesh_ca_pem = mesh_ca.cert_pem().to_owned();

    // etcd: the members' server certificate, one client certificate for
    // the components, one for the admin.
    let etcd = match &etcd_ca {
        None => None,
        Some(etcd_ca) => {
            let (mut dns, mut ips) = (
                vec!["localhost".to_owned()],
                vec![IpAddr::from([127, 0, 0, 1])],
            );
            for e in &spec.etcd_endpoints {
                match &e.addr.host {
                    Host::Dns(host) => dns.push(host.clone()),
                    Host::Ip(ip) => ips.push(*ip),
                }
            }
            dedupe(&mut dns);
            dedupe(&mut ips);
            let server = issue_server(etcd_ca, format!("etcd-{name}"), dns, ips)?;
            let components = issue_client(etcd_ca, format!("etcd-components-{name}"))?;
            let admin = issue_client(etcd_ca, format!("etcd-admin-{name}"))?;
            Some((etcd_ca.cert_pem().to_owned(), server, components, admin))
        }
    };

    // The admin's directory: what `cluster export --admin` reads.
    let admin_dir = Path::new(Layout::ADMIN_DIR);
    plan.file(admin_dir.join("ca.crt"), mesh_ca_pem.clone(), PUBLIC_MODE);
    plan.cert(admin_dir, "admin", &admin, KEY_MODE);
    if let Some((etcd_ca_pem, _, _, etcd_admin)) = &etcd {
        plan.file(
            admin_dir.join("etcd-ca.crt"),
            etcd_ca_pem.clone(),
            PUBLIC_MODE,
        );
        plan.cert(admin_dir, "etcd-admin", etcd_admin, KEY_MODE);
    }

    // The etcd members' TLS files.
    if let Some((etcd_ca_pem, etcd_server, _, _)) = &etcd {
        let dir = Layout::etcd_dir();
        plan.file(dir.join("ca.crt"), etcd_ca_pem.clone(), PUBLIC_MODE);
        plan.cert(&dir, "server", etcd_server, KEY_MODE);
        plan.file(
            dir.join("etcd.env.example"),
            etcd_env(spec, layout),
            PUBLIC_MODE,
        );
    }

    for component in Component::ALL {
        let dir = Layout::component_dir(component);
        let installed = layout.installed(&dir);
        let key_mode = match component {
            Component::Agent => KEY_MODE,
            Component::Apiserver | Component::Operator => GROUP_KEY_MODE,
        };
        let etcd_tls = etcd.as_ref().map(|(etcd_ca_pem, _, components, _)| {
            plan.file(dir.join("etcd-ca.crt"), etcd_ca_pem.clone(), PUBLIC_MODE);
            plan.cert(&dir, "etcd-client", components, key_mode);
            EtcdFiles {
                ca: installed.join("etcd-ca.crt"),
                cert: installed.join("etcd-client.crt"),
                key: installed.join("etcd-client.key"),
            }
        });
        match component {
            Component::Apiserver => {
                plan.file(dir.join("ca.crt"), mesh_ca_pem.clone(), PUBLIC_MODE);
                plan.cert(&dir, "server", &server, key_mode);
                plan.file(
                    dir.join("apiserver.env"),
                    apiserver_env(spec, &installed, etcd_tls.as_ref()),
                    PUBLIC_MODE,
                );
            }
            Component::Operator => {
                plan.file(
                    dir.join("operator.env"),
                    operator_env(spec, etcd_tls.as_ref()),
                    PUBLIC_MODE,
                );
            }
            Component::Agent => {
                plan.file(dir.join("ca.crt"), mesh_ca_pem.clone(), PUBLIC_MODE);
                plan.cert(&dir, "remote", &remote, key_mode);
                plan.file(
                    dir.join("agent.yaml"),
                    agent_yaml(spec, &installed, etcd_tls.as_ref()),
                    PUBLIC_MODE,
                );
                plan.file(
                    dir.join(format!("{}.example", Layout::NODE_ENV)),
                    NODE_ENV_EXAMPLE,
                    PUBLIC_MODE,
                );
                plan.entries
                    .push((dir.join(Layout::REMOTES_DIR), Entry::Dir));
            }
        }
        plan.file(
            Layout::unit_file(component),
            unit_file::render(component, layout),
            PUBLIC_MODE,
        );
    }
    plan.file(
        Path::new(Layout::CONF_DIR).join("clustermesh.sysusers.conf"),
        unit_file::sysusers(),
        PUBLIC_MODE,
    );
    Ok(plan)
}

/// The CA `what`: the one in `given` (reused as is), else the one init
/// made in `<out>/<own_dir>` before, else a new one written there.
fn ca(
    plan: &mut Plan,
    options: &InitOptions,
    ours: &BTreeSet<PathBuf>,
    what: &'static str,
    given: Option<&Path>,
    own_dir: &str,
    common_name: &str,
) -> Result<Ca, InitError> {
    if let Some(dir) = given {
        let ca = Ca::load(dir).map_err(|source| InitError::LoadCa {
            what,
            dir: dir.to_path_buf(),
            source,
        })?;
        plan.reused.push(format!("{what} from {}", dir.display()));
        return Ok(ca);
    }
    let own = Path::new(own_dir);
    let files = [own.join(Ca::CERT_FILE), own.join(Ca::KEY_FILE)];
    if files.iter().all(|f| ours.contains(f)) && Ca::exists_in(&options.out.join(own)) {
        let dir = options.out.join(own);
        let ca = Ca::load(&dir).map_err(|source| InitError::LoadCa { what, dir, source })?;
        for f in files {
            plan.entries.push((f, Entry::Keep));
        }
        plan.reused.push(format!(
            "{what} made before in {}",
            options.out.join(own).display()
        ));
        return Ok(ca);
    }
    let validity = Validity::days(CA_VALIDITY_DAYS).expect("a valid validity");
    let ca = Ca::generate(common_name, validity)
        .map_err(|source| InitError::CreateCa { what, source })?;
    plan.file(own.join(Ca::KEY_FILE), ca.key_pem(), KEY_MODE);
    plan.file(own.join(Ca::CERT_FILE), ca.cert_pem(), PUBLIC_MODE);
    Ok(ca)
}

/// The component's etcd TLS files, installed.
struct EtcdFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A line of an environment file.
fn env_line(text: &mut String, name: &str, value: impl std::fmt::Display) {
    text.push_str(&format!("{name}={value}\n"));
}

/// `clustermesh-apiserver`'s settings: its `CLUSTERMESH_APISERVER_*`
/// variables (`clustermesh_apiserver::args::env`).
fn apiserver_env(spec: &ClusterSpec, dir: &Path, etcd: Option<&EtcdFiles>) -> String {
    let mut t = header(
        "clustermesh-apiserver",
        spec,
        "clustermesh-apiserver --help",
    );
    let p = "CLUSTERMESH_APISERVER_";
    env_line(&mut t, &format!("{p}CLUSTER_NAME"), &spec.name);
    env_line(&mut t, &format!("{p}CLUSTER_ID"), spec.id.get());
    env_line(
        &mut t,
        &format!("{p}MAX_CONNECTED_CLUSTERS"),
        spec.mode.as_u32(),
    );
    env_line(&mut t, &format!("{p}ETCD_ENDPOINTS"), etcd_endpoints(spec));
    if let Some(f) = etcd {
        env_line(&mut t, &format!("{p}ETCD_CA"), f.ca.display());
        env_line(&mut t, &format!("{p}ETCD_CERT"), f.cert.display());
        env_line(&mut t, &format!("{p}ETCD_KEY"), f.key.display());
    }
    env_line(&mut t, &format!("{p}LISTEN"), spec.apiserver_listen);
    env_line(
        &mut t,
        &format!("{p}TLS_CERT"),
        dir.join("server.crt").display(),
    );
    env_line(
        &mut t,
        &format!("{p}TLS_KEY"),
        dir.join("server.key").display(),
    );
    env_line(
        &mut t,
        &format!("{p}TLS_CLIENT_CA"),
        dir.join("ca.crt").display(),
    );
    env_line(
        &mut t,
        &format!("{p}HEALTH_LISTEN"),
        spec.apiserver_health_listen,
    );
    t
}

/// `clustermesh-operator`'s settings: its `CLUSTERMESH_*` variables
/// (`operator::Flags`).
fn operator_env(spec: &ClusterSpec, etcd: Option<&EtcdFiles>) -> String {
    let mut t = header("clustermesh-operator", spec, "clustermesh-operator --help");
    env_line(&mut t, "CLUSTERMESH_CLUSTER_NAME", &spec.name);
    env_line(&mut t, "CLUSTERMESH_CLUSTER_ID", spec.id.get());
    env_line(
        &mut t,
        "CLUSTERMESH_MAX_CONNECTED_CLUSTERS",
        spec.mode.as_u32(),
    );
    env_line(&mut t, "CLUSTERMESH_ETCD_ENDPOINTS", etcd_endpoints(spec));
    if let Some(f) = etcd {
        env_line(&mut t, "CLUSTERMESH_ETCD_CA", f.ca.display());
        env_line(&mut t, "CLUSTERMESH_ETCD_CERT", f.cert.display());
        env_line(&mut t, "CLUSTERMESH_ETCD_KEY", f.key.display());
    }
    env_line(
        &mut t,
        "CLUSTERMESH_OPERATOR_HEALTH_LISTEN",
        spec.operator_health_listen,
    );
    for pool in &spec.pod_cidr_pools {
        let name = match pool {
            ipnet::IpNet::V4(_) => "CLUSTERMESH_OPERATOR_POD_CIDR_POOL",
            ipnet::IpNet::V6(_) => "CLUSTERMESH_OPERATOR_POD_CIDR_POOL_V6",
        };
        env_line(&mut t, name, pool);
    }
    t
}

/// The agent's `--config` file: the cluster's settings, the same on every
/// node (keys are the agent's long flag names).
fn agent_yaml(spec: &ClusterSpec, dir: &Path, etcd: Option<&EtcdFiles>) -> String {
    let mut t = header("clustermesh-agent", spec, "clustermesh-agent run --help")
        .replace("# One variable per flag", "# Keys are the long flags")
        + "# This node's own settings are in node.env beside this file.\n";
    let mut line = |key: &str, value: String| t.push_str(&format!("{key}: {value}\n"));
    line("cluster-name", spec.name.to_string());
    line("cluster-id", spec.id.get().to_string());
    line("max-connected-clusters", spec.mode.as_u32().to_string());
    line(
        "etcd-endpoints",
        format!("[{}]", etcd_endpoints(spec).replace(',', ", ")),
    );
    if let Some(f) = etcd {
        line("etcd-ca", f.ca.display().to_string());
        line("etcd-cert", f.cert.display().to_string());
        line("etcd-key", f.key.display().to_string());
    }
    line(
        "clustermesh-config",
        dir.join(Layout::REMOTES_DIR).display().to_string(),
    );
    line("health-listen", format!("\"{}\"", spec.agent_health_listen));
    if !spec.pod_cidr_pools.is_empty() {
        let pools: Vec<String> = spec.pod_cidr_pools.iter().map(|p| p.to_string()).collect();
        line("pod-cidr-pool", format!("[{}]", pools.join(", ")));
    }
    t
}

/// What each node writes into its `node.env`.
const NODE_ENV_EXAMPLE: &str = "\
# This node's settings for clustermesh-agent: copy to node.env on each node
# and fill in (systemd EnvironmentFile= syntax; each variable is a flag of
# `clustermesh-agent run --help`). Values here win over the unit's
# Environment= lines (state, socket and bpffs paths).
CLUSTERMESH_NODE_NAME=node-1
CLUSTERMESH_NODE_IP=192.0.2.11
#CLUSTERMESH_NODE_IPV6=2001:db8::11
# Without --pod-cidr-pool at init, each node needs its own pod CIDR:
#CLUSTERMESH_POD_CIDR=10.1.1.0/24
";

/// Flags for the etcd members (Debian's etcd reads `ETCD_*` variables from
/// /etc/default/etcd).
fn etcd_env(spec: &ClusterSpec, layout: &Layout) -> String {
    let dir = layout.installed(&Layout::etcd_dir());
    let mut t = format!(
        "# TLS settings of the etcd members of cluster {} (written by `clustermesh\n\
         # cluster init`): add them to each member's configuration (Debian:\n\
         # /etc/default/etcd) with its own name, data dir and peer URLs.\n",
        spec.name
    );
    env_line(&mut t, "ETCD_CERT_FILE", dir.join("server.crt").display());
    env_line(&mut t, "ETCD_KEY_FILE", dir.join("server.key").display());
    env_line(&mut t, "ETCD_TRUSTED_CA_FILE", dir.join("ca.crt").display());
    env_line(&mut t, "ETCD_CLIENT_CERT_AUTH", "true");
    t
}

fn header(what: &str, spec: &ClusterSpec, help: &str) -> String {
    format!(
        "# {what} of cluster {} (ID {}), written by `clustermesh cluster init`.\n\
         # One variable per flag of `{help}`.\n",
        spec.name,
        spec.id.get()
    )
}

fn etcd_endpoints(spec: &ClusterSpec) -> String {
    spec.etcd_endpoints
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn dedupe<T: PartialEq>(items: &mut Vec<T>) {
    let mut i = 0;
    while i < items.len() {
        if items[..i].contains(&items[i]) {
            items.remove(i);
        } else {
            i += 1;
        }
    }
}

/// Paths end up unquoted in environment files and `ExecStart=` lines.
fn check_path(what: &'static str, path: &Path) -> Result<(), InitError> {
    let bad = |reason| InitError::UnsafePath {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let text = path.to_str().ok_or_else(|| bad("not UTF-8"))?;
    if !path.is_absolute() {
        return Err(bad("not an absolute path"));
    }
    if text
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "\"'$%\\;#".contains(c))
    {
        return Err(bad("spaces, quotes and $ % \\ ; # are not allowed"));
    }
    Ok(())
}

/// Writes `data` so that readers see the old file or the whole new one,
/// with `mode` from the start.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), InitError> {
    certs::write_atomically(path, data, mode).map_err(|source| InitError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the admin descriptor of the cluster init made in `dir` (the
/// public descriptor is its [`ClusterAdminDescriptor::cluster`]).
pub fn export(dir: &Path) -> Result<ClusterAdminDescriptor, InitError> {
    let record = InitRecord::load(dir)?.ok_or_else(|| InitError::NoRecord {
        dir: dir.to_path_buf(),
    })?;
    if record.apiserver_endpoints.is_empty() {
        return Err(InitError::NoApiserverEndpoints { name: record.name });
    }
    let admin = dir.join(Layout::ADMIN_DIR);
    let read = |name: &str| {
        let path = admin.join(name);
        fs::read_to_string(&path).map_err(|source| InitError::Read { path, source })
    };
    let https = record
        .etcd_endpoints
        .iter()
        .any(|e| e.starts_with("https://"));
    let descriptor = ClusterAdminDescriptor {
        version: DESCRIPTOR_VERSION,
        kind: ClusterAdminDescriptor::KIND.to_owned(),
        name: record.name.clone(),
        id: record.id,
        max_connected_clusters: record.max_connected_clusters,
        apiserver_endpoints: record.apiserver_endpoints.clone(),
        ca_bundle: read("ca.crt")?,
        pod_cidr_pools: record.pod_cidr_pools.clone(),
        admin: ClientCert {
            cert: read("admin.crt")?,
            key: read("admin.key")?,
        },
        etcd: EtcdAccess {
            endpoints: record.etcd_endpoints.clone(),
            ca_bundle: https.then(|| read("etcd-ca.crt")).transpose()?,
            client: if https {
                Some(ClientCert {
                    cert: read("etcd-admin.crt")?,
                    key: read("etcd-admin.key")?,
                })
            } else {
                None
            },
        },
    };
    descriptor
        .validate()
        .map_err(|source| InitError::Descriptor {
            dir: dir.to_path_buf(),
            source,
        })?;
    Ok(descriptor)
}
