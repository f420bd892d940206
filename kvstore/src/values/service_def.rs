use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::{
    cluster::{ClusterError, ClusterName},
    value::{DecodeError, InvalidReason, StoreValue},
};

/// A service definition for clusters without Kubernetes, stored at
/// `cilium/servicedefs/v1/<namespace>/<name>` (our extension, local to a
/// cluster). The operator exports it as a `ClusterService` with the backends
/// its selector picks; agents program its frontend with backends merged from
/// every cluster, by its affinity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceDef {
    pub namespace: String,
    pub name: String,
    /// The virtual IP clients connect to (either family).
    pub frontend: IpAddr,
    /// A dual-stack service's frontend of the other family (Kubernetes'
    /// second `clusterIPs` entry). Each frontend balances over backends of
    /// its own family only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second_frontend: Option<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// Endpoints (of this namespace) whose labels match are the backends.
    #[serde(deserialize_with = "super::serde_util::string_map::deserialize")]
    pub selector: BTreeMap<String, String>,
    /// `service.cilium.io/global`: merge backends of the same namespace/name
    /// from every cluster.
    #[serde(default)]
    pub global: bool,
    /// `service.cilium.io/shared`: offer this cluster's backends to the mesh
    /// (default: true when global).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
    /// `service.cilium.io/affinity`.
    #[serde(default)]
    pub affinity: Affinity,
    /// Graded failover: with affinity `local`, remote backends are added
    /// once fewer than this many local backends remain (default 1, i.e.
    /// Cilium's "only when none is left"); with affinity `remote`, local ones
    /// once fewer than this many remote backends remain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_healthy: Option<u32>,
    /// Load-balancing slots per backend of each cluster (default 1), so a
    /// cluster's share of new connections is its weight times its backends;
    /// 0 takes a cluster out of rotation.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cluster_weights: BTreeMap<String, u32>,
    /// The backends, where something other than the selector chose them
    /// (a Kubernetes Service's Endpoints: only ready Pods); `None`: the
    /// cluster's endpoints the selector matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<IpAddr>>,
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    pub name: String,
    /// Port on the frontend.
    pub port: u16,
    /// Port on the backends (default: `port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
    #[serde(default)]
    pub protocol: ServiceProtocol,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ServiceProtocol {
    #[default]
    Tcp,
    Udp,
}

impl ServiceProtocol {
    /// As written in `ClusterService` (`TCP`, `UDP`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        }
    }
}

/// Which cluster's backends a global service prefers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Affinity {
    /// Every backend of every cluster.
    #[default]
    None,
    /// Local backends; remote ones only below `minHealthy` local ones.
    Local,
    /// Remote backends; local ones only below `minHealthy` remote ones.
    Remote,
}

impl ServicePort {
    pub fn target(&self) -> u16 {
        self.target_port.unwrap_or(self.port)
    }
}

impl ServiceDef {
    /// Parses JSON or YAML and validates.
    pub fn parse(text: &str) -> Result<Self, ServiceDefError> {
        let def: Self = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(json_err) => match serde_norway::from_str(text) {
                Ok(v) => v,
                // Show the JSON error for what was clearly meant as JSON.
                Err(_) if text.trim_start().starts_with("{\"") => {
                    return Err(ServiceDefError::Json(json_err));
                }
                Err(e) => return Err(ServiceDefError::Yaml(e)),
            },
        };
        def.validate()?;
        Ok(def)
    }

    /// `shared` with its default.
    pub fn is_shared(&self) -> bool {
        self.shared.unwrap_or(self.global)
    }

    /// The failover threshold with its default.
    pub fn min_healthy(&self) -> u32 {
        self.min_healthy.unwrap_or(1)
    }

    /// Whether an endpoint with `labels` is a backend: same namespace, and
    /// the selector matches (keys without a source match any source).
    pub fn selects(&self, labels: &crate::labels::Labels) -> bool {
        labels.value(crate::labels::NAMESPACE_LABEL) == Some(self.namespace.as_str())
            && self.selector.iter().all(|(k, v)| {
                let key = k.rsplit_once(':').map_or(k.as_str(), |(_, key)| key);
                labels.value(key) == Some(v.as_str())
            })
    }

    /// The `ClusterService` a cluster exports for this definition, with the
    /// given backend addresses.
    pub fn export(
        &self,
        cluster: &ClusterName,
        cluster_id: u32,
        backends: impl IntoIterator<Item = IpAddr>,
    ) -> super::ClusterService {
        let mut svc = super::ClusterService::new(cluster, cluster_id, &self.namespace, &self.name);
        let port_config = |target: bool| -> super::PortConfiguration {
            self.ports
                .iter()
                .map(|p| {
                    let port = if target { p.target() } else { p.port };
                    (
                        p.name.clone(),
                        super::L4Addr {
                            protocol: p.protocol.as_str().to_string(),
                            port,
                        },
                    )
                })
                .collect()
        };
        for frontend in self.frontends() {
            svc.frontends
                .insert(frontend.to_string(), port_config(false));
        }
        // A backend of a family without a frontend would be a mixed-family
        // service for the clusters that read it: not exported.
        for ip in backends.into_iter().filter(|ip| self.serves_family_of(*ip)) {
            svc.backends.insert(ip.to_string(), port_config(true));
        }
        svc.selector = self.selector.clone();
        svc.shared = self.is_shared();
        svc.include_external = self.global;
        svc
    }

    /// Every frontend: `frontend`, then `second_frontend`.
    pub fn frontends(&self) -> impl Iterator<Item = IpAddr> + '_ {
        std::iter::once(self.frontend).chain(self.second_frontend)
    }

    /// Whether a frontend of `addr`'s family exists (a backend of that
    /// family has somewhere to serve).
    pub fn serves_family_of(&self, addr: IpAddr) -> bool {
        self.frontends().any(|f| f.is_ipv4() == addr.is_ipv4())
    }

    /// The weight of `cluster` (default 1).
    pub fn weight(&self, cluster: &str) -> u32 {
        self.cluster_weights.get(cluster).copied().unwrap_or(1)
    }

    pub fn validate(&self) -> Result<(), ServiceDefError> {
        if self.namespace.is_empty() || self.namespace.contains('/') {
            return Err(ServiceDefError::InvalidNamespace {
                namespace: self.namespace.clone(),
            });
        }
        if self.name.is_empty() || self.name.contains('/') {
            return Err(ServiceDefError::InvalidName {
                name: self.name.clone(),
            });
        }
        if self.ports.is_empty() {
            return Err(ServiceDefError::NoPorts);
        }
        let mut names = std::collections::BTreeSet::new();
        for p in &self.ports {
            if p.port == 0 || p.target() == 0 {
                return Err(ServiceDefError::PortOutOfRange {
                    name: p.name.clone(),
                });
            }
            if !names.insert(&p.name) {
                return Err(ServiceDefError::DuplicatePortName {
                    name: p.name.clone(),
                });
            }
        }
        if let Some(second) = self.second_frontend
            && second.is_ipv4() == self.frontend.is_ipv4()
        {
            return Err(ServiceDefError::SecondFrontendFamily {
                frontend: self.frontend,
                second,
            });
        }
        if let Some(backend) = self
            .backends
            .iter()
            .flatten()
            .find(|b| !self.serves_family_of(**b))
        {
            return Err(ServiceDefError::MixedFamily {
                backend: *backend,
                frontend: self.frontend,
            });
        }
        if self.selector.is_empty() && self.backends.is_none() {
            return Err(ServiceDefError::NoSelector);
        }
        for cluster in self.cluster_weights.keys() {
            ClusterName::new(cluster.as_str()).map_err(ServiceDefError::ClusterWeight)?;
        }
        Ok(())
    }
}

/// Why a [`ServiceDef`] was refused. Each message is whole: it includes the
/// parser's words, so the error it wraps is data to match on rather than a
/// [`std::error::Error::source`] said twice.
#[derive(Debug, thiserror::Error)]
pub enum ServiceDefError {
    /// The text starts like JSON and is not a valid JSON service.
    #[error("invalid JSON service: {0}")]
    Json(serde_json::Error),
    /// The text is neither a valid JSON nor a valid YAML service.
    #[error("invalid service: {0}")]
    Yaml(serde_norway::Error),
    /// The namespace is part of the key.
    #[error("namespace {namespace:?} must be non-empty and contain no '/'")]
    InvalidNamespace { namespace: String },
    /// The name is part of the key.
    #[error("name {name:?} must be non-empty and contain no '/'")]
    InvalidName { name: String },
    #[error("a service needs at least one port")]
    NoPorts,
    /// A port or target port is 0.
    #[error("port {name:?}: ports must be 1-65535")]
    PortOutOfRange { name: String },
    #[error("port name {name:?} is used twice")]
    DuplicatePortName { name: String },
    #[error(
        "a service needs a selector or its backends (an empty selector would select every endpoint)"
    )]
    NoSelector,
    /// `secondFrontend` has the family of `frontend`: a dual-stack service
    /// has one frontend per family.
    #[error(
        "secondFrontend {second} is of the same family as frontend {frontend}: a dual-stack service has one frontend per family"
    )]
    SecondFrontendFamily { frontend: IpAddr, second: IpAddr },
    /// A backend of a family no frontend has (a frontend balances over its
    /// own family's backends only).
    #[error(
        "mixed-family service: backend {backend} is {} but no frontend is (frontend {frontend}); a frontend balances over backends of its own family only — add a secondFrontend of that family for a dual-stack service",
        family_name(*backend)
    )]
    MixedFamily { backend: IpAddr, frontend: IpAddr },
    /// A key of `clusterWeights` is not a cluster name.
    #[error("clusterWeights: {0}")]
    ClusterWeight(ClusterError),
}

/// `IPv4` or `IPv6`, for messages.
pub fn family_name(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() { "IPv4" } else { "IPv6" }
}

impl StoreValue for ServiceDef {
    const KIND: &'static str = "service definition";

    /// `key` is `<namespace>/<name>`.
    fn decode(key: &str, bytes: &[u8]) -> Result<Self, DecodeError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| DecodeError::new(Self::KIND, key, InvalidReason::Malformed, e))?;
        let def = Self::parse(text)
            .map_err(|e| DecodeError::new(Self::KIND, key, InvalidReason::Malformed, e))?;
        if def.key() != key {
            return Err(DecodeError::new(
                Self::KIND,
                key,
                InvalidReason::KeyMismatch,
                format!("definition is {}", def.key()),
            ));
        }
        Ok(def)
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("service definitions always serialize")
    }

    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_must_be_strings() {
        let with = |selector: &str| YAML.replace("selector: {app: echo}", selector);
        for bad in [
            "selector: {app: 5}",
            "selector: {app: true}",
            "selector: {app: [a]}",
        ] {
            let e = ServiceDef::parse(&with(bad)).unwrap_err().to_string();
            assert!(
                e.contains("label \"app\"") && e.contains("a string"),
                "{bad}: {e}"
            );
        }
        let quoted = ServiceDef::parse(&with("selector: {app: \"5\"}")).unwrap();
        assert_eq!(quoted.selector["app"], "5");
        let json = r#"{"namespace":"d","name":"e","frontend":"10.96.0.1","ports":[{"port":80}],"selector":{"app":5}}"#;
        assert!(ServiceDef::parse(json).is_err());
        let doc = crate::values::PolicyDocument::parse(
            "kind: CiliumNetworkPolicy\nmetadata: {name: p}\nspec:\n  endpointSelector: {matchLabels: {tier: 1}}\n",
        );
        assert!(doc.unwrap_err().to_string().contains("label \"tier\""));
    }

    const YAML: &str = r#"
namespace: demo
name: echo
frontend: 10.96.0.10
ports:
- {name: http, port: 80, targetPort: 8080}
selector: {app: echo}
global: true
affinity: local
minHealthy: 2
clusterWeights: {c1: 3, c2: 1}
"#;

    #[test]
    fn parses_and_round_trips() {
        let def = ServiceDef::parse(YAML).unwrap();
        assert_eq!(def.key(), "demo/echo");
        assert!(def.is_shared());
        assert_eq!(def.affinity, Affinity::Local);
        assert_eq!(
            (def.min_healthy(), def.weight("c1"), def.weight("c9")),
            (2, 3, 1)
        );
        assert_eq!(def.ports[0].target(), 8080);
        assert_eq!(def.ports[0].protocol, ServiceProtocol::Tcp);
        assert_eq!(ServiceDef::decode("demo/echo", &def.encode()).unwrap(), def);
    }

    #[test]
    fn selects_and_exports() {
        use crate::labels::{CLUSTER_LABEL, Label, Labels, NAMESPACE_LABEL};
        let def = ServiceDef::parse(YAML).unwrap();
        let labels = |ns: &str, app: &str| -> Labels {
            [
                Label::k8s("app", app),
                Label::k8s(NAMESPACE_LABEL, ns),
                Label::k8s(CLUSTER_LABEL, "c1"),
            ]
            .into_iter()
            .collect()
        };
        assert!(def.selects(&labels("demo", "echo")));
        assert!(!def.selects(&labels("prod", "echo")));
        assert!(!def.selects(&labels("demo", "web")));
        let c1 = ClusterName::new("c1").unwrap();
        let svc = def.export(&c1, 1, ["10.1.0.5".parse().unwrap()]);
        assert_eq!(svc.key(), "c1/demo/echo");
        assert_eq!(svc.frontends["10.96.0.10"]["http"].port, 80);
        assert_eq!(svc.backends["10.1.0.5"]["http"].port, 8080);
        assert!(svc.shared && svc.include_external);
        assert!(
            crate::value::StoreValue::decode(&svc.key(), &crate::value::StoreValue::encode(&svc))
                .map(|s: super::super::ClusterService| s == svc)
                .unwrap()
        );
    }

    #[test]
    fn refuses_bad_definitions() {
        let bad = |t: &str| ServiceDef::parse(t).unwrap_err().to_string();
        assert!(
            bad(&YAML.replace("selector: {app: echo}", "selector: {}"))
                .contains("needs a selector")
        );
        assert!(
            bad(&YAML.replace("affinity: local", "affinity: nearest")).contains("unknown variant")
        );
        assert!(
            bad(&YAML.replace("frontend: 10.96.0.10", "frontend: nowhere")).contains("invalid")
        );
        assert!(bad(&YAML.replace("port: 80,", "port: 0,")).contains("1-65535"));
        assert!(bad(&YAML.replace("c2: 1", "C2: 1")).contains("clusterWeights"));
        assert!(matches!(
            ServiceDef::parse(&YAML.replace("c2: 1", "C2: 1")),
            Err(ServiceDefError::ClusterWeight(
                ClusterError::InvalidName { .. }
            ))
        ));
        assert!(matches!(
            ServiceDef::parse(&YAML.replace("name: echo", "name: a/b")),
            Err(ServiceDefError::InvalidName { name }) if name == "a/b"
        ));
        assert!(matches!(
            ServiceDef::parse("{\"namespace\": 1}"),
            Err(ServiceDefError::Json(_))
        ));
    }

    #[test]
    fn mixed_family_services_are_refused_with_the_reason() {
        let with_backends = |frontend: &str, backends: &str| {
            ServiceDef::parse(&format!(
                "namespace: demo\nname: mixed\nfrontend: \"{frontend}\"\nports: [{{name: http, port: 80}}]\nselector: {{}}\nbackends: {backends}\n"
            ))
        };
        // A v4 frontend with a v6 backend, and the reverse.
        let e = with_backends("10.96.0.20", "[10.1.1.5, \"fd10:1::5\"]").unwrap_err();
        assert!(
            matches!(e, ServiceDefError::MixedFamily { backend, .. } if backend.to_string() == "fd10:1::5"),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("mixed-family service: backend fd10:1::5 is IPv6"),
            "{e}"
        );
        let e = with_backends("fd96::20", "[10.1.1.5]").unwrap_err();
        assert!(e.to_string().contains("backend 10.1.1.5 is IPv4"), "{e}");
        // One family each side is fine.
        assert!(with_backends("fd96::20", "[\"fd10:1::5\"]").is_ok());
        assert!(with_backends("10.96.0.20", "[10.1.1.5]").is_ok());
        // Two frontends of one family are not dual-stack.
        let e = ServiceDef::parse(&YAML.replace(
            "frontend: 10.96.0.10",
            "frontend: 10.96.0.10\nsecondFrontend: 10.96.0.11",
        ))
        .unwrap_err();
        assert!(
            matches!(e, ServiceDefError::SecondFrontendFamily { .. }),
            "{e}"
        );
    }

    #[test]
    fn dual_stack_services_export_each_family_under_its_frontend() {
        let def = ServiceDef::parse(&YAML.replace(
            "frontend: 10.96.0.10",
            "frontend: 10.96.0.10\nsecondFrontend: \"fd96::10\"",
        ))
        .unwrap();
        assert_eq!(
            def.frontends().map(|f| f.to_string()).collect::<Vec<_>>(),
            ["10.96.0.10", "fd96::10"]
        );
        let c1 = ClusterName::new("c1").unwrap();
        let svc = def.export(
            &c1,
            1,
            ["10.1.0.5".parse().unwrap(), "fd10:1::5".parse().unwrap()],
        );
        assert_eq!(svc.frontends.len(), 2);
        assert_eq!(svc.backends.len(), 2);
        assert_eq!(ServiceDef::decode("demo/echo", &def.encode()).unwrap(), def);
        // A v4-only service exports only its v4 backends (a dual-stack
        // endpoint's v6 address has no frontend to serve).
        let v4 = ServiceDef::parse(YAML).unwrap();
        let svc = v4.export(
            &c1,
            1,
            ["10.1.0.5".parse().unwrap(), "fd10:1::5".parse().unwrap()],
        );
        assert_eq!(svc.backends.keys().collect::<Vec<_>>(), ["10.1.0.5"]);
    }
}
