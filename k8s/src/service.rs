//! Kubernetes Services and their endpoints as the mesh's service
//! definitions: the frontend is the Service's cluster IP, the backends are
//! its ready endpoints, and Cilium's annotations say whether it is global,
//! shared and which clusters it prefers.
//!
//! | annotation | legacy alias | values |
//! |---|---|---|
//! | `service.cilium.io/global` | `io.cilium/global-service` | `"true"`: merge with the same namespace/name of every cluster |
//! | `service.cilium.io/shared` | `io.cilium/shared-service` | only when global; default `"true"`; `"false"`: use remote backends, offer none |
//! | `service.cilium.io/affinity` | `io.cilium/service-affinity` | only when global: `local`, `remote`, `none` |
//! | `service.clustermesh.io/min-healthy` | – | our graded failover threshold (default 1) |
//! | `service.clustermesh.io/cluster-weights` | – | our per-cluster weights, `c1=3,c2=1` |
//!
//! Not for: headless Services (no cluster IP), `ExternalName`, SCTP ports
//! (skipped), per-address target ports that differ between endpoints (the
//! first one seen for a port name is used).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use k8s_openapi::api::{
    core::v1::{Endpoints, Service},
    discovery::v1::EndpointSlice,
};
use kvstore::values::{Affinity, ServiceDef, ServicePort, ServiceProtocol};

pub const GLOBAL: &str = "service.cilium.io/global";
pub const GLOBAL_LEGACY: &str = "io.cilium/global-service";
pub const SHARED: &str = "service.cilium.io/shared";
pub const SHARED_LEGACY: &str = "io.cilium/shared-service";
pub const AFFINITY: &str = "service.cilium.io/affinity";
pub const AFFINITY_LEGACY: &str = "io.cilium/service-affinity";
pub const MIN_HEALTHY: &str = "service.clustermesh.io/min-healthy";
pub const CLUSTER_WEIGHTS: &str = "service.clustermesh.io/cluster-weights";
/// An EndpointSlice's Service (the `kubernetes.io/service-name` label).
pub const SLICE_SERVICE_LABEL: &str = "kubernetes.io/service-name";

/// Why a Service is refused (it then changes nothing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("annotation {annotation}: {value:?} is not \"true\" or \"false\"")]
    NotABool { annotation: String, value: String },
    #[error("annotation {annotation}: {value:?} is not local, remote or none")]
    Affinity { annotation: String, value: String },
    #[error("annotation {MIN_HEALTHY}: {value:?} is not a number")]
    MinHealthy { value: String },
    #[error("annotation {CLUSTER_WEIGHTS}: {value:?} is not a list of cluster=weight")]
    Weights { value: String },
    #[error("the service is invalid: {0}")]
    Invalid(String),
}

/// What the annotations say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MeshAnnotations {
    pub global: bool,
    /// Effective: `false` unless global.
    pub shared: bool,
    /// `None` unless global.
    pub affinity: Affinity,
    pub min_healthy: Option<u32>,
    pub cluster_weights: BTreeMap<String, u32>,
}

impl MeshAnnotations {
    /// Whether the operator exports the Service to other clusters
    /// (`cilium/state/services/v1/<cluster>/<ns>/<name>`): global and shared.
    pub fn exported(&self) -> bool {
        self.global && self.shared
    }
}

/// Reads the annotations of `svc` (the current name wins over the legacy
/// alias when both are set).
pub fn annotations(svc: &Service) -> Result<MeshAnnotations, ServiceError> {
    let empty = BTreeMap::new();
    let a = svc.metadata.annotations.as_ref().unwrap_or(&empty);
    let get = |name: &'static str, legacy: Option<&'static str>| {
        a.get(name)
            .map(|v| (name, v))
            .or_else(|| legacy.and_then(|l| a.get(l).map(|v| (l, v))))
    };
    let boolean = |name, legacy| -> Result<Option<bool>, ServiceError> {
        match get(name, legacy) {
            None => Ok(None),
            Some((n, v)) => match v.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(Some(true)),
                "false" => Ok(Some(false)),
                _ => Err(ServiceError::NotABool {
                    annotation: n.into(),
                    value: v.clone(),
                }),
            },
        }
    };
    let global = boolean(GLOBAL, Some(GLOBAL_LEGACY))?.unwrap_or(false);
    let shared = boolean(SHARED, Some(SHARED_LEGACY))?.unwrap_or(true) && global;
    let affinity = match get(AFFINITY, Some(AFFINITY_LEGACY)) {
        None => Affinity::None,
        Some((n, v)) => match v.trim().to_ascii_lowercase().as_str() {
            "local" => Affinity::Local,
            "remote" => Affinity::Remote,
            "none" | "" => Affinity::None,
            _ => {
                return Err(ServiceError::Affinity {
                    annotation: n.into(),
                    value: v.clone(),
                });
            }
        },
    };
    let min_healthy = match a.get(MIN_HEALTHY) {
        None => None,
        Some(v) => Some(
            v.trim()
                .parse()
                .map_err(|_| ServiceError::MinHealthy { value: v.clone() })?,
        ),
    };
    let mut cluster_weights = BTreeMap::new();
    if let Some(v) = a.get(CLUSTER_WEIGHTS) {
        for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (c, w) = part
                .split_once('=')
                .and_then(|(c, w)| Some((c.trim().to_string(), w.trim().parse().ok()?)))
                .ok_or_else(|| ServiceError::Weights { value: v.clone() })?;
            cluster_weights.insert(c, w);
        }
    }
    Ok(MeshAnnotations {
        global,
        shared,
        affinity: if global { affinity } else { Affinity::None },
        min_healthy,
        cluster_weights,
    })
}

/// The ready backends of a Service: address → port name → port.
pub type Backends = BTreeMap<IpAddr, BTreeMap<String, u16>>;

/// The ready addresses of an Endpoints object with their ports by name.
pub fn endpoints_backends(ep: &Endpoints) -> Backends {
    let mut out = Backends::new();
    for subset in ep.subsets.iter().flatten() {
        let ports: BTreeMap<String, u16> = subset
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.name.clone().unwrap_or_default(),
                    u16::try_from(p.port).ok()?,
                ))
            })
            .collect();
        for addr in subset.addresses.iter().flatten() {
            if let Ok(ip) = addr.ip.parse::<IpAddr>() {
                out.entry(ip).or_default().extend(ports.clone());
            }
        }
    }
    out
}

/// The ready endpoints of a Service's EndpointSlices (`discovery.k8s.io/v1`).
/// An endpoint without conditions counts as ready, as the API says.
pub fn slices_backends<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>) -> Backends {
    let mut out = Backends::new();
    for slice in slices {
        let ports: BTreeMap<String, u16> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.name.clone().unwrap_or_default(),
                    u16::try_from(p.port?).ok()?,
                ))
            })
            .collect();
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            for ip in ep.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                out.entry(ip).or_default().extend(ports.clone());
            }
        }
    }
    out
}

/// The service definition of `svc` with `backends`, or `None` for what
/// has no virtual IP to program (headless, `ExternalName`, no cluster IP
/// yet).
pub fn service_def(svc: &Service, backends: &Backends) -> Result<Option<ServiceDef>, ServiceError> {
    let Some(spec) = &svc.spec else {
        return Ok(None);
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(None);
    }
    let Some(frontend) = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok())
    else {
        return Ok(None);
    };
    // A dual-stack Service's second cluster IP (the other family).
    let second_frontend = spec
        .cluster_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .find(|ip| ip.is_ipv4() != frontend.is_ipv4());
    let ann = annotations(svc)?;
    let mut ports = Vec::new();
    for p in spec.ports.iter().flatten() {
        let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
            "TCP" => ServiceProtocol::Tcp,
            "UDP" => ServiceProtocol::Udp,
            _ => continue,
        };
        let Ok(port) = u16::try_from(p.port) else {
            continue;
        };
        let name = p.name.clone().unwrap_or_default();
        // The endpoints say which port a named target port is; a number
        // is used as it is.
        let from_endpoints = backends
            .values()
            .find_map(|ports| ports.get(&name).copied());
        let target = from_endpoints.or(match &p.target_port {
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                u16::try_from(*n).ok()
            }
            _ => None,
        });
        ports.push(ServicePort {
            name,
            port,
            target_port: target.filter(|t| *t != port),
            protocol,
        });
    }
    if ports.is_empty() {
        return Ok(None);
    }
    let def = ServiceDef {
        namespace: svc
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name: svc.metadata.name.clone().unwrap_or_default(),
        frontend,
        second_frontend,
        ports,
        selector: spec.selector.clone().unwrap_or_default(),
        global: ann.global,
        shared: ann.global.then_some(ann.shared),
        affinity: ann.affinity,
        min_healthy: ann.min_healthy,
        cluster_weights: ann.cluster_weights,
        // Kubernetes keeps one EndpointSlice per family; an address of a
        // family without a cluster IP has no frontend to serve it.
        backends: Some(
            backends
                .keys()
                .copied()
                .filter(|ip| {
                    ip.is_ipv4() == frontend.is_ipv4()
                        || second_frontend.is_some_and(|f| f.is_ipv4() == ip.is_ipv4())
                })
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        ),
    };
    def.validate()
        .map_err(|e| ServiceError::Invalid(e.to_string()))?;
    Ok(Some(def))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::core::v1::{
            EndpointAddress, EndpointPort, EndpointSubset, ServicePort as K8sPort, ServiceSpec,
        },
        apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
    };

    use kvstore::StoreValue as _;

    use super::*;

    fn svc(annotations: &[(&str, &str)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("echo".into()),
                namespace: Some("demo".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some("10.96.0.10".into()),
                selector: Some([("app".to_string(), "echo".to_string())].into()),
                ports: Some(vec![
                    K8sPort {
                        name: Some("http".into()),
                        port: 80,
                        target_port: Some(IntOrString::String("web".into())),
                        ..Default::default()
                    },
                    K8sPort {
                        name: Some("sctp".into()),
                        port: 99,
                        protocol: Some("SCTP".into()),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn global_shared_truth_table() {
        let a = |ann: &[(&str, &str)]| annotations(&svc(ann)).unwrap();
        assert!(!a(&[]).global && !a(&[]).exported());
        assert!(a(&[(GLOBAL, "true")]).exported());
        assert!(a(&[(GLOBAL_LEGACY, "true")]).exported(), "legacy alias");
        let not_shared = a(&[(GLOBAL, "true"), (SHARED, "false")]);
        assert!(not_shared.global && !not_shared.exported());
        // shared without global means nothing
        assert!(!a(&[(SHARED, "true")]).exported());
        // the current name wins over the legacy one
        assert!(!a(&[(GLOBAL, "false"), (GLOBAL_LEGACY, "true")]).global);
        assert_eq!(
            a(&[(GLOBAL, "true"), (AFFINITY_LEGACY, "remote")]).affinity,
            Affinity::Remote
        );
        // affinity is only read for global services
        assert_eq!(a(&[(AFFINITY, "local")]).affinity, Affinity::None);
        let w = a(&[(CLUSTER_WEIGHTS, "c1=3, c2=0"), (MIN_HEALTHY, "2")]);
        assert_eq!(
            w.cluster_weights,
            [("c1".into(), 3), ("c2".into(), 0)].into()
        );
        assert_eq!(w.min_healthy, Some(2));
        for bad in [
            (GLOBAL, "yes"),
            (AFFINITY, "sideways"),
            (MIN_HEALTHY, "-1"),
            (CLUSTER_WEIGHTS, "c1"),
        ] {
            let mut ann = vec![bad];
            if bad.0 != GLOBAL {
                ann.push((GLOBAL, "true"));
            }
            assert!(annotations(&svc(&ann)).is_err(), "{bad:?}");
        }
        assert!(matches!(
            annotations(&svc(&[(GLOBAL, "yes")])),
            Err(ServiceError::NotABool { .. })
        ));
    }

    #[test]
    fn definition_from_service_and_endpoints() {
        let ep = Endpoints {
            subsets: Some(vec![EndpointSubset {
                addresses: Some(vec![
                    EndpointAddress {
                        ip: "10.1.0.5".into(),
                        ..Default::default()
                    },
                    EndpointAddress {
                        ip: "10.1.1.7".into(),
                        ..Default::default()
                    },
                ]),
                not_ready_addresses: Some(vec![EndpointAddress {
                    ip: "10.1.0.9".into(),
                    ..Default::default()
                }]),
                ports: Some(vec![EndpointPort {
                    name: Some("http".into()),
                    port: 8080,
                    ..Default::default()
                }]),
            }]),
            ..Default::default()
        };
        let backends = endpoints_backends(&ep);
        let def = service_def(&svc(&[(GLOBAL, "true")]), &backends)
            .unwrap()
            .unwrap();
        assert_eq!(def.key(), "demo/echo");
        assert_eq!(def.frontend.to_string(), "10.96.0.10");
        assert_eq!(def.ports.len(), 1, "SCTP is skipped");
        assert_eq!(
            def.ports[0].target(),
            8080,
            "the named port from the endpoints"
        );
        assert_eq!(
            def.backends.as_deref().unwrap(),
            [
                "10.1.0.5".parse::<IpAddr>().unwrap(),
                "10.1.1.7".parse().unwrap()
            ],
            "not-ready addresses are no backends"
        );
        assert!(def.is_shared());
        // No endpoints yet: the named port is not known, the service has
        // no backends but is still programmed.
        let def = service_def(&svc(&[]), &Backends::new()).unwrap().unwrap();
        assert_eq!(def.backends.as_deref(), Some(&[][..]));
        let mut headless = svc(&[]);
        headless.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        assert_eq!(service_def(&headless, &backends).unwrap(), None);
    }
}
