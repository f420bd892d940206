//! Cilium-compatible values (DESIGN §3), with validation on decode.

mod cluster_config;
mod identity_entry;
mod ipam;
mod ipcache;
mod label_selector;
mod mirror_status;
mod node;
mod policy;
mod remote_cluster_record;
mod serde_util;
mod service;
mod service_def;
mod timestamp;

pub use cluster_config::{ClusterConfig, ClusterConfigCapabilities};
pub use identity_entry::IdentityEntry;
pub use ipam::IpamAssignment;
pub use ipcache::{IpIdentityPair, NamedPort};
pub use label_selector::{LabelSelector, LabelSelectorError, Operator, Requirement};
pub use mirror_status::MirrorStatus;
pub use node::{MAX_NODE_NAME_LEN, Node, NodeAddress, NodeCidr, NodeName, NodeNameError};
pub use policy::{
    CLUSTERWIDE, Cidr, CidrError, CidrRule, DefaultDeny, EgressRule, Entity, FqdnSelector,
    IcmpFamily, IcmpField, IcmpRule, IcmpType, IngressRule, L4Protocol, L7Rules, MAX_FQDN_LENGTH,
    PeerRule, PolicyDocument, PolicyError, PolicyKind, PolicyMetadata, PolicySpec, Port,
    PortProtocol, PortRule, check_port_name,
};
pub use remote_cluster_record::{AgentRemoteReport, AgentReport, RemoteClusterRecord};
pub use service::{ClusterService, L4Addr, PortConfiguration};
pub use service_def::{
    Affinity, ServiceDef, ServiceDefError, ServicePort, ServiceProtocol, family_name,
};
pub use timestamp::Timestamp;
