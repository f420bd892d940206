//! Which Hubble server a command asks: `--server` with Hubble's TLS flags, or
//! a local mesh (`--dir`), whose `mesh.json` records each cluster's relay
//! (`hubble_relay`, `host:port`, mutual TLS with the mesh CA) and each node's
//! Hubble socket (`hubble_socket`).

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use clap::Args;
use hubble::client::Address;
use serde::Deserialize;

use crate::hubble_client::{Server, TlsOptions};

/// Hubble's default server (`hubble --server`).
pub(crate) const DEFAULT_SERVER: &str = "localhost:4245";

/// The server flags every Hubble command takes.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ServerArgs {
    /// Address of a Hubble server or relay: host:port, tls://host:port (TLS),
    /// unix:///path or a socket path [default: localhost:4245]
    #[arg(long, conflicts_with = "dir", help_heading = "Server")]
    server: Option<String>,
    /// Use TLS with the server (implied by tls:// and by the --tls-* files).
    #[arg(long, help_heading = "Server")]
    tls: bool,
    /// The CA certificate file (PEM) the server's certificate must chain to.
    #[arg(long, value_name = "FILE", help_heading = "Server")]
    tls_ca_cert_files: Option<PathBuf>,
    /// The client certificate (PEM) to present to the server.
    #[arg(long, value_name = "FILE", help_heading = "Server")]
    tls_client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", help_heading = "Server")]
    tls_client_key_file: Option<PathBuf>,
    /// The name the server's certificate must carry (e.g.
    /// hubble-relay.c1.hubble-grpc.cilium.io) [default: the host of --server].
    #[arg(long, value_name = "NAME", help_heading = "Server")]
    tls_server_name: Option<String>,
    /// A local mesh's directory (where `up` wrote mesh.json): ask the relay of
    /// the cluster given by --cluster (the first cluster when none is), or with
    /// --node a node's Hubble socket.
    #[arg(long, value_name = "DIR", help_heading = "Server")]
    dir: Option<PathBuf>,
    /// With --dir: ask this node's Hubble server (its unix socket) instead of
    /// the cluster's relay.
    #[arg(long, value_name = "NODE", requires = "dir", help_heading = "Server")]
    node: Option<String>,
}

/// `mesh.json` as far as Hubble goes; the fields that older meshes lack
/// default to nothing.
#[derive(Debug, Deserialize)]
struct MeshFile {
    clusters: Vec<MeshCluster>,
}

#[derive(Debug, Deserialize)]
struct MeshCluster {
    name: String,
    certs: MeshCerts,
    /// `host:port` of the cluster's Hubble Relay.
    #[serde(default)]
    hubble_relay: Option<String>,
    #[serde(default)]
    nodes: Vec<MeshNode>,
}

#[derive(Debug, Deserialize)]
struct MeshCerts {
    admin_cert: PathBuf,
    admin_key: PathBuf,
    ca: PathBuf,
}

#[derive(Debug, Deserialize)]
struct MeshNode {
    name: String,
    /// Path of the node's Hubble unix socket.
    #[serde(default)]
    hubble_socket: Option<PathBuf>,
}

/// The TLS server name of a cluster's relay.
pub(crate) fn relay_server_name(cluster: &str) -> String {
    format!(
        "hubble-relay.{}.hubble-grpc.cilium.io",
        cluster.replace('.', "-")
    )
}

impl ServerArgs {
    /// A local mesh's relays (`--dir DIR`).
    pub(crate) fn mesh(dir: &Path) -> Self {
        Self {
            dir: Some(dir.to_path_buf()),
            ..Self::default()
        }
    }

    /// The server these flags name; `cluster` picks the cluster with `--dir`.
    /// Errors are the user's (bad flags, unknown cluster, mesh without relay).
    pub(crate) fn resolve(&self, cluster: Option<&str>) -> anyhow::Result<Server> {
        match &self.dir {
            Some(dir) => self.mesh_server(dir, cluster),
            None => self.flag_server(),
        }
    }

    fn flag_server(&self) -> anyhow::Result<Server> {
        let text = self.server.as_deref().unwrap_or(DEFAULT_SERVER);
        let mut address: Address = text.parse().map_err(|e: String| anyhow!(e))?;
        let wants_tls = self.tls
            || self.tls_ca_cert_files.is_some()
            || self.tls_client_cert_file.is_some()
            || self.tls_client_key_file.is_some()
            || matches!(address, Address::Tcp { tls: true, .. });
        if !wants_tls {
            return Ok(Server {
                address,
                tls: None,
                what: String::new(),
            });
        }
        let Address::Tcp { host_port, tls } = &mut address else {
            return Err(anyhow!("TLS is for TCP servers, not unix sockets ({text})"));
        };
        *tls = true;
        let missing = |flag: &str| {
            anyhow!(
                "TLS with {text} needs {flag} (this CLI speaks mutual TLS: --tls-ca-cert-files, \
                 --tls-client-cert-file and --tls-client-key-file)"
            )
        };
        let host = host_port
            .rsplit_once(':')
            .map_or(host_port.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls = TlsOptions {
            ca: self
                .tls_ca_cert_files
                .clone()
                .ok_or_else(|| missing("--tls-ca-cert-files"))?,
            client_cert: self
                .tls_client_cert_file
                .clone()
                .ok_or_else(|| missing("--tls-client-cert-file"))?,
            client_key: self
                .tls_client_key_file
                .clone()
                .ok_or_else(|| missing("--tls-client-key-file"))?,
            server_name: self.tls_server_name.clone().unwrap_or(host),
        };
        Ok(Server {
            address,
            tls: Some(tls),
            what: String::new(),
        })
    }

    fn mesh_server(&self, dir: &Path, cluster: Option<&str>) -> anyhow::Result<Server> {
        let path = dir.join("mesh.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (is there a mesh? `clustermesh up --dir {}` makes one)",
                path.display(),
                dir.display()
            )
        })?;
        let mesh: MeshFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a mesh description", path.display()))?;
        let names = || {
            mesh.clusters
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let c = match cluster {
            Some(name) => mesh
                .clusters
                .iter()
                .find(|c| c.name == name)
                .ok_or_else(|| {
                    anyhow!(
                        "no cluster {name:?} in {} (clusters: {})",
                        path.display(),
                        names()
                    )
                })?,
            None => mesh
                .clusters
                .first()
                .ok_or_else(|| anyhow!("{} has no clusters", path.display()))?,
        };
        let in_dir = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                dir.join(p)
            }
        };
        if let Some(node) = &self.node {
            let n = c.nodes.iter().find(|n| &n.name == node).ok_or_else(|| {
                let nodes: Vec<&str> = c.nodes.iter().map(|n| n.name.as_str()).collect();
                anyhow!(
                    "no node {node:?} in cluster {} (nodes: {})",
                    c.name,
                    nodes.join(", ")
                )
            })?;
            let socket = n.hubble_socket.as_deref().ok_or_else(|| {
                anyhow!(
                    "{} records no Hubble socket for node {}/{node}: the mesh was made before \
                     Hubble, or its agent runs without it; `clustermesh down` and `up` again",
                    path.display(),
                    c.name
                )
            })?;
            return Ok(Server {
                address: Address::Unix(in_dir(socket)),
                tls: None,
                what: format!("node {}/{node}", c.name),
            });
        }
        let relay = c.hubble_relay.as_deref().ok_or_else(|| {
            anyhow!(
                "{} records no Hubble Relay for cluster {}: the mesh was made before relays, or \
                 its relay is not started yet; ask a node with --node NODE, or `clustermesh down` \
                 and `up` again",
                path.display(),
                c.name
            )
        })?;
        Ok(Server {
            address: Address::Tcp {
                host_port: relay.to_owned(),
                tls: true,
            },
            tls: Some(TlsOptions {
                ca: in_dir(&c.certs.ca),
                client_cert: in_dir(&c.certs.admin_cert),
                client_key: in_dir(&c.certs.admin_key),
                server_name: self
                    .tls_server_name
                    .clone()
                    .unwrap_or_else(|| relay_server_name(&c.name)),
            }),
            what: format!("the relay of {}", c.name),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(f: impl FnOnce(&mut ServerArgs)) -> ServerArgs {
        let mut a = ServerArgs::default();
        f(&mut a);
        a
    }

    #[test]
    fn the_default_is_hubbles() {
        let s = ServerArgs::default().resolve(None).unwrap();
        assert_eq!(s.address.to_string(), "localhost:4245");
        assert_eq!(s.tls, None);
    }

    #[test]
    fn tls_needs_the_three_files_and_defaults_the_name_to_the_host() {
        let err = args(|a| a.server = Some("tls://relay:4245".into()))
            .resolve(None)
            .unwrap_err();
        assert!(err.to_string().contains("--tls-ca-cert-files"), "{err}");
        let s = args(|a| {
            a.server = Some("relay.example:4245".into());
            a.tls_ca_cert_files = Some("ca.pem".into());
            a.tls_client_cert_file = Some("c.pem".into());
            a.tls_client_key_file = Some("k.pem".into());
        })
        .resolve(None)
        .unwrap();
        assert_eq!(s.address.to_string(), "tls://relay.example:4245");
        assert_eq!(s.tls.unwrap().server_name, "relay.example");
    }

    #[test]
    fn sockets_are_paths_or_unix_urls() {
        for text in ["unix:///run/h.sock", "/run/h.sock"] {
            let s = args(|a| a.server = Some(text.into()))
                .resolve(None)
                .unwrap();
            assert_eq!(s.address, Address::Unix("/run/h.sock".into()));
        }
    }

    const MESH: &str = r#"{
        "dir": "/x", "clusters": [
            {"name": "c1", "id": 1,
             "certs": {"admin_cert": "c1/admin.pem", "admin_key": "c1/admin-key.pem", "ca": "/abs/ca.pem",
                       "server_cert": "s", "server_key": "k", "remote_cert": "r", "remote_key": "rk"},
             "hubble_relay": "172.16.0.10:4245",
             "nodes": [{"name": "n1", "hubble_socket": "c1/n1/hubble.sock"}, {"name": "n2"}]},
            {"name": "c2", "id": 2,
             "certs": {"admin_cert": "a", "admin_key": "k", "ca": "ca"},
             "nodes": []}
        ]}"#;

    fn mesh_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mesh.json"), MESH).unwrap();
        dir
    }

    #[test]
    fn a_mesh_relay_uses_the_admin_certificate_and_the_relay_name() {
        let dir = mesh_dir();
        let s = args(|a| a.dir = Some(dir.path().into()))
            .resolve(Some("c1"))
            .unwrap();
        assert_eq!(s.address.to_string(), "tls://172.16.0.10:4245");
        assert_eq!(
            s.tls,
            Some(TlsOptions {
                ca: "/abs/ca.pem".into(),
                client_cert: dir.path().join("c1/admin.pem"),
                client_key: dir.path().join("c1/admin-key.pem"),
                server_name: "hubble-relay.c1.hubble-grpc.cilium.io".into(),
            })
        );
        assert_eq!(s.what, "the relay of c1");
        // No cluster: the first one.
        let first = args(|a| a.dir = Some(dir.path().into()))
            .resolve(None)
            .unwrap();
        assert_eq!(first, s);
    }

    #[test]
    fn a_mesh_node_is_its_socket() {
        let dir = mesh_dir();
        let s = args(|a| {
            a.dir = Some(dir.path().into());
            a.node = Some("n1".into());
        })
        .resolve(Some("c1"))
        .unwrap();
        assert_eq!(
            s.address,
            Address::Unix(dir.path().join("c1/n1/hubble.sock"))
        );
        assert_eq!(s.tls, None);
    }

    #[test]
    fn a_mesh_without_hubble_says_so() {
        let dir = mesh_dir();
        let err = args(|a| a.dir = Some(dir.path().into()))
            .resolve(Some("c2"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("records no Hubble Relay for cluster c2"),
            "{err}"
        );
        let err = args(|a| {
            a.dir = Some(dir.path().into());
            a.node = Some("n2".into());
        })
        .resolve(Some("c1"))
        .unwrap_err()
        .to_string();
        assert!(err.contains("no Hubble socket for node c1/n2"), "{err}");
        let err = args(|a| a.dir = Some(dir.path().into()))
            .resolve(Some("c9"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no cluster \"c9\"") && err.contains("c1, c2"),
            "{err}"
        );
    }
}
