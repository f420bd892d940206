//! Two clusters set up as on real machines (issue 20), under cross-cluster
//! traffic: c1 with a 3-member etcd, c2 with one member, every daemon
//! started from the command line of its generated unit, each cluster's
//! node in its own network namespace acting as its host, a pod on each.
//! Connected and disconnected only through admin descriptors. A pod of c1
//! pings a pod of c2 (10 per second) through both agents' datapaths while
//! c1's etcd leader is killed, while c1 is upgraded one daemon at a time,
//! and while c1's mesh CA is rotated: no ping may be lost. The README's
//! "Run it on real machines" follows these steps.

use std::{net::IpAddr, path::Path, time::Duration};

use certs::{Ca, CertificateInfo};
use cluster_setup::Layout;
use etcd_harness::{TestEtcd, TestEtcdCluster, wait_until};
use integration::{
    ClusterSpec, Hosts, Pinger, RealCluster, RemoteWatch, arg, can_run, clustermesh, mesh_ca,
    tls_etcd_options,
};
use kvstore::{StoreValue, values::Node};

/// How long agents may take to pick up (or drop) a remote, or a change.
const PICKUP: Duration = Duration::from_secs(90);

/// Whether the mesh's binaries and etcd are there: outside CI a missing
/// one skips the test (with the reason), under `CI=true` it fails it.
fn binaries_or_skip(test: &str) -> bool {
    let missing = integration::require_binaries()
        .err()
        .map(|e| format!("{e:#}"))
        .or_else(|| {
            (!Path::new("/usr/bin/etcd").exists())
                .then(|| "/usr/bin/etcd is missing (Debian etcd-server)".to_owned())
        });
    let Some(reason) = missing else {
        return true;
    };
    assert!(!netns::in_ci(), "{test}: {reason} and CI=true");
    eprintln!("skipping {test}: {reason}; not run (under CI=true this fails)");
    false
}

/// Polls `f` (a blocking check) every 200 ms until it holds; fails with
/// `what` after `deadline`.
async fn until(what: &str, deadline: Duration, f: impl Fn() -> bool) {
    wait_until(what, deadline, || {
        let ok = f();
        async move { ok }
    })
    .await;
}

/// `clustermesh status --from ADMIN --wait`: every agent of the cluster
/// synced with its configured remotes ready (or gone after a disconnect).
fn status_wait(c: &RealCluster) -> String {
    clustermesh(&[
        "status",
        "--from",
        arg(&c.admin),
        "--wait",
        "--wait-duration",
        "90s",
    ])
    .unwrap()
}

/// How many watchers each running member of `etcd` serves (`None`: down).
async fn watchers(etcd: &TestEtcdCluster) -> Vec<Option<u64>> {
    let mut out = Vec::new();
    for i in 0..etcd_harness::CLUSTER_SIZE {
        let w = etcd
            .member(i)
            .metric("etcd_debugging_mvcc_watcher_total")
            .await;
        out.push(w.ok().map(|w| w as u64));
    }
    out
}

/// Runs an `etcdctl` command that must succeed; its stdout.
fn etcdctl_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("run etcdctl");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The raft member ID of member `i` (`etcdctl endpoint status`).
fn member_id(etcd: &TestEtcdCluster, i: usize, tls: &[String]) -> u64 {
    let printed = etcdctl_ok(
        etcd.member(i)
            .etcdctl()
            .args(tls)
            .args(["endpoint", "status", "-w", "json"]),
    );
    let status: serde_json::Value = serde_json::from_str(&printed).unwrap();
    status[0]["Status"]["header"]["member_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no member ID in {printed}"))
}

/// Every change of the keys under a prefix from the current revision on,
/// as `etcdctl watch` prints them, until [`KeyChanges::finish`].
struct KeyChanges {
    child: std::process::Child,
    reader: Option<std::thread::JoinHandle<String>>,
}

/// One change: `(key, Some(value))` for a put, `(key, None)` for a delete.
type Change = (String, Option<String>);

impl KeyChanges {
    fn start(etcd: &TestEtcdCluster, tls: &[String], prefix: &str) -> Self {
        let printed = etcdctl_ok(etcd.etcdctl().args(tls).args([
            "get",
            "--prefix",
            prefix,
            "--keys-only",
            "-w",
            "json",
        ]));
        let header: serde_json::Value = serde_json::from_str(&printed).unwrap();
        let revision = header["header"]["revision"]
            .as_u64()
            .unwrap_or_else(|| panic!("no revision in {printed}"));
        // From the next revision: nothing is missed while the watch starts.
        let mut child = etcd
            .etcdctl()
            .args(tls)
            .args(["watch", "--prefix", prefix])
            .arg(format!("--rev={}", revision + 1))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run etcdctl watch");
        let mut stdout = child.stdout.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
            text
        });
        Self {
            child,
            reader: Some(reader),
        }
    }

    /// Stops the watch; the changes it printed, in order.
    fn finish(mut self) -> Vec<Change> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = self.reader.take().expect("reader").join().unwrap();
        let mut lines = text.lines();
        let mut changes = Vec::new();
        while let Some(op) = lines.next() {
            let key = lines.next().unwrap_or_default().to_owned();
            match op {
                "PUT" => changes.push((key, Some(lines.next().unwrap_or_default().to_owned()))),
                "DELETE" => changes.push((key, None)),
                other => panic!("unexpected etcdctl watch line {other:?} in:\n{text}"),
            }
        }
        changes
    }
}

impl Drop for KeyChanges {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The certificates of a PEM file (none when it is missing).
fn certs_in(path: &Path) -> Vec<CertificateInfo> {
    CertificateInfo::from_pem_file(path).unwrap_or_default()
}

/// Whether the agents' remotes must be ready in every sample of a phase.
#[derive(PartialEq)]
enum Remotes {
    StayReady,
    /// A phase that restarts an agent or an apiserver: the remote is away
    /// while the daemon is (the datapath keeps its state meanwhile).
    MayBlink,
}

/// Pings from `from` to `to` while `phase` runs, with `watch` sampling
/// both agents' remotes; then waits until 15 more replies came and says how
/// many pings were sent and which were lost, and what the watch saw.
async fn under_traffic<T>(
    what: &str,
    (from, to): (&str, IpAddr),
    (watch, remotes): (RemoteWatch, Remotes),
    phase: impl std::future::Future<Output = T>,
    figures: &mut Vec<String>,
) -> T {
    let pinger = Pinger::start(from, to).unwrap();
    let out = phase.await;
    let (sent, lost) = pinger.stop();
    let seen = watch.finish();
    // Which agent's view the samples not ready were of.
    let mut by_view = std::collections::BTreeMap::<&str, usize>::new();
    for s in &seen.not_ready {
        *by_view
            .entry(s.split_once(':').map_or(s.as_str(), |(v, _)| v))
            .or_default() += 1;
    }
    let line = format!(
        "{what}: {sent} pings sent, {} lost; remotes not ready in {} of {} samples {by_view:?}, \
         {} sessions started again",
        lost.len(),
        seen.not_ready.len(),
        seen.samples,
        seen.reconnects
    );
    eprintln!("{line}");
    figures.push(line);
    if remotes == Remotes::StayReady {
        assert!(
            seen.not_ready.is_empty(),
            "remotes not ready across {what}: {:?}",
            seen.not_ready
        );
    }
    assert!(sent > 15, "pinged across {what}");
    assert!(
        lost.is_empty(),
        "pings lost across {what}: icmp_seq {lost:?} of {sent}"
    );
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn clusters_from_generated_units_keep_traffic_across_failover_upgrade_and_rotation() {
    let test = "clusters_from_generated_units_keep_traffic_across_failover_upgrade_and_rotation";
    if !can_run(test) || !binaries_or_skip(test) {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("real-clusters-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    let mut figures = Vec::new();

    // 1. Two clusters from `cluster init`, their daemons from the units,
    //    one pod each, connected through the admin descriptors.
    let ca_dir = dir.join("mesh-ca");
    mesh_ca(&ca_dir, "test mesh CA").unwrap();
    let (c1_etcd_ca, c2_etcd_ca) = (dir.join("c1-etcd-ca"), dir.join("c2-etcd-ca"));
    let mut etcd1 = TestEtcdCluster::start_with(tls_etcd_options(&c1_etcd_ca).unwrap())
        .await
        .unwrap();
    let etcd2 = TestEtcd::start_with(tls_etcd_options(&c2_etcd_ca).unwrap())
        .await
        .unwrap();
    let hosts = Hosts::pair("rchost").unwrap();
    let mut c1 = RealCluster::start(
        &dir.join("c1"),
        &ClusterSpec {
            name: "c1",
            id: 1,
            mesh_ca_dir: &ca_dir,
            etcd_endpoints: etcd1.endpoints(),
            etcd_ca_dir: &c1_etcd_ca,
            host: hosts.host(0),
        },
    )
    .unwrap();
    let c2 = RealCluster::start(
        &dir.join("c2"),
        &ClusterSpec {
            name: "c2",
            id: 2,
            mesh_ca_dir: &ca_dir,
            etcd_endpoints: etcd2.endpoints(),
            etcd_ca_dir: &c2_etcd_ca,
            host: hosts.host(1),
        },
    )
    .unwrap();
    let client = c1.add_pod("client", &[("app", "client")]).unwrap();
    let server = c2.add_pod("server", &[("app", "server")]).unwrap();
    for c in [&c1, &c2] {
        let printed = status_wait(c);
        assert!(printed.contains("connected to no cluster"), "{printed}");
    }
    // Not connected yet: c1 knows nothing of c2's pod.
    assert!(c1.remote_state(2).unwrap().1.is_empty());
    let printed = clustermesh(&[
        "connect",
        "--from",
        arg(&c1.admin),
        "--to",
        arg(&c2.admin),
        "--ca-dir",
        arg(&ca_dir),
    ])
    .unwrap();
    assert!(printed.contains("connected c1 <-> c2"), "{printed}");
    for (c, peer) in [(&c1, "c2"), (&c2, "c1")] {
        let printed = status_wait(c);
        assert!(
            printed.contains(&format!("remote {peer}: ready connected=true")),
            "{printed}"
        );
    }
    until("c1's agent has c2's pod", PICKUP, || {
        c1.remote_state(2)
            .unwrap()
            .1
            .iter()
            .any(|e| e.prefix == format!("{}/32", server.ip))
    })
    .await;
    until("c1's pod pings c2's pod", PICKUP, || {
        client.pings(server.ip)
    })
    .await;
    let remote_state = c1.remote_state(2).unwrap();
    let from = client.netns.name().to_owned();
    let etcd_tls = [
        format!("--cacert={}", c1_etcd_ca.join("ca.crt").display()),
        format!("--cert={}", c1.out.join("admin/etcd-admin.crt").display()),
        format!("--key={}", c1.out.join("admin/etcd-admin.key").display()),
    ];
    let watchers_before = watchers(&etcd1).await;
    let to = IpAddr::V4(server.ip);

    // 2. c1's etcd leader killed under traffic: the others elect a new
    //    one, every component fails over to it, c2 still sees c1 change.
    let late = under_traffic(
        "c1's etcd leader killed",
        (&from, to),
        (
            RemoteWatch::start(&[(&c1, "c2"), (&c2, "c1")]),
            Remotes::StayReady,
        ),
        async {
            // The leader is made the member the components watch most, so
            // that killing it cuts their connections, not only the raft.
            let busiest = watchers(&etcd1)
                .await
                .into_iter()
                .enumerate()
                .max_by_key(|(_, w)| *w)
                .map(|(i, _)| i)
                .unwrap();
            let leader = etcd1.leader().await.unwrap();
            if leader != busiest {
                let id = member_id(&etcd1, busiest, &etcd_tls);
                etcdctl_ok(
                    etcd1
                        .member(leader)
                        .etcdctl()
                        .args(&etcd_tls)
                        .args(["move-leader", &format!("{id:x}")]),
                );
            }
            let leader = etcd1.leader().await.unwrap();
            assert_eq!(leader, busiest, "leadership moved to the busiest member");
            etcd1.kill(leader);
            let new_leader = etcd1.leader().await.unwrap();
            assert_ne!(new_leader, leader);
            // A change in c1 after the kill reaches c2 (c1's agent writes
            // to the new leader, c1's apiserver serves it to c2's agent).
            let late = c1.add_pod("late", &[("app", "late")]).unwrap();
            until(
                "c2's agent has c1's pod made after the kill",
                PICKUP,
                || {
                    c2.remote_state(1)
                        .unwrap()
                        .1
                        .iter()
                        .any(|e| e.prefix == format!("{}/32", late.ip))
                },
            )
            .await;
            until("both agents have their remote ready", PICKUP, || {
                c1.remote_ready("c2") && c2.remote_ready("c1")
            })
            .await;
            etcd1.restart(leader).await.unwrap();
            // It follows the leader again.
            let has_leader = etcd1
                .member(leader)
                .metric("etcd_server_has_leader")
                .await
                .unwrap();
            assert_eq!(has_leader, 1.0, "the restarted member rejoined");
            etcd1.leader().await.unwrap();
            late
        },
        &mut figures,
    )
    .await;
    let line = format!(
        "c1's etcd watchers per member: {watchers_before:?} before the kill, {:?} after the restart",
        watchers(&etcd1).await
    );
    eprintln!("{line}");
    figures.push(line);
    assert_eq!(
        c1.remote_state(2).unwrap(),
        remote_state,
        "c1's agent holds the same identities and ipcache entries of c2"
    );
    assert_eq!(
        c2.remote_state(1).unwrap().1.len(),
        2,
        "c2 has both pods of c1"
    );

    // 3. A rolling upgrade of c1 under traffic: the agent, the apiserver,
    //    then the operator, each stopped as systemd does and started from
    //    its unit, the next one only once it is back and the remotes are
    //    ready again.
    // c1's node as c2 routes to it: never without its pod CIDR (c2 would
    // withdraw the route to c1's pods while the restarted agent starts).
    let node_changes = KeyChanges::start(&etcd1, &etcd_tls, "cilium/state/nodes/v1/c1/");
    under_traffic(
        "c1's rolling upgrade",
        (&from, to),
        (
            RemoteWatch::start(&[(&c1, "c2"), (&c2, "c1")]),
            Remotes::MayBlink,
        ),
        async {
            c1.agent.restart().unwrap();
            until("c1's agent is synced with c2 ready", PICKUP, || {
                c1.remote_ready("c2")
            })
            .await;
            c1.apiserver.restart().unwrap();
            until("c2's agent has c1 ready again", PICKUP, || {
                c2.remote_ready("c1")
            })
            .await;
            c1.operator.restart().unwrap();
            status_wait(&c1);
            status_wait(&c2);
        },
        &mut figures,
    )
    .await;
    let node_changes = node_changes.finish();
    assert!(
        !node_changes.is_empty(),
        "the restarted agent wrote its node again"
    );
    for (key, value) in &node_changes {
        let value = value
            .as_deref()
            .unwrap_or_else(|| panic!("{key} deleted during the upgrade: {node_changes:?}"));
        let name = key.strip_prefix("cilium/state/nodes/v1/").unwrap_or(key);
        let node = Node::decode(name, value.as_bytes()).unwrap();
        assert!(
            node.ipv4_alloc_cidr.is_some(),
            "{key} written without its pod CIDR during the upgrade: {value}"
        );
    }
    assert_eq!(
        c1.remote_state(2).unwrap(),
        remote_state,
        "c1's agent holds the same identities and ipcache entries of c2"
    );
    assert!(c1.remote_ready("c2") && c2.remote_ready("c1"));

    // 4. A full rotation of c1's mesh CA under traffic: begin (both CAs
    //    trusted everywhere, c2's record of c1 included), reissue (every
    //    leaf from the new CA), finish (the old CA retired). c2's agent
    //    picks each step up from its etcd.
    let mirror = c2
        .out
        .join("etc/clustermesh/agent")
        .join(Layout::REMOTES_DIR)
        .join(".clustermesh-mirror/c1");
    let subjects = |file: &str| -> Vec<String> {
        certs_in(&mirror.join(file))
            .into_iter()
            .map(|c| c.subject)
            .collect()
    };
    let issuers = |file: &str| -> Vec<String> {
        certs_in(&mirror.join(file))
            .into_iter()
            .map(|c| c.issuer)
            .collect()
    };
    let old_subject = subjects("ca.crt");
    assert_eq!(old_subject.len(), 1, "{old_subject:?}");
    let rotate = |phase: &str| {
        let printed = clustermesh(&[
            "certs",
            "rotate",
            phase,
            "--dir",
            arg(&c1.out),
            "--peer",
            arg(&c2.admin),
        ])
        .unwrap();
        assert!(
            printed.contains(&format!("phase {phase} done")),
            "{printed}"
        );
    };
    under_traffic(
        "c1's CA rotation",
        (&from, to),
        (
            RemoteWatch::start(&[(&c1, "c2"), (&c2, "c1")]),
            Remotes::StayReady,
        ),
        async {
            rotate("begin");
            let new_subject = Ca::load(&c1.out.join("ca-rotation/ca-1"))
                .unwrap()
                .info()
                .subject
                .clone();
            let both = [old_subject[0].clone(), new_subject.clone()];
            until("c2's agent trusts both of c1's CAs", PICKUP, || {
                subjects("ca.crt") == both
            })
            .await;
            rotate("reissue");
            until(
                "c2's agent has its certificate for c1 from the new CA",
                PICKUP,
                || issuers("client.crt") == [new_subject.clone()],
            )
            .await;
            c1.export_admin().unwrap();
            rotate("finish");
            until("c2's agent trusts c1's new CA only", PICKUP, || {
                subjects("ca.crt") == [new_subject.clone()]
            })
            .await;
            c1.export_admin().unwrap();
            until("both agents have their remote ready", PICKUP, || {
                c1.remote_ready("c2") && c2.remote_ready("c1")
            })
            .await;
            // The new admin descriptor (new CA only) reaches c1's apiserver.
            let printed = status_wait(&c1);
            assert!(printed.contains("remote c2: ready"), "{printed}");
        },
        &mut figures,
    )
    .await;
    assert_eq!(c1.remote_state(2).unwrap(), remote_state);
    // A new handshake works with the new certificates, not just the
    // sessions kept across the rotation: c1's agent started again connects
    // to c2 with its new remote-c1, and c2's agent, whose session to c1
    // was kept across the rotation, reconnects to c1's apiserver started
    // again (which presents a certificate of the new CA only) with the
    // files the rotation changed.
    c1.agent.restart().unwrap();
    until(
        "c1's agent started again has c2 ready with its new certificate",
        PICKUP,
        || c1.remote_ready("c2") && c2.remote_ready("c1"),
    )
    .await;
    let connects = c2.remote_connects("c1").expect("c2 has c1");
    c1.apiserver.restart().unwrap();
    until(
        "c2's agent reconnected to c1's apiserver started again",
        PICKUP,
        || c2.remote_ready("c1") && c2.remote_connects("c1") > Some(connects),
    )
    .await;
    until("c1's pod pings c2's pod", PICKUP, || {
        client.pings(server.ip)
    })
    .await;

    // 5. Disconnect through the descriptors: the remote and its state go
    //    away from both agents, and with them the route to c2's pod.
    assert!(client.pings(server.ip), "c1's pod pings c2's pod before");
    let printed = clustermesh(&[
        "disconnect",
        "--from",
        arg(&c1.admin),
        "--to",
        arg(&c2.admin),
    ])
    .unwrap();
    assert!(printed.contains("disconnected c1 <-> c2"), "{printed}");
    for c in [&c1, &c2] {
        let printed = status_wait(c);
        assert!(printed.contains("connected to no cluster"), "{printed}");
    }
    until("both agents dropped the remote", PICKUP, || {
        c1.remote_gone("c2") && c2.remote_gone("c1")
    })
    .await;
    until("c1's agent dropped c2's state", PICKUP, || {
        c1.remote_state(2).unwrap() == (vec![], vec![])
    })
    .await;
    until("c1's pod no longer reaches c2's pod", PICKUP, || {
        !client.pings(server.ip)
    })
    .await;
    eprintln!("figures:\n{}", figures.join("\n"));

    // Dropped, everything is gone: daemons, namespaces, files.
    let pids: Vec<u32> = [&c1, &c2].iter().flat_map(|c| c.pids()).collect();
    let namespaces: Vec<std::path::PathBuf> = [&client, &server, &late]
        .iter()
        .map(|p| p.netns.path().to_path_buf())
        .chain((0..2).map(|i| hosts.host(i).0.path().to_path_buf()))
        .collect();
    drop((late, client, server, c1, c2, hosts, etcd1, etcd2));
    let tree = dir.to_path_buf();
    drop(tmp);
    for pid in pids {
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
        assert!(!alive, "daemon {pid} killed on drop");
    }
    for ns in namespaces {
        assert!(!ns.exists(), "{} deleted on drop", ns.display());
    }
    assert!(!tree.exists(), "{} removed on drop", tree.display());
}
