//! `clustermesh policy|service apply|delete|list` against a real etcd:
//! several documents at once, standard input, the namespace default, and
//! input refused with a reason, exit code 64 and nothing stored.

use etcd_harness::TestEtcd;
use support::clustermesh_with_input as clustermesh;

mod support;

use kvstore::{
    Client, ClientConfig, ClusterName, NumericIdentity, StoreValue, keys,
    values::{IpIdentityPair, Node, NodeCidr},
};

const POLICIES: &str = r#"
kind: CiliumNetworkPolicy
metadata: {name: echo-ingress}
spec:
  endpointSelector: {matchLabels: {app: echo}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client, io.cilium.k8s.policy.cluster: c1}}]
---
# the second one
kind: CiliumNetworkPolicy
metadata: {name: lock, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress: [{}]
  egress:
  - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.96.0.0/12]}]
  - toEntities: [world-ipv4]
  - toFQDNs: [{matchPattern: "*.backup.example.net"}]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
"#;

fn service(name: &str, frontend: &str) -> String {
    format!(
        "namespace: demo\nname: {name}\nfrontend: {frontend}\nports: [{{name: http, port: 80, targetPort: 8080}}]\nselector: {{app: echo}}\n"
    )
}

#[tokio::test]
async fn apply_delete_list_and_refusals() {
    let etcd = TestEtcd::start().await.unwrap();
    let kv = Client::connect(&ClientConfig::new([etcd.endpoint()]))
        .await
        .unwrap();
    let ep = etcd.endpoint();
    let target = ["--etcd-endpoints", ep.as_str()];
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(target);
        clustermesh(&all, stdin)
    };
    let stored = |prefix: kvstore::KeyPrefix| {
        let kv = kv.clone();
        async move {
            let (kvs, _) = kv.list(&prefix, 100).await.unwrap();
            kvs.into_iter()
                .map(|kv| prefix.strip(&kv.key).unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };

    // Two documents from standard input; the first defaults to `default`.
    let r = run(&["policy", "apply", "-f", "-"], Some(POLICIES));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("policy default/echo-ingress applied"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("policy demo/lock applied"),
        "{}",
        r.stdout
    );
    assert_eq!(
        stored(keys::policies()).await,
        ["default/echo-ingress", "demo/lock"]
    );

    // `list` says what each rule selects; `-o json` has the fields.
    let r = run(&["policy", "list"], None);
    assert!(
        r.stdout.contains(
            "endpoints app=echo: ingress from app=client,io.cilium.k8s.policy.cluster=c1"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(
            "endpoints app=db: ingress from nobody; egress to cidr 10.0.0.0/8 except 10.96.0.0/12 | entity world-ipv4 | fqdn *.backup.example.net"
        ),
        "{}",
        r.stdout
    );
    let r = run(&["policy", "list", "-o", "json"], None);
    let json: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(json[0]["name"], "default/echo-ingress");
    assert_eq!(json[0]["valid"], true);
    assert_eq!(
        json[1]["document"]["spec"]["endpointSelector"]["matchLabels"]["app"],
        "db"
    );

    // One bad document: refused with where it is, and nothing stored.
    let bad = POLICIES
        .replace("name: lock", "name: lock2")
        .replace("{app: db}", "{app: 5}");
    let r = run(
        &["policy", "apply", "-f", "-"],
        Some(&bad.replace("echo-ingress", "new-one")),
    );
    assert_eq!(r.code, 64, "{}", r.stderr);
    assert!(
        r.stderr.contains("document 2 (line 9)") && r.stderr.contains("label \"app\""),
        "{}",
        r.stderr
    );
    assert_eq!(
        stored(keys::policies()).await,
        ["default/echo-ingress", "demo/lock"]
    );

    // Issue 18's refusals: each names the field's path and the reason, and
    // nothing of the document set is stored.
    for (field, path, reason) in [
        ("toCIDR: [10.0.0.0/33]", "spec.egress[0].toCIDR[0]", ""),
        (
            "toPorts: [{ports: [{port: \"70000\"}]}]",
            "spec.egress[0].toPorts[0].ports[0].port",
            "",
        ),
        (
            "toPorts: [{ports: [{port: \"8080\", endPort: 80}]}]",
            "spec.egress[0].toPorts[0].ports[0].endPort",
            "below port 8080",
        ),
        (
            "toEndpoints: [{}]\n    toCIDR: [10.0.0.0/8]",
            "spec.egress[0]",
            "combining",
        ),
        ("toEndpoint: [{}]", "spec.egress[0]", "unknown field"),
    ] {
        let doc = format!(
            "kind: CiliumNetworkPolicy\nmetadata: {{name: bad, namespace: demo}}\nspec:\n  endpointSelector: {{}}\n  egress:\n  - {field}\n"
        );
        let r = run(&["policy", "apply", "-f", "-"], Some(&doc));
        assert_eq!(r.code, 64, "{field}: {}", r.stderr);
        assert!(
            r.stderr.contains(path) && r.stderr.contains(reason),
            "{field}: want {path:?} and {reason:?} in {}",
            r.stderr
        );
        assert_eq!(
            stored(keys::policies()).await,
            ["default/echo-ingress", "demo/lock"],
            "{field}: nothing stored"
        );
    }

    // `delete NAME` finds what `apply` stored without a namespace.
    let r = run(&["policy", "delete", "echo-ingress"], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run(&["policy", "delete", "echo-ingress"], None);
    assert_eq!(r.code, 64, "{}", r.stderr);
    assert!(
        r.stderr.contains("no policy default/echo-ingress"),
        "{}",
        r.stderr
    );
    assert_eq!(stored(keys::policies()).await, ["demo/lock"]);

    // Services: a frontend that is taken, a pod's, or inside a pod CIDR.
    let r = run(
        &["service", "apply", "-f", "-"],
        Some(&service("echo", "10.96.0.10")),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run(
        &["service", "apply", "-f", "-"],
        Some(&service("echo", "10.96.0.10")),
    );
    assert_eq!(
        r.code, 0,
        "re-applying the same service is fine: {}",
        r.stderr
    );
    let r = run(
        &["service", "apply", "-f", "-"],
        Some(&service("other", "10.96.0.10")),
    );
    assert_eq!(r.code, 64, "{}", r.stderr);
    assert!(
        r.stderr.contains("already used by service demo/echo"),
        "{}",
        r.stderr
    );

    let c1 = ClusterName::new("c1").unwrap();
    let pod = IpIdentityPair::host(
        "10.7.0.5".parse().unwrap(),
        NumericIdentity::new(65_800),
        None,
    );
    kv.put(&keys::ipcache().key("10.7.0.5"), pod.encode())
        .await
        .unwrap();
    let mut node = Node::new(&c1, "n1", 1);
    node.ipv4_alloc_cidr = Some(NodeCidr::from_net("10.1.0.0/24".parse().unwrap()));
    kv.put(&keys::nodes_of(&c1).key("n1"), node.encode())
        .await
        .unwrap();
    let r = run(
        &["service", "apply", "-f", "-"],
        Some(&service("a", "10.7.0.5")),
    );
    assert_eq!(r.code, 64, "{}", r.stderr);
    assert!(r.stderr.contains("is a pod's address"), "{}", r.stderr);
    let r = run(
        &["service", "apply", "-f", "-"],
        Some(&service("b", "10.1.0.77")),
    );
    assert_eq!(r.code, 64, "{}", r.stderr);
    assert!(r.stderr.contains("pod CIDR of node c1/n1"), "{}", r.stderr);
    // Two services on one frontend in the same file.
    let two = format!(
        "{}---\n{}",
        service("x", "10.96.0.20"),
        service("y", "10.96.0.20")
    );
    let r = run(&["service", "apply", "-f", "-"], Some(&two));
    assert_eq!(r.code, 64, "{}", r.stderr);
    assert_eq!(stored(keys::service_defs()).await, ["demo/echo"]);

    // An etcd that does not answer is 69, in words.
    let r = clustermesh(
        &["policy", "list", "--etcd-endpoints", "http://127.0.0.1:1"],
        None,
    );
    assert_eq!(r.code, 69, "{}", r.stderr);
    assert!(
        r.stderr.contains("Connection refused") && !r.stderr.contains("Os {"),
        "{}",
        r.stderr
    );
}
