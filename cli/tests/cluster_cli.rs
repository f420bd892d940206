//! `clustermesh cluster init|export` end to end: the built binary writes a
//! cluster's tree; its certificates verify (OpenSSL, rustls in the real
//! daemons), systemd accepts its units, the real apiserver, operator and
//! agent start from the units' command lines against a real etcd with
//! mutual TLS, and the descriptors parse strictly.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use certs::{Ca, CertName, CertificateInfo, TlsFiles, TlsMaterial, Validity};
use cluster_setup::{ClusterAdminDescriptor, ClusterDescriptor, Component, Layout};
use integration::UnitDaemon;
use kvstore::{Client, ClientConfig, ClusterName, TlsConfig, keys};
use support::{
    daemons::{bin_dir, daemons_or_skip, tls_etcd, tool_or_skip},
    ok, s, usage_error,
};

mod support;

/// How long a daemon may take to answer on its health endpoint.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `openssl verify -CAfile ca cert` succeeds.
fn openssl_verifies(ca: &Path, cert: &Path) {
    let out = Command::new("openssl")
        .args(["verify", "-CAfile", s(ca), s(cert)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        cert.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn info(path: &Path) -> CertificateInfo {
    CertificateInfo::from_pem_file(path).unwrap().remove(0)
}

#[test]
fn init_writes_a_tree_whose_certificates_verify_and_whose_units_systemd_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c1");
    // The units' binaries: executables of our own, as on a host.
    let bin = tmp.path().join("bin");
    fs::create_dir(&bin).unwrap();
    for c in Component::ALL {
        let path = bin.join(c.binary());
        fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let printed = ok(&[
        "cluster",
        "init",
        "--name",
        "c1",
        "--id",
        "7",
        "--etcd-endpoints",
        "https://etcd-1.c1.example:2379,https://10.0.0.2:2379",
        "--apiserver-endpoints",
        "mesh.c1.example:32379,10.0.0.5:32379",
        "--pod-cidr-pool",
        "10.7.0.0/16,fd10:7::/48",
        "--root",
        s(&out),
        "--bin-dir",
        s(&bin),
        "--out",
        s(&out),
    ]);
    assert!(
        printed.contains("cluster c1 (ID 7, max-connected-clusters 255)"),
        "{printed}"
    );
    for wrote in [
        "cluster-init.yaml",
        "mesh-ca/ca.key",
        "etcd-ca/ca.crt",
        "admin/admin.key",
        "etc/clustermesh/apiserver/apiserver.env",
        "etc/clustermesh/agent/agent.yaml",
        "etc/clustermesh/etcd/server.crt",
        "etc/systemd/system/clustermesh-agent.service",
    ] {
        assert!(
            printed.contains(&format!("wrote {wrote}\n")),
            "{wrote}: {printed}"
        );
        assert!(out.join(wrote).is_file(), "{wrote}");
    }
    assert!(out.join("etc/clustermesh/agent/remotes").is_dir());

    // Keys: only root reads the agent's, the admin's and the CAs'; the
    // apiserver's and operator's are for the clustermesh group.
    let conf = out.join("etc/clustermesh");
    for key in [
        out.join("mesh-ca/ca.key"),
        out.join("etcd-ca/ca.key"),
        out.join("admin/admin.key"),
        out.join("admin/etcd-admin.key"),
        conf.join("agent/remote.key"),
        conf.join("agent/etcd-client.key"),
        conf.join("etcd/server.key"),
    ] {
        assert_eq!(mode(&key), 0o600, "{}", key.display());
    }
    for key in [
        conf.join("apiserver/server.key"),
        conf.join("apiserver/etcd-client.key"),
        conf.join("operator/etcd-client.key"),
    ] {
        assert_eq!(mode(&key), 0o640, "{}", key.display());
    }

    // Every certificate chains to its CA (OpenSSL), every key matches its
    // certificate (rustls' loader), names and usages are the mesh's.
    let mesh_ca = out.join("mesh-ca/ca.crt");
    let etcd_ca = out.join("etcd-ca/ca.crt");
    let pairs = [
        (
            &mesh_ca,
            conf.join("apiserver/server"),
            "clustermesh-apiserver-c1",
        ),
        (&mesh_ca, conf.join("agent/remote"), "remote-c1"),
        (&mesh_ca, out.join("admin/admin"), "admin-c1"),
        (&etcd_ca, conf.join("etcd/server"), "etcd-c1"),
        (
            &etcd_ca,
            conf.join("apiserver/etcd-client"),
            "etcd-components-c1",
        ),
        (
            &etcd_ca,
            conf.join("operator/etcd-client"),
            "etcd-components-c1",
        ),
        (
            &etcd_ca,
            conf.join("agent/etcd-client"),
            "etcd-components-c1",
        ),
        (&etcd_ca, out.join("admin/etcd-admin"), "etcd-admin-c1"),
    ];
    for (ca, stem, cn) in pairs {
        let (cert, key) = (stem.with_extension("crt"), stem.with_extension("key"));
        openssl_verifies(ca, &cert);
        TlsMaterial::load(&TlsFiles::new(cert.clone(), key, ca.to_path_buf())).unwrap();
        assert_eq!(
            info(&cert).common_name.as_deref(),
            Some(cn),
            "{}",
            cert.display()
        );
    }
    let server = info(&conf.join("apiserver/server.crt"));
    assert!(server.server_auth && !server.is_ca);
    assert!(server.dns_names.contains(&"mesh.c1.example".to_string()));
    assert!(server.ip_addresses.contains(&"10.0.0.5".parse().unwrap()));
    let etcd = info(&conf.join("etcd/server.crt"));
    assert!(etcd.dns_names.contains(&"etcd-1.c1.example".to_string()));
    assert!(etcd.ip_addresses.contains(&"10.0.0.2".parse().unwrap()));
    assert!(info(&out.join("admin/admin.crt")).client_auth);
    // The bundles the components trust are the mesh CA.
    for bundle in ["apiserver/ca.crt", "agent/ca.crt"] {
        assert_eq!(
            fs::read(conf.join(bundle)).unwrap(),
            fs::read(&mesh_ca).unwrap()
        );
    }

    // The configuration refers to the installed tree (here: in place).
    let env = fs::read_to_string(conf.join("apiserver/apiserver.env")).unwrap();
    assert!(
        env.contains(&format!(
            "CLUSTERMESH_APISERVER_TLS_CERT={}\n",
            conf.join("apiserver/server.crt").display()
        )),
        "{env}"
    );
    let operator = fs::read_to_string(conf.join("operator/operator.env")).unwrap();
    assert!(operator.contains("CLUSTERMESH_OPERATOR_POD_CIDR_POOL=10.7.0.0/16\n"));
    assert!(operator.contains("CLUSTERMESH_OPERATOR_POD_CIDR_POOL_V6=fd10:7::/48\n"));
    let unit =
        fs::read_to_string(out.join("etc/systemd/system/clustermesh-agent.service")).unwrap();
    assert!(
        unit.contains(&format!(
            "ExecStart={}/clustermesh-agent run --config {}/agent/agent.yaml\n",
            bin.display(),
            conf.display()
        )),
        "{unit}"
    );

    // systemd itself accepts the rendered units.
    let analyze = Path::new("/usr/bin/systemd-analyze");
    if tool_or_skip(
        "init_writes_a_tree_whose_certificates_verify_and_whose_units_systemd_accepts",
        analyze,
        "apt-get install systemd",
    ) {
        let units: Vec<PathBuf> = Component::ALL
            .iter()
            .map(|c| out.join(Layout::unit_file(*c)))
            .collect();
        let verify = Command::new(analyze)
            .arg("verify")
            .args(&units)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&verify.stderr);
        assert!(verify.status.success(), "systemd-analyze verify: {stderr}");
        // It reports unknown settings and missing binaries only as warnings.
        for unit in &units {
            let name = unit.file_name().unwrap().to_str().unwrap();
            assert!(
                !stderr.contains(name),
                "systemd-analyze about {name}: {stderr}"
            );
        }
    }
}

#[test]
fn init_refuses_bad_input_and_directories_it_did_not_make() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c1");
    let o = s(&out);
    let init = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["cluster", "init", "--out", o]
            .iter()
            .map(|a| a.to_string())
            .collect();
        if !extra.contains(&"--etcd-endpoints") {
            args.extend(["--etcd-endpoints".into(), "http://127.0.0.1:2379".into()]);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let refused = |extra: &[&str], message: &str| {
        let args = init(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        usage_error(&args, message);
        assert!(!out.exists(), "{extra:?} wrote something");
    };
    refused(
        &["--name", "C1", "--id", "1"],
        "invalid cluster name \"C1\"",
    );
    refused(&["--name", "default", "--id", "1"], "outside a mesh");
    refused(&["--name", &"c".repeat(33), "--id", "1"], "longer than 32");
    refused(&["--name", "c1", "--id", "0"], "needs an ID from 1 to 255");
    refused(
        &["--name", "c1", "--id", "300"],
        "the ID must be from 1 to 255 (IDs up to 511 need --max-connected-clusters 511)",
    );
    refused(
        &[
            "--name",
            "c1",
            "--id",
            "600",
            "--max-connected-clusters",
            "511",
        ],
        "the ID must be from 1 to 511",
    );
    refused(
        &[
            "--name",
            "c1",
            "--id",
            "1",
            "--max-connected-clusters",
            "300",
        ],
        "invalid max-connected-clusters 300: use 255 or 511",
    );
    refused(
        &[
            "--name",
            "c1",
            "--id",
            "1",
            "--apiserver-endpoints",
            "10.0.0.1",
        ],
        "invalid apiserver endpoint \"10.0.0.1\"",
    );
    refused(
        &[
            "--name",
            "c1",
            "--id",
            "1",
            "--ca-dir",
            s(&tmp.path().join("none")),
        ],
        "cannot use the mesh CA",
    );
    refused(
        &["--name", "c1", "--id", "1", "--etcd-ca-dir", s(tmp.path())],
        "--etcd-ca-dir needs https://",
    );

    // A directory with someone else's files is refused, forced or not.
    fs::create_dir(&out).unwrap();
    fs::write(out.join("notes.txt"), "mine").unwrap();
    for force in [&[][..], &["--force"][..]] {
        let mut extra = vec!["--name", "c1", "--id", "1"];
        extra.extend(force);
        let args = init(&extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        usage_error(&args, "is not empty and was not made by `cluster init`");
    }
    fs::remove_file(out.join("notes.txt")).unwrap();

    // Made once (with https etcd, so it has an etcd CA) ...
    let first = init(&[
        "--name",
        "c1",
        "--id",
        "1",
        "--etcd-endpoints",
        "https://127.0.0.1:2379",
        "--apiserver-endpoints",
        "127.0.0.1:32379",
    ]);
    ok(&first.iter().map(String::as_str).collect::<Vec<_>>());
    let ca = fs::read(out.join("mesh-ca/ca.crt")).unwrap();
    let admin = fs::read(out.join("admin/admin.crt")).unwrap();
    // ... refused again without --force, and nothing changes.
    let again: Vec<&str> = first.iter().map(String::as_str).collect();
    usage_error(
        &again,
        "already holds cluster c1 made by `cluster init`; use --force",
    );
    assert_eq!(fs::read(out.join("admin/admin.crt")).unwrap(), admin);

    // A file of someone else where init would write stops a forced run.
    fs::remove_file(out.join("etc/clustermesh/agent/agent.yaml")).unwrap();
    let mut record = fs::read_to_string(out.join("cluster-init.yaml")).unwrap();
    record = record.replace("- etc/clustermesh/agent/agent.yaml\n", "");
    fs::write(out.join("cluster-init.yaml"), record).unwrap();
    fs::write(out.join("etc/clustermesh/agent/agent.yaml"), "mine").unwrap();
    let mut forced = first.clone();
    forced.push("--force".into());
    usage_error(
        &forced.iter().map(String::as_str).collect::<Vec<_>>(),
        "agent.yaml exists and was not made by `cluster init`; move it away first",
    );
    fs::remove_file(out.join("etc/clustermesh/agent/agent.yaml")).unwrap();

    // Forced with plain-HTTP etcd: new leaves, the same mesh CA, the etcd
    // files of the first run removed, a file of the user's kept.
    fs::write(out.join("etc/clustermesh/agent/remotes/c2"), "user's").unwrap();
    let printed = ok(&init(&[
        "--name",
        "c1",
        "--id",
        "2",
        "--apiserver-endpoints",
        "127.0.0.1:32379",
        "--force",
    ])
    .iter()
    .map(String::as_str)
    .collect::<Vec<_>>());
    assert!(
        printed.contains("reused mesh CA made before in"),
        "{printed}"
    );
    assert!(
        printed.contains("removed etcd-ca/ca.key (no longer made)"),
        "{printed}"
    );
    assert!(
        printed.contains("removed etc/clustermesh/agent/etcd-client.key (no longer made)"),
        "{printed}"
    );
    assert_eq!(fs::read(out.join("mesh-ca/ca.crt")).unwrap(), ca);
    assert_ne!(fs::read(out.join("admin/admin.crt")).unwrap(), admin);
    assert!(!out.join("etcd-ca").exists());
    assert!(!out.join("etc/clustermesh/etcd").exists());
    assert_eq!(
        fs::read_to_string(out.join("etc/clustermesh/agent/remotes/c2")).unwrap(),
        "user's"
    );
    let env = fs::read_to_string(out.join("etc/clustermesh/operator/operator.env")).unwrap();
    assert!(env.contains("CLUSTERMESH_CLUSTER_ID=2\n"), "{env}");
    assert!(!env.contains("ETCD_CA"), "{env}");
}

#[test]
fn export_writes_descriptors_that_round_trip_and_parse_strictly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c3");
    let mut args = vec![
        "cluster",
        "init",
        "--name",
        "c3",
        "--id",
        "300",
        "--max-connected-clusters",
        "511",
        "--etcd-endpoints",
        "https://10.0.3.2:2379",
        "--out",
        s(&out),
    ];
    ok(&args);
    usage_error(
        &["cluster", "export", "--dir", s(&out)],
        "cluster c3 has no apiserver endpoints",
    );
    usage_error(
        &["cluster", "export", "--dir", s(tmp.path())],
        "was not made by `cluster init`",
    );
    args.extend(["--apiserver-endpoints", "mesh.c3.example:32379", "--force"]);
    ok(&args);

    // The public descriptor: nothing secret.
    let public = ok(&["cluster", "export", "--dir", s(&out)]);
    assert!(!public.contains("PRIVATE KEY"), "{public}");
    let d = ClusterDescriptor::from_yaml(&public).unwrap();
    assert_eq!(
        (d.name.as_str(), d.id, d.max_connected_clusters),
        ("c3", 300, 511)
    );
    assert_eq!(d.apiserver_endpoints, ["https://mesh.c3.example:32379"]);
    assert_eq!(
        d.ca_bundle,
        fs::read_to_string(out.join("mesh-ca/ca.crt")).unwrap()
    );
    assert_eq!(ClusterDescriptor::from_yaml(&d.to_yaml()).unwrap(), d);

    // The admin descriptor: a file only its owner reads.
    let file = tmp.path().join("c3-admin.yaml");
    let printed = ok(&[
        "cluster",
        "export",
        "--dir",
        s(&out),
        "--admin",
        "--out",
        s(&file),
    ]);
    assert!(printed.contains("admin descriptor"), "{printed}");
    assert_eq!(mode(&file), 0o600);
    let text = fs::read_to_string(&file).unwrap();
    let a = ClusterAdminDescriptor::from_yaml(&text).unwrap();
    assert_eq!(a.cluster(), d);
    assert_eq!(a.etcd.endpoints, ["https://10.0.3.2:2379"]);
    assert!(a.admin.key.contains("PRIVATE KEY"));
    assert!(a.etcd.client.as_ref().unwrap().key.contains("PRIVATE KEY"));
    assert_eq!(ClusterAdminDescriptor::from_yaml(&a.to_yaml()).unwrap(), a);

    // Strict: what is wrong is named.
    let err = |text: &str| ClusterDescriptor::from_yaml(text).unwrap_err().to_string();
    let chain = |e: &dyn std::error::Error| {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        text
    };
    assert_eq!(
        err(&text),
        "the file is a ClusterAdminDescriptor, expected a ClusterDescriptor"
    );
    assert_eq!(
        err(&public.replace("version: 1", "version: 2")),
        "unsupported descriptor version 2 (this clustermesh reads version 1)"
    );
    let unknown = ClusterDescriptor::from_yaml(&format!("{public}token: x\n")).unwrap_err();
    assert!(
        chain(&unknown).contains("unknown field `token`"),
        "{}",
        chain(&unknown)
    );
    let bad_name =
        ClusterDescriptor::from_yaml(&public.replace("name: c3", "name: C3")).unwrap_err();
    assert!(
        chain(&bad_name).contains("invalid cluster name \"C3\""),
        "{}",
        chain(&bad_name)
    );
    let bad_id = ClusterDescriptor::from_yaml(&public.replace("id: 300", "id: 600")).unwrap_err();
    assert!(
        chain(&bad_id).contains("invalid cluster ID 600"),
        "{}",
        chain(&bad_id)
    );
    let mut broken = d.clone();
    broken.ca_bundle =
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".into();
    assert!(
        err(&broken.to_yaml()).starts_with("invalid ca-bundle: not PEM"),
        "{}",
        err(&broken.to_yaml())
    );
    broken.ca_bundle = "hello".into();
    assert_eq!(
        err(&broken.to_yaml()),
        "invalid ca-bundle: no PEM certificate"
    );
    broken.ca_bundle = a.admin.cert.clone();
    assert!(err(&broken.to_yaml()).contains("CN=admin-c3, O=clustermesh is not a CA"));
    let mut http = d.clone();
    http.apiserver_endpoints = vec!["http://mesh.c3.example:32379".into()];
    assert!(err(&http.to_yaml()).contains("use https://host:port"));

    // The admin certificate must be the cluster's and from its CA.
    let admin_err = |a: &ClusterAdminDescriptor| {
        ClusterAdminDescriptor::from_yaml(&a.to_yaml())
            .unwrap_err()
            .to_string()
    };
    let mut other = a.clone();
    other.admin.cert = a.etcd.client.as_ref().unwrap().cert.clone();
    assert!(
        admin_err(&other).contains("expected common name admin-c3"),
        "{}",
        admin_err(&other)
    );
    let stranger = Ca::generate("a stranger", Validity::days(10).unwrap()).unwrap();
    let foreign = stranger
        .issue_client(
            &CertName::new("admin-c3").unwrap(),
            Validity::days(5).unwrap(),
        )
        .unwrap();
    other.admin = cluster_setup::ClientCert {
        cert: foreign.cert_pem().into(),
        key: foreign.key_pem().into(),
    };
    assert!(
        admin_err(&other).contains("issued by CN=a stranger"),
        "{}",
        admin_err(&other)
    );
    let mut no_ca = a.clone();
    no_ca.etcd.ca_bundle = None;
    assert_eq!(
        admin_err(&no_ca),
        "invalid etcd: https:// endpoints need a ca-bundle"
    );
}

/// An etcd client from an admin descriptor's PEM material.
fn client_config(endpoints: Vec<String>, ca: &str, cert: &str, key: &str) -> ClientConfig {
    let mut config = ClientConfig::new(endpoints);
    config.tls = Some(TlsConfig {
        ca_pem: ca.as_bytes().to_vec(),
        identity_pem: Some((cert.as_bytes().to_vec(), key.as_bytes().to_vec())),
        server_name: None,
    });
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn the_units_command_lines_start_the_real_daemons_against_etcd_with_mutual_tls() {
    let test = "the_units_command_lines_start_the_real_daemons_against_etcd_with_mutual_tls";
    if !daemons_or_skip(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The cluster's etcd, with a CA of its own that `init` reuses.
    let etcd_ca_dir = tmp.path().join("etcd-pki");
    let etcd = tls_etcd(&etcd_ca_dir).await;

    let out = tmp.path().join("c4");
    let init = integration::ClusterInit::new();
    let args = init.args(
        "c4",
        4,
        None,
        &etcd.endpoint(),
        &etcd_ca_dir,
        &out,
        &bin_dir(),
    );
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let integration::ClusterInit {
        apiserver_health,
        operator_health,
        agent_health,
        ..
    } = init;
    let unit = |c: Component| out.join(Layout::unit_file(c));

    let apiserver = UnitDaemon::start(
        "apiserver".into(),
        unit(Component::Apiserver),
        tmp.path().join("apiserver.log"),
        (apiserver_health.clone(), "/readyz"),
    )
    .unwrap();
    let operator = UnitDaemon::start(
        "operator".into(),
        unit(Component::Operator),
        tmp.path().join("operator.log"),
        (operator_health.clone(), "/healthz"),
    )
    .unwrap();

    // The admin descriptor reaches etcd and the apiserver (mutual TLS both
    // ways): each serves the cluster config the apiserver published.
    let file = tmp.path().join("c4-admin.yaml");
    ok(&[
        "cluster",
        "export",
        "--dir",
        s(&out),
        "--admin",
        "--out",
        s(&file),
    ]);
    let admin = ClusterAdminDescriptor::from_yaml(&fs::read_to_string(&file).unwrap()).unwrap();
    let key = keys::cluster_config(&ClusterName::new("c4").unwrap());
    let etcd_client = admin.etcd.client.as_ref().unwrap();
    let via_etcd = client_config(
        admin.etcd.endpoints.clone(),
        admin.etcd.ca_bundle.as_deref().unwrap(),
        &etcd_client.cert,
        &etcd_client.key,
    );
    let via_apiserver = client_config(
        admin.apiserver_endpoints.clone(),
        &admin.ca_bundle,
        &admin.admin.cert,
        &admin.admin.key,
    );
    for config in [via_etcd, via_apiserver] {
        let endpoint = config.endpoints[0].clone();
        let client = Client::connect(&config).await.unwrap();
        let value = client.get(&key).await.unwrap();
        let value = value.unwrap_or_else(|| panic!("no {key} through {endpoint}"));
        let text = String::from_utf8_lossy(&value.value).to_string();
        assert!(text.contains("\"id\":4"), "{endpoint}: {text}");
    }

    // The agent needs root (BPF, a node namespace); CI runs as root.
    if !netns::root_or_skip(test) {
        return;
    }
    let node = netns::NetNs::unique("cminit").unwrap();
    node.ip(&["link", "set", "lo", "up"]).unwrap();
    let bpffs = PathBuf::from("/sys/fs/bpf").join(netns::unique_name("cminit"));
    struct RemoveDir(PathBuf);
    impl Drop for RemoveDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let _bpffs = RemoveDir(bpffs.clone());
    // What the person installing the node writes (node.env wins over the
    // unit's paths, as in systemd).
    let node_env = out.join("etc/clustermesh/agent").join(Layout::NODE_ENV);
    fs::write(
        &node_env,
        format!(
            "CLUSTERMESH_NODE_NAME=n1\nCLUSTERMESH_NODE_IP=127.0.0.1\n\
             CLUSTERMESH_NODE_NETNS={}\nCLUSTERMESH_BPFFS_DIR={}\n\
             CLUSTERMESH_API_SOCKET={}\nCLUSTERMESH_STATE_DIR={}\n",
            node.path().display(),
            bpffs.display(),
            tmp.path().join("agent.sock").display(),
            tmp.path().join("agent-state").display(),
        ),
    )
    .unwrap();
    let agent = UnitDaemon::start(
        "agent".into(),
        unit(Component::Agent),
        tmp.path().join("agent.log"),
        (agent_health.clone(), "/healthz"),
    )
    .unwrap();
    let nodes = std::sync::Arc::new(
        Client::connect(&client_config(
            admin.etcd.endpoints.clone(),
            admin.etcd.ca_bundle.as_deref().unwrap(),
            &etcd_client.cert,
            &etcd_client.key,
        ))
        .await
        .unwrap(),
    );
    etcd_harness::wait_until("the agent's node key", READY_TIMEOUT, || {
        let nodes = nodes.clone();
        async move {
            nodes
                .get("cilium/state/nodes/v1/c4/n1")
                .await
                .is_ok_and(|v| v.is_some())
        }
    })
    .await;
    drop(agent);
    drop(operator);
    drop(apiserver);
}
