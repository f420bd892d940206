//! Cilium-compatible values (DESIGN §3), with validation on decode.

mod cluster_config;
mod identity_entry;
mod ipam;
mod ipcache;
mod node;
mod serde_util;
mod service;
mod timestamp;

pub use cluster_config::{ClusterConfig, ClusterConfigCapabilities};
pub use identity_entry::IdentityEntry;
pub use ipam::IpamAssignment;
pub use ipcache::{IpIdentityPair, NamedPort};
pub use node::{Node, NodeAddress, NodeCidr};
pub use service::{ClusterService, L4Addr, PortConfiguration};
pub use timestamp::Timestamp;
