//! What agents and kvstoremesh share about remote clusters: the config
//! directory's files ([`RemoteClusterConfig`], [`scan`]), how a failed
//! attempt is classified ([`Failure`], [`FailureKind`]), and the checks a
//! remote's published cluster config must pass ([`accept_cluster_config`],
//! [`ClusterIds`]), how a remote is reached ([`reach`]) and checked while
//! connected ([`probe`], [`Reachability`]), and how a session ends
//! ([`SessionEnd`]), and how the stored remote-cluster records become
//! config files ([`ConfigMirror`]).

mod accept;
mod cluster_ids;
mod config;
mod failure;
mod mirror;
mod reach;
mod session;

pub use accept::accept_cluster_config;
pub use cluster_ids::ClusterIds;
pub use config::{ConfigFile, ConfigScanner, RemoteClusterConfig, scan};
pub use failure::{Failure, FailureKind};
pub use mirror::ConfigMirror;
pub use reach::reach;
pub use session::{Probe, Reachability, Resync, SessionEnd, probe};
