//! The clustermesh operator: the one process per cluster that cleans up after
//! the agents and hands out what must be unique in the cluster.
//!
//! - [`Election`]: instances campaign on an etcd lease
//!   (`cilium/operator/leader`, [`LeaderElection`]) or, in Kubernetes mode,
//!   on a `coordination.k8s.io/v1` Lease ([`LeaseElection`]); exactly one
//!   leads, a crashed leader is replaced within a session TTL, and a leader
//!   that cannot renew stops its duties before anyone else can take over.
//! - While leading: [`IdentityCollector`] (periodic [`kvstore::IdentityGc`]
//!   rounds over the local cluster's identity range), [`Heartbeat`]
//!   (`cilium/.heartbeat`), and [`IpamReconciler`] (one pod CIDR per node and
//!   family from the cluster's pool, decided by the sans-IO [`IpamPlanner`]
//!   over a [`CidrPool`]), and [`ServiceExporter`] (the cluster's services
//!   as `ClusterService`s, from etcd's service definitions or from the
//!   Kubernetes Services annotated global and shared).
//! - Kubernetes mode ([`KubernetesConfig`]): [`CrdInstaller`] installs the
//!   policy CRDs at start; the leader's [`PolicyValidator`] writes each
//!   policy's `Valid` condition.
//! - [`HealthServer`]: `/healthz` and Prometheus `/metrics` ([`OperatorMetrics`]).
//! - [`Operator`] composes all of it from an [`OperatorConfig`]; the
//!   `clustermesh-operator` binary builds that config from [`Flags`].
//! - For agents: [`wait_for_assignment`] and [`get_assignment`] read the pod
//!   CIDRs the operator assigned to a node.
//!
//! Not for: allocating identities (that is the agents' [`kvstore::Allocator`]).
//! Even in Kubernetes mode the mesh's state (identities, IPAM, heartbeat,
//! exported services) stays in etcd.

mod cidr_pool;
mod cluster_node;
mod config;
mod crd_installer;
mod flags;
mod health_server;
mod heartbeat;
mod identity_collector;
mod ipam_planner;
mod ipam_reconciler;
mod leader_election;
mod lease_election;
mod metrics;
mod operator;
mod pod_cidr_assignment;
mod policy_validator;
mod service_exporter;

pub use cidr_pool::{CidrPool, CidrPoolError, FreeCidrs, IpFamily};
pub use config::{
    DEFAULT_HEALTH_LISTEN, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_IDENTITY_GC_INTERVAL,
    DEFAULT_IDENTITY_GC_RATE_LIMIT, DEFAULT_LEASE_NAMESPACE, DEFAULT_NODE_CIDR_MASK_SIZE,
    DEFAULT_NODE_CIDR_MASK_SIZE_V6, DEFAULT_SESSION_TTL, KubernetesConfig, OperatorConfig,
    default_id,
};
pub use crd_installer::CrdInstaller;
pub use flags::{ConfigError, Flags};
pub use health_server::{HealthReport, HealthServer, HealthServerError, KubernetesReport};
pub use heartbeat::{Heartbeat, HeartbeatError};
pub use identity_collector::{IdentityCollector, IdentityCollectorError};
pub use ipam_planner::{IpamAction, IpamPlan, IpamPlanner, PoolUsage};
pub use ipam_reconciler::{DEFAULT_RELEASE_DELAY, IpamConfig, IpamError, IpamReconciler};
pub use leader_election::{
    Election, LeaderElection, LeaderElectionConfig, LeaderElectionError, LeaderHandle, Leadership,
    Term,
};
pub use lease_election::{LeaseElection, LeaseElectionConfig};
pub use metrics::{METRICS_PREFIX, OperatorMetrics};
pub use operator::{Operator, OperatorError, OperatorHandle};
pub use pod_cidr_assignment::{AssignmentError, get_assignment, wait_for_assignment};
pub use policy_validator::{PolicyValidator, valid_condition_patch};
pub use service_exporter::{
    ExportState, ServiceExporter, ServiceExporterError, ServiceSource, exported_services,
};

pub use daemon::error_chain;
