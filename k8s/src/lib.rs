//! Kubernetes sources shared by the agent and the operator.
//!
//! - [`client`]: reaching the API server (kubeconfig or in-cluster).
//! - [`crd`]: the `cilium.io/v2` policy CRDs (manifests and installation).
//! - [`policy`], [`service`], [`labels`]: Kubernetes objects turned into
//!   the mesh's own values (a [`kvstore::values::PolicyDocument`], a
//!   [`kvstore::values::ServiceDef`] with its backends, an endpoint's
//!   labels), pure functions with the reasons an object is refused.
//! - [`watch`]: watchers that deliver exactly the difference to what the
//!   consumer has, also after a re-list, and report their connection.
//! - [`local_server`], and [`testing`] behind the `testing` feature: a real
//!   kube-apiserver on this machine, for the local mesh and the tests.
//!
//! Identities, the ipcache and the mesh's state stay in etcd (Cilium's
//! kvstore mode): what comes from Kubernetes feeds the same control loop as
//! the other sources.

mod client;
pub mod crd;
pub mod labels;
pub mod local_server;
pub mod policy;
pub mod service;
pub mod services_source;
#[cfg(feature = "testing")]
pub mod testing;
pub mod watch;

pub use client::{ClientError, KubeAccess, client};
