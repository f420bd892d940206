//! A real local mesh on one machine, for `clustermesh up`, the demo and the
//! end-to-end tests.
//!
//! Per cluster: a control-plane network namespace running a real etcd, the
//! operator and the `clustermesh-apiserver` (mutual TLS); per node: a network
//! namespace running an agent with the eBPF datapath. All namespaces plug
//! into one fabric bridge (its own namespace, subnet `172.(16+k).0.0/16`),
//! where partitions between clusters are cut with nftables rules. The root
//! namespace gets a port on the fabric so the CLI reaches etcd and the
//! apiservers. Everything is described in `DIR/mesh.json` as it is built, so
//! [`Mesh::down`] removes it all, also after a crash, and nothing else: `up`
//! takes only a new or empty directory outside any other mesh, records each
//! file and directory it makes there, and `down` removes only those.
//!
//! Each cluster's etcd takes only mutual TLS with certificates of that
//! cluster's own etcd CA (its components and its admin).
//!
//! Not for production: processes are plain daemons, and all clusters share
//! one mesh CA.

mod error;
mod interrupt;
mod mesh;
mod mesh_dir;
mod pki;
mod process;
mod state;
mod subnet;
mod topology;

pub use error::{Refused, Unavailable};
pub use interrupt::{Interrupted, catch_interrupts, interrupted};
pub use mesh::{
    ECHO_PORT, Mesh, MeshSpec, SERVICE_FRONTEND, WORKLOAD_NAMESPACE, admin_client, default_bin_dir,
    etcd_admin_config, request, run_cni,
};
pub use process::{is_running, log_tail};
pub use state::{
    ClusterCerts, ClusterInfo, EndpointInfo, EtcdCerts, KubeInfo, MeshState, NodeInfo, ProcessInfo,
    UiInfo,
};
pub use subnet::parse as parse_subnet;
pub use topology::in_netns;
