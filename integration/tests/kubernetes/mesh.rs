//! Two clusters in Kubernetes mode: each runs its own kube-apiserver (with
//! its etcd and controller manager), its own clustermesh etcd, operator and
//! clustermesh-apiserver; agents with eBPF in node namespaces read Pods,
//! Services with their Endpoints and CiliumNetworkPolicies from their
//! cluster's API server. The sample workloads are Pod objects added through
//! CNI with the kubelet's arguments; the global service is a Kubernetes
//! Service with Cilium's annotations.

use std::{
    collections::BTreeSet,
    io::Write as _,
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use integration::{TestMesh, can_run, wait_for};
use localmesh::{SERVICE_FRONTEND, WORKLOAD_NAMESPACE};

use crate::kube_available;

/// `kubectl --kubeconfig <cluster's admin>`.
fn kubectl_in(mesh: &TestMesh, cluster: &str) -> Command {
    let kube = mesh.state.cluster(cluster).unwrap().kube.as_ref().unwrap();
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig").arg(&kube.kubeconfig);
    cmd
}

/// `kubectl <verb> -f -` against `cluster`'s API server, `yaml` on stdin.
fn kubectl(mesh: &TestMesh, cluster: &str, verb: &str, yaml: &str) {
    let mut child = kubectl_in(mesh, cluster)
        .args([verb, "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {verb} in {cluster}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `kubectl get <what> -o jsonpath=<path>` in `cluster`.
fn kubectl_get(mesh: &TestMesh, cluster: &str, what: &[&str], path: &str) -> String {
    let out = kubectl_in(mesh, cluster)
        .arg("get")
        .args(what)
        .arg(format!("-o=jsonpath={path}"))
        .output()
        .expect("run kubectl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The global service `demo/echo` with these annotations.
fn echo_service(annotations: &[(&str, &str)]) -> serde_json::Value {
    let (ip, _) = SERVICE_FRONTEND.split_once(':').unwrap();
    let annotations: serde_json::Map<String, serde_json::Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "echo", "namespace": WORKLOAD_NAMESPACE, "annotations": annotations},
        "spec": {
            "clusterIP": ip,
            "selector": {"app": "echo"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
        },
    })
}

/// The clusters whose echo servers answered `n` requests from `cluster`'s
/// client to the service.
fn answering_clusters(mesh: &TestMesh, cluster: &str, n: usize) -> BTreeSet<String> {
    let frontend: SocketAddr = SERVICE_FRONTEND.parse().unwrap();
    (0..n)
        .filter_map(|_| {
            mesh.request(cluster, "client", frontend, Duration::from_millis(800))
                .ok()
        })
        .filter_map(|(server, _)| server.split('/').next().map(str::to_string))
        .collect()
}

fn set_echo_ready(mesh: &TestMesh, cluster: &str, ready: bool) {
    for n in &mesh.state.cluster(cluster).unwrap().nodes {
        let name = format!("echo-{}", n.name);
        let ip = mesh.state.endpoint(cluster, &name).unwrap().ip;
        mesh.kube_set_pod_ready(cluster, WORKLOAD_NAMESPACE, &name, ip, ready)
            .unwrap();
    }
}

const ECHO_ADMITS_LOCAL_CLIENTS: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: echo-from-local-clients, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: echo}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
"#;

const ECHO_ADMITS_C2_CLIENTS: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: echo-from-c2-clients, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: echo}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client, io.cilium.k8s.policy.cluster: c2}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
"#;

/// Would open echo to everyone on every port, but has a typo.
const INVALID: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: echo-typo, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: echo}}
  ingres: [{}]
"#;

#[test]
fn two_kubernetes_clusters_policy_and_global_service() {
    let what = "two_kubernetes_clusters_policy_and_global_service";
    if !can_run(what) || !kube_available(what) {
        return;
    }
    let mesh = TestMesh::up_with(2, 2, |s| s.kubernetes = true).expect("mesh up");
    for c in ["c1", "c2"] {
        for n in ["n1", "n2"] {
            let k = mesh.status(c, n).kubernetes.expect("Kubernetes mode");
            assert!(k.connected, "{c}/{n}: {k:?}");
        }
    }
    let frontend: SocketAddr = SERVICE_FRONTEND.parse().unwrap();

    // Affinity local: c1's client is served by c1.
    wait_for("c1's client to reach the service", || {
        mesh.reaches("c1", "client", frontend)
    });
    assert_eq!(
        answering_clusters(&mesh, "c1", 10),
        BTreeSet::from(["c1".to_string()])
    );

    // Failover: c1's echo Pods stop being ready, the controller manager
    // drops them from the Endpoints, c1's agents fail over to c2.
    let since = Instant::now();
    set_echo_ready(&mesh, "c1", false);
    let switch = mesh.switch("c1", "client", frontend, since, |s| s.starts_with("c2/"));
    eprintln!(
        "failover to c2 after {:.2} s ({} failed)",
        switch.seconds, switch.failed
    );
    assert_eq!(
        answering_clusters(&mesh, "c1", 10),
        BTreeSet::from(["c2".to_string()])
    );
    set_echo_ready(&mesh, "c1", true);
    let since = Instant::now();
    mesh.switch("c1", "client", frontend, since, |s| s.starts_with("c1/"));

    // No affinity: both clusters' backends serve.
    for c in ["c1", "c2"] {
        mesh.kube_apply_service(c, echo_service(&[("service.cilium.io/global", "true")]))
            .unwrap();
    }
    let both = BTreeSet::from(["c1".to_string(), "c2".to_string()]);
    wait_for("c1's client to be served by both clusters", || {
        answering_clusters(&mesh, "c1", 20) == both
    });

    // shared: "false" in c2: c2 keeps its backends to itself, still uses c1's.
    mesh.kube_apply_service(
        "c2",
        echo_service(&[
            ("service.cilium.io/global", "true"),
            ("service.cilium.io/shared", "false"),
        ]),
    )
    .unwrap();
    wait_for("c1's client to be served by c1 only", || {
        answering_clusters(&mesh, "c1", 20) == BTreeSet::from(["c1".to_string()])
    });
    wait_for("c2's client to be served by both clusters", || {
        answering_clusters(&mesh, "c2", 20) == both
    });

    // Policy: before any, c2's client reaches c1's echo server directly.
    let c1_echo = mesh.echo_addr("c1", "echo-n1");
    wait_for("c2's client to reach c1's echo", || {
        mesh.reaches("c2", "client", c1_echo)
    });
    kubectl(&mesh, "c1", "apply", ECHO_ADMITS_LOCAL_CLIENTS);
    wait_for("c2's client to be denied by c1's local-only policy", || {
        mesh.denied("c2", "client", c1_echo)
    });
    assert!(
        mesh.reaches("c1", "client", c1_echo),
        "c1's client is admitted"
    );
    kubectl(&mesh, "c1", "apply", ECHO_ADMITS_C2_CLIENTS);
    wait_for("c2's client to be admitted by name", || {
        mesh.reaches("c2", "client", c1_echo)
    });

    // An invalid policy is reported on the object and in the agents'
    // status, and changes nothing.
    kubectl(&mesh, "c1", "apply", INVALID);
    wait_for("the operator to mark the policy invalid", || {
        let status = kubectl_get(
            &mesh,
            "c1",
            &["cnp", "-n", WORKLOAD_NAMESPACE, "echo-typo"],
            r#"{.status.conditions[?(@.type=="Valid")].status} {.status.conditions[?(@.type=="Valid")].message}"#,
        );
        status.starts_with("False ") && status.contains("ingres")
    });
    wait_for("the agents to report the refused policy", || {
        mesh.status("c1", "n1")
            .kubernetes
            .is_some_and(|k| k.refused.keys().any(|k| k.contains("demo/echo-typo")))
    });
    assert_eq!(
        kubectl_get(
            &mesh,
            "c1",
            &["cnp", "-n", WORKLOAD_NAMESPACE, "echo-from-c2-clients"],
            r#"{.status.conditions[?(@.type=="Valid")].status}"#,
        ),
        "True"
    );
    assert!(mesh.reaches("c2", "client", c1_echo));

    // A label change on c2's client Pod moves it to a new identity, which
    // c1's agents learn through the mesh: the policy no longer admits it.
    let relabel = |app: &'static str| {
        mesh.kube_call("c2", move |client| async move {
            kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client, WORKLOAD_NAMESPACE)
                .patch(
                    "client",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(
                        serde_json::json!({"metadata": {"labels": {"app": app}}}),
                    ),
                )
                .await?;
            Ok(())
        })
        .unwrap()
    };
    relabel("visitor");
    wait_for("the relabelled client of c2 to be denied in c1", || {
        mesh.denied("c2", "client", c1_echo)
    });
    relabel("client");
    wait_for("c2's client to be admitted again", || {
        mesh.reaches("c2", "client", c1_echo)
    });

    // Deleting the policy that named c2 denies c2 again; the local one
    // keeps c1's client admitted.
    kubectl(&mesh, "c1", "delete", ECHO_ADMITS_C2_CLIENTS);
    kubectl(&mesh, "c1", "delete", INVALID);
    wait_for("c2's client to be denied again", || {
        mesh.denied("c2", "client", c1_echo)
    });
    wait_for("the refused policy's report to go", || {
        mesh.status("c1", "n1")
            .kubernetes
            .is_some_and(|k| k.refused.is_empty())
    });
    assert!(mesh.reaches("c1", "client", c1_echo));

    // c1's Kubernetes API server stops for 30 s: its agents keep the last
    // state, traffic keeps flowing, the policy keeps denying.
    let mut mesh = mesh;
    mesh.stop_kube_apiserver("c1").unwrap();
    wait_for("c1's agents to notice", || {
        ["n1", "n2"].iter().all(|n| {
            mesh.status("c1", n)
                .kubernetes
                .is_some_and(|k| !k.connected)
        })
    });
    let outage = Instant::now();
    let mut requests = 0;
    while outage.elapsed() < Duration::from_secs(30) {
        mesh.request("c1", "client", frontend, Duration::from_secs(3))
            .unwrap_or_else(|e| {
                panic!("request {requests} to the service during the outage: {e:#}")
            });
        mesh.request("c1", "client", c1_echo, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("request {requests} to c1's echo during the outage: {e:#}"));
        requests += 1;
        if requests % 10 == 0 {
            assert!(
                mesh.denied("c2", "client", c1_echo),
                "still denied during the outage"
            );
        }
    }
    eprintln!("{requests} request pairs answered during the 30 s outage");
    mesh.start_kube_apiserver("c1").unwrap();

    // Back: a change made now arrives, and the agents hold exactly what
    // the API server has.
    kubectl(&mesh, "c1", "delete", ECHO_ADMITS_LOCAL_CLIENTS);
    wait_for(
        "c2's client to reach c1's echo once no policy selects it",
        || mesh.reaches("c2", "client", c1_echo),
    );
    for n in ["n1", "n2"] {
        // The request above proves only the node of c1's echo; a watch the
        // outage expired ("too old resource version") re-lists after the
        // watcher's backoff, so each node gets its moment.
        wait_for(&format!("{n} to see the policy deleted"), || {
            mesh.status("c1", n)
                .kubernetes
                .and_then(|k| k.resources.get("ciliumnetworkpolicies").map(|r| r.objects))
                == Some(0)
        });
        let k = mesh.status("c1", n).kubernetes.unwrap();
        assert!(k.connected && k.disconnects >= 1, "{n}: {k:?}");
        assert_eq!(
            k.resources["ciliumnetworkpolicies"].objects, 0,
            "{n}: {k:?}"
        );
        assert_eq!(
            k.resources["services"].objects, 2,
            "{n}: demo/echo and default/kubernetes: {k:?}"
        );
        assert_eq!(k.resources["nodes"].objects, 2, "{n}: {k:?}");
        assert_eq!(
            k.resources["pods"].objects,
            if n == "n1" { 2 } else { 1 },
            "{n}: its own Pods (client and echo on n1, echo on n2): {k:?}"
        );
    }
    assert!(mesh.reaches("c1", "client", c1_echo));
}
