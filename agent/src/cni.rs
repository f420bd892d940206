//! The CNI 1.0 plugin: ADD, DEL, CHECK and VERSION, forwarded to the
//! agent's API. A container runtime runs the binary with `CNI_*` environment
//! variables and the network configuration on stdin; the result (or an
//! error object) goes to stdout.

use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    api_client::{ApiClient, ClientError},
    config::{DEFAULT_API_SOCKET, env},
    endpoint::{Endpoint, EndpointRequest},
};

/// The CNI versions this plugin speaks.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// A CNI error: the spec's error object and a non-zero exit.
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    /// CNI error code (1-99 reserved by the spec; 100+ plugin-specific).
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The JSON object printed on stdout.
    pub fn to_json(&self, version: &str) -> String {
        json!({"cniVersion": version, "code": self.code, "msg": self.msg, "details": self.details})
            .to_string()
    }
}

/// Spec codes.
const INCOMPATIBLE_VERSION: u32 = 1;
const INVALID_ENV: u32 = 4;
const DECODE_FAILED: u32 = 6;
const INVALID_CONFIG: u32 = 7;
const TRY_AGAIN_LATER: u32 = 11;
/// Plugin-specific: the agent refused the request.
const AGENT_REFUSED: u32 = 100;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetConf {
    cni_version: String,
    #[serde(default)]
    #[allow(dead_code)]
    name: String,
    #[serde(default)]
    agent_socket: Option<PathBuf>,
    #[serde(default)]
    runtime_config: RuntimeConfig,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct RuntimeConfig {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    namespace: Option<String>,
    /// Ports the pod declares by name (`[{name, port, protocol}]`).
    #[serde(default)]
    ports: Vec<crate::endpoint::NamedPort>,
}

/// Runs one CNI command. Returns what to print on stdout.
pub fn run_cni(env_vars: &BTreeMap<String, String>, stdin: &[u8]) -> Result<String, CniError> {
    let var = |name: &str| env_vars.get(name).filter(|v| !v.is_empty()).cloned();
    let command = var("CNI_COMMAND")
        .ok_or_else(|| CniError::new(INVALID_ENV, "CNI_COMMAND is not set", ""))?;
    if command == "VERSION" {
        return Ok(
            json!({"cniVersion": "1.0.0", "supportedVersions": SUPPORTED_VERSIONS}).to_string(),
        );
    }
    let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            DECODE_FAILED,
            "cannot decode the network configuration on stdin",
            e.to_string(),
        )
    })?;
    if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!("unsupported cniVersion {:?}", conf.cni_version),
            format!("supported: {}", SUPPORTED_VERSIONS.join(", ")),
        ));
    }
    let socket = conf
        .agent_socket
        .clone()
        .or_else(|| var(env::API_SOCKET).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_API_SOCKET));
    let client = ApiClient::new(&socket);
    let container = var("CNI_CONTAINERID")
        .ok_or_else(|| CniError::new(INVALID_ENV, "CNI_CONTAINERID is not set", ""))?;
    // It becomes part of the agent's request path: refuse anything the
    // spec does not allow before it gets there.
    if !is_valid_container_id(&container) {
        return Err(CniError::new(
            INVALID_ENV,
            format!("CNI_CONTAINERID {container:?} is invalid"),
            "it must start with a letter or digit, followed by letters, digits, '_', '.' or '-'",
        ));
    }
    let args = parse_cni_args(&var("CNI_ARGS").unwrap_or_default());
    match command.as_str() {
        "ADD" => {
            let netns = var("CNI_NETNS")
                .ok_or_else(|| CniError::new(INVALID_ENV, "CNI_NETNS is not set", ""))?;
            let ifname = var("CNI_IFNAME")
                .ok_or_else(|| CniError::new(INVALID_ENV, "CNI_IFNAME is not set", ""))?;
            let mut labels = conf.runtime_config.labels.clone();
            if let Some(extra) = conf
                .args
                .as_ref()
                .and_then(|a| a.pointer("/cni/labels"))
                .and_then(Value::as_object)
            {
                for (k, v) in extra {
                    if let Some(v) = v.as_str() {
                        labels.insert(k.clone(), v.to_string());
                    }
                }
            }
            let namespace = conf
                .runtime_config
                .namespace
                .clone()
                .or_else(|| args.get("K8S_POD_NAMESPACE").cloned());
            let req = EndpointRequest {
                name: container,
                namespace,
                netns: netns.clone(),
                ifname: Some(ifname.clone()),
                labels,
                ip: None,
                ipv6: None,
                pod: args.get("K8S_POD_NAME").filter(|p| !p.is_empty()).cloned(),
                ports: conf.runtime_config.ports.clone(),
            };
            let body = serde_json::to_vec(&req).expect("requests serialize");
            let ep: Endpoint = client
                .call("POST", "/v1/endpoints", Some(&body))
                .map_err(agent_error)?;
            Ok(add_result(&conf.cni_version, &ep, &netns))
        }
        "DEL" => match client.request("DELETE", &format!("/v1/endpoints/{container}"), None) {
            Ok((status, _)) if status < 300 || status == 404 => Ok(String::new()),
            Ok((status, body)) => Err(agent_error(ClientError::Status {
                status,
                message: String::from_utf8_lossy(&body).into_owned(),
            })),
            Err(e) => Err(agent_error(e)),
        },
        "CHECK" => {
            let ep: Endpoint = client
                .get(&format!("/v1/endpoints/{container}"))
                .map_err(agent_error)?;
            if let Some(ifname) = var("CNI_IFNAME")
                && ifname != ep.ifname
            {
                return Err(CniError::new(
                    AGENT_REFUSED,
                    format!(
                        "endpoint {container} has interface {}, not {ifname}",
                        ep.ifname
                    ),
                    "",
                ));
            }
            Ok(String::new())
        }
        other => Err(CniError::new(
            INVALID_CONFIG,
            format!("unknown CNI_COMMAND {other:?}"),
            "expected ADD, DEL, CHECK or VERSION",
        )),
    }
}

fn agent_error(e: ClientError) -> CniError {
    match &e {
        ClientError::Connect { .. } => CniError::new(
            TRY_AGAIN_LATER,
            "the clustermesh agent is not reachable",
            e.to_string(),
        ),
        ClientError::Status { status, message } => CniError::new(
            AGENT_REFUSED,
            format!("the agent refused ({status})"),
            message.clone(),
        ),
        _ => CniError::new(AGENT_REFUSED, "talking to the agent failed", e.to_string()),
    }
}

/// The ADD result: every address of the endpoint (IPv4 first) with its
/// default route.
fn add_result(version: &str, ep: &Endpoint, netns: &str) -> String {
    let ips: Vec<Value> = ep
        .addresses()
        .map(|a| {
            let len = if a.is_ipv4() { 32 } else { 128 };
            json!({"address": format!("{a}/{len}"), "interface": 0})
        })
        .collect();
    let routes: Vec<Value> = ep
        .addresses()
        .map(|a| json!({"dst": if a.is_ipv4() { "0.0.0.0/0" } else { "::/0" }}))
        .collect();
    json!({
        "cniVersion": version,
        "interfaces": [{"name": ep.ifname, "sandbox": netns}],
        "ips": ips,
        "routes": routes,
        "dns": {}
    })
    .to_string()
}

/// The CNI spec's container ID: non-empty, an ASCII letter or digit first,
/// then letters, digits, `_`, `.` or `-` (libcni's
/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`).
fn is_valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `K8S_POD_NAMESPACE=a;K8S_POD_NAME=b` → map.
fn parse_cni_args(s: &str) -> BTreeMap<String, String> {
    s.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn version_and_bad_input() {
        let out = run_cni(&env(&[("CNI_COMMAND", "VERSION")]), b"").unwrap();
        assert!(out.contains("1.0.0"));
        assert_eq!(run_cni(&env(&[]), b"").unwrap_err().code, INVALID_ENV);
        assert_eq!(
            run_cni(&env(&[("CNI_COMMAND", "ADD")]), b"not json")
                .unwrap_err()
                .code,
            DECODE_FAILED
        );
        let conf = br#"{"cniVersion":"9.9.9","name":"x"}"#;
        assert_eq!(
            run_cni(&env(&[("CNI_COMMAND", "ADD")]), conf)
                .unwrap_err()
                .code,
            INCOMPATIBLE_VERSION
        );
        let conf = br#"{"cniVersion":"1.0.0","name":"x","agentSocket":"/nonexistent/agent.sock"}"#;
        assert_eq!(
            run_cni(
                &env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c")]),
                conf
            )
            .unwrap_err()
            .code,
            INVALID_ENV
        );
        assert_eq!(
            run_cni(
                &env(&[("CNI_COMMAND", "FROB"), ("CNI_CONTAINERID", "c")]),
                conf
            )
            .unwrap_err()
            .code,
            INVALID_CONFIG
        );
        let err = run_cni(
            &env(&[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c"),
                ("CNI_NETNS", "/run/netns/x"),
                ("CNI_IFNAME", "eth0"),
            ]),
            conf,
        )
        .unwrap_err();
        assert_eq!(err.code, TRY_AGAIN_LATER, "agent down: {err:?}");
        assert_eq!(
            parse_cni_args("K8S_POD_NAMESPACE=a;IgnoreUnknown=1")["K8S_POD_NAMESPACE"],
            "a"
        );
    }

    #[test]
    fn add_results_list_every_address() {
        let mut ep: Endpoint = serde_json::from_str(
            r#"{"id":1,"name":"c","namespace":"default","netns":"/run/netns/x","ifname":"eth0","host_ifname":"cm00000001","ip":"10.1.1.2","labels":{},"identity":300}"#,
        )
        .unwrap();
        let v4: Value = serde_json::from_str(&add_result("1.0.0", &ep, "/run/netns/x")).unwrap();
        assert_eq!(
            v4["ips"],
            json!([{"address": "10.1.1.2/32", "interface": 0}])
        );
        assert_eq!(v4["routes"], json!([{"dst": "0.0.0.0/0"}]));
        ep.ipv6 = Some("fd10:1:0:1::2".parse().unwrap());
        let dual: Value = serde_json::from_str(&add_result("1.0.0", &ep, "/run/netns/x")).unwrap();
        assert_eq!(
            dual["ips"],
            json!([
                {"address": "10.1.1.2/32", "interface": 0},
                {"address": "fd10:1:0:1::2/128", "interface": 0}
            ])
        );
        assert_eq!(
            dual["routes"],
            json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}])
        );
    }

    #[test]
    fn container_id_is_checked_before_the_agent_is_asked() {
        let conf = br#"{"cniVersion":"1.0.0","name":"x","agentSocket":"/nonexistent/agent.sock"}"#;
        let del = |id: &str| {
            run_cni(
                &env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", id)]),
                conf,
            )
        };
        // Allowed: the request goes on and fails only because no agent runs.
        for id in ["c", "0abc", "a_b.c-d", "4f2a9c1e8b7d"] {
            assert_eq!(del(id).unwrap_err().code, TRY_AGAIN_LATER, "{id:?}");
        }
        for id in [
            "../x", "a/b", "-a", "_a", ".a", "a b", "a?x=1", "a%2f", "é", "a\nb",
        ] {
            let err = del(id).unwrap_err();
            assert_eq!(err.code, INVALID_ENV, "{id:?}: {err:?}");
        }
        assert!(is_valid_container_id("A9"));
        assert!(!is_valid_container_id(""));
    }
}
