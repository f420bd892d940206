//! The `clustermesh-relay` binary: flags, exit codes, and a run against a
//! real node.

use std::{process::Stdio, time::Duration};

use anyhow::{Context, Result};
use hubble_api::observer::{GetFlowsRequest, observer_client::ObserverClient};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::*;

const BINARY: &str = env!("CARGO_BIN_EXE_clustermesh-relay");

#[tokio::test]
async fn help_and_bad_flags() -> Result<()> {
    let help = tokio::process::Command::new(BINARY)
        .arg("--help")
        .output()
        .await?;
    assert!(help.status.success());
    let text = String::from_utf8(help.stdout)?;
    for flag in [
        "--peer-service",
        "--listen",
        "--health-listen",
        "--metrics-listen",
        "--tls-client-cert-file",
        "--tls-hubble-server-ca-files",
        "--tls-server-cert-file",
        "--tls-client-ca-files",
        "--retry-timeout",
        "--peer-service-server-name",
    ] {
        assert!(text.contains(flag), "{flag} in {text}");
    }
    let bad = tokio::process::Command::new(BINARY)
        .args(["--peer-service", "10.0.0.1:4244"])
        .env_remove("RUST_LOG")
        .output()
        .await?;
    assert_eq!(bad.status.code(), Some(64));
    let stderr = String::from_utf8(bad.stderr)?;
    assert!(
        stderr.starts_with("clustermesh-relay: a TCP --peer-service is reached with mutual TLS"),
        "{stderr}"
    );
    let pki = Pki::new()?;
    let missing = tokio::process::Command::new(BINARY)
        .args(["--tls-client-cert-file", "/nonexistent/c.crt"])
        .args(["--tls-client-key-file", "/nonexistent/c.key"])
        .arg("--tls-hubble-server-ca-files")
        .arg(&pki.ca)
        .output()
        .await?;
    assert_eq!(missing.status.code(), Some(64));
    let stderr = String::from_utf8(missing.stderr)?;
    assert!(
        stderr.contains("cannot load the client TLS files"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn relays_a_node_found_through_its_unix_socket_and_stops_on_sigterm() -> Result<()> {
    let pki = Pki::new()?;
    let n1 = Node::start(&pki, "n1").await?;
    let mut n1_plain = n1.peer_info();
    // The node's unix socket, plaintext, as a node would announce itself
    // locally.
    n1_plain.address = format!("unix://{}", n1.socket.display());
    n1_plain.tls_server_name = None;
    n1.announce([n1_plain]);
    n1.push(std::time::SystemTime::now(), [(7, Duration::ZERO)]);
    let mut child = tokio::process::Command::new(BINARY)
        .arg("--peer-service")
        .arg(format!("unix://{}", n1.socket.display()))
        .args(["--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"])
        .args(["--node-name", "relay-bin"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let grpc = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("hubble relay listening")
                && let Some(rest) = line.split("grpc=").nth(1)
            {
                return anyhow::Ok(rest.split_whitespace().next().unwrap_or("").to_owned());
            }
        }
        anyhow::bail!("the relay exited before listening")
    })
    .await
    .context("the relay did not start")??;
    // Keep draining its log so that it never blocks on a full pipe.
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let channel = hubble::client::connect(
        &hubble::client::Address::Tcp {
            host_port: grpc.clone(),
            tls: false,
        },
        None,
    )
    .await?;
    let client = ObserverClient::new(channel);
    let flows = eventually("the node's flow through the binary", || {
        let mut client = client.clone();
        async move {
            let mut stream = client
                .get_flows(GetFlowsRequest {
                    number: 5,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            let responses = all(&mut stream).await.ok()?;
            let flows = pods(&responses);
            (!flows.is_empty()).then_some((responses, flows))
        }
    })
    .await;
    assert_eq!(flows.1, ["n1-p7"]);
    assert_eq!(flows.0[0].node_name, "relay-bin");

    // SIGTERM: drains and exits 0.
    let pid = child.id().context("pid")? as i32;
    // SAFETY: kill(2) on the child this test started.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let status = tokio::time::timeout(DEADLINE, child.wait()).await??;
    assert!(status.success(), "{status}");
    drain.abort();
    Ok(())
}
