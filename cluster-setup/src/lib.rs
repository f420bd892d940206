//! One cluster on real hosts, without the test harness.
//!
//! - [`cluster_tree::init`] (`clustermesh cluster init`) issues a cluster's
//!   certificates (reusing a mesh CA or creating one) and writes the
//!   configuration of its apiserver, operator and agents and their systemd
//!   units into a directory laid out as the hosts' file system ([`Layout`]);
//!   [`cluster_tree::export`] reads the cluster back as descriptors.
//! - [`ClusterDescriptor`] and [`ClusterAdminDescriptor`]: the YAML files a
//!   cluster hands to other clusters (public) and to its administrator
//!   (secret), strictly parsed and validated.
//! - [`connect_checks`]: the decisions of `connect` as pure functions,
//!   shared with the local mesh harness.
//! - [`connection`]: connecting two clusters from their admin descriptors
//!   (`clustermesh connect|disconnect|status --from`): the checks against
//!   the live clusters, and the records the agents mirror.
//! - [`ca_rotation`]: replacing a cluster's mesh CA in three phases
//!   (`clustermesh certs rotate begin|reissue|finish`) while its
//!   connections stay up.
//! - [`unit_file`]: the unit templates of `deploy/systemd/` (the one source)
//!   and [`UnitCommand`], the command a rendered unit starts, so that tests
//!   and harnesses start exactly what systemd would.
//!
//! Used by the `clustermesh` command, and meant for the local mesh harness
//! too (the harness calls the product, never the other way). Not a
//! configuration manager: it writes files once; installing them on hosts
//! is copying (see README.md, "Run it on real machines").

pub mod ca_rotation;
mod cluster_spec;
pub mod cluster_tree;
pub mod connect_checks;
pub mod connection;
mod descriptor;
mod init_record;
mod layout;
pub mod unit_file;

pub use ca_rotation::{Phase, RotateError, RotateOptions};
pub use cluster_spec::{
    ClusterSpec, DEFAULT_AGENT_HEALTH_LISTEN, DEFAULT_APISERVER_HEALTH_LISTEN,
    DEFAULT_APISERVER_LISTEN, DEFAULT_OPERATOR_HEALTH_LISTEN, EtcdEndpoint, Host, HostPort,
    SpecError,
};
pub use cluster_tree::{InitError, InitOptions, InitReport};
pub use connection::{ClusterStatus, ConnectError, ConnectMode, Progress};
pub use descriptor::{
    ClientCert, ClusterAdminDescriptor, ClusterDescriptor, DESCRIPTOR_VERSION, DescriptorError,
    EtcdAccess,
};
pub use init_record::{InitRecord, RecordError};
pub use layout::{Component, Layout};
pub use unit_file::{UnitCommand, UnitError};
