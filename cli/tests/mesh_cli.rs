//! `clustermesh up | down | mesh …` as a user runs them: the built binary,
//! a real local mesh (root), and what must never happen to a user's files.

use std::{fs, path::Path, process::Command};

use support::{clustermesh, ok, s, usage_error};

mod support;

/// Refused with exit code 64, the reason on one line of stderr.
fn refused(args: &[&str], message: &str) -> String {
    let stderr = usage_error(args, message);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    stderr
}

/// Tears a mesh down when a test ends, also when it fails.
struct Down<'a>(&'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        if self.0.join("mesh.json").exists() {
            let _ = clustermesh(&["down", "--dir", s(self.0)]);
        }
    }
}

#[test]
fn up_refuses_a_directory_with_user_files_and_changes_nothing() {
    netns::skip_unless_root!();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("important.txt"), "notes").unwrap();
    refused(
        &["up", "--dir", s(&d), "--clusters", "1", "--nodes", "1"],
        "is not empty",
    );
    let entries: Vec<_> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["important.txt"]);
    assert_eq!(
        fs::read_to_string(d.join("important.txt")).unwrap(),
        "notes"
    );
    // Nothing to take down: `down` there refuses and keeps the file too.
    let run = clustermesh(&["down", "--dir", s(&d)]);
    assert_ne!(run.code, 0);
    assert_eq!(
        fs::read_to_string(d.join("important.txt")).unwrap(),
        "notes"
    );
}

#[test]
fn down_removes_only_what_up_made_and_up_inside_a_mesh_is_refused() {
    netns::skip_unless_root!();
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    let _down = Down(&m);
    ok(&["up", "--dir", s(&m), "--clusters", "2", "--nodes", "1"]);
    assert!(m.join("c1/etcd").is_dir() && m.join("pki/ca.crt").is_file());
    maps_read_in_words(&m.join("c1/n1/agent.sock"));
    only_root_reads_the_clusters_etcd(&m);
    metrics_explain_verdicts_and_every_daemon_says_what_it_is(&m);

    // A second mesh inside this one, in an existing or a new directory.
    refused(&["up", "--dir", s(&m.join("c1"))], "inside the mesh");
    refused(&["up", "--dir", s(&m.join("c1/new"))], "inside the mesh");
    assert!(!m.join("c1/new").exists());
    assert!(
        m.join("c1/etcd").is_dir(),
        "the refused up touched the mesh"
    );
    // Starting what runs is refused with one line, and tracking is kept.
    let before = fs::read_to_string(m.join("mesh.json")).unwrap();
    refused(
        &["mesh", "start", "apiserver", "c1", "--dir", s(&m)],
        "already running",
    );
    refused(&["mesh", "cut", "c1", "c1", "--dir", s(&m)], "with itself");
    refused(
        &["disconnect", "--from", "c1", "--to", "c1", "--dir", s(&m)],
        "with itself",
    );
    refused(
        &["mesh", "stop", "etcd", "c9", "--dir", s(&m)],
        "no cluster",
    );
    assert_eq!(fs::read_to_string(m.join("mesh.json")).unwrap(), before);

    // The user keeps notes next to the mesh; `down` leaves them alone.
    fs::write(m.join("notes.txt"), "mine").unwrap();
    ok(&["down", "--dir", s(&m)]);
    let entries: Vec<_> = fs::read_dir(&m)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["notes.txt"]);
    // An empty directory the user made stays after `down` (only a directory
    // `up` created itself goes, see the unit tests).
    fs::remove_file(m.join("notes.txt")).unwrap();
    ok(&[
        "up",
        "--dir",
        s(&m),
        "--clusters",
        "1",
        "--nodes",
        "1",
        "--no-workloads",
    ]);
    ok(&["down", "--dir", s(&m)]);
    assert_eq!(fs::read_dir(&m).unwrap().count(), 0);
}

/// The cluster's etcd takes mutual TLS only, and its keys are root's: the
/// admin (root) lists policies, an unprivileged user on the host cannot,
/// with the CLI or with etcdctl.
fn only_root_reads_the_clusters_etcd(m: &Path) {
    let list = ["policy", "list", "--cluster", "c1", "--dir", s(m)];
    ok(&list);
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_clustermesh"))
        .args(list)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nobody listed c1's policies");
    assert!(stderr.contains("Permission denied"), "{stderr}");
    let mesh: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(m.join("mesh.json")).unwrap()).unwrap();
    let endpoint = mesh["clusters"][0]["etcd_endpoint"].as_str().unwrap();
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    // `etcdctl get --prefix PREFIX` on c1's etcd, as `user`, with `tls`
    // files (ca, cert, key) or none: (succeeded, keys).
    let etcdctl = |user: Option<&str>, tls: Option<[&str; 3]>, prefix: &str| {
        let mut cmd = match user {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.args([
                    &format!("--reuid={uid}"),
                    &format!("--regid={uid}"),
                    "--clear-groups",
                    "etcdctl",
                ]);
                c
            }
            None => Command::new("etcdctl"),
        };
        cmd.args([
            "--endpoints",
            endpoint,
            "--dial-timeout=2s",
            "--command-timeout=3s",
        ]);
        match tls {
            Some([ca, cert, key]) => cmd.args(["--cacert", ca, "--cert", cert, "--key", key]),
            None => cmd.arg("--insecure-skip-tls-verify"),
        };
        let out = cmd
            .args(["get", "--prefix", prefix, "--keys-only"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let files = |cluster: usize, who: &str| {
        let t = &mesh["clusters"][cluster]["etcd_tls"];
        let ca = &mesh["clusters"][0]["etcd_tls"]["ca"];
        [
            ca.as_str().unwrap(),
            t[format!("{who}_cert")].as_str().unwrap(),
            t[format!("{who}_key")].as_str().unwrap(),
        ]
    };
    // etcdctl with the admin certificate reads (root can read its key)…
    let (read, keys) = etcdctl(None, Some(files(0, "admin")), "cilium/cluster-config/");
    assert!(read && keys.contains("cilium/cluster-config/c1"), "{keys}");
    // …another cluster's admin certificate does not…
    let (read, keys) = etcdctl(None, Some(files(1, "admin")), "cilium/");
    assert!(
        !read && keys.is_empty(),
        "c2's admin read c1's etcd: {keys}"
    );
    // …and without a client certificate etcd refuses the handshake.
    let (read, keys) = etcdctl(Some("65534"), None, "cilium/");
    assert!(
        !read && keys.is_empty(),
        "etcdctl without a client certificate read: {keys}"
    );
}

/// A plain HTTP GET; the body.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The value of the first sample of `name` whose labels contain `labels`.
fn sample(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let (head, value) = rest.rsplit_once(' ')?;
        (head.is_empty() || head.starts_with('{') && head.contains(labels))
            .then(|| value.parse().ok())?
    })
}

/// Waits up to 30 s for `f` to hold.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The agent counts what its datapath decided (allowed first, then denied),
/// and every daemon exports its build and process metrics.
fn metrics_explain_verdicts_and_every_daemon_says_what_it_is(m: &Path) {
    let mesh: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(m.join("mesh.json")).unwrap()).unwrap();
    let c1 = &mesh["clusters"][0];
    let agent = c1["nodes"][0]["health"].as_str().unwrap().to_string();
    let echo = mesh["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "echo-n1")
        .unwrap();
    let target = format!("{}:8080", echo["ip"].as_str().unwrap());
    let policy = |from: &str| {
        format!(
            "kind: CiliumNetworkPolicy\nmetadata: {{name: echo, namespace: demo}}\nspec:\n  endpointSelector: {{matchLabels: {{app: echo}}}}\n  ingress:\n  - fromEndpoints: [{{matchLabels: {{app: {from}}}}}]\n"
        )
    };
    let apply = |doc: String| {
        let path = m.with_extension("policy.yaml");
        fs::write(&path, doc).unwrap();
        ok(&[
            "policy",
            "apply",
            "-f",
            s(&path),
            "--cluster",
            "c1",
            "--dir",
            s(m),
        ]);
        fs::remove_file(&path).unwrap();
    };
    let request = || {
        clustermesh(&[
            "mesh",
            "request",
            "c1/client",
            &target,
            "--timeout",
            "1s",
            "--dir",
            s(m),
        ])
        .code
            == 0
    };
    let forwarded = || {
        sample(
            &http_get(&agent, "/metrics"),
            "clustermesh_agent_policy_verdicts_total",
            "verdict=\"forwarded\"",
        )
        .unwrap_or(0.0)
    };
    let denied = || {
        sample(
            &http_get(&agent, "/metrics"),
            "clustermesh_agent_drops_total",
            "reason=\"policy-denied\"",
        )
        .unwrap_or(0.0)
    };
    apply(policy("client"));
    eventually("the admitted client is answered", request);
    eventually("a forwarded verdict is counted", || forwarded() >= 1.0);
    let before = denied();
    apply(policy("nobody"));
    eventually("the client is denied", || !request());
    eventually("the policy drop is counted", || denied() > before);
    ok(&[
        "policy",
        "delete",
        "demo/echo",
        "--cluster",
        "c1",
        "--dir",
        s(m),
    ]);

    for (daemon, addr) in [
        ("clustermesh-agent", agent.clone()),
        (
            "clustermesh-operator",
            c1["operator_health"].as_str().unwrap().to_string(),
        ),
        (
            "clustermesh-apiserver",
            c1["apiserver_health"].as_str().unwrap().to_string(),
        ),
    ] {
        let text = http_get(&addr, "/metrics");
        assert_eq!(
            sample(
                &text,
                "clustermesh_build_info",
                &format!("binary=\"{daemon}\"")
            ),
            Some(1.0),
            "{daemon}:\n{text}"
        );
        assert!(
            sample(&text, "process_resident_memory_bytes", "").is_some_and(|v| v > 0.0),
            "{daemon}"
        );
        assert!(
            sample(&text, "process_cpu_seconds_total", "").is_some(),
            "{daemon}"
        );
        assert!(
            !text.contains("file=\"/"),
            "{daemon} lists a file path:\n{text}"
        );
    }
}

/// `clustermesh-agent debug map NAME`: decoded entries, never struct dumps.
fn maps_read_in_words(socket: &Path) {
    let agent = Path::new(env!("CARGO_BIN_EXE_clustermesh")).with_file_name("clustermesh-agent");
    let debug = |args: &[&str]| {
        let out = Command::new(&agent)
            .args(["debug", "--api-socket", s(socket)])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    for map in [
        "ipcache",
        "policy",
        "endpoints",
        "services",
        "backends",
        "conntrack",
    ] {
        let text = debug(&["map", map]);
        assert!(
            !text.contains("[") && !text.contains("{"),
            "{map}: raw structs:\n{text}"
        );
    }
    // The sample workloads: the global service on port 80 to echo servers on 8080.
    let services = debug(&["map", "services"]);
    assert!(
        services.contains("frontend=10.96.0.10:80 protocol=tcp"),
        "{services}"
    );
    let backends: serde_json::Value =
        serde_json::from_str(&debug(&["map", "backends", "-o", "json"])).unwrap();
    let first = &backends[0]["value_fields"];
    assert!(
        first["address"].as_str().unwrap().ends_with(":8080"),
        "{backends}"
    );
    assert_eq!(first["protocol"], "tcp");
    let endpoints: serde_json::Value =
        serde_json::from_str(&debug(&["map", "endpoints", "-o", "json"])).unwrap();
    let ep = &endpoints[0];
    assert!(ep["value_fields"]["identity"].is_u64(), "{endpoints}");
    let id = ep["value_fields"]["identity"].to_string();
    assert!(
        ep["labels"][&id]
            .as_str()
            .is_some_and(|l| l.contains("k8s:app=")),
        "identities come with their labels: {endpoints}"
    );
}

#[test]
fn bad_flags_name_the_flag_and_its_range() {
    for bad in ["0", "20"] {
        let run = clustermesh(&["up", "--clusters", bad, "--dir", "/nonexistent/x"]);
        assert_eq!(run.code, 64, "{}", run.stderr);
        assert!(
            run.stderr.contains("--clusters") && run.stderr.contains("1..=8"),
            "{}",
            run.stderr
        );
    }
}

/// Runs `ip ARGS`, panicking with its message on failure.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn up_refuses_a_subnet_that_clashes_with_a_host_route_at_once() {
    netns::skip_unless_root!();
    // A host route inside 172.31.0.0/16 (a /32 nobody uses, so that a mesh of
    // another test on that subnet keeps working), on a veth of this test.
    let link = format!("cmclash{}", std::process::id() % 100_000);
    let peer = format!("{link}p");
    ip(&["link", "add", &link, "type", "veth", "peer", "name", &peer]);
    struct DelLink(String);
    impl Drop for DelLink {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.0]).status();
        }
    }
    let _del = DelLink(link.clone());
    ip(&["link", "set", &link, "up"]);
    ip(&["route", "add", "172.31.254.254/32", "dev", &link]);

    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    let started = std::time::Instant::now();
    let err = refused(
        &[
            "up",
            "--dir",
            s(&d),
            "--subnet",
            "172.31.0.0/16",
            "--clusters",
            "1",
            "--nodes",
            "1",
        ],
        "clashes with the host's `172.31.254.254",
    );
    assert!(err.contains(&link), "{err}");
    eprintln!("refused in {:?}: {err}", started.elapsed());
    assert!(!d.exists(), "the refused up left {}", d.display());
    let run = clustermesh(&["up", "--dir", s(&d), "--subnet", "10.0.0.0/16"]);
    assert_eq!(run.code, 64, "{}", run.stderr);
    assert!(run.stderr.contains("172.16.0.0/16"), "{}", run.stderr);
}

#[test]
fn ctrl_c_during_up_removes_what_was_started() {
    netns::skip_unless_root!();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    // A subnet of its own, far from the first free ones: once this `up`
    // releases its subnet, another test's `up` may take it at once, and its
    // namespaces (of the same prefix) would read as left behind here.
    // (172.31 is the host-clash test's.)
    let up = Command::new(env!("CARGO_BIN_EXE_clustermesh"))
        .args(["up", "--dir", s(&d), "--subnet", "172.30.0.0/16"])
        .args(["--clusters", "2", "--nodes", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _down = Down(&d);
    // Interrupt once the first cluster's control plane runs.
    eventually("the first etcd to be started", || {
        fs::read_to_string(d.join("mesh.json")).is_ok_and(|j| j.contains("\"etcd\": {"))
    });
    let (prefix, etcd_pid) = {
        let mesh: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(d.join("mesh.json")).unwrap()).unwrap();
        (
            mesh["prefix"].as_str().unwrap().to_string(),
            mesh["clusters"][0]["etcd"]["pid"].as_u64().unwrap(),
        )
    };
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(up.id() as i32, libc::SIGINT) };
    let out = up.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        !d.exists(),
        "up created {} and removed it again",
        d.display()
    );
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left: Vec<String> = String::from_utf8_lossy(&netns.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("{prefix}-")))
        .map(str::to_string)
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(
        !Path::new("/sys/fs/bpf").join(&prefix).exists(),
        "pinned maps left behind"
    );
    let cmdline = fs::read_to_string(format!("/proc/{etcd_pid}/cmdline")).unwrap_or_default();
    assert!(!cmdline.contains("etcd"), "etcd {etcd_pid} still runs");
}
