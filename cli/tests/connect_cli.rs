//! `clustermesh connect|disconnect --from A-admin.yaml --to B-admin.yaml`
//! and `status --from A-admin.yaml` end to end, outside the local mesh:
//! clusters made by `cluster init` and exported with `cluster export
//! --admin`, each with a real etcd (mutual TLS) and the real apiserver,
//! operator and agent started from the units' command lines. The agents
//! pick the peer's config up from their own etcd (no file copied), report
//! the remote ready, and drop it after `disconnect`; bad input is refused
//! with the reason and changes nothing in either etcd.

use std::{
    fs,
    path::Path,
    time::{Duration, SystemTime},
};

use certs::{CertName, Validity};
use cluster_setup::ClusterAdminDescriptor;
use etcd_harness::free_port;
use support::{
    clustermesh,
    daemons::daemons_or_skip,
    ok, s,
    test_cluster::{TestCluster, mesh_ca, read_admin, refused, wait_for_file},
};

mod support;

#[tokio::test(flavor = "multi_thread")]
async fn agents_pick_up_a_connection_made_from_admin_descriptors_and_drop_it_on_disconnect() {
    let test = "agents_pick_up_a_connection_made_from_admin_descriptors_and_drop_it_on_disconnect";
    if !daemons_or_skip(test) || !netns::root_or_skip(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ca_dir = tmp.path().join("mesh-ca");
    mesh_ca(&ca_dir, "test mesh CA");
    let c1 = TestCluster::start(tmp.path(), "c1", 1, &ca_dir, true).await;
    let c2 = TestCluster::start(tmp.path(), "c2", 2, &ca_dir, true).await;
    // Each agent reports itself in its etcd; nothing is connected yet.
    for c in [&c1, &c2] {
        let printed = ok(&[
            "status",
            "--from",
            s(&c.admin),
            "--wait",
            "--wait-duration",
            "60s",
        ]);
        assert!(printed.contains("connected to no cluster"), "{printed}");
        assert!(printed.contains("node n1: synced"), "{printed}");
    }
    // A file written by hand for another cluster stays as it is.
    let hand = c1.remotes_dir().join("c7");
    let hand_text = "endpoints: [https://127.0.0.1:1]\ntrusted-ca-file: /nonexistent\n\
                     cert-file: /nonexistent\nkey-file: /nonexistent\n";

    let printed = ok(&[
        "connect",
        "--from",
        s(&c1.admin),
        "--to",
        s(&c2.admin),
        "--ca-dir",
        s(&ca_dir),
    ]);
    for line in [
        "✔ names c1 and c2 are valid and distinct",
        "✔ IDs 1 and 2 are distinct",
        "✔ the issuing CA is in c2's and c1's CA bundle",
        "✔ mutual TLS c1 -> c2",
        "✔ mutual TLS c2 -> c1",
        "✔ pod CIDRs do not overlap: c1 10.1.0.0/16",
        "✔ identity headroom in c1",
        "✔ ipcache headroom in c1",
        "✔ ipcache headroom in c2",
        "✔ stored c1's config for c2 in c1's etcd (clustermesh/admin/remote-clusters/c2)",
        "connected c1 <-> c2",
    ] {
        assert!(printed.contains(line), "{line:?} not in:\n{printed}");
    }
    // The agents mirror the stored config; nobody copied a file.
    wait_for_file(&c1.remotes_dir().join("c2"), true).await;
    wait_for_file(&c2.remotes_dir().join("c1"), true).await;
    for (c, peer) in [(&c1, "c2"), (&c2, "c1")] {
        let printed = ok(&[
            "status",
            "--from",
            s(&c.admin),
            "--wait",
            "--wait-duration",
            "90s",
        ]);
        assert!(
            printed.contains(&format!("connected to {peer}")),
            "{printed}"
        );
        assert!(
            printed.contains(&format!("remote {peer}: ready connected=true")),
            "{printed}"
        );
        // The agent's own status says the same.
        let status = c.agent_status();
        let remote = status["remotes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == peer)
            .unwrap_or_else(|| panic!("{} agent has no remote {peer}: {status}", c.name))
            .clone();
        assert_eq!(remote["ready"], true, "{remote}");
        assert_eq!(remote["connected"], true, "{remote}");
    }
    let key_file = c1.remotes_dir().join(".clustermesh-mirror/c2/client.key");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key_file.display());
    }

    // Connected twice: refused, nothing changed.
    let before = (c1.records().await, c2.records().await);
    let run = clustermesh(&[
        "connect",
        "--from",
        s(&c1.admin),
        "--to",
        s(&c2.admin),
        "--ca-dir",
        s(&ca_dir),
    ]);
    refused(&run, 64, "c1 is already connected to c2");
    assert_eq!((c1.records().await, c2.records().await), before);

    // Disconnect: the records go, the agents drop the files and the remote;
    // a file the mirror did not write stays.
    fs::write(&hand, hand_text).unwrap();
    let printed = ok(&["disconnect", "--from", s(&c1.admin), "--to", s(&c2.admin)]);
    assert!(printed.contains("disconnected c1 <-> c2"), "{printed}");
    assert!(c1.records().await.is_empty() && c2.records().await.is_empty());
    wait_for_file(&c1.remotes_dir().join("c2"), false).await;
    wait_for_file(&c2.remotes_dir().join("c1"), false).await;
    assert_eq!(fs::read_to_string(&hand).unwrap(), hand_text);
    fs::remove_file(&hand).unwrap();
    let printed = ok(&[
        "status",
        "--from",
        s(&c2.admin),
        "--wait",
        "--wait-duration",
        "60s",
    ]);
    assert!(printed.contains("connected to no cluster"), "{printed}");
    assert!(!printed.contains("remote c1"), "{printed}");
    let run = clustermesh(&["disconnect", "--from", s(&c1.admin), "--to", s(&c2.admin)]);
    refused(&run, 64, "c1 and c2 are not connected");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_with_the_reason_and_changes_nothing() {
    let test = "bad_input_is_refused_with_the_reason_and_changes_nothing";
    if !daemons_or_skip(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ca_dir = tmp.path().join("mesh-ca");
    let ca = mesh_ca(&ca_dir, "test mesh CA");
    let other_ca_dir = tmp.path().join("other-ca");
    mesh_ca(&other_ca_dir, "another mesh CA");
    // Apiservers only: the checks need no agent (headroom is then said
    // to be unchecked).
    let c1 = TestCluster::start(tmp.path(), "c1", 1, &ca_dir, false).await;
    let c2 = TestCluster::start(tmp.path(), "c2", 2, &ca_dir, false).await;
    let c3 = TestCluster::start(tmp.path(), "c3", 3, &other_ca_dir, false).await;
    let all = [&c1, &c2, &c3];
    let snapshot = || async {
        let mut v = Vec::new();
        for c in all {
            v.push(c.records().await);
        }
        v
    };
    let nothing = snapshot().await;
    let connect = |from: &Path, to: &Path| {
        clustermesh(&[
            "connect",
            "--from",
            s(from),
            "--to",
            s(to),
            "--ca-dir",
            s(&ca_dir),
        ])
    };
    let variant = |name: &str, change: &dyn Fn(&mut ClusterAdminDescriptor)| {
        let mut d = read_admin(&c2.admin);
        change(&mut d);
        let path = tmp.path().join(name);
        fs::write(&path, d.to_yaml()).unwrap();
        path
    };

    // Wrong CA: c3's apiserver trusts another CA than the one that issues.
    refused(
        &connect(&c1.admin, &c3.admin),
        64,
        "CA mismatch: c3's CA bundle does not hold the issuing CA",
    );
    // Unreachable endpoint.
    let port = free_port();
    let unreachable = variant("c2-unreachable.yaml", &|d| {
        d.apiserver_endpoints = vec![format!("https://127.0.0.1:{port}")];
    });
    refused(
        &connect(&c1.admin, &unreachable),
        69,
        &format!("c2's apiserver at https://127.0.0.1:{port} does not answer"),
    );
    // ID clash (before anything is reached), and a descriptor whose ID is
    // not what the apiserver publishes.
    let clash = variant("c2-clash.yaml", &|d| d.id = 1);
    refused(
        &connect(&c1.admin, &clash),
        64,
        "cluster ID clash: c1 and c2 both have ID 1",
    );
    let wrong_id = variant("c2-wrong-id.yaml", &|d| d.id = 9);
    refused(
        &connect(&c1.admin, &wrong_id),
        64,
        "c2's apiserver publishes cluster ID 2 but its descriptor says 9",
    );
    // An expired admin certificate.
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    let expired_cert = ca
        .issue_client(
            &CertName::new("admin-c2").unwrap(),
            Validity::between(now - 30 * day, now - day).unwrap(),
        )
        .unwrap();
    let expired = variant("c2-expired.yaml", &|d| {
        d.admin.cert = expired_cert.cert_pem().to_owned();
        d.admin.key = expired_cert.key_pem().to_owned();
    });
    refused(
        &connect(&c1.admin, &expired),
        64,
        "c2's admin certificate (CN=admin-c2",
    );
    let run = connect(&c1.admin, &expired);
    assert!(run.stderr.contains("expired on"), "{}", run.stderr);
    // Not a descriptor, mixed forms, no CA.
    let run = clustermesh(&["connect", "--from", s(&c1.admin), "--to", "c2"]);
    assert_eq!(run.code, 64, "{}", run.stderr);
    assert!(
        run.stderr.contains("both admin descriptors"),
        "{}",
        run.stderr
    );
    let run = clustermesh(&["connect", "--from", s(&c1.admin), "--to", s(&c2.admin)]);
    assert_eq!(run.code, 64, "{}", run.stderr);
    assert!(
        run.stderr.contains("--ca-dir DIR is needed"),
        "{}",
        run.stderr
    );
    assert_eq!(snapshot().await, nothing, "a refused connect changed etcd");

    // Connected twice: the second run is refused, in either direction.
    let printed = ok(&[
        "connect",
        "--from",
        s(&c1.admin),
        "--to",
        s(&c2.admin),
        "--ca-dir",
        s(&ca_dir),
        "--mode",
        "unicast",
    ]);
    assert!(
        printed.contains("! no agent of c1 reports its map sizes yet"),
        "{printed}"
    );
    assert!(printed.contains("connected c1 -> c2"), "{printed}");
    assert!(!printed.contains("mutual TLS c2 -> c1"), "{printed}");
    let once = snapshot().await;
    assert_eq!(once[0].len(), 1, "c1 holds its record of c2");
    assert!(once[1].is_empty(), "unicast: c2 holds nothing");
    refused(
        &connect(&c1.admin, &c2.admin),
        64,
        "c1 is already connected to c2",
    );
    refused(
        &connect(&c2.admin, &c1.admin),
        64,
        "c1 is already connected to c2",
    );
    assert_eq!(snapshot().await, once, "a refused connect changed etcd");

    // status --from, without agents: the connection and what is missing.
    let printed = ok(&["status", "--from", s(&c1.admin)]);
    assert!(
        printed.contains("cluster c1 (id 1, max-connected-clusters 255): apiserver answers"),
        "{printed}"
    );
    assert!(printed.contains("connected to c2 (id 2)"), "{printed}");
    let run = clustermesh(&[
        "status",
        "--from",
        s(&c1.admin),
        "--wait",
        "--wait-duration",
        "1s",
    ]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("no agent of c1 reports yet"),
        "{}",
        run.stderr
    );

    let printed = ok(&[
        "disconnect",
        "--from",
        s(&c1.admin),
        "--to",
        s(&c2.admin),
        "--mode",
        "unicast",
    ]);
    assert!(printed.contains("disconnected c1 -> c2"), "{printed}");
    assert_eq!(snapshot().await, nothing);
}
