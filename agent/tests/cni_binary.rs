//! The CNI plugin run the way a container runtime runs it: environment
//! variables and the network configuration on stdin; errors are CNI error
//! objects on stdout with a non-zero exit.

use std::{
    io::Write,
    process::{Command, Output, Stdio},
};

fn cni(env: &[(&str, &str)], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_clustermesh-cni"))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn error_code(out: &Output) -> u64 {
    assert!(
        !out.status.success(),
        "expected a failure: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("a CNI error object on stdout");
    assert!(
        v["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "a message: {v}"
    );
    assert_eq!(v["cniVersion"], "1.0.0");
    v["code"].as_u64().unwrap()
}

const CONF: &str = r#"{"cniVersion":"1.0.0","name":"clustermesh","type":"clustermesh-cni","agentSocket":"/nonexistent/clustermesh-test/agent.sock"}"#;

#[test]
fn version() {
    let out = cni(&[("CNI_COMMAND", "VERSION")], "");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "1.0.0")
    );
}

#[test]
fn bad_input_is_a_cni_error() {
    assert_eq!(error_code(&cni(&[], CONF)), 4, "no CNI_COMMAND");
    assert_eq!(
        error_code(&cni(&[("CNI_COMMAND", "ADD")], "{not json")),
        6,
        "undecodable configuration"
    );
    assert_eq!(
        error_code(&cni(
            &[("CNI_COMMAND", "ADD")],
            r#"{"cniVersion":"0.1.0","name":"x"}"#
        )),
        1,
        "unsupported version"
    );
    assert_eq!(
        error_code(&cni(&[("CNI_COMMAND", "ADD")], CONF)),
        4,
        "missing CNI_CONTAINERID"
    );
    assert_eq!(
        error_code(&cni(
            &[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1")],
            CONF
        )),
        4,
        "missing CNI_NETNS"
    );
    assert_eq!(
        error_code(&cni(
            &[("CNI_COMMAND", "UNKNOWN"), ("CNI_CONTAINERID", "c1")],
            CONF
        )),
        7,
        "unknown command"
    );
}

#[test]
fn agent_down_is_try_again_later() {
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
    ];
    let out = cni(&env, CONF);
    assert_eq!(error_code(&out), 11);
    assert!(String::from_utf8_lossy(&out.stdout).contains("not reachable"));
    // DEL must not fail hard either when the agent is down: it reports it.
    let out = cni(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1")], CONF);
    assert_eq!(error_code(&out), 11);
}
