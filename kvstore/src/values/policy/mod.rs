//! CiliumNetworkPolicy-shaped policy documents: the rule model (ingress,
//! egress and their deny forms; endpoints, CIDRs, entities, DNS names; ports,
//! port ranges, ICMP types and DNS rules), parsed from JSON or YAML and validated whole, every
//! refusal naming the path of the field at fault (`spec.egress[0].toCIDR[1]`).
//!
//! Parsing and validation only: what a rule allows is decided by the agent's
//! resolver.

mod cidr;
mod fqdn;
mod icmp;
mod l7;
mod port;
mod rule;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Deserializer, Serialize, de::Error as _};

pub use self::{
    cidr::{Cidr, CidrError, CidrRule},
    fqdn::{FqdnSelector, MAX_FQDN_LENGTH},
    icmp::{IcmpFamily, IcmpField, IcmpRule, IcmpType},
    l7::L7Rules,
    port::{L4Protocol, Port, PortProtocol, PortRule, check_port_name},
    rule::{EgressRule, Entity, IngressRule, PeerRule},
};
use super::label_selector::{LabelSelector, LabelSelectorError};
use crate::value::{DecodeError, InvalidReason, StoreValue};

/// A CiliumNetworkPolicy-shaped document, stored at
/// `cilium/policies/v1/<namespace>/<name>` (or `_clusterwide/<name>`), our
/// extension for clusters without Kubernetes. Accepted as JSON or YAML.
///
/// A document is used whole or refused whole: [`PolicyDocument::parse`] and
/// [`PolicyDocument::from_json_value`] validate it, and Cilium fields that
/// clustermesh does not enforce yet are refused rather than half-applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDocument {
    /// `cilium.io/v2` when omitted.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// Namespaced or clusterwide.
    pub kind: PolicyKind,
    /// Name, namespace and whatever else Kubernetes keeps there.
    pub metadata: PolicyMetadata,
    /// One rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<PolicySpec>,
    /// More rules (Cilium's `specs`); a document has `spec`, `specs` or both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub specs: Vec<PolicySpec>,
}

fn default_api_version() -> String {
    "cilium.io/v2".into()
}

/// Namespaced or cluster-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyKind {
    /// Applies to endpoints of its namespace.
    CiliumNetworkPolicy,
    /// Applies to endpoints of every namespace.
    CiliumClusterwideNetworkPolicy,
}

/// The part of Kubernetes metadata that names a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyMetadata {
    /// Part of the key: non-empty, no `/`.
    pub name: String,
    /// For `CiliumNetworkPolicy`; defaults to `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Anything else Kubernetes puts in metadata is kept.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One rule (Cilium's `Rule`): which endpoints it applies to
/// (`endpointSelector`) and what they may receive (`ingress`), must not
/// receive (`ingressDeny`), may send (`egress`) and must not send
/// (`egressDeny`).
///
/// Cilium's `nodeSelector` (host policies) and `log` are refused when parsed
/// with a clear reason: clustermesh has no host policies and no policy logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    /// The endpoints the rule applies to.
    pub endpoint_selector: LabelSelector,
    /// What may reach the endpoints.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressRule>,
    /// What must not reach the endpoints, whatever else allows it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ingress_deny: Vec<IngressRule>,
    /// What the endpoints may reach.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressRule>,
    /// What the endpoints must not reach, whatever else allows it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub egress_deny: Vec<EgressRule>,
    /// Whether selecting an endpoint makes the direction default-deny;
    /// Cilium's default for a direction is "yes if the rule has rules of that
    /// direction".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_default_deny: Option<DefaultDeny>,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Cilium's rule labels (`[{key, value, source}]`), kept verbatim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<serde_json::Value>,
}

/// `enableDefaultDeny`: per direction, whether an endpoint selected by the
/// rule denies what no rule allows (`None` = Cilium's default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultDeny {
    /// Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<bool>,
    /// Egress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<bool>,
}

/// A `Rule` as written, before the fields clustermesh does not support are
/// refused. `endpointSelector` is optional here only so that a host policy
/// (`nodeSelector` instead) is refused for what it is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSpec {
    #[serde(default)]
    endpoint_selector: Option<LabelSelector>,
    #[serde(default)]
    ingress: Vec<IngressRule>,
    #[serde(default)]
    ingress_deny: Vec<IngressRule>,
    #[serde(default)]
    egress: Vec<EgressRule>,
    #[serde(default)]
    egress_deny: Vec<EgressRule>,
    #[serde(default)]
    enable_default_deny: Option<DefaultDeny>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    labels: Option<serde_json::Value>,
    #[serde(default)]
    node_selector: Option<serde_json::Value>,
    #[serde(default)]
    log: Option<serde_json::Value>,
}

impl<'de> Deserialize<'de> for PolicySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawSpec::deserialize(d)?;
        if raw.node_selector.is_some() {
            return Err(D::Error::custom(
                "nodeSelector is not supported yet (host policies; nothing was applied)",
            ));
        }
        if raw.log.is_some() {
            return Err(D::Error::custom(
                "log is not supported yet (nothing was applied)",
            ));
        }
        Ok(Self {
            endpoint_selector: raw
                .endpoint_selector
                .ok_or_else(|| D::Error::missing_field("endpointSelector"))?,
            ingress: raw.ingress,
            ingress_deny: raw.ingress_deny,
            egress: raw.egress,
            egress_deny: raw.egress_deny,
            enable_default_deny: raw.enable_default_deny,
            description: raw.description,
            labels: raw.labels,
        })
    }
}

impl PolicySpec {
    /// `path` is the rule's (`spec` or `specs[1]`).
    fn validate(&self, path: &str) -> Result<(), PolicyError> {
        self.endpoint_selector
            .validate()
            .map_err(|error| PolicyError::Selector {
                path: format!("{path}.endpointSelector"),
                error,
            })?;
        for (i, rule) in self.ingress.iter().enumerate() {
            rule.validate(&format!("{path}.ingress[{i}]"), None)?;
        }
        for (i, rule) in self.ingress_deny.iter().enumerate() {
            rule.validate(&format!("{path}.ingressDeny[{i}]"), Some("ingressDeny"))?;
        }
        for (i, rule) in self.egress.iter().enumerate() {
            rule.validate(&format!("{path}.egress[{i}]"), None)?;
        }
        for (i, rule) in self.egress_deny.iter().enumerate() {
            rule.validate(&format!("{path}.egressDeny[{i}]"), Some("egressDeny"))?;
        }
        Ok(())
    }
}

/// The namespace of clusterwide policies in keys; `_` is not valid in a
/// namespace name, so it cannot collide.
pub const CLUSTERWIDE: &str = "_clusterwide";

impl PolicyDocument {
    /// Parses JSON or YAML and validates; the error says what is wrong and
    /// where.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let doc = match Self::from_json_str(text) {
            Ok(doc) => doc,
            Err(json_err) => match Self::from_yaml_str(text) {
                Ok(doc) => doc,
                // Show the JSON error for what was clearly meant as JSON.
                Err(_) if text.trim_start().starts_with("{\"") => return Err(json_err),
                Err(e) => return Err(e),
            },
        };
        doc.validate()?;
        Ok(doc)
    }

    /// Reads an already parsed JSON value (a Kubernetes object's fields)
    /// and validates, with the same errors as [`PolicyDocument::parse`].
    pub fn from_json_value(value: serde_json::Value) -> Result<Self, PolicyError> {
        let doc: Self = serde_path_to_error::deserialize(value).map_err(|e| PolicyError::Json {
            path: path_of(e.path()),
            error: e.into_inner(),
        })?;
        doc.validate()?;
        Ok(doc)
    }

    fn from_json_str(text: &str) -> Result<Self, PolicyError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let doc: Self =
            serde_path_to_error::deserialize(&mut de).map_err(|e| PolicyError::Json {
                path: path_of(e.path()),
                error: e.into_inner(),
            })?;
        de.end().map_err(|error| PolicyError::Json {
            path: String::new(),
            error,
        })?;
        Ok(doc)
    }

    fn from_yaml_str(text: &str) -> Result<Self, PolicyError> {
        serde_path_to_error::deserialize(serde_norway::Deserializer::from_str(text)).map_err(|e| {
            PolicyError::Yaml {
                path: path_of(e.path()),
                error: e.into_inner(),
            }
        })
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
        if let Some(spec) = &self.spec {
            spec.validate("spec")?;
        }
        for (i, spec) in self.specs.iter().enumerate() {
            spec.validate(&format!("specs[{i}]"))?;
        }
        Ok(())
    }
}

/// A serde path as written in messages; empty for the document itself.
fn path_of(path: &serde_path_to_error::Path) -> String {
    match path.to_string() {
        root if root == "." => String::new(),
        path => path,
    }
}

/// `path: message`, or the message alone for the document itself.
fn at(path: &str, message: &dyn std::fmt::Display) -> String {
    if path.is_empty() {
        message.to_string()
    } else {
        format!("{path}: {message}")
    }
}

/// As [`at`] for YAML errors, which start with the YAML parser's own path:
/// a shorter one (`spec.egress[0].toCIDR` for `spec.egress[0].toCIDR[1]`),
/// dropped so that the message names the field once and precisely.
fn yaml_at(path: &str, error: &serde_norway::Error) -> String {
    let message = error.to_string();
    let own = message
        .split_once(": ")
        .filter(|(own, _)| !own.is_empty() && path.starts_with(own));
    match own {
        Some((_, rest)) => at(path, &rest),
        None => at(path, &message),
    }
}

/// Why a [`PolicyDocument`] was refused. Each message is whole and starts
/// with the path of the field at fault (`spec.egress[0].toPorts[0]...`); it
/// includes the parser's or the selector's words, so the error it wraps is
/// data to match on rather than a [`std::error::Error::source`] said twice.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The text starts like JSON (or the value came as JSON) and is not a
    /// valid JSON policy: bad syntax, an unknown field, a value of the wrong
    /// type or out of range. `path` is where the parser stopped (empty for
    /// the document itself).
    #[error("invalid JSON policy: {}", at(.path, .error))]
    Json {
        path: String,
        error: serde_json::Error,
    },
    /// The text is neither a valid JSON nor a valid YAML policy; as
    /// [`PolicyError::Json`].
    #[error("invalid policy: {}", yaml_at(.path, .error))]
    Yaml {
        path: String,
        error: serde_norway::Error,
    },
    /// The name is part of the key.
    #[error("metadata.name {name:?} must be non-empty and contain no '/'")]
    InvalidName { name: String },
    /// The namespace is part of the key; `_` is reserved for [`CLUSTERWIDE`].
    #[error("metadata.namespace {namespace:?} is not a valid namespace")]
    InvalidNamespace { namespace: String },
    /// A document without rules would select nothing and say nothing.
    #[error("the policy has neither spec nor specs")]
    NoRules,
    /// A label selector (`endpointSelector`, `fromEndpoints[i]`, ...) is
    /// malformed.
    #[error("{path}: {error}")]
    Selector {
        path: String,
        error: LabelSelectorError,
    },
    /// A field breaks a rule of Cilium's (combined peer kinds, a port range
    /// backwards, an except outside its CIDR, ...) or is one clustermesh
    /// does not enforce yet.
    #[error("{path}: {reason}")]
    Field { path: String, reason: String },
}

impl PolicyError {
    pub(super) fn field(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Field {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// The path of the field at fault, when the error has one.
    pub fn path(&self) -> Option<&str> {
        match self {
            Self::Json { path, .. }
            | Self::Yaml { path, .. }
            | Self::Selector { path, .. }
            | Self::Field { path, .. } => Some(path),
            Self::InvalidName { .. } => Some("metadata.name"),
            Self::InvalidNamespace { .. } => Some("metadata.namespace"),
            Self::NoRules => None,
        }
    }
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
