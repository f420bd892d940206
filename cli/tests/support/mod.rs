//! Running the built `clustermesh` binary as a user does, for the CLI tests.

#![allow(dead_code)] // each test binary uses its own part

pub(crate) mod daemons;
pub(crate) mod test_cluster;

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

/// What a run printed and how it ended.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `clustermesh ARGS` with `stdin` as its standard input.
pub(crate) fn clustermesh_with_input(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_clustermesh"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().expect("exited normally"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Runs `clustermesh ARGS`.
pub(crate) fn clustermesh(args: &[&str]) -> Run {
    clustermesh_with_input(args, None)
}

/// Runs `clustermesh ARGS`, which must succeed; its standard output.
pub(crate) fn ok(args: &[&str]) -> String {
    let run = clustermesh(args);
    assert_eq!(run.code, 0, "{args:?}: {}{}", run.stdout, run.stderr);
    run.stdout
}

/// Runs `clustermesh ARGS`, which must be refused as a usage error (64)
/// with `message` in its error; the error.
pub(crate) fn usage_error(args: &[&str], message: &str) -> String {
    let run = clustermesh(args);
    assert_eq!(run.code, 64, "{args:?}: {}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(message),
        "{args:?}: expected {message:?} in:\n{}",
        run.stderr
    );
    run.stderr
}

/// A path as a `&str` argument.
pub(crate) fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}
