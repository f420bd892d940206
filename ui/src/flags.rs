//! `clustermesh-ui`'s flags and the configuration they make.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use hubble::client::{Address, ClientTls};

use crate::{
    feed::{FeedOptions, RelaySpec},
    model::Limits,
    services::AgentSpec,
};

/// The name a relay's certificate carries, Cilium's default
/// (`{cluster}` in the flag is replaced by each relay's cluster name).
pub const DEFAULT_RELAY_SERVER_NAME: &str = hubble::pki::RELAY_SERVER_NAME;

/// Cilium's Hubble UI listens on 8081.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8081";

/// Hubble UI for a whole mesh: a live service map of every cluster, the flows
/// table and the global services panel, read from the clusters' Hubble Relays
/// and agents.
#[derive(Debug, Clone, Parser)]
#[command(name = "clustermesh-ui", version)]
pub struct Flags {
    /// Address to serve the UI on (HTTP).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// A Hubble Relay as CLUSTER=ADDRESS (host:port, tls://host:port or
    /// unix:///path); repeat for every cluster. Flows come from the first one
    /// that answers; every relay of a mesh sees every node, so the others are
    /// stand-bys for when it fails.
    #[arg(long = "relay", value_name = "CLUSTER=ADDRESS", required = true)]
    pub relays: Vec<String>,
    /// CA bundle the relays' certificates must chain to (with the two client
    /// certificate flags: TCP relays are reached with mutual TLS).
    #[arg(long)]
    pub tls_ca_cert_files: Option<PathBuf>,
    /// Client certificate presented to the relays.
    #[arg(long)]
    pub tls_client_cert_file: Option<PathBuf>,
    /// Key of --tls-client-cert-file.
    #[arg(long)]
    pub tls_client_key_file: Option<PathBuf>,
    /// Name the relays' certificates must carry; `{cluster}` is replaced by
    /// the relay's cluster.
    #[arg(long, default_value = DEFAULT_RELAY_SERVER_NAME)]
    pub tls_relay_server_name: String,
    /// A cluster's agent API socket as CLUSTER=[NODE:]SOCKET, for the global
    /// services panel; repeat (several per cluster: asked in order).
    #[arg(long = "agent", value_name = "CLUSTER=[NODE:]SOCKET")]
    pub agents: Vec<String>,
    /// Flows per node read at the first connection (Hubble UI's GET_FLOWS_LAST).
    #[arg(long, default_value_t = 10_000)]
    pub flows_last: u64,
    /// Flows sent to a page when it connects.
    #[arg(long, default_value_t = 2000)]
    pub backlog: usize,
    /// How often the agents are asked for their services.
    #[arg(long, default_value = "500ms", value_parser = humantime_duration)]
    pub services_interval: Duration,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

/// `250ms`, `2s`, `1m`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (for example 500ms, 2s)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("invalid duration {s:?} (for example 500ms, 2s)")),
    }
}

/// What the UI runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub relays: Vec<RelaySpec>,
    pub agents: Vec<AgentSpec>,
    pub feed: FeedOptions,
    pub limits: Limits,
    pub services_interval: Duration,
}

impl Flags {
    /// The configuration, or what is wrong with the flags.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let tls = match (
            &self.tls_ca_cert_files,
            &self.tls_client_cert_file,
            &self.tls_client_key_file,
        ) {
            (None, None, None) => None,
            (Some(ca), Some(cert), Some(key)) => {
                let files = certs::TlsFiles::new(cert.clone(), key.clone(), ca.clone());
                let config = certs::Config {
                    alpn_protocols: vec![b"h2".to_vec()],
                    ..Default::default()
                };
                Some(certs::ClientTls::load(files, config).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot load the relay TLS files: {}",
                        daemon::error_chain(&e)
                    )
                })?)
            }
            _ => anyhow::bail!(
                "--tls-ca-cert-files, --tls-client-cert-file and --tls-client-key-file must be given together"
            ),
        };
        let mut relays = Vec::new();
        for text in &self.relays {
            let (cluster, address) = split_pair(text, "--relay", "CLUSTER=ADDRESS")?;
            let mut address: Address = address
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--relay {text}: {e}"))?;
            let client_tls = match (&mut address, &tls) {
                (Address::Tcp { tls: wants, .. }, Some(tls)) => {
                    *wants = true;
                    Some(ClientTls {
                        connector: tls.connector(),
                        server_name: self.tls_relay_server_name.replace("{cluster}", cluster),
                    })
                }
                (Address::Tcp { tls: true, .. }, None) => anyhow::bail!(
                    "--relay {text} asks for TLS: give --tls-ca-cert-files, --tls-client-cert-file and --tls-client-key-file"
                ),
                _ => None,
            };
            relays.push(RelaySpec {
                name: cluster.to_owned(),
                address,
                tls: client_tls,
            });
        }
        let mut agents: Vec<AgentSpec> = Vec::new();
        for text in &self.agents {
            let (cluster, rest) = split_pair(text, "--agent", "CLUSTER=[NODE:]SOCKET")?;
            let (node, socket) = match rest.split_once(':') {
                Some((node, socket)) if !node.contains('/') => (node.to_owned(), socket),
                _ => (String::new(), rest),
            };
            let socket = PathBuf::from(socket);
            match agents.iter_mut().find(|a| a.cluster == cluster) {
                Some(a) => a.sockets.push((node, socket)),
                None => agents.push(AgentSpec {
                    cluster: cluster.to_owned(),
                    sockets: vec![(node, socket)],
                }),
            }
        }
        Ok(Config {
            listen: self.listen,
            relays,
            agents,
            feed: FeedOptions {
                last: self.flows_last,
            },
            limits: Limits {
                backlog: self.backlog,
                ..Limits::default()
            },
            services_interval: self.services_interval,
        })
    }
}

/// `KEY=VALUE` with both parts non-empty.
fn split_pair<'a>(text: &'a str, flag: &str, shape: &str) -> anyhow::Result<(&'a str, &'a str)> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k, v)),
        _ => anyhow::bail!("{flag} {text:?}: expected {shape}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> anyhow::Result<Config> {
        let mut all = vec!["clustermesh-ui"];
        all.extend(args);
        Flags::try_parse_from(all)?.into_config()
    }

    #[test]
    fn relays_and_agents_by_cluster() {
        let c = flags(&[
            "--relay",
            "c1=10.0.0.1:4245",
            "--relay",
            "c2=unix:///run/relay.sock",
            "--agent",
            "c1=n1:/run/n1.sock",
            "--agent",
            "c1=/run/n2.sock",
        ])
        .unwrap();
        assert_eq!(c.relays.len(), 2);
        assert_eq!(c.relays[1].address.to_string(), "unix:///run/relay.sock");
        assert_eq!(c.agents.len(), 1);
        assert_eq!(
            c.agents[0].sockets,
            vec![
                ("n1".into(), "/run/n1.sock".into()),
                (String::new(), "/run/n2.sock".into())
            ]
        );
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn bad_flags_say_what_is_wrong() {
        let e = flags(&["--relay", "10.0.0.1:4245"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected CLUSTER=ADDRESS"), "{e}");
        let e = flags(&["--relay", "c1=tls://10.0.0.1:4245"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("asks for TLS"), "{e}");
        let e = flags(&["--relay", "c1=a:1", "--tls-ca-cert-files", "/x"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be given together"), "{e}");
        assert!(flags(&[]).is_err());
        assert!(parse_duration("5h").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    }
}
