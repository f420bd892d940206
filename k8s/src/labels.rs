//! A Pod's labels as its endpoint's labels, as Cilium derives them: the
//! Pod's own labels (without the ones that change with every rollout), its
//! namespace's labels under `io.cilium.k8s.namespace.labels.`, and its
//! service account. The agent adds the namespace and cluster labels.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

/// Prefix of a namespace's labels on its endpoints.
pub const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";
/// The Pod's service account.
pub const SERVICE_ACCOUNT_LABEL: &str = "io.cilium.k8s.policy.serviceaccount";

/// Pod labels that are not part of an identity: they differ per rollout,
/// per replica or per job run, so they would give every Pod its own
/// identity (Cilium's default label filter drops the same ones).
const IGNORED: &[&str] = &[
    "pod-template-hash",
    "pod-template-generation",
    "controller-revision-hash",
    "controller-uid",
    "job-name",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
];
const IGNORED_PREFIXES: &[&str] = &["batch.kubernetes.io/", "io.kubernetes."];

/// Whether a Pod label key is part of the endpoint's identity.
pub fn is_identity_label(key: &str) -> bool {
    !IGNORED.contains(&key) && !IGNORED_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// The endpoint labels of `pod` in a namespace labelled `namespace_labels`
/// (keys without a source: they are `k8s:` labels).
pub fn endpoint_labels(
    pod: &Pod,
    namespace_labels: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = pod
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| is_identity_label(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in namespace_labels {
        out.insert(format!("{NAMESPACE_LABELS_PREFIX}{k}"), v.clone());
    }
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    out.insert(SERVICE_ACCOUNT_LABEL.into(), sa);
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    #[test]
    fn rollout_labels_are_dropped_namespace_labels_prefixed() {
        let pod = Pod {
            metadata: ObjectMeta {
                labels: Some(
                    [
                        ("app", "echo"),
                        ("app.kubernetes.io/name", "echo"),
                        ("pod-template-hash", "5d8f7c"),
                        ("controller-revision-hash", "abc"),
                        ("batch.kubernetes.io/job-name", "x"),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        let ns = [("team".to_string(), "a".to_string())].into();
        let got = endpoint_labels(&pod, &ns);
        let keys: Vec<&str> = got.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "app",
                "app.kubernetes.io/name",
                "io.cilium.k8s.namespace.labels.team",
                "io.cilium.k8s.policy.serviceaccount"
            ]
        );
        assert_eq!(got[SERVICE_ACCOUNT_LABEL], "default");
    }
}
