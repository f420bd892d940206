//! `clustermesh observe` against the real Hubble CLI (v1.16.6 in
//! `../shared/tools/hubble/hubble`): both print the same file of flows
//! (`--input-file`) in every output format, and both print the same raw
//! filters for the same flags. Without `shared/` beside the checkout (a
//! clean checkout in CI has none) the tests say why and pass.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

const FLOWS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/testdata/flows.jsonl");

/// The real Hubble CLI, if this checkout has `shared/` beside it.
fn hubble() -> Option<PathBuf> {
    netns::shared_tool(
        "tools/hubble/hubble",
        "the golden tests against the real Hubble CLI",
    )
}

fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

/// Runs `observe ARGS` with both CLIs and compares exit status, stdout and
/// stderr.
fn same(hubble: &Path, args: &[&str]) {
    let ours = run(
        Path::new(env!("CARGO_BIN_EXE_clustermesh")),
        &[&["observe"], args].concat(),
    );
    let theirs = run(hubble, &[&["observe"], args].concat());
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert_eq!(
        ours.status.success(),
        theirs.status.success(),
        "exit status for {args:?}: ours {}, hubble's {}; our stderr: {}",
        ours.status,
        theirs.status,
        text(&ours.stderr)
    );
    assert_eq!(
        text(&ours.stdout),
        text(&theirs.stdout),
        "stdout for {args:?}"
    );
    if theirs.status.success() {
        assert_eq!(
            text(&ours.stderr),
            text(&theirs.stderr),
            "stderr for {args:?}"
        );
    } else {
        // Refused: the same reason, in our words around it.
        let theirs = text(&theirs.stderr);
        let reason = theirs.rsplit(" flag: ").next().unwrap_or_default().trim();
        assert!(
            text(&ours.stderr).contains(reason),
            "for {args:?} hubble says {theirs:?}, we say {:?}",
            text(&ours.stderr)
        );
    }
}

#[test]
fn flows_print_as_hubble_prints_them() {
    let Some(hubble) = hubble() else { return };
    for output in ["compact", "dict", "table", "json", "jsonpb"] {
        same(&hubble, &["--input-file", FLOWS, "-o", output]);
        same(
            &hubble,
            &["--input-file", FLOWS, "-o", output, "--print-node-name"],
        );
    }
    for format in [
        "RFC3339",
        "RFC3339Nano",
        "RFC3339Milli",
        "YearMonthDay",
        "RFC1123Z",
    ] {
        same(&hubble, &["--input-file", FLOWS, "--time-format", format]);
    }
}

#[test]
fn raw_filters_are_hubbles() {
    let Some(hubble) = hubble() else { return };
    let cases: &[&[&str]] = &[
        &["--pod", "foo"],
        &[
            "--from-pod",
            "a",
            "--to-pod",
            "kube-system/b",
            "--not",
            "--verdict",
            "DROPPED",
        ],
        &[
            "-n",
            "kube-system",
            "--pod",
            "x",
            "--identity",
            "world",
            "--from-label",
            "k8s:app=foo",
            "--protocol",
            "tcp",
            "--port",
            "80",
        ],
        &[
            "--type",
            "trace:to-endpoint",
            "--type",
            "drop",
            "-t",
            "policy-verdict",
        ],
        &[
            "--from-ip",
            "10.0.0.1",
            "--to-ip",
            "10.0.0.0/8",
            "--not",
            "--ip",
            "10.0.0.2",
        ],
        &[
            "--from-identity",
            "123",
            "--to-identity",
            "host",
            "--from-port",
            "7",
        ],
        &["--identity", "7", "--identity", "kube-apiserver"],
        &[
            "--namespace",
            "a",
            "--namespace",
            "b",
            "--pod",
            "x",
            "--pod",
            "ns/y",
        ],
        &[
            "--from-namespace",
            "a",
            "--to-namespace",
            "b",
            "--to-pod",
            "c",
        ],
        &[
            "--traffic-direction",
            "EGRESS",
            "--drop-reason-desc",
            "POLICY_DENIED",
        ],
        &[
            "--tcp-flags",
            "syn,ack",
            "--uuid",
            "u1",
            "--ip-version",
            "v6",
        ],
        &[
            "--node-name",
            "c1/n1",
            "--node-name",
            "c2/*",
            "--verdict",
            "FORWARDED",
            "--verdict",
            "ERROR",
        ],
        &[
            "-l",
            "k8s:app=a",
            "--label",
            "reserved:world",
            "--not",
            "--to-port",
            "53",
        ],
        &[
            "--not",
            "--pod",
            "x",
            "--not",
            "--label",
            "a=b",
            "--from-port",
            "1",
        ],
        // Refused alike.
        &["--from-pod", "a", "--pod", "b"],
        &["--not", "--not", "--pod", "x"],
        &["--pod", "x", "--not"],
        &["--verdict", "bogus"],
        &["--first", "1", "--follow"],
    ];
    for args in cases {
        same(&hubble, &[*args, &["--print-raw-filters"]].concat());
    }
}
