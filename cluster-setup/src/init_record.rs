//! `cluster-init.yaml`: what `cluster init` made in its output directory,
//! so that `cluster export` finds the cluster and a forced re-run knows
//! which files are its own (it replaces or removes only those).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The record of one `cluster init`. Paths are relative to the output
/// directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct InitRecord {
    /// Always 1.
    pub version: u32,
    /// Always `ClusterInit`.
    pub kind: String,
    pub name: String,
    pub id: u32,
    pub max_connected_clusters: u32,
    pub etcd_endpoints: Vec<String>,
    /// `https://host:port` URLs (may be empty).
    pub apiserver_endpoints: Vec<String>,
    /// The operator's pod CIDR pools (empty: nodes bring their own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_cidr_pools: Vec<ipnet::IpNet>,
    /// The root the configuration files refer to (`/` on hosts).
    pub root: PathBuf,
    /// Where the units expect the binaries.
    pub bin_dir: PathBuf,
    /// Every file and directory init made, relative to the output directory.
    pub files: Vec<PathBuf>,
}

impl InitRecord {
    pub const KIND: &str = "ClusterInit";

    /// Reads `dir`'s record; `Ok(None)` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Self>, RecordError> {
        let path = dir.join(crate::Layout::RECORD_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(RecordError::Read { path, source }),
        };
        let record: Self = serde_norway::from_str(&text).map_err(|source| RecordError::Parse {
            path: path.clone(),
            source,
        })?;
        if record.version != 1 || record.kind != Self::KIND {
            return Err(RecordError::Unsupported { path });
        }
        Ok(Some(record))
    }

    pub fn to_yaml(&self) -> String {
        let body = serde_norway::to_string(self).expect("the record serializes");
        format!(
            "# What `clustermesh cluster init` made here. `cluster export` reads it;\n\
             # `cluster init --force` replaces or removes only the files listed.\n{body}"
        )
    }
}

/// Why the record cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a cluster init record")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
    #[error("{path} is a record of another version or kind")]
    Unsupported { path: PathBuf },
}
