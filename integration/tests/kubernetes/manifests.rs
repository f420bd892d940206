//! `deploy/kubernetes/`: the kustomize overlays render and every object is
//! valid for a real API server (`kubectl apply --dry-run=server`).
//!
//! The deploy tree is copied into a temp dir (without any certificates of
//! the checkout), `gen-certs.sh` makes each overlay's certificates there with
//! the workspace's `clustermesh` CLI, and each overlay is rendered with
//! `kubectl kustomize`. The namespace, the CRDs and the RBAC objects are
//! applied for real (server-side dry runs need the namespace, and
//! CRD-typed objects their CRD), so that the service accounts' permissions
//! are checked with `kubectl auth can-i`; everything is then dry-run.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use certs::CertificateInfo;
use k8s::testing::KubeServer;
use serde::Deserialize as _;
use serde_json::Value;

use crate::kube_available;

const NAMESPACE: &str = "clustermesh-system";
const CLUSTERS: [&str; 2] = ["c1", "c2"];

/// What each overlay must hold, by kind and name (generated ConfigMaps and
/// Secrets carry a hash suffix and are matched by prefix).
const EXPECTED: &[(&str, &str)] = &[
    ("Namespace", NAMESPACE),
    (
        "CustomResourceDefinition",
        "ciliumnetworkpolicies.cilium.io",
    ),
    (
        "CustomResourceDefinition",
        "ciliumclusterwidenetworkpolicies.cilium.io",
    ),
    ("ServiceAccount", "clustermesh-agent"),
    ("ServiceAccount", "clustermesh-operator"),
    ("ServiceAccount", "clustermesh-apiserver"),
    ("ServiceAccount", "clustermesh-etcd"),
    ("ServiceAccount", "clustermesh-relay"),
    ("ServiceAccount", "clustermesh-ui"),
    ("ClusterRole", "clustermesh-agent"),
    ("ClusterRoleBinding", "clustermesh-agent"),
    ("ClusterRole", "clustermesh-operator"),
    ("ClusterRoleBinding", "clustermesh-operator"),
    ("Role", "clustermesh-operator-leader"),
    ("RoleBinding", "clustermesh-operator-leader"),
    ("StatefulSet", "clustermesh-etcd"),
    ("Service", "clustermesh-etcd"),
    ("Service", "clustermesh-etcd-headless"),
    ("Deployment", "clustermesh-apiserver"),
    ("Service", "clustermesh-apiserver"),
    ("Deployment", "clustermesh-operator"),
    ("DaemonSet", "clustermesh-agent"),
    ("Service", "hubble-peer"),
    ("Deployment", "clustermesh-relay"),
    ("Service", "clustermesh-relay"),
    ("Deployment", "clustermesh-ui"),
    ("Service", "clustermesh-ui"),
    ("ConfigMap", "clustermesh-cluster-"),
    ("ConfigMap", "clustermesh-remotes-"),
    ("ConfigMap", "clustermesh-cni-config-"),
    ("Secret", "clustermesh-etcd-server-tls-"),
    ("Secret", "clustermesh-etcd-client-tls-"),
    ("Secret", "clustermesh-apiserver-server-tls-"),
    ("Secret", "clustermesh-remote-tls-"),
    ("Secret", "hubble-server-tls-"),
    ("Secret", "hubble-relay-server-tls-"),
    ("Secret", "hubble-relay-client-tls-"),
    ("Secret", "hubble-ui-client-tls-"),
];

/// The kinds applied for real before the dry run.
const APPLIED_FIRST: &[&str] = &[
    "Namespace",
    "CustomResourceDefinition",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

/// The files `gen-certs.sh` writes into an overlay's `certs/`.
const CERT_FILES: &[&str] = &[
    "ca.crt",
    "etcd-ca.crt",
    "etcd-ca/ca.crt",
    "etcd-ca/ca.key",
    "etcd-server.crt",
    "etcd-server.key",
    "etcd-client.crt",
    "etcd-client.key",
    "apiserver.crt",
    "apiserver.key",
    "remote.crt",
    "remote.key",
    "hubble-server.crt",
    "hubble-server.key",
    "hubble-relay-server.crt",
    "hubble-relay-server.key",
    "hubble-relay-client.crt",
    "hubble-relay-client.key",
    "hubble-ui-client.crt",
    "hubble-ui-client.key",
];

#[tokio::test]
async fn overlays_render_and_apply_to_a_real_api_server() {
    if !kube_available("deploy/kubernetes manifests") {
        return;
    }
    let bin = localmesh::default_bin_dir();
    let cli = bin.join("clustermesh");
    assert!(
        cli.exists(),
        "{} is missing: build it first with `cargo build -p cli --bins`",
        cli.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let deploy = tmp.path().join("kubernetes");
    copy_deploy_tree(&source_tree(), &deploy);
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    for cluster in CLUSTERS {
        gen_certs(&deploy, &cli, &scratch, cluster);
    }
    check_certificates(&deploy);

    let server = KubeServer::start().await.expect("start the API server");
    for cluster in CLUSTERS {
        let rendered = run_ok(
            server
                .kubectl()
                .arg("kustomize")
                .arg(deploy.join("overlays").join(cluster)),
            None,
        );
        let docs = documents(&rendered);
        check_kinds(cluster, &docs);
        check_cluster_settings(cluster, &docs);
        check_rbac_has_no_wildcards(&docs);
        check_flags(&bin, &docs);

        let first: Vec<&Value> = docs
            .iter()
            .filter(|d| APPLIED_FIRST.contains(&kind(d)))
            .collect();
        run_ok(
            server.kubectl().args(["apply", "-f", "-"]),
            Some(&to_stream(&first)),
        );
        for crd in [
            "ciliumnetworkpolicies.cilium.io",
            "ciliumclusterwidenetworkpolicies.cilium.io",
        ] {
            run_ok(
                server.kubectl().args([
                    "wait",
                    "--for=condition=Established",
                    "--timeout=60s",
                    &format!("crd/{crd}"),
                ]),
                None,
            );
        }
        let all: Vec<&Value> = docs.iter().collect();
        let accepted = run_ok(
            server
                .kubectl()
                .args(["apply", "--dry-run=server", "-o", "name", "-f", "-"]),
            Some(&to_stream(&all)),
        );
        assert_eq!(
            accepted.lines().count(),
            docs.len(),
            "{cluster}: the server accepted {accepted}"
        );
    }
    check_permissions(&server, &deploy);
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "gen-certs.sh removes its temporary directory"
    );
}

/// `deploy/kubernetes` of this checkout.
fn source_tree() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// Copies the deploy tree without any CA or certificate of the checkout
/// (a developer's own are git-ignored there).
fn copy_deploy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let (src, dst) = (entry.path(), to.join(&name));
        if from.file_name().is_some_and(|n| n == "certs") && name != ".gitignore" {
            continue;
        }
        if src == source_tree().join("ca") {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_deploy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// Runs `gen-certs.sh cluster` in the copied tree: it writes exactly its
/// files, and refuses to replace them on a second run.
fn gen_certs(deploy: &Path, cli: &Path, scratch: &Path, cluster: &str) {
    let script = deploy.join("gen-certs.sh");
    let run = || {
        Command::new(&script)
            .arg(cluster)
            .arg(deploy.join("ca"))
            .env("CLUSTERMESH", cli)
            .env("TMPDIR", scratch)
            .env("APISERVER_IPS", "192.0.2.10 192.0.2.11")
            .output()
            .unwrap()
    };
    let out = run();
    assert!(
        out.status.success(),
        "gen-certs.sh {cluster}: {}",
        text(&out)
    );
    let certs = deploy.join("overlays").join(cluster).join("certs");
    let mut want: BTreeSet<String> = CERT_FILES.iter().map(|f| f.to_string()).collect();
    want.insert(".gitignore".into());
    assert_eq!(files_under(&certs, &certs), want, "{cluster}: certs/");

    let before = std::fs::read(certs.join("remote.crt")).unwrap();
    let again = run();
    assert_eq!(
        again.status.code(),
        Some(64),
        "a second run: {}",
        text(&again)
    );
    assert_eq!(std::fs::read(certs.join("remote.crt")).unwrap(), before);
}

/// The relative paths of the files under `dir`.
fn files_under(root: &Path, dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(root, &path));
        } else {
            let rel = path.strip_prefix(root).unwrap();
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
    out
}

/// The certificates name what their clients dial and come from the right
/// CA: the mesh CA is shared, each cluster's etcd CA is its own.
fn check_certificates(deploy: &Path) {
    let info = |cluster: &str, file: &str| {
        let path = deploy
            .join("overlays")
            .join(cluster)
            .join("certs")
            .join(file);
        CertificateInfo::from_pem_file(&path).unwrap().remove(0)
    };
    let mut etcd_cas = BTreeSet::new();
    for c in CLUSTERS {
        let ca = info(c, "ca.crt");
        let apiserver = info(c, "apiserver.crt");
        assert_eq!(apiserver.issuer, ca.subject);
        assert!(apiserver.server_auth);
        for name in [
            format!("{c}.mesh.cilium.io"),
            "clustermesh-apiserver.cilium.io".into(),
        ] {
            assert!(apiserver.dns_names.contains(&name), "{c}: {name}");
        }
        assert!(
            apiserver
                .ip_addresses
                .contains(&"192.0.2.11".parse().unwrap())
        );
        let remote = info(c, "remote.crt");
        assert_eq!(remote.common_name.as_deref(), Some(&*format!("remote-{c}")));
        assert!(remote.client_auth && !remote.server_auth);
        assert!(
            info(c, "hubble-server.crt")
                .dns_names
                .contains(&format!("*.{c}.hubble-grpc.cilium.io"))
        );
        assert_eq!(
            info(c, "hubble-relay-server.crt").dns_names,
            [format!("hubble-relay.{c}.hubble-grpc.cilium.io")]
        );
        let etcd_ca = info(c, "etcd-ca.crt");
        let etcd = info(c, "etcd-server.crt");
        assert_eq!(etcd.issuer, etcd_ca.subject);
        assert!(
            etcd.dns_names
                .contains(&format!("clustermesh-etcd.{NAMESPACE}.svc"))
        );
        assert_eq!(info(c, "etcd-client.crt").issuer, etcd_ca.subject);
        etcd_cas.insert(etcd_ca.subject);
    }
    assert_eq!(etcd_cas.len(), CLUSTERS.len(), "one etcd CA per cluster");
    assert_eq!(
        info("c1", "ca.crt").serial,
        info("c2", "ca.crt").serial,
        "one mesh CA"
    );
}

/// The YAML documents of a rendered overlay.
fn documents(rendered: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(rendered)
        .map(|d| Value::deserialize(d).expect("a YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

/// The first document of `kind` whose name is or starts with `prefix`
/// (generated names carry a hash suffix).
fn find<'a>(docs: &'a [Value], k: &str, prefix: &str) -> Option<&'a Value> {
    docs.iter().find(|d| {
        kind(d) == k && (name(d) == prefix || prefix.ends_with('-') && name(d).starts_with(prefix))
    })
}

fn check_kinds(cluster: &str, docs: &[Value]) {
    for (k, n) in EXPECTED {
        assert!(find(docs, k, n).is_some(), "{cluster}: no {k} {n}");
    }
    assert_eq!(docs.len(), EXPECTED.len(), "{cluster}: nothing unexpected");
    for d in docs {
        let cluster_scoped = matches!(
            kind(d),
            "Namespace" | "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding"
        );
        if !cluster_scoped {
            assert_eq!(d["metadata"]["namespace"], NAMESPACE, "{}", name(d));
        }
    }
}

/// The overlay's own settings: name, ID, pool, the remote file and the
/// names the agents resolve without cluster DNS.
fn check_cluster_settings(cluster: &str, docs: &[Value]) {
    let id = &cluster[1..];
    let other = CLUSTERS.iter().find(|c| **c != cluster).unwrap();
    let settings = &find(docs, "ConfigMap", "clustermesh-cluster-").unwrap()["data"];
    assert_eq!(settings["cluster-name"], cluster);
    assert_eq!(settings["cluster-id"], id);
    assert_eq!(settings["pod-cidr-pool"], format!("10.{id}.0.0/16"));

    let remotes = &find(docs, "ConfigMap", "clustermesh-remotes-").unwrap()["data"];
    let files: Vec<&String> = remotes.as_object().unwrap().keys().collect();
    assert_eq!(files, [*other]);
    let remote: BTreeMap<String, serde_norway::Value> =
        serde_norway::from_str(remotes[*other].as_str().unwrap()).unwrap();
    assert_eq!(
        remote["endpoints"][0].as_str(),
        Some(&*format!("https://{other}.mesh.cilium.io:32379"))
    );

    let agent = &find(docs, "DaemonSet", "clustermesh-agent").unwrap()["spec"]["template"]["spec"];
    assert_eq!(agent["hostNetwork"], true);
    assert_eq!(
        agent["containers"][0]["securityContext"]["privileged"],
        true
    );
    let aliases: Vec<&str> = agent["hostAliases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["hostnames"].as_array().unwrap())
        .filter_map(Value::as_str)
        .collect();
    assert!(aliases.contains(&&*format!("{other}.mesh.cilium.io")));
    assert!(aliases.contains(&&*format!("clustermesh-etcd.{NAMESPACE}.svc")));
    let etcd_ip = &find(docs, "Service", "clustermesh-etcd").unwrap()["spec"]["clusterIP"];
    assert!(
        agent["hostAliases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["ip"] == *etcd_ip),
        "the agents' alias is the etcd Service's IP"
    );
    let init: Vec<&str> = agent["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(init, ["mount-bpf-fs", "install-cni"]);

    let apiserver = find(docs, "Service", "clustermesh-apiserver").unwrap();
    assert_eq!(apiserver["spec"]["type"], "NodePort");
    assert_eq!(apiserver["spec"]["ports"][0]["nodePort"], 32379);
}

/// No `*` in any rule of any (Cluster)Role.
fn check_rbac_has_no_wildcards(docs: &[Value]) {
    for d in docs
        .iter()
        .filter(|d| matches!(kind(d), "ClusterRole" | "Role"))
    {
        for rule in d["rules"].as_array().unwrap() {
            for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                for v in rule[field].as_array().into_iter().flatten() {
                    let v = v.as_str().unwrap();
                    assert!(!v.contains('*'), "{} {field}: {v}", name(d));
                }
            }
            assert!(rule.get("nonResourceURLs").is_none(), "{}", name(d));
        }
    }
}

/// Every flag and `CLUSTERMESH_*` variable a container gives one of our
/// binaries is one its `--help` lists.
fn check_flags(bin: &Path, docs: &[Value]) {
    let mut checked = 0;
    for d in docs {
        let spec = &d["spec"]["template"]["spec"];
        for c in spec["containers"].as_array().into_iter().flatten() {
            let Some(command) = c["command"][0].as_str() else {
                continue;
            };
            if !command.starts_with("clustermesh") {
                continue;
            }
            let args: Vec<&str> = c["args"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let mut help = Command::new(bin.join(command));
            if command == "clustermesh-agent" {
                help.arg(args[0]);
            }
            let help = run_ok(help.arg("--help"), None);
            for arg in args.iter().filter(|a| a.starts_with("--")) {
                let flag = arg.split('=').next().unwrap();
                let known =
                    help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n"));
                assert!(known, "{command} has no flag {flag}");
                checked += 1;
            }
            for env in c["env"].as_array().into_iter().flatten() {
                let var = env["name"].as_str().unwrap();
                if var.starts_with("CLUSTERMESH_") {
                    assert!(
                        help.contains(&format!("[env: {var}=")),
                        "{command} reads no {var}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 40, "{checked} flags checked");
}

/// What each service account may do, asked of the API server.
fn check_permissions(server: &KubeServer, deploy: &Path) {
    let sa = |name: &str| format!("--as=system:serviceaccount:{NAMESPACE}:{name}");
    let can = |who: &str, args: &[&str]| -> bool {
        let out = server
            .kubectl()
            .args(["auth", "can-i", &sa(who)])
            .args(args)
            .output()
            .unwrap();
        match String::from_utf8_lossy(&out.stdout).trim() {
            "yes" => true,
            "no" => false,
            _ => panic!("can-i {who} {args:?}: {}", text(&out)),
        }
    };
    let yes: &[(&str, &[&str])] = &[
        ("clustermesh-agent", &["list", "pods"]),
        ("clustermesh-agent", &["watch", "pods"]),
        ("clustermesh-agent", &["watch", "nodes"]),
        (
            "clustermesh-agent",
            &["watch", "endpointslices.discovery.k8s.io"],
        ),
        (
            "clustermesh-agent",
            &["watch", "ciliumnetworkpolicies.cilium.io", "-A"],
        ),
        (
            "clustermesh-agent",
            &["list", "ciliumclusterwidenetworkpolicies.cilium.io"],
        ),
        ("clustermesh-agent", &["create", "events", "-n", "default"]),
        (
            "clustermesh-operator",
            &["update", "leases.coordination.k8s.io", "-n", NAMESPACE],
        ),
        (
            "clustermesh-operator",
            &["create", "leases.coordination.k8s.io", "-n", NAMESPACE],
        ),
        (
            "clustermesh-operator",
            &["create", "customresourcedefinitions.apiextensions.k8s.io"],
        ),
        (
            "clustermesh-operator",
            &[
                "patch",
                "customresourcedefinitions.apiextensions.k8s.io/ciliumnetworkpolicies.cilium.io",
            ],
        ),
        (
            "clustermesh-operator",
            &["watch", "endpointslices.discovery.k8s.io"],
        ),
        (
            "clustermesh-operator",
            &[
                "update",
                "ciliumnetworkpolicies.cilium.io",
                "--subresource=status",
                "-A",
            ],
        ),
    ];
    let no: &[(&str, &[&str])] = &[
        ("clustermesh-agent", &["delete", "pods"]),
        ("clustermesh-agent", &["create", "pods"]),
        ("clustermesh-agent", &["get", "secrets", "-n", NAMESPACE]),
        (
            "clustermesh-agent",
            &["update", "ciliumnetworkpolicies.cilium.io", "-A"],
        ),
        ("clustermesh-operator", &["get", "secrets", "-n", NAMESPACE]),
        ("clustermesh-operator", &["list", "secrets", "-A"]),
        (
            "clustermesh-operator",
            &["update", "leases.coordination.k8s.io", "-n", "kube-system"],
        ),
        (
            "clustermesh-operator",
            &["delete", "leases.coordination.k8s.io", "-n", NAMESPACE],
        ),
        (
            "clustermesh-operator",
            &["delete", "customresourcedefinitions.apiextensions.k8s.io"],
        ),
        (
            "clustermesh-operator",
            &[
                "patch",
                "customresourcedefinitions.apiextensions.k8s.io/other.example.com",
            ],
        ),
        (
            "clustermesh-operator",
            &["update", "ciliumnetworkpolicies.cilium.io", "-A"],
        ),
        ("clustermesh-operator", &["list", "pods"]),
        ("clustermesh-relay", &["list", "pods"]),
        ("clustermesh-ui", &["list", "pods"]),
        ("clustermesh-apiserver", &["list", "services"]),
        ("clustermesh-etcd", &["get", "secrets", "-n", NAMESPACE]),
    ];
    for (who, args) in yes {
        assert!(can(who, args), "{who} may {args:?}");
    }
    for (who, args) in no {
        assert!(!can(who, args), "{who} may not {args:?}");
    }
    // The operator's own way of installing the CRDs, server-side apply,
    // goes through with its permissions.
    let crds = deploy.join("base/crds");
    run_ok(
        server.kubectl().args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=clustermesh-operator",
            &sa("clustermesh-operator"),
            "-f",
            &crds.display().to_string(),
        ]),
        None,
    );
}

/// The documents as one YAML stream (JSON is YAML).
fn to_stream(docs: &[&Value]) -> String {
    docs.iter()
        .map(|d| format!("---\n{d}\n"))
        .collect::<Vec<_>>()
        .join("")
}

/// Runs `cmd` (with `stdin`), asserts success and returns its stdout.
fn run_ok(cmd: &mut Command, stdin: Option<&str>) -> String {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
