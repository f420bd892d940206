//! The real Hubble CLI (v1.16.6) against the relay, over mutual TLS.

use std::time::{Duration, SystemTime};

use anyhow::Result;

use crate::support::*;

#[tokio::test]
async fn the_real_hubble_cli_observes_lists_nodes_and_reports_status() -> Result<()> {
    let Some(cli) = netns::shared_tool("tools/hubble/hubble", "the real Hubble CLI test") else {
        return Ok(());
    };
    let pki = Pki::new()?;
    let n1 = Node::start(&pki, "n1").await?;
    let n2 = Node::start(&pki, "n2").await?;
    let base = SystemTime::now() - Duration::from_secs(60);
    n1.push(
        base,
        (0..3).map(|i| (i, Duration::from_secs(u64::from(i) * 2))),
    );
    n2.push(
        base,
        (0..3).map(|i| (i, Duration::from_secs(u64::from(i) * 2 + 1))),
    );
    announce_all(&[&n1, &n2], &[]);
    let relay = start_relay_via(&pki, &n1).await?;
    wait_for_peers(&relay, 2, 2).await;

    let server = format!("tls://{}", relay.addrs.grpc);
    let run = |args: &[&str]| {
        let mut command = tokio::process::Command::new(&cli);
        command
            .args(args)
            .args(["--server", &server])
            .args(["--tls-server-name", RELAY_SERVER_NAME])
            .arg("--tls-ca-cert-files")
            .arg(&pki.ca)
            .arg("--tls-client-cert-file")
            .arg(&pki.user.cert)
            .arg("--tls-client-key-file")
            .arg(&pki.user.key)
            .env("HOME", "/nonexistent");
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move {
            let out = command.output().await?;
            anyhow::ensure!(
                out.status.success(),
                "hubble {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            anyhow::Ok(String::from_utf8(out.stdout)?)
        }
    };

    // --last is per node: 2 × 2, merged in time order.
    let json = run(&["observe", "--last", "2", "-o", "json"]).await?;
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let pods: Vec<_> = lines
        .iter()
        .filter_map(|l| l["flow"]["source"]["pod_name"].as_str())
        .collect();
    assert_eq!(pods, ["n1-p1", "n2-p1", "n1-p2", "n2-p2"], "{json}");

    let status = run(&["status"]).await?;
    assert!(status.contains("Current/Max Flows: 6/126"), "{status}");
    assert!(status.contains("Connected Nodes: 2/2"), "{status}");

    let nodes = run(&["list", "nodes"]).await?;
    let rows: Vec<_> = nodes.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{nodes}");
    assert!(
        rows[0].starts_with("c1/n1") && rows[0].contains("Connected"),
        "{nodes}"
    );
    assert!(rows[1].starts_with("c1/n2"), "{nodes}");
    Ok(())
}
