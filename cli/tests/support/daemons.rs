//! The daemons of a cluster started from their units' command lines, for
//! the tests of `cluster init` and `connect`.

use std::{
    fs,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::Duration,
};

use certs::{Ca, CertName, Validity};
use cluster_setup::{Component, UnitCommand};
use etcd_harness::{EtcdOptions, ServerTls, TestEtcd};

/// How long a daemon may take to answer on its health endpoint.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether a tool this test needs is there; outside CI a missing one skips
/// the test (with the reason on stderr), under `CI=true` it fails it.
pub(crate) fn tool_or_skip(test: &str, path: &Path, why: &str) -> bool {
    if path.exists() {
        return true;
    }
    let reason = format!("{} is missing ({why})", path.display());
    assert!(!netns::in_ci(), "{test}: {reason} and CI=true");
    eprintln!("skipping {test}: {reason}; not run (under CI=true this fails)");
    false
}

/// The daemons' binaries, beside the `clustermesh` binary.
pub(crate) fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_clustermesh"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub(crate) fn daemons_or_skip(test: &str) -> bool {
    Component::ALL.iter().all(|c| {
        tool_or_skip(
            test,
            &bin_dir().join(c.binary()),
            "build it: cargo build -p clustermesh-apiserver -p operator -p agent",
        )
    }) && tool_or_skip(test, Path::new("/usr/bin/etcd"), "Debian etcd-server")
}

/// A daemon started from a unit's command line, killed on drop.
pub(crate) struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    pub(crate) fn start(name: String, cmd: &UnitCommand, log: PathBuf) -> Self {
        let file = fs::File::create(&log).unwrap();
        let mut command = cmd.command();
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        etcd_harness::die_with_parent(&mut command);
        let child = command.spawn().unwrap();
        Self { name, child, log }
    }

    /// Waits until GET `path` on `addr` answers 200; fails at once with
    /// the log when the daemon exits.
    pub(crate) async fn wait_ready(&mut self, addr: &str, path: &str) {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{} exited with {status}:\n{}",
                    self.name,
                    fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if http_status(addr, path) == Some(200) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} not ready on {addr}{path} within {READY_TIMEOUT:?}:\n{}",
                self.name,
                fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of GET `path` on `addr` when it answers 200.
pub(crate) fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1)? == "200").then(|| body.to_owned())
}

pub(crate) fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

/// A real etcd serving mutual TLS on 127.0.0.1, with a CA of its own
/// written to `ca_dir` (`ca.crt`, `ca.key`; `cluster init` may reuse it).
pub(crate) async fn tls_etcd(ca_dir: &Path) -> TestEtcd {
    let etcd_ca = Ca::generate("test etcd CA", Validity::days(3650).unwrap()).unwrap();
    etcd_ca.write(ca_dir).unwrap();
    let etcd_server = etcd_ca
        .issue_server(
            &CertName::new("etcd").unwrap(),
            &[],
            &["127.0.0.1".parse().unwrap()],
            Validity::days(30).unwrap(),
        )
        .unwrap()
        .write(ca_dir)
        .unwrap();
    TestEtcd::start_with(EtcdOptions {
        tls: Some(ServerTls {
            cert: etcd_server.cert,
            key: etcd_server.key,
            client_ca: Some(ca_dir.join("ca.crt")),
        }),
        ..EtcdOptions::default()
    })
    .await
    .unwrap()
}
