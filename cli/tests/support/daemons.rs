//! What the tests of `cluster init` and `connect` need to run a cluster's
//! daemons: the binaries, a TLS etcd, their HTTP endpoints. The daemons
//! themselves run as `integration::UnitDaemon`s, from their units'
//! command lines.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    time::Duration,
};

use cluster_setup::Component;
use etcd_harness::TestEtcd;

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

/// A real etcd serving mutual TLS on 127.0.0.1, with a CA of its own
/// written to `ca_dir` (`ca.crt`, `ca.key`; `cluster init` may reuse it).
pub(crate) async fn tls_etcd(ca_dir: &Path) -> TestEtcd {
    TestEtcd::start_with(integration::tls_etcd_options(ca_dir).unwrap())
        .await
        .unwrap()
}
