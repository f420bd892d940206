//! Pure service merging: the backends a frontend balances over, from the
//! local cluster's endpoints and the `ClusterService`s of remote clusters,
//! by the service's affinity, failover threshold and cluster weights.
//!
//! - A service that is not `global` uses local backends only.
//! - Remote clusters contribute backends (never frontends) when their
//!   service of the same namespace/name is `shared`.
//! - Affinity `none`: every backend. `local`: local backends while at least
//!   `minHealthy` are left, else local and remote together (graded: the
//!   remaining local ones stay in rotation). `remote`: the mirror image.
//! - Weights: each backend of cluster `c` gets `weight(c)` slots, so new
//!   connections split by cluster in that ratio; weight 0 removes a cluster.
//! - Families: each frontend (a dual-stack service has one per family)
//!   balances over backends of its own family only. A remote backend of a
//!   family the service has no frontend for would make a mixed-family
//!   service: it is skipped, and listed with the reason.

use std::net::{IpAddr, SocketAddr};

use bpf::Protocol;
use kvstore::values::{Affinity, ClusterService, ServiceDef, ServiceProtocol, family_name};

/// A remote cluster's service of the same namespace/name.
#[derive(Debug, Clone, Copy)]
pub struct RemoteService<'a> {
    pub cluster: &'a str,
    pub cluster_id: u32,
    pub service: &'a ClusterService,
}

/// One backend slot of a frontend.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Slot {
    pub backend: SocketAddr,
    pub cluster_id: u32,
}

/// What a frontend port balances over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedFrontend {
    pub frontend: SocketAddr,
    pub protocol: Protocol,
    pub slots: Vec<Slot>,
    /// Clusters whose backends are in rotation.
    pub active_clusters: Vec<String>,
    /// One line for status output, e.g. `local only (2 local >= minHealthy 1)`.
    pub reason: String,
    /// Which rule chose the backends (`reason` says it in words).
    pub mode: Mode,
    /// Every backend this frontend could use, chosen or not, by cluster.
    pub candidates: Vec<CandidateBackend>,
    /// Remote backends of this port that no frontend of the service can
    /// use (a family it has no frontend for), with the reason.
    pub skipped: Vec<SkippedBackend>,
}

/// A remote backend left out of a service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SkippedBackend {
    pub cluster: String,
    pub backend: SocketAddr,
    pub reason: SkipReason,
}

/// Why a remote backend is left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// Its family differs from every frontend's: a v4 frontend with a v6
    /// backend, or the reverse.
    MixedFamily,
}

impl SkipReason {
    pub const ALL: [Self; 1] = [Self::MixedFamily];

    /// The label in metrics and the word in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MixedFamily => "mixed-family",
        }
    }
}

impl SkippedBackend {
    /// One line for status output; `frontend` is the service's.
    pub fn describe(&self, frontend: IpAddr) -> String {
        match self.reason {
            SkipReason::MixedFamily => format!(
                "{}: {} backend {} from {} skipped: the service has no {} frontend (only {} {}), and a frontend balances over backends of its own family only",
                self.reason.as_str(),
                family_name(self.backend.ip()),
                self.backend,
                self.cluster,
                family_name(self.backend.ip()),
                family_name(frontend),
                frontend,
            ),
        }
    }
}

/// Which rule chose a frontend's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Not a global service: its own cluster's backends.
    LocalService,
    /// Global without affinity: every cluster's backends.
    All,
    /// Affinity `local` (or `remote`) and enough backends there.
    Local,
    Remote,
    /// The preferred clusters had too few backends: all of them serve.
    Failover,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LocalService => "local-service",
            Self::All => "all",
            Self::Local => "local",
            Self::Remote => "remote",
            Self::Failover => "failover",
        }
    }
}

/// A backend a frontend could use.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CandidateBackend {
    pub cluster: String,
    pub backend: SocketAddr,
    /// Slots it gets when chosen (0: its cluster's weight is 0).
    pub weight: u32,
    /// Whether it is in rotation now.
    pub active: bool,
}

struct Candidate<'a> {
    cluster: &'a str,
    cluster_id: u32,
    addr: SocketAddr,
}

/// Merges the backends of `def`'s ports, for each of its frontends (one
/// per family); `local_backends` may hold both families.
pub fn merge(
    def: &ServiceDef,
    local_cluster: &str,
    local_cluster_id: u32,
    local_backends: &[IpAddr],
    remotes: &[RemoteService<'_>],
) -> Vec<MergedFrontend> {
    def.frontends()
        .flat_map(|frontend| {
            def.ports.iter().map(move |port| {
                merge_port(
                    def,
                    frontend,
                    port,
                    local_cluster,
                    local_cluster_id,
                    local_backends,
                    remotes,
                )
            })
        })
        .collect()
}

fn merge_port(
    def: &ServiceDef,
    frontend: IpAddr,
    port: &kvstore::values::ServicePort,
    local_cluster: &str,
    local_cluster_id: u32,
    local_backends: &[IpAddr],
    remotes: &[RemoteService<'_>],
) -> MergedFrontend {
    let same_family = |ip: &IpAddr| ip.is_ipv4() == frontend.is_ipv4();
    let protocol = match port.protocol {
        ServiceProtocol::Tcp => Protocol::Tcp,
        ServiceProtocol::Udp => Protocol::Udp,
    };
    let local: Vec<Candidate<'_>> = local_backends
        .iter()
        .filter(|ip| same_family(ip))
        .map(|ip| Candidate {
            cluster: local_cluster,
            cluster_id: local_cluster_id,
            addr: SocketAddr::new(*ip, port.target()),
        })
        .collect();
    let offered: Vec<Candidate<'_>> = if def.global {
        remotes
            .iter()
            .filter(|r| r.service.shared && r.cluster != local_cluster)
            .flat_map(|r| {
                r.service.backend_ips().filter_map(move |(ip, ports)| {
                    let l4 = ports.get(&port.name)?;
                    (l4.protocol.eq_ignore_ascii_case(port.protocol.as_str())).then(|| Candidate {
                        cluster: r.cluster,
                        cluster_id: r.cluster_id,
                        addr: SocketAddr::new(ip, l4.port),
                    })
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    // The other family's backends belong to the other frontend; with
    // no frontend of their family they have nowhere to go.
    let mut skipped: Vec<SkippedBackend> = offered
        .iter()
        .filter(|c| !def.serves_family_of(c.addr.ip()))
        .map(|c| SkippedBackend {
            cluster: c.cluster.to_string(),
            backend: c.addr,
            reason: SkipReason::MixedFamily,
        })
        .collect();
    skipped.sort();
    let remote: Vec<Candidate<'_>> = offered
        .into_iter()
        .filter(|c| same_family(&c.addr.ip()))
        .collect();
    let weighted = |c: &Candidate<'_>| def.weight(c.cluster) > 0;
    let local_n = local.iter().filter(|c| weighted(c)).count() as u32;
    let remote_n = remote.iter().filter(|c| weighted(c)).count() as u32;
    let min = def.min_healthy();
    let (chosen, mode, reason): (Vec<&Candidate<'_>>, Mode, String) =
        match (def.global, def.affinity) {
            (false, _) => (
                local.iter().collect(),
                Mode::LocalService,
                "local service".into(),
            ),
            (true, Affinity::None) => (
                local.iter().chain(&remote).collect(),
                Mode::All,
                "all clusters".into(),
            ),
            (true, Affinity::Local) if local_n >= min => (
                local.iter().collect(),
                Mode::Local,
                format!("local only ({local_n} local >= minHealthy {min})"),
            ),
            (true, Affinity::Local) => (
                local.iter().chain(&remote).collect(),
                Mode::Failover,
                format!("failover to remote ({local_n} local < minHealthy {min})"),
            ),
            (true, Affinity::Remote) if remote_n >= min => (
                remote.iter().collect(),
                Mode::Remote,
                format!("remote only ({remote_n} remote >= minHealthy {min})"),
            ),
            (true, Affinity::Remote) => (
                local.iter().chain(&remote).collect(),
                Mode::Failover,
                format!("failover to local ({remote_n} remote < minHealthy {min})"),
            ),
        };
    let mut candidates: Vec<CandidateBackend> = local
        .iter()
        .chain(&remote)
        .map(|c| {
            let weight = def.weight(c.cluster);
            CandidateBackend {
                cluster: c.cluster.to_string(),
                backend: c.addr,
                weight,
                active: weight > 0
                    && chosen
                        .iter()
                        .any(|x| x.cluster == c.cluster && x.addr == c.addr),
            }
        })
        .collect();
    candidates.sort();
    let mut slots = Vec::new();
    let mut active = Vec::new();
    let mut chosen = chosen;
    chosen.sort_by(|a, b| (a.cluster, a.addr).cmp(&(b.cluster, b.addr)));
    for c in chosen {
        let w = def.weight(c.cluster);
        if w > 0 && !active.iter().any(|a: &String| a == c.cluster) {
            active.push(c.cluster.to_string());
        }
        for _ in 0..w {
            slots.push(Slot {
                backend: c.addr,
                cluster_id: c.cluster_id,
            });
        }
    }
    MergedFrontend {
        frontend: SocketAddr::new(frontend, port.port),
        protocol,
        slots,
        active_clusters: active,
        reason,
        mode,
        candidates,
        skipped,
    }
}
