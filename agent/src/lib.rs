//! The clustermesh node agent.
//!
//! It registers its node, hands out pod addresses, turns each endpoint's
//! labels into a cluster-wide identity, publishes the endpoint's ipcache
//! entry, and programs the eBPF datapath from one global view of identities,
//! IPs, nodes, policies and services gathered from the local cluster and
//! every remote cluster. `clustermesh-cni` creates endpoints through the
//! agent's REST API; `clustermesh-agent debug …` reads its state.
//!
//! Not for: running without the operator's IPAM unless `--pod-cidr` is set,
//! or on a node where another CNI owns the interfaces it manages.

mod agent;
mod api;
mod api_client;
#[doc(hidden)]
pub mod bench_support;
mod cni;
mod config;
mod conntrack_gc;
mod control_loop;
mod datapath_maps;
mod datapath_sync;
mod debug;
mod dns_proxy;
mod endpoint;
mod endpoint_manager;
mod health;
mod hubble;
mod kubernetes;
mod memory;
mod metrics;
mod plumbing;
mod policy_resolver;
mod remote_clusters;
#[cfg(test)]
mod remote_properties;
mod route_plan;
mod routes;
mod service_merger;
mod tables;
mod views;

pub use agent::Agent;
pub use api_client::{ApiClient, ClientError};
pub use cni::{CniError, SUPPORTED_VERSIONS, run_cni};
pub use config::{
    AgentArgs, AgentConfig, ConfigError, DEFAULT_API_SOCKET, default_hubble_socket, env,
};
pub use conntrack_gc::ConntrackGcConfig;
pub use debug::{DebugArgs, run_debug};
pub use endpoint::{Endpoint, EndpointId, EndpointRequest};
pub use hubble::{FlowIngestor, HubbleConfig};
pub use memory::tune_heap;
pub use metrics::AgentMetrics;
pub use policy_resolver::{
    DEFAULT_DNS_PROXY_PORT, DirectionRules, EndpointRules, NamedPorts, PortNames, RuleCookies,
    RuleRef, Selections, cidr_identity_labels, cidr_prefixes, compile_fqdn_selector,
    entries_for_identity, fqdn_identity_labels, fqdn_selectors, names_egress_ports, resolve,
    resolve_with, rules_for_endpoint, wildcard_entries,
};
pub use remote_clusters::RemoteClusterConfig;
pub use service_merger::{
    CandidateBackend, MergedFrontend, Mode as ServiceMode, RemoteService, SkipReason,
    SkippedBackend, Slot, merge,
};
pub use views::{
    BackendView, CandidateView, ConntrackView, FqdnView, IdentityView, IpCacheView,
    KubernetesResourceView, KubernetesView, MapEntryView, PolicyEntryView, PolicyView,
    RefusedRouteView, RemoteView, ServiceView, SkippedBackendView, SourceView, StatusView,
};
