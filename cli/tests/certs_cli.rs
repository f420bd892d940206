//! `clustermesh certs` end to end: the built binary in a temp dir.

use std::{fs, os::unix::fs::PermissionsExt, path::Path, process::Command};

use certs::{TlsFiles, TlsMaterial};
use support::{ok, s, usage_error};

mod support;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The `key: value` line of `show` output.
fn field<'a>(show: &'a str, key: &str) -> &'a str {
    show.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in:\n{show}"))
        .trim()
}

#[test]
fn init_issue_and_show_a_mesh_pki() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let d = s(&dir);

    let out = ok(&["certs", "init", "--dir", d, "--validity", "30"]);
    assert!(out.contains("ca.crt"), "{out}");
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    assert_eq!(mode(&dir.join("ca.crt")), 0o644);

    ok(&[
        "certs",
        "issue",
        "--dir",
        d,
        "--name",
        "apiserver",
        "--server",
        "--dns",
        "apiserver.c1.mesh",
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--ip",
        "::1",
        "--validity",
        "10",
    ]);
    ok(&[
        "certs",
        "issue",
        "--dir",
        d,
        "--name",
        "remote-c2",
        "--client",
        "--validity",
        "20",
    ]);
    for name in ["apiserver", "remote-c2"] {
        assert_eq!(mode(&dir.join(format!("{name}.key"))), 0o600, "{name}");
        assert_eq!(mode(&dir.join(format!("{name}.crt"))), 0o644, "{name}");
    }

    let show = ok(&["certs", "show", s(&dir.join("apiserver.crt"))]);
    assert_eq!(field(&show, "subject"), "CN=apiserver, O=clustermesh");
    assert_eq!(field(&show, "dns names"), "apiserver.c1.mesh, localhost");
    assert_eq!(field(&show, "ip addresses"), "127.0.0.1, ::1");
    assert_eq!(field(&show, "issuer"), "CN=clustermesh-ca, O=clustermesh");
    assert_eq!(field(&show, "usage"), "server");
    assert_eq!(field(&show, "days left"), "9");
    assert!(field(&show, "not after").ends_with('Z'), "{show}");

    let show = ok(&["certs", "show", s(&dir.join("remote-c2.crt"))]);
    assert_eq!(field(&show, "subject"), "CN=remote-c2, O=clustermesh");
    assert_eq!(field(&show, "dns names"), "-");
    assert_eq!(field(&show, "usage"), "client");
    assert_eq!(field(&show, "days left"), "19");

    let show = ok(&["certs", "show", s(&dir.join("ca.crt"))]);
    assert_eq!(field(&show, "usage"), "ca");
    assert_eq!(field(&show, "days left"), "29");

    // What the CLI wrote is usable by the library and by OpenSSL.
    for name in ["apiserver", "remote-c2"] {
        let files = TlsFiles::new(
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
            dir.join("ca.crt"),
        );
        TlsMaterial::load(&files).unwrap();
        let verify = Command::new("openssl")
            .args(["verify", "-CAfile", s(&files.ca_bundle), s(&files.cert)])
            .output()
            .unwrap();
        assert!(verify.status.success(), "{name}: {verify:?}");
    }
}

#[test]
fn show_lists_every_certificate_of_a_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(&["certs", "init", "--dir", s(&a), "--common-name", "c1-ca"]);
    ok(&["certs", "init", "--dir", s(&b), "--common-name", "c2-ca"]);
    let bundle = tmp.path().join("bundle.crt");
    let pem = fs::read_to_string(a.join("ca.crt")).unwrap()
        + &fs::read_to_string(b.join("ca.crt")).unwrap();
    fs::write(&bundle, pem).unwrap();

    let show = ok(&["certs", "show", s(&bundle)]);
    assert!(show.contains("certificate 1 of 2"), "{show}");
    assert!(show.contains("certificate 2 of 2"), "{show}");
    assert!(
        show.contains("subject:      CN=c1-ca, O=clustermesh"),
        "{show}"
    );
    assert!(
        show.contains("subject:      CN=c2-ca, O=clustermesh"),
        "{show}"
    );
}

#[test]
fn init_refuses_to_replace_a_ca_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let d = s(tmp.path());
    ok(&["certs", "init", "--dir", d]);
    let before = fs::read(tmp.path().join("ca.crt")).unwrap();

    usage_error(&["certs", "init", "--dir", d], "already exists");
    assert_eq!(fs::read(tmp.path().join("ca.crt")).unwrap(), before);

    ok(&["certs", "init", "--dir", d, "--force"]);
    assert_ne!(fs::read(tmp.path().join("ca.crt")).unwrap(), before);
}

#[test]
fn bad_input_is_a_usage_error_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let d = s(tmp.path());
    let missing = tmp.path().join("missing");
    let m = s(&missing);
    ok(&["certs", "init", "--dir", d]);

    usage_error(
        &[
            "certs",
            "issue",
            "--dir",
            m,
            "--name",
            "remote-c2",
            "--client",
        ],
        "clustermesh certs init",
    );
    usage_error(
        &[
            "certs",
            "issue",
            "--dir",
            m,
            "--name",
            "remote-c2",
            "--client",
        ],
        "missing/ca.crt",
    );
    usage_error(
        &[
            "certs",
            "issue",
            "--dir",
            d,
            "--name",
            "x",
            "--server",
            "--client",
            "--ip",
            "127.0.0.1",
        ],
        "cannot be used with",
    );
    usage_error(&["certs", "issue", "--dir", d, "--name", "x"], "--server");
    usage_error(
        &[
            "certs",
            "issue",
            "--dir",
            d,
            "--name",
            "x",
            "--server",
            "--ip",
            "300.1.2.3",
        ],
        "invalid value '300.1.2.3' for '--ip <ADDR>'",
    );
    usage_error(
        &[
            "certs",
            "issue",
            "--dir",
            d,
            "--name",
            "x",
            "--server",
            "--dns",
            "not a name",
        ],
        "invalid DNS name \"not a name\"",
    );
    for bad in ["Remote_C2", "ca", "../evil", ""] {
        usage_error(
            &["certs", "issue", "--dir", d, "--name", bad, "--client"],
            "invalid certificate name",
        );
    }
    usage_error(
        &[
            "certs",
            "issue",
            "--dir",
            d,
            "--name",
            "apiserver",
            "--server",
        ],
        "at least one --dns or --ip",
    );
    usage_error(
        &[
            "certs",
            "issue",
            "--dir",
            d,
            "--name",
            "remote-c2",
            "--client",
            "--dns",
            "x.example",
        ],
        "server certificates only",
    );
    usage_error(
        &[
            "certs",
            "issue",
            "--dir",
            d,
            "--name",
            "remote-c2",
            "--client",
            "--validity",
            "0",
        ],
        "at least one day",
    );
    usage_error(
        &[
            "certs",
            "issue",
            "--dir",
            d,
            "--name",
            "remote-c2",
            "--client",
            "--validity",
            "5000",
        ],
        "after its CA expires",
    );
    usage_error(&["certs", "show", m], "failed to read");
    usage_error(
        &["certs", "show", s(&tmp.path().join("ca.key"))],
        "contains no certificate",
    );
    usage_error(&["certs", "bogus"], "unrecognized subcommand");

    // Nothing was written by the failed attempts.
    let mut names: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ca.crt", "ca.key"]);
}

#[test]
fn help_succeeds() {
    let out = ok(&["certs", "issue", "--help"]);
    assert!(out.contains("--server"), "{out}");
}
