//! `CiliumNetworkPolicy` and `CiliumClusterwideNetworkPolicy` objects as the
//! mesh's policy documents. Objects are read as [`DynamicObject`]s so that
//! one malformed policy is refused alone (with its reason) instead of
//! failing the whole watch.

use kube::api::DynamicObject;
use kvstore::values::{CLUSTERWIDE, PolicyDocument, PolicyError, PolicyKind};
use serde_json::{Value, json};

/// The key a policy has in the agent's tables: `<ns>/<name>`, or
/// `_clusterwide/<name>` (the same keys as policies stored in etcd).
pub fn key(kind: PolicyKind, namespace: Option<&str>, name: &str) -> String {
    match kind {
        PolicyKind::CiliumNetworkPolicy => {
            format!("{}/{name}", namespace.unwrap_or("default"))
        }
        PolicyKind::CiliumClusterwideNetworkPolicy => format!("{CLUSTERWIDE}/{name}"),
    }
}

/// The key of `obj`.
pub fn object_key(kind: PolicyKind, obj: &DynamicObject) -> String {
    key(
        kind,
        obj.metadata.namespace.as_deref(),
        obj.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// The policy document of `obj`, validated: either the whole policy or
/// the reason none of it applies, naming the field at fault
/// (`spec.ingress[0].toPorts[0].ports[1].endPort: ...`).
pub fn document(kind: PolicyKind, obj: &DynamicObject) -> Result<PolicyDocument, PolicyError> {
    let kind_name = match kind {
        PolicyKind::CiliumNetworkPolicy => "CiliumNetworkPolicy",
        PolicyKind::CiliumClusterwideNetworkPolicy => "CiliumClusterwideNetworkPolicy",
    };
    let mut metadata = json!({ "name": obj.metadata.name.clone().unwrap_or_default() });
    if kind == PolicyKind::CiliumNetworkPolicy {
        metadata["namespace"] = json!(obj.metadata.namespace.clone().unwrap_or_default());
    }
    let mut doc = json!({
        "apiVersion": "cilium.io/v2",
        "kind": kind_name,
        "metadata": metadata,
    });
    for field in ["spec", "specs"] {
        if let Some(v) = obj.data.get(field).filter(|v| !v.is_null()) {
            doc[field] = v.clone();
        }
    }
    PolicyDocument::from_json_value(doc)
}

/// The `Valid` condition the operator writes on a policy: `True`, or
/// `False` with the reason.
pub fn valid_condition(
    result: &Result<PolicyDocument, PolicyError>,
    generation: Option<i64>,
    now: &str,
) -> Value {
    let (status, reason, message) = match result {
        Ok(_) => ("True", "Valid", "the policy is valid".to_string()),
        Err(e) => (
            "False",
            "Invalid",
            format!("{e}; nothing of this policy is enforced"),
        ),
    };
    let mut c = json!({
        "type": "Valid",
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
    });
    if let Some(g) = generation {
        c["observedGeneration"] = json!(g);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(kind: PolicyKind, yaml: &str) -> DynamicObject {
        let mut o = DynamicObject::new("p1", &crate::crd::api_resource(kind));
        if kind == PolicyKind::CiliumNetworkPolicy {
            o = o.within("demo");
        }
        o.data = serde_norway::from_str(yaml).unwrap();
        o
    }

    #[test]
    fn valid_policy_and_its_key() {
        let o = obj(
            PolicyKind::CiliumNetworkPolicy,
            "spec:\n  endpointSelector: {matchLabels: {app: echo}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {app: client}}]\n    toPorts: [{ports: [{port: \"8080\", protocol: TCP}]}]\n",
        );
        let doc = document(PolicyKind::CiliumNetworkPolicy, &o).unwrap();
        assert_eq!(doc.namespace(), Some("demo"));
        assert_eq!(object_key(PolicyKind::CiliumNetworkPolicy, &o), "demo/p1");
        let o = obj(
            PolicyKind::CiliumClusterwideNetworkPolicy,
            "specs:\n- endpointSelector: {}\n  ingress: [{}]\n",
        );
        document(PolicyKind::CiliumClusterwideNetworkPolicy, &o).unwrap();
        assert_eq!(
            object_key(PolicyKind::CiliumClusterwideNetworkPolicy, &o),
            "_clusterwide/p1"
        );
    }

    #[test]
    fn unknown_fields_and_bad_selectors_are_refused_with_the_reason() {
        let unknown = obj(
            PolicyKind::CiliumNetworkPolicy,
            "spec:\n  endpointSelector: {}\n  ingress:\n  - fromEndpoints: [{}]\n    toPortz: []\n",
        );
        let e = document(PolicyKind::CiliumNetworkPolicy, &unknown).unwrap_err();
        assert!(e.to_string().contains("spec.ingress[0].toPortz"), "{e}");
        let backwards = obj(
            PolicyKind::CiliumNetworkPolicy,
            "spec:\n  endpointSelector: {}\n  egress:\n  - toPorts: [{ports: [{port: \"80\", endPort: 79}]}]\n",
        );
        let e = document(PolicyKind::CiliumNetworkPolicy, &backwards).unwrap_err();
        let c = valid_condition(&Err(e), None, "2026-12-02T00:00:00Z");
        assert_eq!(
            c["message"],
            "spec.egress[0].toPorts[0].ports[0].endPort: 79 is below port 80; nothing of this policy is enforced"
        );
        let bad_selector = obj(
            PolicyKind::CiliumNetworkPolicy,
            "spec:\n  endpointSelector:\n    matchExpressions: [{key: app, operator: Sometimes, values: [x]}]\n",
        );
        let e = document(PolicyKind::CiliumNetworkPolicy, &bad_selector).unwrap_err();
        assert!(e.to_string().contains("Sometimes"), "{e}");
        let c = valid_condition(&Err(e), Some(3), "2026-12-02T00:00:00Z");
        assert_eq!(c["status"], "False");
        assert_eq!(c["observedGeneration"], 3);
        let none = obj(PolicyKind::CiliumNetworkPolicy, "{}");
        assert!(matches!(
            document(PolicyKind::CiliumNetworkPolicy, &none),
            Err(PolicyError::NoRules)
        ));
    }
}
