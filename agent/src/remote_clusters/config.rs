//! The clustermesh config directory: one YAML file per remote cluster, named
//! after it (the format is shared with kvstoremesh, in [`kvstore::remote`]).

pub use kvstore::remote::RemoteClusterConfig;
pub(super) use kvstore::remote::{ConfigFile, ConfigScanner, scan};
