use std::{collections::HashMap, time::Duration};

use k8s::{
    crd,
    policy::{self, valid_condition},
    watch::{self, Change, KubeHealth, ObjectKey},
};
use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams},
    runtime::watcher,
};
use kvstore::values::{PolicyKind, Timestamp};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch as signal};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{error_chain, metrics::OperatorMetrics};

/// How often status writes that failed (API server unreachable) are retried.
const RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// The merge patch that brings `obj`'s `Valid` condition up to date with
/// what [`policy::document`] says of it, or `None` when the object says so
/// already (same status, reason, message and observed generation): the
/// operator's own write comes back through the watch and must not cause
/// another. Other conditions are kept; the transition time changes only
/// with the status. The patch carries the object's `resourceVersion`, so
/// it is refused (409) if the object changed meanwhile — the watch then
/// brings the newer version.
///
/// Also returns whether the policy is valid.
pub fn valid_condition_patch(
    kind: PolicyKind,
    obj: &DynamicObject,
    now: &str,
) -> (bool, Option<Value>) {
    let result = policy::document(kind, obj);
    let valid = result.is_ok();
    let conditions: Vec<Value> = obj
        .data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let existing = conditions.iter().find(|c| c["type"] == "Valid");
    let mut wanted = valid_condition(&result, obj.metadata.generation, now);
    if let Some(old) = existing {
        let same = ["status", "reason", "message", "observedGeneration"]
            .iter()
            .all(|f| old.get(f) == wanted.get(f));
        if same {
            return (valid, None);
        }
        if old.get("status") == wanted.get("status")
            && let Some(t) = old.get("lastTransitionTime")
        {
            wanted["lastTransitionTime"] = t.clone();
        }
    }
    let mut out: Vec<Value> = conditions
        .iter()
        .filter(|c| c["type"] != "Valid")
        .cloned()
        .collect();
    let at = conditions
        .iter()
        .position(|c| c["type"] == "Valid")
        .unwrap_or(out.len())
        .min(out.len());
    out.insert(at, wanted);
    let mut patch = json!({ "status": { "conditions": out } });
    if let Some(rv) = &obj.metadata.resource_version {
        patch["metadata"] = json!({ "resourceVersion": rv });
    }
    (valid, Some(patch))
}

/// Reports on every `CiliumNetworkPolicy` and
/// `CiliumClusterwideNetworkPolicy` whether the mesh accepts it: the
/// `Valid` condition in `status.conditions` (`True`, or `False` with the
/// reason, e.g. an unknown field or a bad selector), written with a merge
/// patch on the status subresource only when it changes
/// ([`valid_condition_patch`]). Writes that fail are retried; a policy
/// deleted or changed meanwhile is dropped (the watch has the newer one).
/// Run by the leader only, once the CRDs are installed.
pub struct PolicyValidator {
    client: kube::Client,
    health: KubeHealth,
    crds: signal::Receiver<bool>,
    metrics: OperatorMetrics,
}

impl std::fmt::Debug for PolicyValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyValidator").finish_non_exhaustive()
    }
}

/// A policy's key (`<ns>/<name>` or `_clusterwide/<name>`), unique across
/// both kinds.
type PolicyId = String;

impl PolicyValidator {
    /// `crds` says when the CRDs are served ([`crate::CrdInstaller`]).
    pub fn new(
        client: kube::Client,
        health: KubeHealth,
        crds: signal::Receiver<bool>,
        metrics: OperatorMetrics,
    ) -> Self {
        Self {
            client,
            health,
            crds,
            metrics,
        }
    }

    /// Runs until `shutdown` (the end of the leader's term).
    pub async fn run(mut self, shutdown: CancellationToken) {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = self.crds.wait_for(|installed| *installed) => if r.is_err() { return },
        }
        let token = shutdown.child_token();
        let _stop_watches = token.clone().drop_guard();
        let (cnp_tx, mut cnps) = mpsc::channel(256);
        let (ccnp_tx, mut ccnps) = mpsc::channel(256);
        let mut watches = tokio::task::JoinSet::new();
        for (kind, tx, name) in [
            (
                PolicyKind::CiliumNetworkPolicy,
                cnp_tx,
                "ciliumnetworkpolicies",
            ),
            (
                PolicyKind::CiliumClusterwideNetworkPolicy,
                ccnp_tx,
                "ciliumclusterwidenetworkpolicies",
            ),
        ] {
            let api = Api::<DynamicObject>::all_with(self.client.clone(), &crd::api_resource(kind));
            watches.spawn(watch::watch(
                api,
                watcher::Config::default(),
                name,
                self.health.clone(),
                tx,
                token.clone(),
            ));
        }
        // What still needs a write (the latest version seen), and validity
        // for the metric.
        let mut pending: HashMap<PolicyId, (PolicyKind, DynamicObject)> = HashMap::new();
        let mut valid: HashMap<PolicyId, bool> = HashMap::new();
        let mut failing: Option<String> = None;
        let mut retry = tokio::time::interval(RETRY_INTERVAL);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let (kind, change) = tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(c) = cnps.recv() => (PolicyKind::CiliumNetworkPolicy, c),
                Some(c) = ccnps.recv() => (PolicyKind::CiliumClusterwideNetworkPolicy, c),
                _ = retry.tick(), if !pending.is_empty() => {
                    let ids: Vec<PolicyId> = pending.keys().cloned().collect();
                    for id in ids {
                        if let Some((kind, obj)) = pending.remove(&id) {
                            self.reconcile(kind, obj, &mut pending, &mut valid, &mut failing).await;
                        }
                    }
                    continue;
                }
            };
            match change {
                Change::Apply(obj) => {
                    pending.remove(&policy::object_key(kind, &obj));
                    self.reconcile(kind, obj, &mut pending, &mut valid, &mut failing)
                        .await;
                }
                Change::Delete(key) => {
                    let id = policy::key(kind, key.namespace.as_deref(), &key.name);
                    pending.remove(&id);
                    valid.remove(&id);
                }
                Change::Synced => {
                    debug!(?kind, "policies listed");
                }
            }
            self.metrics
                .policies_invalid
                .set(valid.values().filter(|v| !**v).count() as i64);
        }
    }

    /// Writes the `Valid` condition of `obj` if it changed; keeps it in
    /// `pending` when the write failed for a reason that may pass.
    async fn reconcile(
        &self,
        kind: PolicyKind,
        obj: DynamicObject,
        pending: &mut HashMap<PolicyId, (PolicyKind, DynamicObject)>,
        valid: &mut HashMap<PolicyId, bool>,
        failing: &mut Option<String>,
    ) {
        let id = policy::object_key(kind, &obj);
        let key = ObjectKey::of(&obj);
        let now = Timestamp::now().to_rfc3339();
        let (ok, patch) = valid_condition_patch(kind, &obj, &now);
        valid.insert(id.clone(), ok);
        let Some(patch) = patch else { return };
        let ar = crd::api_resource(kind);
        let api: Api<DynamicObject> = match &key.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        };
        let params = PatchParams::default();
        match api
            .patch_status(&key.name, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                if failing.take().is_some() {
                    info!("writing policy status works again");
                }
                let policy = &id;
                if ok {
                    info!(%policy, "policy is valid");
                } else {
                    let reason = patch
                        .pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .and_then(|cs| cs.iter().find(|c| c["type"] == "Valid"))
                        .and_then(|c| c["message"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    warn!(%policy, %reason, "policy is invalid; reported in its Valid condition");
                }
            }
            // Changed meanwhile (the watch brings the new version) or gone.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                debug!(policy = %key, code = s.code, "policy changed before its status was written")
            }
            Err(e) => {
                let error = error_chain(&e);
                if failing.as_deref() != Some(error.as_str()) {
                    warn!(policy = %key, %error, "cannot write the policy's Valid condition; retrying");
                    *failing = Some(error);
                }
                pending.insert(id, (kind, obj));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cnp(spec: Value, status: Option<Value>) -> DynamicObject {
        let mut o = DynamicObject::new("p1", &crd::api_resource(PolicyKind::CiliumNetworkPolicy))
            .within("demo");
        o.metadata.generation = Some(2);
        o.metadata.resource_version = Some("41".into());
        o.data = json!({ "spec": spec });
        if let Some(s) = status {
            o.data["status"] = s;
        }
        o
    }

    const T0: &str = "2026-12-01T00:00:00Z";
    const T1: &str = "2026-12-02T00:00:00Z";

    fn conditions(patch: &Value) -> Vec<Value> {
        patch["status"]["conditions"].as_array().unwrap().clone()
    }

    #[test]
    fn writes_once_then_only_on_change_keeping_other_conditions() {
        let good = json!({"endpointSelector": {}, "ingress": [{"fromEndpoints": [{}]}]});
        let other = json!({"type": "Imported", "status": "True"});
        let (ok, patch) = valid_condition_patch(
            PolicyKind::CiliumNetworkPolicy,
            &cnp(good.clone(), Some(json!({"conditions": [other.clone()]}))),
            T0,
        );
        assert!(ok);
        let patch = patch.expect("a first write");
        assert_eq!(patch["metadata"]["resourceVersion"], "41");
        let cs = conditions(&patch);
        assert_eq!(cs[0], other);
        assert_eq!(cs[1]["type"], "Valid");
        assert_eq!(cs[1]["status"], "True");
        assert_eq!(cs[1]["observedGeneration"], 2);

        // The object with that status: nothing to write, also later.
        let written = cnp(good.clone(), Some(patch["status"].clone()));
        assert_eq!(
            valid_condition_patch(PolicyKind::CiliumNetworkPolicy, &written, T1),
            (true, None)
        );

        // Broken: False with the reason, a new transition time.
        let bad = json!({"endpointSelector": {}, "ingress": [{"toPortz": []}]});
        let (ok, patch) = valid_condition_patch(
            PolicyKind::CiliumNetworkPolicy,
            &cnp(bad, Some(patch["status"].clone())),
            T1,
        );
        assert!(!ok);
        let cs = conditions(&patch.unwrap());
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[1]["status"], "False");
        assert!(cs[1]["message"].as_str().unwrap().contains("toPortz"));
        assert_eq!(cs[1]["lastTransitionTime"], T1);

        // A new generation with the same verdict: observedGeneration moves,
        // the transition time stays.
        let mut newer = cnp(
            good,
            Some(json!({"conditions": [
                {"type": "Valid", "status": "True", "reason": "Valid",
                 "message": "the policy is valid", "observedGeneration": 1,
                 "lastTransitionTime": T0}
            ]})),
        );
        newer.metadata.generation = Some(3);
        let (_, patch) = valid_condition_patch(PolicyKind::CiliumNetworkPolicy, &newer, T1);
        let cs = conditions(&patch.unwrap());
        assert_eq!(cs[0]["observedGeneration"], 3);
        assert_eq!(cs[0]["lastTransitionTime"], T0);
    }
}
