//! The `cilium.io/v2` policy CRDs: their manifests (the same files the
//! kustomize base applies), their API resources, and installing or
//! upgrading them (the operator does, at start).

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{ApiResource, Patch, PatchParams},
};
use kvstore::values::PolicyKind;

/// The CRD manifests, as `deploy/kubernetes/base/crds/` has them.
pub const MANIFESTS: [(&str, &str); 2] = [
    (
        "ciliumnetworkpolicies.cilium.io",
        include_str!("../../deploy/kubernetes/base/crds/ciliumnetworkpolicies.yaml"),
    ),
    (
        "ciliumclusterwidenetworkpolicies.cilium.io",
        include_str!("../../deploy/kubernetes/base/crds/ciliumclusterwidenetworkpolicies.yaml"),
    ),
];

pub const GROUP: &str = "cilium.io";
pub const VERSION: &str = "v2";
/// The field manager of what the mesh's components write.
pub const FIELD_MANAGER: &str = "clustermesh";

/// The API resource of a policy kind, for [`kube::api::DynamicObject`]s.
pub fn api_resource(kind: PolicyKind) -> ApiResource {
    let (kind, plural) = match kind {
        PolicyKind::CiliumNetworkPolicy => ("CiliumNetworkPolicy", "ciliumnetworkpolicies"),
        PolicyKind::CiliumClusterwideNetworkPolicy => (
            "CiliumClusterwideNetworkPolicy",
            "ciliumclusterwidenetworkpolicies",
        ),
    };
    ApiResource {
        group: GROUP.into(),
        version: VERSION.into(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// The CRDs, parsed.
pub fn definitions() -> Vec<CustomResourceDefinition> {
    MANIFESTS
        .iter()
        .map(|(name, yaml)| {
            serde_norway::from_str(yaml).unwrap_or_else(|e| panic!("the {name} manifest: {e}"))
        })
        .collect()
}

/// Why installing failed.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("applying the CRD {name}")]
    Apply {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the CRD {name} was not established within {timeout:?}")]
    NotEstablished { name: String, timeout: Duration },
}

/// Creates or upgrades the CRDs (server-side apply, taking over their
/// fields) and waits until the server serves them.
pub async fn install(client: &Client, timeout: Duration) -> Result<(), CrdError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in definitions() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .map_err(|source| CrdError::Apply {
                name: name.clone(),
                source,
            })?;
        let established = kube::runtime::wait::await_condition(
            api.clone(),
            &name,
            kube::runtime::wait::conditions::is_crd_established(),
        );
        match tokio::time::timeout(timeout, established).await {
            Ok(Ok(_)) => {}
            _ => return Err(CrdError::NotEstablished { name, timeout }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a kind is namespaced.
    fn scope(kind: PolicyKind) -> kube::discovery::Scope {
        match kind {
            PolicyKind::CiliumNetworkPolicy => kube::discovery::Scope::Namespaced,
            PolicyKind::CiliumClusterwideNetworkPolicy => kube::discovery::Scope::Cluster,
        }
    }

    #[test]
    fn manifests_parse_and_name_their_resources() {
        let defs = definitions();
        for (crd, kind) in defs.iter().zip([
            PolicyKind::CiliumNetworkPolicy,
            PolicyKind::CiliumClusterwideNetworkPolicy,
        ]) {
            let ar = api_resource(kind);
            assert_eq!(
                crd.metadata.name.as_deref(),
                Some(format!("{}.{GROUP}", ar.plural).as_str())
            );
            assert_eq!(crd.spec.names.kind, ar.kind);
            assert_eq!(
                crd.spec.scope,
                match scope(kind) {
                    kube::discovery::Scope::Namespaced => "Namespaced",
                    kube::discovery::Scope::Cluster => "Cluster",
                }
            );
        }
    }
}
