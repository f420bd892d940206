//! What agents and kvstoremesh share about remote clusters: the config
//! directory's files ([`RemoteClusterConfig`], [`scan`]), how a failed
//! attempt is classified ([`Failure`], [`FailureKind`]), and the checks a
//! remote's published cluster config must pass ([`accept_cluster_config`]).

mod accept;
mod config;
mod failure;

pub use accept::accept_cluster_config;
pub use config::{ConfigFile, RemoteClusterConfig, scan};
pub use failure::{Failure, FailureKind};
