//! `clustermesh certs rotate begin|reissue|finish` end to end: two clusters
//! made by `cluster init` (real etcd, apiserver, operator and agent each),
//! connected through their admin descriptors. One cluster's mesh CA is
//! replaced while both agents keep their remote ready on the session they
//! had (no failure, no reconnect); afterwards the old CA is in none of its
//! files nor in the peer's view of it, and its apiserver refuses a client
//! certificate of the old CA that it accepted before. Bad input and phases
//! out of order are refused with the reason and change no file and no
//! record.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    sync::mpsc,
    thread,
    time::{Duration, SystemTime},
};

use certs::{Ca, CertName, CertificateInfo, Validity};
use kvstore::{Client, ClientConfig, ClusterName, TlsConfig, keys, values::RemoteClusterRecord};
use support::{
    Run, clustermesh,
    daemons::{daemons_or_skip, http_get},
    ok, s,
    test_cluster::{
        PICKUP_TIMEOUT, TestCluster, agent_status, mesh_ca, read_admin, refused, try_agent_status,
        wait_for_file,
    },
};

mod support;

/// Every file below `dir` with its contents: what "nothing changed"
/// compares.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                out.insert(path.clone(), fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// The certificates of a PEM file.
fn certs_in(path: &Path) -> Vec<CertificateInfo> {
    CertificateInfo::from_pem_file(path).unwrap_or_default()
}

/// Reads `cilium/cluster-config/<name>` through the apiserver at
/// `endpoints`, trusting `ca_pem` and showing `cert`/`key`.
async fn read_cluster_config(
    endpoints: &[String],
    name: &str,
    ca_pem: &str,
    cert: &str,
    key: &str,
) -> Result<(), String> {
    let mut config = ClientConfig::new(endpoints.to_vec()).with_tls(TlsConfig {
        ca_pem: ca_pem.as_bytes().to_vec(),
        identity_pem: Some((cert.as_bytes().to_vec(), key.as_bytes().to_vec())),
        server_name: None,
    });
    config.connect_timeout = Duration::from_secs(3);
    config.request_timeout = Duration::from_secs(3);
    let client = Client::connect(&config)
        .await
        .map_err(|e| e.full_message())?;
    let name = ClusterName::new(name).unwrap();
    match client.get(&keys::cluster_config(&name)).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("no cluster config".to_owned()),
        Err(e) => Err(e.full_message()),
    }
}

/// Watches an agent's view of `peer` until stopped: every sample must say
/// ready, with the failure and connection counts of the start. Returns
/// what broke that (empty: nothing) and how many samples were taken.
struct RemoteWatch {
    stop: mpsc::Sender<()>,
    thread: thread::JoinHandle<(Vec<String>, usize)>,
}

impl RemoteWatch {
    fn start(socket: PathBuf, peer: &'static str) -> (Self, serde_json::Value) {
        let remote_of = move |status: &serde_json::Value| {
            status["remotes"]
                .as_array()
                .and_then(|r| r.iter().find(|r| r["name"] == peer))
                .cloned()
                .unwrap_or_default()
        };
        let start = remote_of(&agent_status(&socket));
        assert_eq!(start["ready"], true, "{start}");
        let (stop, stopped) = mpsc::channel();
        let first = start.clone();
        let thread = thread::spawn(move || {
            let mut broken = Vec::new();
            let mut samples = 0;
            // One sample per tick until told to stop.
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Duration::from_millis(100))
            {
                let now = match try_agent_status(&socket) {
                    Ok(status) => remote_of(&status),
                    Err(e) => {
                        broken.push(format!("the agent did not answer: {e}"));
                        continue;
                    }
                };
                samples += 1;
                if now["ready"] != true
                    || now["connected"] != true
                    || now["failures"] != first["failures"]
                    || now["connects"] != first["connects"]
                {
                    broken.push(now.to_string());
                }
            }
            (broken, samples)
        });
        (Self { stop, thread }, start)
    }

    fn finish(self) -> (Vec<String>, usize) {
        let _ = self.stop.send(());
        self.thread.join().unwrap()
    }
}

fn rotate(phase: &str, dir: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["certs", "rotate", phase, "--dir", s(dir)];
    args.extend_from_slice(extra);
    clustermesh(&args)
}

fn rotate_ok(phase: &str, dir: &Path, extra: &[&str]) -> String {
    let run = rotate(phase, dir, extra);
    // In the test's output when it fails: what each phase said.
    eprintln!("certs rotate {phase}:\n{}", run.stdout);
    assert_eq!(run.code, 0, "rotate {phase}:\n{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!("phase {phase} done")),
        "{}",
        run.stdout
    );
    run.stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ca_rotation_keeps_the_remotes_connected_and_retires_the_old_ca() {
    let test = "a_ca_rotation_keeps_the_remotes_connected_and_retires_the_old_ca";
    if !daemons_or_skip(test) || !netns::root_or_skip(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ca_dir = tmp.path().join("mesh-ca");
    let old_ca = mesh_ca(&ca_dir, "test mesh CA");
    let c1 = TestCluster::start(tmp.path(), "c1", 1, &ca_dir, true).await;
    let c2 = TestCluster::start(tmp.path(), "c2", 2, &ca_dir, true).await;
    ok(&[
        "connect",
        "--from",
        s(&c1.admin),
        "--to",
        s(&c2.admin),
        "--ca-dir",
        s(&ca_dir),
    ]);
    for c in [&c1, &c2] {
        ok(&[
            "status",
            "--from",
            s(&c.admin),
            "--wait",
            "--wait-duration",
            "90s",
        ]);
    }
    let c1_admin = read_admin(&c1.admin);
    let endpoints = c1_admin.apiserver_endpoints.clone();
    let old_pem = old_ca.cert_pem().trim().to_owned();
    let old_subject = old_ca.info().subject.clone();
    let peer = ["--peer", s(&c2.admin)];
    // c2's agents' copy of c1's CA bundle and of their certificate for c1.
    let mirror = c2.remotes_dir().join(".clustermesh-mirror/c1");
    // c1's agents' view of c2 is c2's CA: the rotation of c1 leaves it.
    let c1_view_of_c2 = files(&c1.remotes_dir().join(".clustermesh-mirror/c2"));
    let snapshot = || async { (files(&c1.out), c1.records().await, c2.records().await) };
    let record_of_c1 = || async {
        let kv = c2
            .etcd_client
            .get(&keys::remote_cluster_record(
                &ClusterName::new("c1").unwrap(),
            ))
            .await
            .unwrap()
            .unwrap();
        serde_json::from_slice::<RemoteClusterRecord>(&kv.value).unwrap()
    };

    // Both agents watched from here to the end: ready all along, on the
    // session they had.
    let (watch_c2, start_c2) = RemoteWatch::start(c2.agent_socket.clone(), "c1");
    let (watch_c1, _) = RemoteWatch::start(c1.agent_socket.clone(), "c2");
    assert_eq!(start_c2["connects"], 1, "{start_c2}");

    // Bad input before anything began: refused, nothing changed.
    let before = snapshot().await;
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    let expired_dir = tmp.path().join("expired-ca");
    Ca::generate(
        "expired CA",
        Validity::between(now - 30 * day, now - day).unwrap(),
    )
    .unwrap()
    .write(&expired_dir)
    .unwrap();
    let short_dir = tmp.path().join("short-ca");
    Ca::generate("short CA", Validity::days(30).unwrap())
        .unwrap()
        .write(&short_dir)
        .unwrap();
    let same_subject_dir = tmp.path().join("same-subject-ca");
    mesh_ca(&same_subject_dir, "test mesh CA");
    let missing_dir = tmp.path().join("no-ca-here");
    for (run, reason) in [
        (
            rotate("reissue", &c1.out, &peer),
            "phase reissue out of order for cluster c1: no rotation is under way: run begin first",
        ),
        (
            rotate("finish", &c1.out, &peer),
            "phase finish out of order for cluster c1: no rotation is under way: run begin first",
        ),
        (
            rotate("begin", c1.log_dir(), &peer),
            "is not a `cluster init` output (no cluster-init.yaml)",
        ),
        (
            rotate(
                "begin",
                &c1.out,
                &["--peer", s(&c2.admin), "--new-ca-dir", s(&expired_dir)],
            ),
            "the new CA (CN=expired CA, O=clustermesh) expired on",
        ),
        (
            rotate(
                "begin",
                &c1.out,
                &["--peer", s(&c2.admin), "--new-ca-dir", s(&ca_dir)],
            ),
            "the new CA (CN=test mesh CA, O=clustermesh) is already in c1's bundle",
        ),
        (
            rotate(
                "begin",
                &c1.out,
                &["--peer", s(&c2.admin), "--new-ca-dir", s(&short_dir)],
            ),
            "would outlive the new CA",
        ),
        (
            rotate(
                "begin",
                &c1.out,
                &["--peer", s(&c2.admin), "--new-ca-dir", s(&same_subject_dir)],
            ),
            "the new CA has the subject of a CA in use (CN=test mesh CA, O=clustermesh)",
        ),
        (
            rotate(
                "begin",
                &c1.out,
                &["--peer", s(&c2.admin), "--new-ca-dir", s(&missing_dir)],
            ),
            "cannot use the new CA in",
        ),
        (
            rotate(
                "begin",
                &c1.out,
                &["--peer", s(&c2.admin), "--peer", s(&c2.admin)],
            ),
            "--peer c2 is given twice",
        ),
        (
            rotate("begin", &c1.out, &[]),
            "c1 is connected to c2 (clustermesh/admin/remote-clusters/c2 in c1's etcd): give \
             c2's admin descriptor with --peer",
        ),
        (
            rotate("begin", &c1.out, &["--peer", s(&c1.admin)]),
            "--peer c1: that is this cluster's own descriptor",
        ),
    ] {
        refused(&run, 64, reason);
    }
    assert!(
        snapshot().await == before,
        "a refused phase changed something"
    );

    // 1. begin: old and new CA in every bundle, c2's record of c1 included.
    let printed = rotate_ok("begin", &c1.out, &peer);
    for line in [
        "✔ c1's CA bundle: CN=test mesh CA, O=clustermesh; the new CA: CN=clustermesh-ca c1 rotation 1, O=clustermesh",
        "✔ reached c1's etcd and c2's (its record of c1)",
        "✔ created the new CA CN=clustermesh-ca c1 rotation 1",
        "✔ updated c2's record of c1",
    ] {
        assert!(printed.contains(line), "{line:?} not in:\n{printed}");
    }
    let new_ca_dir = c1.out.join("ca-rotation/ca-1");
    let new_ca = Ca::load(&new_ca_dir).unwrap();
    let new_subject = new_ca.info().subject.clone();
    let both = |path: &Path| {
        let subjects: Vec<String> = certs_in(path).into_iter().map(|c| c.subject).collect();
        subjects == [old_subject.clone(), new_subject.clone()]
    };
    for f in [
        "admin/ca.crt",
        "etc/clustermesh/apiserver/ca.crt",
        "etc/clustermesh/agent/ca.crt",
    ] {
        assert!(
            both(&c1.out.join(f)),
            "{f}: {:?}",
            certs_in(&c1.out.join(f))
        );
    }
    etcd_harness::wait_until(
        "c2's agent mirrors c1's bundle of two CAs",
        PICKUP_TIMEOUT,
        || {
            let ok = both(&mirror.join("ca.crt"));
            async move { ok }
        },
    )
    .await;
    // Run again: nothing left to do, nothing changed.
    let after_begin = snapshot().await;
    let printed = rotate_ok("begin", &c1.out, &peer);
    assert!(printed.contains("is already up to date"), "{printed}");
    assert!(!printed.contains("created the new CA"), "{printed}");
    assert!(
        snapshot().await == after_begin,
        "begin run again changed something"
    );
    // Out of order, or another new CA while one is under way.
    refused(
        &rotate("finish", &c1.out, &peer),
        64,
        "phase finish out of order for cluster c1: the leaves are not issued by the new CA yet: \
         run reissue first",
    );
    refused(
        &rotate(
            "begin",
            &c1.out,
            &["--peer", s(&c2.admin), "--new-ca-dir", s(&short_dir)],
        ),
        64,
        "a rotation is under way with the new CA in",
    );
    assert!(
        snapshot().await == after_begin,
        "a refused phase changed something"
    );

    // 2. reissue: every leaf from the new CA, c2's certificate for c1 too.
    let printed = rotate_ok("reissue", &c1.out, &peer);
    for line in [
        "etc/clustermesh/apiserver/server.crt (CN=clustermesh-apiserver-c1, O=clustermesh) with the new CA",
        "etc/clustermesh/agent/remote.crt (CN=remote-c1, O=clustermesh) with the new CA",
        "admin/admin.crt (CN=admin-c1, O=clustermesh) with the new CA",
        "✔ updated c2's record of c1",
    ] {
        assert!(printed.contains(line), "{line:?} not in:\n{printed}");
    }
    for f in [
        "etc/clustermesh/apiserver/server.crt",
        "etc/clustermesh/agent/remote.crt",
        "admin/admin.crt",
    ] {
        let leaf = &certs_in(&c1.out.join(f))[0];
        assert_eq!(leaf.issuer, new_subject, "{f}");
        assert_eq!(
            leaf.not_after
                .duration_since(leaf.not_before)
                .unwrap()
                .as_secs()
                / 86_400,
            365,
            "{f}"
        );
    }
    let record = record_of_c1().await;
    assert_eq!(certs_in_text(&record.cert)[0].issuer, new_subject);
    etcd_harness::wait_until(
        "c2's agent mirrors its certificate for c1 from the new CA",
        PICKUP_TIMEOUT,
        || {
            let ok = certs_in(&mirror.join("client.crt"))
                .first()
                .is_some_and(|c| c.issuer == new_subject);
            async move { ok }
        },
    )
    .await;
    // The agent exports the expiry of the certificate it will use next.
    let serial = certs_in_text(&record.cert)[0].serial.clone();
    etcd_harness::wait_until(
        "c2's agent exports the expiry of its new certificate for c1",
        PICKUP_TIMEOUT,
        || {
            let found = remote_cert_metrics(&c2).iter().any(|l| {
                l.contains("kind=\"cert\"") && l.contains(&format!("serial=\"{serial}\""))
            });
            async move { found }
        },
    )
    .await;
    // c1's apiserver presents its new certificate: a client trusting only
    // the new CA gets through (once it reloaded).
    ok(&[
        "cluster",
        "export",
        "--dir",
        s(&c1.out),
        "--admin",
        "--out",
        s(&c1.admin),
    ]);
    let new_admin = read_admin(&c1.admin);
    assert_eq!(certs_in_text(&new_admin.admin.cert)[0].issuer, new_subject);
    etcd_harness::wait_until(
        "c1's apiserver presents a certificate of the new CA",
        PICKUP_TIMEOUT,
        || {
            let (e, cert, key) = (
                endpoints.clone(),
                new_admin.admin.cert.clone(),
                new_admin.admin.key.clone(),
            );
            let ca = new_ca.cert_pem().to_owned();
            async move {
                read_cluster_config(&e, "c1", &ca, &cert, &key)
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    // Both CAs are still trusted: the old admin certificate gets through
    // (with the bundle of both: the old one alone does not sign the
    // apiserver's new certificate).
    read_cluster_config(
        &endpoints,
        "c1",
        &new_admin.ca_bundle,
        &c1_admin.admin.cert,
        &c1_admin.admin.key,
    )
    .await
    .unwrap_or_else(|e| panic!("before finish, the old CA's admin-c1 is accepted: {e}"));
    let after_reissue = snapshot().await;
    let printed = rotate_ok("reissue", &c1.out, &peer);
    assert!(
        printed.contains("is already issued by the new CA"),
        "{printed}"
    );
    assert!(
        snapshot().await == after_reissue,
        "reissue run again changed something"
    );
    refused(
        &rotate("begin", &c1.out, &peer),
        64,
        "phase begin out of order for cluster c1: the leaves are already issued by the new CA",
    );
    assert!(
        snapshot().await == after_reissue,
        "a refused phase changed something"
    );

    // A leaf of the old CA put back (a backup restored): finish is refused
    // and changes nothing; reissue run again issues it anew.
    let remote_leaf = old_ca
        .issue_client(
            &CertName::new("remote-c1").unwrap(),
            Validity::days(365).unwrap(),
        )
        .unwrap();
    let agent_dir = c1.out.join("etc/clustermesh/agent");
    remote_leaf
        .write_to(&agent_dir.join("remote.crt"), &agent_dir.join("remote.key"))
        .unwrap();
    let restored = snapshot().await;
    refused(
        &rotate("finish", &c1.out, &peer),
        64,
        "etc/clustermesh/agent/remote.crt (CN=remote-c1, O=clustermesh) still chains only to \
         the old CA (CN=test mesh CA, O=clustermesh): run reissue first",
    );
    assert!(
        snapshot().await == restored,
        "a refused finish changed something"
    );
    let printed = rotate_ok("reissue", &c1.out, &peer);
    assert!(
        printed.contains("re-issued") && printed.contains("agent/remote.crt (CN=remote-c1"),
        "{printed}"
    );
    assert!(
        printed.contains("server.crt is already issued by the new CA"),
        "{printed}"
    );
    assert_eq!(
        certs_in(&agent_dir.join("remote.crt"))[0].issuer,
        new_subject
    );

    // 3. finish: the old CA leaves every bundle.
    let printed = rotate_ok("finish", &c1.out, &peer);
    assert!(
        printed.contains("retired CN=test mesh CA, O=clustermesh from c1's bundles"),
        "{printed}"
    );
    etcd_harness::wait_until(
        "c2's agent mirrors c1's bundle of the new CA only",
        PICKUP_TIMEOUT,
        || {
            let ok = certs_in(&mirror.join("ca.crt"))
                .iter()
                .map(|c| c.subject.clone())
                .eq([new_subject.clone()]);
            async move { ok }
        },
    )
    .await;
    // The old CA is in no file of c1 (but its agents' copy of c2's own
    // bundle, which is c2's CA: untouched) and in no leaf's chain; nor in
    // c2's record of c1, its agents' copy, or c1's descriptor.
    let c2_view = c1.remotes_dir().join(".clustermesh-mirror/c2");
    for (path, bytes) in files(&c1.out) {
        if path.starts_with(&c2_view) {
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(&old_pem),
            "{} still holds the old CA",
            path.display()
        );
        for cert in certs_in_text(&text) {
            assert_ne!(
                cert.issuer,
                old_subject,
                "{} chains to the old CA",
                path.display()
            );
        }
    }
    assert_eq!(files(&c2_view), c1_view_of_c2, "c1's view of c2 changed");
    let record = record_of_c1().await;
    assert!(!record.ca_bundle.contains(&old_pem));
    etcd_harness::wait_until(
        "c2's agent exports c1's bundle of the new CA only",
        PICKUP_TIMEOUT,
        || {
            let lines = remote_cert_metrics(&c2);
            let cas: Vec<&String> = lines.iter().filter(|l| l.contains("kind=\"ca\"")).collect();
            let only_new = cas.len() == 1 && cas[0].contains(&format!("subject=\"{new_subject}\""));
            async move { only_new }
        },
    )
    .await;
    for path in files(&mirror).keys() {
        assert!(
            !fs::read_to_string(path).unwrap().contains(&old_pem),
            "{}",
            path.display()
        );
    }
    let descriptor = ok(&["cluster", "export", "--dir", s(&c1.out)]);
    assert!(!descriptor.contains(&old_pem), "{descriptor}");
    // The same request as admin-c1: with the new CA's certificate it gets
    // through, with the old CA's it is refused (once the apiserver
    // reloaded its client CA bundle).
    read_cluster_config(
        &endpoints,
        "c1",
        new_ca.cert_pem(),
        &new_admin.admin.cert,
        &new_admin.admin.key,
    )
    .await
    .unwrap_or_else(|e| panic!("the new CA's admin-c1 is refused: {e}"));
    let old_admin = old_ca
        .issue_client(
            &CertName::new("admin-c1").unwrap(),
            Validity::days(30).unwrap(),
        )
        .unwrap();
    etcd_harness::wait_until(
        "c1's apiserver refuses a certificate of the old CA",
        PICKUP_TIMEOUT,
        || {
            let e = endpoints.clone();
            let ca = new_ca.cert_pem().to_owned();
            let (cert, key) = (
                old_admin.cert_pem().to_owned(),
                old_admin.key_pem().to_owned(),
            );
            async move {
                read_cluster_config(&e, "c1", &ca, &cert, &key)
                    .await
                    .is_err()
            }
        },
    )
    .await;
    read_cluster_config(
        &endpoints,
        "c1",
        new_ca.cert_pem(),
        &new_admin.admin.cert,
        &new_admin.admin.key,
    )
    .await
    .unwrap_or_else(|e| panic!("the new CA's admin-c1 is refused after the old one: {e}"));
    // The next connection of c2's agents, with the files they mirrored,
    // gets through too.
    let mirrored = |f: &str| fs::read_to_string(mirror.join(f)).unwrap();
    read_cluster_config(
        &endpoints,
        "c1",
        &mirrored("ca.crt"),
        &mirrored("client.crt"),
        &mirrored("client.key"),
    )
    .await
    .unwrap_or_else(|e| panic!("c2's agents' mirrored files do not reach c1: {e}"));
    // The apiserver took the changes into use (at least twice: reissue's
    // certificate was presented before finish ran; changes close together
    // are read in one reload) and never found a key that does not belong
    // to its certificate: the pair was renamed into place at once.
    let tls_metric = |name: &str| {
        let text = http_get(&c1.apiserver_health, "/metrics").unwrap_or_default();
        let prefix = format!("{name}{{role=\"apiserver-server\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse::<u64>().ok())
    };
    etcd_harness::wait_until(
        "c1's apiserver reloaded its TLS files after each phase",
        PICKUP_TIMEOUT,
        || {
            let reloads = tls_metric("clustermesh_tls_reloads_total");
            async move { reloads.is_some_and(|n| n >= 2) }
        },
    )
    .await;
    assert_eq!(
        tls_metric("clustermesh_tls_reload_failures_total"),
        Some(0),
        "the apiserver rejected TLS files during the rotation"
    );
    // Finished: running finish again changes nothing.
    let after_finish = snapshot().await;
    rotate_ok("finish", &c1.out, &peer);
    assert!(
        snapshot().await == after_finish,
        "finish run again changed something"
    );

    // The agents stayed ready on the session they had; c2's agent took the
    // new files without reconnecting.
    let (broken_c2, samples_c2) = watch_c2.finish();
    let (broken_c1, samples_c1) = watch_c1.finish();
    assert!(samples_c2 > 0 && samples_c1 > 0);
    assert!(
        broken_c2.is_empty(),
        "c2's remote c1 was not ready on its first session: {broken_c2:?}"
    );
    assert!(
        broken_c1.is_empty(),
        "c1's remote c2 was not ready on its first session: {broken_c1:?}"
    );
    let log = fs::read_to_string(c2.log_dir().join("agent.log")).unwrap();
    assert!(
        log.contains("remote cluster TLS files changed; the connection stays up"),
        "{log}"
    );
    ok(&[
        "status",
        "--from",
        s(&c1.admin),
        "--wait",
        "--wait-duration",
        "60s",
    ]);
    wait_for_file(&c2.remotes_dir().join("c1"), true).await;

    // A begin after finish starts the next rotation, from the CA now in use.
    let printed = rotate_ok("begin", &c1.out, &peer);
    assert!(
        printed.contains("✔ created the new CA CN=clustermesh-ca c1 rotation 2"),
        "{printed}"
    );
    let next = Ca::load(&c1.out.join("ca-rotation/ca-2")).unwrap();
    let subjects: Vec<String> = certs_in(&c1.out.join("admin/ca.crt"))
        .into_iter()
        .map(|c| c.subject)
        .collect();
    assert_eq!(subjects, [new_subject.clone(), next.info().subject.clone()]);
}

/// The certificate expiry series of `c`'s agent for its remote c1.
fn remote_cert_metrics(c: &TestCluster) -> Vec<String> {
    http_get(&c.agent_health, "/metrics")
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.starts_with("clustermesh_tls_certificate_expiry_seconds{")
                && l.contains("role=\"remote-cluster-c1\"")
        })
        .map(str::to_owned)
        .collect()
}

fn certs_in_text(pem: &str) -> Vec<CertificateInfo> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .filter_map(|der| CertificateInfo::from_der(&der).ok())
        .collect()
}
