//! The operator in Kubernetes mode, against a real kube-apiserver (v1.20,
//! built by `scripts/kube-test-server.sh`) and a real etcd for the mesh:
//! CRDs installed at start, leader election on a Lease, export of global
//! Services, and the `Valid` condition of policies.
//!
//! Skipped outside CI when the API server's binaries are not built; under
//! `CI=true` their absence fails the tests.

mod common;

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::{InProcess, OperatorProcess, TTL, client, metric, wait_for, wait_until};
use etcd_harness::TestEtcd;
use k8s::{KubeAccess, crd, testing::KubeServer};
use k8s_openapi::{
    api::{
        coordination::v1::Lease,
        core::v1::{Endpoints, Service},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api,
    api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
};
use kvstore::{Client, StoreValue, keys, values::ClusterService};
use operator::{KubernetesConfig, OperatorConfig, OperatorHandle};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const LEASE: &str = "clustermesh-operator-c5";

/// Starts a server, or skips (outside CI) / fails (under `CI=true`) when
/// the binaries are not built.
async fn server() -> Option<KubeServer> {
    if let Err(why) = k8s::testing::available() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipped: {why}");
        return None;
    }
    Some(KubeServer::start().await.expect("start the API server"))
}

/// A test configuration in Kubernetes mode.
fn config(etcd: &TestEtcd, server: &KubeServer, id: &str) -> OperatorConfig {
    let mut c = common::config(&etcd.endpoint(), id);
    c.kubernetes = Some(KubernetesConfig::new(
        KubeAccess::Kubeconfig(server.kubeconfig().to_path_buf()),
        &common::cluster(),
    ));
    c
}

async fn lease(server: &KubeServer) -> Option<Lease> {
    let api: Api<Lease> = Api::namespaced(server.client().await.unwrap(), "kube-system");
    api.get_opt(LEASE).await.unwrap()
}

fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref()?.holder_identity.clone()
}

fn transitions(lease: &Lease) -> i32 {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .unwrap_or_default()
}

/// Samples the leader flags and counts moments when two instances lead.
fn count_overlaps(handles: Vec<OperatorHandle>, stop: CancellationToken) -> Arc<AtomicUsize> {
    let overlaps = Arc::new(AtomicUsize::new(0));
    let o = overlaps.clone();
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            if handles.iter().filter(|h| h.is_leader()).count() > 1 {
                o.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    overlaps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_operator_holds_the_lease_and_hands_it_over_on_crash_and_on_stop() {
    let Some(server) = server().await else {
        return;
    };
    let etcd = TestEtcd::start().await.unwrap();
    let a = InProcess::start(config(&etcd, &server, "op-a")).await;
    let b = InProcess::start(config(&etcd, &server, "op-b")).await;
    let stop = CancellationToken::new();
    let overlaps = count_overlaps(vec![a.handle.clone(), b.handle.clone()], stop.clone());

    wait_until("one operator leads", || {
        std::future::ready(a.is_leader() || b.is_leader())
    })
    .await;
    let (leader, follower) = if a.is_leader() { (a, b) } else { (b, a) };
    let l = lease(&server).await.expect("the Lease exists");
    assert_eq!(holder(&l).as_deref(), Some(leader.id.as_str()));
    let spec = l.spec.as_ref().unwrap();
    assert_eq!(spec.lease_duration_seconds, Some(TTL.as_secs() as i32));
    assert!(spec.acquire_time.is_some() && spec.renew_time.is_some());
    wait_until("the follower knows the leader", || {
        std::future::ready(follower.handle.leader().leader().as_deref() == Some(leader.id.as_str()))
    })
    .await;
    // The leader renews: renewTime moves, the holder stays.
    let renewed = spec.renew_time.clone();
    wait_until("the leader renews the Lease", || async {
        let l = lease(&server).await.unwrap();
        l.spec.as_ref().unwrap().renew_time != renewed
    })
    .await;
    assert!(leader.is_leader() && !follower.is_leader());

    // A crash: the Lease is taken over once it has not been renewed for
    // its duration.
    let before = transitions(&lease(&server).await.unwrap());
    leader.crash().await;
    let crashed = Instant::now();
    wait_until("the follower leads", || {
        std::future::ready(follower.is_leader())
    })
    .await;
    let took = crashed.elapsed();
    assert!(
        took <= TTL + Duration::from_secs(3),
        "take-over after a crash took {took:?} with a {TTL:?} Lease"
    );
    let l = lease(&server).await.unwrap();
    assert_eq!(holder(&l).as_deref(), Some(follower.id.as_str()));
    assert_eq!(transitions(&l), before + 1);

    // A graceful stop releases the Lease: a follower takes over at once.
    let c = InProcess::start(config(&etcd, &server, "op-c")).await;
    wait_until("the new follower knows the leader", || {
        std::future::ready(c.handle.leader().leader().as_deref() == Some(follower.id.as_str()))
    })
    .await;
    let overlaps_c = count_overlaps(
        vec![follower.handle.clone(), c.handle.clone()],
        stop.clone(),
    );
    let stopping = Instant::now();
    follower.stop().await;
    wait_until("op-c leads", || std::future::ready(c.is_leader())).await;
    let took = stopping.elapsed();
    assert!(
        took < TTL,
        "hand-over after a graceful stop took {took:?}; the Lease was not released"
    );
    assert_eq!(
        holder(&lease(&server).await.unwrap()).as_deref(),
        Some("op-c")
    );
    stop.cancel();
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "two operators led at once"
    );
    assert_eq!(
        overlaps_c.load(Ordering::SeqCst),
        0,
        "two operators led at once"
    );

    // The leader's duties run with an etcd session as before.
    let mesh = client(&etcd).await;
    wait_until("the new leader writes the heartbeat", || async {
        let hb = mesh.get(keys::HEARTBEAT).await.unwrap();
        hb.is_some_and(|kv| Some(kv.lease) == c.handle.session().current().lease.map(|l| l.0))
    })
    .await;
    // No leader key in etcd: the Lease is the election.
    assert!(mesh.get(keys::OPERATOR_LEADER).await.unwrap().is_none());
    c.stop().await;
    assert_eq!(holder(&lease(&server).await.unwrap()), None);
}

/// The exported service `default/<name>` of cluster c5, if any.
async fn exported(mesh: &Client, name: &str) -> Option<ClusterService> {
    let key = keys::services_of(&common::cluster()).key(&format!("default/{name}"));
    let kv = mesh.get(&key).await.unwrap()?;
    let rel = keys::services().strip(&key).unwrap().to_string();
    Some(ClusterService::decode(&rel, &kv.value).expect("a valid ClusterService"))
}

fn backends(svc: &ClusterService) -> Vec<String> {
    svc.backends.keys().cloned().collect()
}

fn service(name: &str, annotations: &[(&str, &str)]) -> Service {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "namespace": "default",
            "annotations": annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        },
        // No selector: the endpoints are the test's, not the controller's.
        "spec": { "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }] },
    }))
    .unwrap()
}

fn endpoints(name: &str, ips: &[&str]) -> Endpoints {
    serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": "default" },
        "subsets": [{
            "addresses": ips.iter().map(|ip| json!({ "ip": ip })).collect::<Vec<_>>(),
            "ports": [{ "name": "http", "port": 8080 }],
        }],
    }))
    .unwrap()
}

async fn annotate(api: &Api<Service>, name: &str, annotations: Value) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "annotations": annotations } })),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_shared_services_are_exported_with_their_endpoints() {
    let Some(server) = server().await else {
        return;
    };
    let etcd = TestEtcd::start().await.unwrap();
    let mesh = client(&etcd).await;
    let kube = server.client().await.unwrap();
    let services: Api<Service> = Api::namespaced(kube.clone(), "default");
    let eps: Api<Endpoints> = Api::namespaced(kube.clone(), "default");
    let pp = PostParams::default();
    // One global Service before the operator starts, one local.
    services
        .create(
            &pp,
            &service("echo", &[("service.cilium.io/global", "true")]),
        )
        .await
        .unwrap();
    eps.create(&pp, &endpoints("echo", &["10.1.0.5", "10.1.0.6"]))
        .await
        .unwrap();
    services.create(&pp, &service("local", &[])).await.unwrap();
    eps.create(&pp, &endpoints("local", &["10.1.0.7"]))
        .await
        .unwrap();

    let op = InProcess::start(config(&etcd, &server, "op-a")).await;
    let svc = wait_for("echo is exported", || async {
        exported(&mesh, "echo").await
    })
    .await;
    assert_eq!(backends(&svc), ["10.1.0.5", "10.1.0.6"]);
    assert!(svc.shared && svc.include_external);
    assert_eq!(svc.cluster, "c5");
    assert_eq!(svc.cluster_id, 5);
    let cluster_ip = services
        .get("echo")
        .await
        .unwrap()
        .spec
        .unwrap()
        .cluster_ip
        .unwrap();
    assert!(
        svc.frontends.contains_key(&cluster_ip),
        "{:?}",
        svc.frontends
    );
    assert_eq!(svc.backends["10.1.0.5"]["http"].port, 8080);
    let canary = keys::canary(&common::cluster(), keys::SERVICES_STORE);
    wait_until("the services canary is written", || async {
        mesh.get(&canary).await.unwrap().is_some()
    })
    .await;
    assert!(
        exported(&mesh, "local").await.is_none(),
        "a local Service stays local"
    );

    // Endpoints change: so do the backends.
    eps.replace("echo", &pp, &{
        let mut e = endpoints("echo", &["10.1.0.6", "10.1.0.8"]);
        e.metadata.resource_version = eps.get("echo").await.unwrap().metadata.resource_version;
        e
    })
    .await
    .unwrap();
    wait_until("the backends follow the endpoints", || async {
        exported(&mesh, "echo")
            .await
            .is_some_and(|s| backends(&s) == ["10.1.0.6", "10.1.0.8"])
    })
    .await;
    let report = op.health().await;
    assert_eq!(report.services_exported, 1);
    assert_eq!(
        metric(
            &op.metrics().await,
            "clustermesh_operator_services_exported"
        ),
        Some(1.0)
    );

    // shared=false: this cluster offers no backends, nothing is exported.
    annotate(
        &services,
        "echo",
        json!({ "service.cilium.io/shared": "false" }),
    )
    .await;
    wait_until("shared=false withdraws the export", || async {
        exported(&mesh, "echo").await.is_none()
    })
    .await;
    annotate(
        &services,
        "echo",
        json!({ "service.cilium.io/shared": null }),
    )
    .await;
    wait_for("shared again", || async { exported(&mesh, "echo").await }).await;

    // Not global any more: withdrawn; global again: back.
    annotate(
        &services,
        "echo",
        json!({ "service.cilium.io/global": null }),
    )
    .await;
    wait_until("removing the annotation withdraws the export", || async {
        exported(&mesh, "echo").await.is_none()
    })
    .await;
    annotate(
        &services,
        "local",
        json!({ "io.cilium/global-service": "true" }),
    )
    .await;
    let local = wait_for("the legacy annotation exports too", || async {
        exported(&mesh, "local").await
    })
    .await;
    assert_eq!(backends(&local), ["10.1.0.7"]);

    // An invalid annotation: refused, withdrawn.
    annotate(
        &services,
        "local",
        json!({ "service.cilium.io/shared": "maybe" }),
    )
    .await;
    wait_until("an invalid Service is withdrawn", || async {
        exported(&mesh, "local").await.is_none()
    })
    .await;

    // Deleted: withdrawn.
    annotate(
        &services,
        "echo",
        json!({ "service.cilium.io/global": "true" }),
    )
    .await;
    wait_for("global again", || async { exported(&mesh, "echo").await }).await;
    services
        .delete("echo", &DeleteParams::default())
        .await
        .unwrap();
    wait_until("deleting the Service withdraws the export", || async {
        exported(&mesh, "echo").await.is_none()
    })
    .await;
    wait_until("nothing is exported", || async {
        op.health().await.services_exported == 0
    })
    .await;
    op.stop().await;
}

/// The `Valid` condition of a policy, once it has one.
async fn valid_condition(api: &Api<DynamicObject>, name: &str) -> Option<Value> {
    let obj = api.get(name).await.unwrap();
    obj.data
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Valid")
        .cloned()
}

async fn wait_valid(api: &Api<DynamicObject>, name: &str, status: &str, generation: i64) -> Value {
    wait_for(&format!("{name} gets Valid={status}"), || async {
        valid_condition(api, name)
            .await
            .filter(|c| c["status"] == status && c["observedGeneration"] == generation)
    })
    .await
}

fn policy(kind: kvstore::values::PolicyKind, name: &str, spec: Value) -> DynamicObject {
    let mut o = DynamicObject::new(name, &crd::api_resource(kind));
    if kind == kvstore::values::PolicyKind::CiliumNetworkPolicy {
        o = o.within("default");
    }
    o.data = json!({ "spec": spec });
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_get_a_valid_condition_with_the_reason() {
    use kvstore::values::PolicyKind::{
        CiliumClusterwideNetworkPolicy as Ccnp, CiliumNetworkPolicy as Cnp,
    };
    let Some(server) = server().await else {
        return;
    };
    let etcd = TestEtcd::start().await.unwrap();
    let op = InProcess::start(config(&etcd, &server, "op-a")).await;
    wait_until("the CRDs are installed", || {
        std::future::ready(op.handle.crds_installed() == Some(true))
    })
    .await;
    let kube = server.client().await.unwrap();
    let cnps: Api<DynamicObject> =
        Api::namespaced_with(kube.clone(), "default", &crd::api_resource(Cnp));
    let ccnps: Api<DynamicObject> = Api::all_with(kube.clone(), &crd::api_resource(Ccnp));
    let pp = PostParams::default();
    let good = json!({
        "endpointSelector": { "matchLabels": { "app": "echo" } },
        "ingress": [{ "fromEndpoints": [{ "matchLabels": { "app": "client" } }],
                      "toPorts": [{ "ports": [{ "port": "8080", "protocol": "TCP" }] }] }],
    });
    let typo = json!({
        "endpointSelector": { "matchLabels": { "app": "echo" } },
        "ingress": [{ "fromEndpoints": [{}], "toPortz": [] }],
    });
    let sometimes = json!({
        "endpointSelector": { "matchExpressions": [
            { "key": "app", "operator": "Sometimes", "values": ["echo"] }
        ] },
    });
    cnps.create(&pp, &policy(Cnp, "good", good.clone()))
        .await
        .unwrap();
    cnps.create(&pp, &policy(Cnp, "typo", typo)).await.unwrap();
    cnps.create(&pp, &policy(Cnp, "sometimes", sometimes))
        .await
        .unwrap();
    ccnps
        .create(&pp, &policy(Ccnp, "cluster-good", good.clone()))
        .await
        .unwrap();

    let c = wait_valid(&cnps, "good", "True", 1).await;
    assert_eq!(c["reason"], "Valid");
    let c = wait_valid(&cnps, "typo", "False", 1).await;
    assert_eq!(c["reason"], "Invalid");
    let message = c["message"].as_str().unwrap();
    assert!(message.contains("toPortz"), "{message}");
    let c = wait_valid(&cnps, "sometimes", "False", 1).await;
    assert!(c["message"].as_str().unwrap().contains("Sometimes"), "{c}");
    wait_valid(&ccnps, "cluster-good", "True", 1).await;
    wait_until("the metric counts two invalid policies", || async {
        metric(&op.metrics().await, "clustermesh_operator_policies_invalid") == Some(2.0)
    })
    .await;

    // Other conditions are kept; a write of ours does not cause another.
    let mut obj = cnps.get("good").await.unwrap();
    let written = valid_condition(&cnps, "good").await.unwrap();
    let mut conditions = obj.data["status"]["conditions"].as_array().unwrap().clone();
    conditions.push(json!({ "type": "Reviewed", "status": "True" }));
    obj.data["status"]["conditions"] = json!(conditions);
    cnps.replace_status("good", &pp, &obj).await.unwrap();

    // Fixing a policy flips its condition, on the new generation.
    cnps.patch(
        "typo",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "ingress": [{ "fromEndpoints": [{}] }] } })),
    )
    .await
    .unwrap();
    let c = wait_valid(&cnps, "typo", "True", 2).await;
    assert_eq!(c["message"], "the policy is valid");
    wait_until("the metric counts one invalid policy", || async {
        metric(&op.metrics().await, "clustermesh_operator_policies_invalid") == Some(1.0)
    })
    .await;
    let good_now = cnps.get("good").await.unwrap();
    let conditions = good_now.data["status"]["conditions"].as_array().unwrap();
    assert_eq!(conditions.len(), 2, "{conditions:?}");
    assert_eq!(
        conditions.iter().find(|c| c["type"] == "Valid"),
        Some(&written)
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_installs_the_crds_reports_the_api_server_and_releases_the_lease() {
    let Some(server) = server().await else {
        return;
    };
    let etcd = TestEtcd::start().await.unwrap();
    let kubeconfig = server.kubeconfig().display().to_string();
    let extra = ["--k8s-kubeconfig", kubeconfig.as_str()];
    let mut a = OperatorProcess::spawn(
        &OperatorProcess::args(&etcd.endpoint(), "op-a", &extra),
        "op-a",
    );
    let addr_a = a.health_addr().await;
    let report = wait_for("op-a leads, connected, CRDs installed", || async {
        a.health(addr_a).await.filter(|h| {
            h.leader
                && h.kubernetes
                    .as_ref()
                    .is_some_and(|k| k.connected && k.crds_installed)
        })
    })
    .await;
    let k = report.kubernetes.unwrap();
    assert_eq!(k.version.as_deref(), Some(k8s::local_server::VERSION));
    assert_eq!(report.status, "ok");
    assert!(report.checks["kubernetes"].ok, "{:?}", report.checks);
    let crds: Api<CustomResourceDefinition> = Api::all(server.client().await.unwrap());
    for (name, _) in crd::MANIFESTS {
        assert!(
            crds.get_opt(name).await.unwrap().is_some(),
            "{name} installed"
        );
    }
    let (_, metrics) = common::http_get(addr_a, "/metrics").await.unwrap();
    assert_eq!(
        metric(&metrics, "clustermesh_operator_k8s_connected"),
        Some(1.0)
    );
    assert_eq!(metric(&metrics, "clustermesh_operator_leader"), Some(1.0));
    assert_eq!(
        holder(&lease(&server).await.unwrap()).as_deref(),
        Some("op-a")
    );

    let mut b = OperatorProcess::spawn(
        &OperatorProcess::args(&etcd.endpoint(), "op-b", &extra),
        "op-b",
    );
    let addr_b = b.health_addr().await;
    wait_for("op-b follows op-a", || async {
        b.health(addr_b)
            .await
            .filter(|h| !h.leader && h.leader_id.as_deref() == Some("op-a"))
    })
    .await;
    // SIGTERM: a clean exit that releases the Lease; op-b takes over at once.
    let stopping = Instant::now();
    assert_eq!(a.terminate().await, Some(0));
    wait_for("op-b leads", || async {
        b.health(addr_b).await.filter(|h| h.leader)
    })
    .await;
    let took = stopping.elapsed();
    assert!(took < TTL, "hand-over took {took:?}");
    assert!(
        a.log()
            .iter()
            .any(|l| l.contains("released the leader Lease")),
        "the log says the Lease was released"
    );
    assert_eq!(b.terminate().await, Some(0));
}
