//! Kubernetes mode on one cluster: real etcd, a real kube-apiserver
//! (v1.20, with its controller manager), two nodes whose agents read Pods,
//! Namespaces, Services with their Endpoints and CiliumNetworkPolicies from
//! it, pods added through the CNI binary with the kubelet's `K8S_POD_*`
//! arguments, and real packets: a policy created with kubectl admits and
//! denies, a Pod's label change moves its endpoint to a new identity, an
//! invalid policy changes nothing, a Service balances over its ready
//! endpoints, and traffic keeps flowing while the API server is down.

mod support;

use std::{io::Write as _, net::SocketAddr, process::Stdio, time::Duration};

use agent::{KubernetesView, ServiceView};
use anyhow::{Context as _, Result, bail};
use etcd_harness::TestEtcd;
use k8s::testing::KubeServer;
use k8s_openapi::api::core::v1::{Node as KubeNode, Pod, Service};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use support::{EchoServer, Fabric, Node, NodeSpec, denied, request, wait_for};

const NS: &str = "default";

/// `kubectl apply -f -` (or `delete`) with `yaml` on stdin.
fn kubectl(kube: &KubeServer, verb: &str, yaml: &str) -> Result<String> {
    let mut child = kube
        .kubectl()
        .args([verb, "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run kubectl (Debian's kubernetes-client)")?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "kubectl {verb} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A Pod object on `node` (nothing runs it: the CNI call below is the
/// container runtime, and the test writes the status a kubelet would).
fn pod(name: &str, node: &str, app: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "example.invalid/echo:1"}]},
    }))
    .expect("a valid Pod")
}

fn kube_status(node: &Node) -> KubernetesView {
    node.status().kubernetes.expect("Kubernetes mode")
}

const ALLOW_CLIENT: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: echo-from-client, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: echo}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
"#;

/// Would make echo deny everything, but has a typo: refused whole.
const INVALID_LOCKDOWN: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: echo-lockdown, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: echo}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: nobody}}]
    toPortz: [{ports: [{port: "9", protocol: TCP}]}]
"#;

#[test]
fn kubernetes_mode_policy_labels_services_and_an_api_outage() -> Result<()> {
    if !netns::root_or_skip("kubernetes_mode_policy_labels_services_and_an_api_outage") {
        return Ok(());
    }
    if let Err(why) = k8s::testing::available() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipped: {why}");
        return Ok(());
    }
    let rt = tokio::runtime::Runtime::new()?;
    let etcd = rt.block_on(TestEtcd::start())?;
    let mut kube = rt.block_on(KubeServer::start())?;
    let client = rt.block_on(kube.client())?;
    // The operator installs the CRDs in a real deployment.
    rt.block_on(k8s::crd::install(&client, Duration::from_secs(30)))?;
    // The nodes, as their kubelets register them (the controller manager
    // deletes the Pods of nodes that do not exist).
    let nodes: Api<KubeNode> = Api::all(client.clone());
    for n in ["n1", "n2"] {
        let node: KubeNode = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": n},
        }))?;
        rt.block_on(nodes.create(&PostParams::default(), &node))?;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    for p in [pod("client", "n1", "client"), pod("echo", "n2", "echo")] {
        rt.block_on(pods.create(&PostParams::default(), &p))?;
    }

    let mut fabric = Fabric::new()?;
    let spec = |name: &str, ip: [u8; 4], cidr: &str| NodeSpec {
        cluster: "c1".into(),
        cluster_id: 1,
        name: name.into(),
        ip: ip.into(),
        pod_cidr: cidr.into(),
        etcd: etcd.endpoint(),
        clustermesh_dir: None,
        kubeconfig: Some(kube.kubeconfig().to_path_buf()),
    };
    let mut n1 = Node::new(spec("n1", [192, 168, 78, 1], "10.12.1.0/24"), &mut fabric)?;
    let mut n2 = Node::new(spec("n2", [192, 168, 78, 2], "10.12.2.0/24"), &mut fabric)?;
    n1.start_agent()?;
    n2.start_agent()?;
    let k = kube_status(&n1);
    assert!(k.connected, "{k:?}");
    assert_eq!(k.version.as_deref(), Some("v1.20.2"));
    for r in [
        "pods",
        "namespaces",
        "services",
        "ciliumnetworkpolicies",
        "nodes",
    ] {
        assert!(k.resources.get(r).is_some_and(|r| r.synced), "{r}: {k:?}");
    }

    // The endpoints take their Pods' labels (and service account).
    let client_pod = n1.add_k8s_pod(NS, "client")?;
    let echo_pod = n2.add_k8s_pod(NS, "echo")?;
    assert_eq!(client_pod.endpoint.labels["app"], "client");
    assert_eq!(
        client_pod.endpoint.labels["io.cilium.k8s.policy.serviceaccount"],
        "default"
    );
    assert_eq!(client_pod.endpoint.pod.as_deref(), Some("client"));
    let echo = EchoServer::start(&echo_pod, 8080)?;
    let timeout = Duration::from_secs(2);
    wait_for("client to reach echo without any policy", || {
        request(&client_pod, echo.addr(), timeout).is_ok()
    });

    // An invalid policy that would lock echo down is refused whole: the
    // status says why, the datapath does not change.
    kubectl(&kube, "apply", INVALID_LOCKDOWN)?;
    wait_for("the invalid policy to be reported", || {
        kube_status(&n2)
            .refused
            .get("CiliumNetworkPolicy default/echo-lockdown")
            .is_some_and(|why| why.contains("toPortz"))
    });
    request(&client_pod, echo.addr(), timeout).context("still allowed after an invalid policy")?;

    // A valid policy created with kubectl admits the client; a label change
    // on the client's Pod moves it to a new identity the policy does not
    // admit, and back.
    kubectl(&kube, "apply", ALLOW_CLIENT)?;
    let identity = client_pod.endpoint.identity;
    request(&client_pod, echo.addr(), timeout).context("client admitted by the policy")?;
    rt.block_on(pods.patch(
        "client",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"labels": {"app": "intruder"}}})),
    ))?;
    wait_for("the client's endpoint to get a new identity", || {
        n1.api()
            .get::<agent::Endpoint>("/v1/endpoints/client")
            .is_ok_and(|e| e.identity != identity && e.labels["app"] == "intruder")
    });
    wait_for("the relabelled client to be denied", || {
        denied(&client_pod, echo.addr())
    });
    rt.block_on(pods.patch(
        "client",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"labels": {"app": "client"}}})),
    ))?;
    wait_for("the client to be admitted again", || {
        request(&client_pod, echo.addr(), timeout).is_ok()
    });
    assert_eq!(
        n1.api()
            .get::<agent::Endpoint>("/v1/endpoints/client")?
            .identity,
        identity,
        "the same labels give the same identity"
    );

    // A Service: the kubelet's part (the Pod's IP and readiness) is
    // written by the test; the controller manager fills the Endpoints;
    // the agents balance the cluster IP over the ready Pod.
    rt.block_on(pods.patch_status(
        "echo",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {
            "phase": "Running",
            "podIP": echo_pod.ip.to_string(),
            "podIPs": [{"ip": echo_pod.ip.to_string()}],
            "conditions": [{"type": "Ready", "status": "True"}],
        }})),
    ))?;
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let svc: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "echo", "namespace": NS},
        "spec": {"selector": {"app": "echo"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))?;
    let svc = rt.block_on(services.create(&PostParams::default(), &svc))?;
    let vip: std::net::IpAddr = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .context("a cluster IP")?
        .parse()?;
    let frontend = SocketAddr::new(vip, 80);
    wait_for("the service to be programmed with the echo Pod", || {
        n1.api()
            .get::<Vec<ServiceView>>("/v1/services")
            .is_ok_and(|s| {
                s.iter().any(|v| {
                    v.frontend == frontend.to_string()
                        && v.backends
                            .iter()
                            .any(|b| b.address.starts_with(&echo_pod.ip.to_string()))
                })
            })
    });
    let (who, _) = request(&client_pod, frontend, timeout).context("the service answers")?;
    assert_eq!(who, "echo");

    // The API server goes away for 30 s: the agents keep the last state,
    // traffic keeps flowing, status says so.
    kube.stop_apiserver();
    wait_for("the agent to notice the API server is gone", || {
        !kube_status(&n1).connected
    });
    let outage = std::time::Instant::now();
    let mut requests = 0;
    while outage.elapsed() < Duration::from_secs(30) {
        request(&client_pod, frontend, timeout)
            .with_context(|| format!("request {requests} during the API server outage"))?;
        requests += 1;
    }
    rt.block_on(kube.start_apiserver())?;
    wait_for("the agent to reconnect", || kube_status(&n1).connected);

    // Changes after the outage arrive: the invalid policy is deleted (its
    // report goes), the admitting policy too (the echo Pod is no longer
    // selected: everything may reach it).
    kubectl(&kube, "delete", INVALID_LOCKDOWN)?;
    kubectl(&kube, "delete", ALLOW_CLIENT)?;
    wait_for("the agents to drop both policies", || {
        let k = kube_status(&n2);
        k.refused.is_empty()
            && n2
                .status()
                .sources
                .iter()
                .all(|s| s.synced.values().all(|v| *v))
    });
    let k = kube_status(&n2);
    assert_eq!(k.resources["ciliumnetworkpolicies"].objects, 0, "{k:?}");
    assert_eq!(k.resources["pods"].objects, 1, "n2's echo Pod: {k:?}");
    assert_eq!(k.resources["nodes"].objects, 2, "{k:?}");
    assert!(k.disconnects >= 1);
    let _ = etcd;
    Ok(())
}
