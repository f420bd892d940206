//! `clustermesh-cni`: the CNI 1.0 plugin, run by a container runtime with
//! `CNI_*` environment variables and the network configuration on stdin.

use std::{collections::BTreeMap, io::Read, process::ExitCode};

fn main() -> ExitCode {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let mut stdin = Vec::new();
    if env.get("CNI_COMMAND").map(String::as_str) != Some("VERSION") {
        let _ = std::io::stdin().read_to_end(&mut stdin);
    }
    let version = serde_json::from_slice::<serde_json::Value>(&stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
        .filter(|v| agent::SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| "1.0.0".into());
    match agent::run_cni(&env, &stdin) {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{}", e.to_json(&version));
            eprintln!("clustermesh-cni: {e}: {}", e.details);
            ExitCode::from(1)
        }
    }
}
