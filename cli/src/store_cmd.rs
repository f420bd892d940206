//! `clustermesh policy …` and `clustermesh service …`: policy documents and
//! service definitions of a cluster without Kubernetes, in its etcd.

use std::{io::Write, path::PathBuf};

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use kvstore::{
    Client, ClientConfig, KeyPrefix, StoreValue, TlsFiles, keys,
    values::{PolicyDocument, ServiceDef},
};

use crate::{command_error::CommandError, mesh_cmd::DEFAULT_DIR};

/// Which cluster's etcd: a cluster of a local mesh, or explicit endpoints.
#[derive(Debug, Args)]
pub(crate) struct Target {
    /// A cluster of the local mesh in --dir.
    #[arg(long, global = true)]
    cluster: Option<String>,
    /// Directory of the local mesh (where `up` wrote mesh.json).
    #[arg(long, default_value = DEFAULT_DIR, global = true)]
    dir: PathBuf,
    /// The cluster's etcd (instead of --cluster), comma-separated.
    #[arg(long, value_delimiter = ',', global = true)]
    etcd_endpoints: Vec<String>,
    /// CA bundle that signs the etcd server's certificate (enables TLS).
    #[arg(long, global = true)]
    etcd_ca: Option<PathBuf>,
    /// Client certificate for etcd (mutual TLS).
    #[arg(long, global = true)]
    etcd_cert: Option<PathBuf>,
    /// Key of the client certificate.
    #[arg(long, global = true)]
    etcd_key: Option<PathBuf>,
}

impl Target {
    fn client_config(&self) -> Result<ClientConfig, CommandError> {
        if !self.etcd_endpoints.is_empty() {
            let mut c = ClientConfig::new(self.etcd_endpoints.clone());
            if let Some(ca) = &self.etcd_ca {
                let files = TlsFiles {
                    ca: ca.clone(),
                    cert: self.etcd_cert.clone(),
                    key: self.etcd_key.clone(),
                };
                c.tls = Some(files.load().map_err(CommandError::usage)?);
            }
            return Ok(c);
        }
        let cluster = self.cluster.as_deref().ok_or_else(|| {
            CommandError::usage(anyhow!(
                "give --cluster NAME (a local mesh) or --etcd-endpoints URL"
            ))
        })?;
        let mesh = localmesh::Mesh::load(&self.dir).map_err(CommandError::usage)?;
        let c = mesh.state.cluster(cluster).map_err(CommandError::usage)?;
        Ok(ClientConfig::new([c.etcd_endpoint.clone()]))
    }
}

#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Validate a file (YAML or JSON) and store it; nothing is stored if it is invalid.
    Apply {
        /// The file to apply (YAML or JSON).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Delete by `NAMESPACE/NAME`.
    Delete {
        /// `NAMESPACE/NAME` of what to delete.
        name: String,
    },
    /// List what is stored.
    List,
}

/// What kind of document the command manages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Policy,
    Service,
}

impl Kind {
    fn prefix(self) -> KeyPrefix {
        match self {
            Self::Policy => keys::policies(),
            Self::Service => keys::service_defs(),
        }
    }

    fn parse(self, text: &str) -> Result<(String, Vec<u8>), String> {
        match self {
            Self::Policy => PolicyDocument::parse(text).map(|d| (d.key(), d.encode())),
            Self::Service => ServiceDef::parse(text).map(|d| (d.key(), d.encode())),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::Service => "service",
        }
    }
}

pub(crate) fn run(kind: Kind, args: StoreArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    let config = args.target.client_config()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CommandError::failed)?;
    rt.block_on(async move {
        match args.command {
            StoreCommand::Apply { file } => {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("read {}", file.display()))
                    .map_err(CommandError::usage)?;
                let (key, value) = kind
                    .parse(&text)
                    .map_err(|e| CommandError::usage(anyhow!("{}: {e}", file.display())))?;
                let client = connect(&config).await?;
                client
                    .put(&kind.prefix().key(&key), value)
                    .await
                    .map_err(CommandError::failed)?;
                writeln!(out, "{} {key} applied", kind.name()).map_err(CommandError::failed)
            }
            StoreCommand::Delete { name } => {
                let client = connect(&config).await?;
                if client
                    .delete(&kind.prefix().key(&name))
                    .await
                    .map_err(CommandError::failed)?
                {
                    writeln!(out, "{} {name} deleted", kind.name()).map_err(CommandError::failed)
                } else {
                    Err(CommandError::usage(anyhow!("no {} {name}", kind.name())))
                }
            }
            StoreCommand::List => {
                let client = connect(&config).await?;
                let (kvs, _) = client
                    .list(&kind.prefix(), 1000)
                    .await
                    .map_err(CommandError::failed)?;
                for kv in kvs {
                    let key = kind.prefix().strip(&kv.key).unwrap_or_default().to_string();
                    let valid = match kind.parse(&String::from_utf8_lossy(&kv.value)) {
                        Ok(_) => "valid".to_string(),
                        Err(e) => format!("INVALID: {e}"),
                    };
                    writeln!(out, "{key}  {valid}").map_err(CommandError::failed)?;
                }
                Ok(())
            }
        }
    })
}

async fn connect(config: &ClientConfig) -> Result<Client, CommandError> {
    Client::connect(config)
        .await
        .map_err(|e| CommandError::unavailable(anyhow!("{}", e.full_message())))
}
