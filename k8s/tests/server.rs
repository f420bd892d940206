//! The Kubernetes sources against a real kube-apiserver (v1.20, built by
//! `scripts/kube-test-server.sh`): CRD installation, watchers across an
//! API server outage, and policies read from real objects.

use std::time::Duration;

use etcd_harness::eventually;
use k8s::{
    crd,
    testing::{self, KubeServer},
    watch::{self, Change, KubeHealth, ObjectKey},
};
use kube::{
    Api,
    api::{DeleteParams, DynamicObject, PostParams},
    runtime::watcher,
};
use kvstore::values::PolicyKind;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Starts a server, or skips (outside CI) / fails (under `CI=true`) when
/// the binaries are not built.
async fn server() -> Option<KubeServer> {
    if let Err(why) = testing::available() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipped: {why}");
        return None;
    }
    Some(KubeServer::start().await.expect("start the API server"))
}

fn cnp(name: &str, spec: serde_json::Value) -> DynamicObject {
    let mut o = DynamicObject::new(name, &crd::api_resource(PolicyKind::CiliumNetworkPolicy))
        .within("default");
    o.data = serde_json::json!({ "spec": spec });
    o
}

async fn next<K>(rx: &mut mpsc::Receiver<Change<K>>) -> Change<K> {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("a change within 30 s")
        .expect("the watcher runs")
}

#[tokio::test]
async fn policies_are_watched_across_an_api_server_outage() {
    let Some(mut server) = server().await else {
        return;
    };
    let client = server.client().await.unwrap();
    crd::install(&client, Duration::from_secs(30))
        .await
        .unwrap();
    // Installing again (an upgrade) is fine.
    crd::install(&client, Duration::from_secs(30))
        .await
        .unwrap();

    let ar = crd::api_resource(PolicyKind::CiliumNetworkPolicy);
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let ns_api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    ns_api
        .create(
            &PostParams::default(),
            &cnp("before", serde_json::json!({"endpointSelector": {}})),
        )
        .await
        .unwrap();

    let health = KubeHealth::default();
    let shutdown = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(64);
    tokio::spawn(watch::watch(
        api,
        watcher::Config::default(),
        "ciliumnetworkpolicies",
        health.clone(),
        tx,
        shutdown.clone(),
    ));
    tokio::spawn(health.clone().probe(client.clone(), shutdown.clone()));
    match next(&mut rx).await {
        Change::Apply(o) => {
            assert_eq!(o.metadata.name.as_deref(), Some("before"));
            k8s::policy::document(PolicyKind::CiliumNetworkPolicy, &o).unwrap();
        }
        other => panic!("expected the existing policy, got {other:?}"),
    }
    assert!(matches!(next(&mut rx).await, Change::Synced));

    // An unknown field is kept by the server (the CRD preserves them) and
    // refused by the conversion, with its name.
    ns_api
        .create(
            &PostParams::default(),
            &cnp(
                "typo",
                serde_json::json!({"endpointSelector": {}, "ingres": [{}]}),
            ),
        )
        .await
        .unwrap();
    match next(&mut rx).await {
        Change::Apply(o) => {
            let e = k8s::policy::document(PolicyKind::CiliumNetworkPolicy, &o).unwrap_err();
            assert!(e.to_string().contains("ingres"), "{e}");
        }
        other => panic!("expected the new policy, got {other:?}"),
    }

    eventually("the probe to connect", Duration::from_secs(20), || {
        let s = health.snapshot();
        async move { s.connected.then_some(()) }
    })
    .await;
    assert_eq!(
        health.snapshot().version.as_deref(),
        Some(k8s::local_server::VERSION)
    );

    // The API server goes away: nothing is delivered, the health says so.
    server.stop_apiserver();
    eventually("the probe to notice", Duration::from_secs(20), || {
        let s = health.snapshot();
        async move { (!s.connected && s.disconnects == 1).then_some(()) }
    })
    .await;
    assert!(rx.try_recv().is_err(), "no change while the server is down");
    server.start_apiserver().await.unwrap();

    // After the outage, changes flow again.
    ns_api
        .delete("before", &DeleteParams::default())
        .await
        .unwrap();
    loop {
        match next(&mut rx).await {
            // A re-list re-delivers what exists.
            Change::Apply(o) if o.metadata.name.as_deref() == Some("typo") => continue,
            Change::Delete(key) => {
                assert_eq!(
                    key,
                    ObjectKey {
                        namespace: Some("default".into()),
                        name: "before".into()
                    }
                );
                break;
            }
            other => panic!("expected the deletion, got {other:?}"),
        }
    }
    let s = health.snapshot();
    assert!(s.connected || s.disconnects >= 1);
    let r = &s.resources["ciliumnetworkpolicies"];
    assert!(r.synced);
    assert_eq!(r.objects, 1);
    shutdown.cancel();
}
