use serde::{Deserialize, Serialize};

use super::label_selector::{LabelSelector, LabelSelectorError};
use crate::value::{DecodeError, InvalidReason, StoreValue};

/// A CiliumNetworkPolicy-shaped document, stored at
/// `cilium/policies/v1/<namespace>/<name>` (or `_clusterwide/<name>`), our
/// extension for clusters without Kubernetes. Accepted as JSON or YAML.
///
/// Only ingress rules exist for now; a document with `egress` rules is
/// refused rather than half-applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDocument {
    #[serde(default = "default_api_version")]
    pub api_version: String,
    pub kind: PolicyKind,
    pub metadata: PolicyMetadata,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<PolicySpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub specs: Vec<PolicySpec>,
}

fn default_api_version() -> String {
    "cilium.io/v2".into()
}

/// Namespaced or cluster-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyKind {
    CiliumNetworkPolicy,
    CiliumClusterwideNetworkPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyMetadata {
    pub name: String,
    /// For `CiliumNetworkPolicy`; defaults to `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Anything else Kubernetes puts in metadata is kept.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One rule: which endpoints it applies to and what may reach them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    pub endpoint_selector: LabelSelector,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Who may connect (`fromEndpoints` / `fromEntities`; neither = anyone) and
/// to which ports (`toPorts`; none = every port).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_endpoints: Option<Vec<LabelSelector>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_entities: Option<Vec<Entity>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_ports: Vec<PortRule>,
}

/// Peers named by what they are rather than by labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Entity {
    /// Anything outside the mesh (identity 2, and unknown sources).
    World,
    /// The local node.
    Host,
    /// Other nodes.
    RemoteNode,
    /// Every endpoint of the local cluster.
    Cluster,
    /// Everything.
    All,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRule {
    pub ports: Vec<PortProtocol>,
}

/// A destination port (`"8080"` or `8080`; `0` = every port) and protocol
/// (`TCP`, `UDP`, `ICMP` or `ANY`, the default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortProtocol {
    #[serde(with = "port_string")]
    pub port: u16,
    #[serde(default)]
    pub protocol: L4Protocol,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum L4Protocol {
    Tcp,
    Udp,
    Icmp,
    #[default]
    Any,
}

mod port_string {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(port: &u16, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&port.to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Port {
            Number(u64),
            Text(String),
        }
        let n = match Port::deserialize(d)? {
            Port::Number(n) => n,
            Port::Text(s) => s
                .trim()
                .parse()
                .map_err(|_| D::Error::custom(format!("port {s:?} is not a number")))?,
        };
        u16::try_from(n).map_err(|_| D::Error::custom(format!("port {n} is out of range 0-65535")))
    }
}

/// The namespace of clusterwide policies in keys; `_` is not valid in a
/// namespace name, so it cannot collide.
pub const CLUSTERWIDE: &str = "_clusterwide";

impl PolicyDocument {
    /// Parses JSON or YAML and validates; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let doc: Self = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(json_err) => match serde_norway::from_str(text) {
                Ok(v) => v,
                // Show the JSON error for what was clearly meant as JSON.
                Err(_) if text.trim_start().starts_with("{\"") => {
                    return Err(PolicyError::Json(json_err));
                }
                Err(e) => return Err(PolicyError::Yaml(e)),
            },
        };
        doc.validate()?;
        Ok(doc)
    }

    /// The namespace rules are confined to (`None` for clusterwide policies).
    pub fn namespace(&self) -> Option<&str> {
        match self.kind {
            PolicyKind::CiliumNetworkPolicy => {
                Some(self.metadata.namespace.as_deref().unwrap_or("default"))
            }
            PolicyKind::CiliumClusterwideNetworkPolicy => None,
        }
    }

    /// Every rule of the document (`spec` and `specs`).
    pub fn rules(&self) -> impl Iterator<Item = &PolicySpec> {
        self.spec.iter().chain(self.specs.iter())
    }

    /// Checks everything, so a document is either used whole or not at all.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let name = &self.metadata.name;
        if name.is_empty() || name.contains('/') {
            return Err(PolicyError::InvalidName { name: name.clone() });
        }
        if let Some(ns) = self.namespace()
            && (ns.is_empty() || ns.contains('/') || ns.contains('_'))
        {
            return Err(PolicyError::InvalidNamespace {
                namespace: ns.to_string(),
            });
        }
        if self.rules().next().is_none() {
            return Err(PolicyError::NoRules);
        }
        for (rule, spec) in self.rules().enumerate() {
            if spec.egress.is_some() {
                return Err(PolicyError::EgressUnsupported { rule });
            }
            spec.endpoint_selector
                .validate()
                .map_err(|error| PolicyError::EndpointSelector { rule, error })?;
            for (ingress, from) in spec.ingress.iter().enumerate() {
                for sel in from.from_endpoints.iter().flatten() {
                    sel.validate().map_err(|error| PolicyError::FromEndpoints {
                        rule,
                        ingress,
                        error,
                    })?;
                }
                for port in from.to_ports.iter().flat_map(|p| &p.ports) {
                    if port.protocol == L4Protocol::Icmp && port.port != 0 {
                        return Err(PolicyError::IcmpPort {
                            rule,
                            ingress,
                            port: port.port,
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// Why a [`PolicyDocument`] was refused. Each message is whole: it includes
/// the parser's or the selector's words, so the error it wraps is data to
/// match on rather than a [`std::error::Error::source`] said twice.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The text starts like JSON and is not a valid JSON policy.
    #[error("invalid JSON policy: {0}")]
    Json(serde_json::Error),
    /// The text is neither a valid JSON nor a valid YAML policy.
    #[error("invalid policy: {0}")]
    Yaml(serde_norway::Error),
    /// The name is part of the key.
    #[error("metadata.name {name:?} must be non-empty and contain no '/'")]
    InvalidName { name: String },
    /// The namespace is part of the key; `_` is reserved for [`CLUSTERWIDE`].
    #[error("metadata.namespace {namespace:?} is not a valid namespace")]
    InvalidNamespace { namespace: String },
    #[error("the policy has neither spec nor specs")]
    NoRules,
    /// Only ingress rules are enforced; a half-applied policy would allow
    /// what its author meant to deny.
    #[error("rule {rule}: egress rules are not supported yet; remove them (nothing was applied)")]
    EgressUnsupported { rule: usize },
    #[error("rule {rule}: endpointSelector: {error}")]
    EndpointSelector {
        rule: usize,
        error: LabelSelectorError,
    },
    #[error("rule {rule}: ingress {ingress} fromEndpoints: {error}")]
    FromEndpoints {
        rule: usize,
        ingress: usize,
        error: LabelSelectorError,
    },
    #[error("rule {rule}: ingress {ingress}: ICMP has no ports (got {port})")]
    IcmpPort {
        rule: usize,
        ingress: usize,
        port: u16,
    },
}

impl StoreValue for PolicyDocument {
    const KIND: &'static str = "policy";

    /// `key` is `<namespace>/<name>` or `_clusterwide/<name>`.
    fn decode(key: &str, bytes: &[u8]) -> Result<Self, DecodeError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| DecodeError::new(Self::KIND, key, InvalidReason::Malformed, e))?;
        let doc = Self::parse(text)
            .map_err(|e| DecodeError::new(Self::KIND, key, InvalidReason::Malformed, e))?;
        if doc.key() != key {
            return Err(DecodeError::new(
                Self::KIND,
                key,
                InvalidReason::KeyMismatch,
                format!("document is {}", doc.key()),
            ));
        }
        Ok(doc)
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("policies always serialize")
    }

    fn key(&self) -> String {
        format!(
            "{}/{}",
            self.namespace().unwrap_or(CLUSTERWIDE),
            self.metadata.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: allow-client
  namespace: demo
  labels: {team: a}
spec:
  endpointSelector:
    matchLabels: {app: echo}
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: client
        io.cilium.k8s.policy.cluster: c1
    toPorts:
    - ports:
      - port: "8080"
        protocol: TCP
  - fromEntities: [world]
"#;

    #[test]
    fn parses_yaml_and_round_trips_as_json() {
        let doc = PolicyDocument::parse(YAML).unwrap();
        assert_eq!(doc.key(), "demo/allow-client");
        assert_eq!(doc.namespace(), Some("demo"));
        let rule = doc.rules().next().unwrap();
        assert_eq!(rule.ingress[0].to_ports[0].ports[0].port, 8080);
        assert_eq!(
            rule.ingress[0].to_ports[0].ports[0].protocol,
            L4Protocol::Tcp
        );
        assert_eq!(
            rule.ingress[1].from_entities.as_deref(),
            Some(&[Entity::World][..])
        );
        let again = PolicyDocument::decode("demo/allow-client", &doc.encode()).unwrap();
        assert_eq!(again, doc);
        assert!(doc.metadata.extra.contains_key("labels"));
    }

    #[test]
    fn refuses_bad_documents_with_a_reason() {
        let bad = |text: &str| PolicyDocument::parse(text).unwrap_err().to_string();
        assert!(bad(&YAML.replace("fromEndpoints", "fromEndpoint")).contains("unknown field"));
        assert!(bad(&YAML.replace("\"8080\"", "\"http\"")).contains("not a number"));
        assert!(bad(&YAML.replace("\"8080\"", "70000")).contains("out of range"));
        assert!(bad(&YAML.replace("protocol: TCP", "protocol: TCPX")).contains("unknown variant"));
        assert!(
            bad(&YAML.replace("CiliumNetworkPolicy", "NetworkPolicy")).contains("unknown variant")
        );
        assert!(
            bad(&YAML.replace("  ingress:", "  egress: []\n  ingress:"))
                .contains("egress rules are not supported")
        );
        assert!(
            bad("{\"kind\":\"CiliumNetworkPolicy\",\"metadata\":{\"name\":\"x\"}}")
                .contains("neither spec nor specs")
        );
        let expr = YAML.replace(
            "matchLabels: {app: echo}",
            "matchExpressions: [{key: app, operator: In}]",
        );
        assert!(bad(&expr).contains("at least one value"));
        assert!(matches!(
            PolicyDocument::parse(&expr),
            Err(PolicyError::EndpointSelector {
                rule: 0,
                error: LabelSelectorError::MissingValues { .. }
            })
        ));
        assert!(matches!(
            PolicyDocument::parse(
                &YAML
                    .replace("port: \"8080\"", "port: 5")
                    .replace("TCP", "ICMP")
            ),
            Err(PolicyError::IcmpPort {
                rule: 0,
                ingress: 0,
                port: 5
            })
        ));
    }

    #[test]
    fn clusterwide_and_default_namespace() {
        let cw = YAML.replace(
            "kind: CiliumNetworkPolicy",
            "kind: CiliumClusterwideNetworkPolicy",
        );
        assert_eq!(
            PolicyDocument::parse(&cw).unwrap().key(),
            "_clusterwide/allow-client"
        );
        let no_ns = YAML.replace("  namespace: demo\n", "");
        assert_eq!(
            PolicyDocument::parse(&no_ns).unwrap().key(),
            "default/allow-client"
        );
        let doc = PolicyDocument::parse(YAML).unwrap();
        assert_eq!(
            PolicyDocument::decode("demo/other", &doc.encode())
                .unwrap_err()
                .reason,
            InvalidReason::KeyMismatch
        );
    }
}
