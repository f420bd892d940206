//! The eBPF datapath: identity-based ingress policy, conntrack and
//! global-service load balancing on each endpoint's host-side veth.
//!
//! The C programs (`c/datapath.c`, compiled by `build.rs` with clang) run on
//! TC hooks of the host-side veth of every endpoint:
//!
//! * TC **ingress** of the host side sees what the pod *sends*:
//!   `cm_from_endpoint` balances service frontends to backends (of any
//!   cluster; DNAT, sticky through conntrack) and records the endpoint's
//!   connections;
//! * TC **egress** of the host side sees what is *delivered to* the pod:
//!   `cm_to_endpoint` passes replies of the pod's connections (rewriting a
//!   backend source back to the service frontend) and checks new inbound
//!   connections against the pod's policy by source identity from the
//!   ipcache (unknown source = world, identity 2).
//!
//! [`Datapath`] loads the object, reuses or creates the maps pinned under a
//! bpffs directory and attaches/detaches endpoints. Typed map handles
//! ([`TypedMap`]) offer single and batched writes, dumps and
//! [`TypedMap::reconcile`] (desired content -> minimal writes). Key and
//! value types are `#[repr(C)]` mirrors of `c/datapath.h`. Pure decisions
//! ([`plan`], [`evaluate`], [`service_entries`]) are sans-IO.
//!
//! Not for: computing policy from rules or merging services (the agent does
//! that and hands the result to the reconciler).

mod address;
mod backend;
mod bpffs;
mod conntrack;
mod conntrack_gc;
mod datapath;
mod describe;
mod endpoint;
mod flow_event;
mod flow_reader;
mod ipcache;
#[cfg(test)]
mod layout;
mod policy;
mod protocol;
mod reconcile;
mod record;
mod service;
mod syscall;
mod test_frame;
mod typed_map;

pub use address::{FAMILY_V4, FAMILY_V6, PROXY_V4, PROXY_V6};
pub use backend::{BACKENDS_MAP, BackendKey, BackendMap, BackendValue};
pub use bpffs::BpffsError;
pub use conntrack::{CONNTRACK_MAP, ConntrackMap, CtKey, CtScope, CtValue};
pub use conntrack_gc::{CtGcStats, CtLifetimes, monotonic_now_ns};
pub use datapath::{
    DEFAULT_IPCACHE_MAX_ENTRIES, Datapath, DatapathConfig, DatapathError, EmptyClassifier,
    EndpointAttach, EndpointDetach, Program, TestRun, datapath_object,
};
pub use describe::{Describe, DescribeValue, FieldValue, Fields, fields_line, protocol_name};
pub use endpoint::{ENDPOINTS_MAP, EndpointInfo, EndpointKey, EndpointMap, EndpointPolicy};
pub use flow_event::{DropReason, FlowDirection, FlowEvent, PolicyMatch, Verdict};
pub use flow_reader::{FLOWS_LOST_MAP, FLOWS_MAP, FlowReader, FlowReaderError};
pub use ipcache::{IPCACHE_MAP, IpCacheKey, IpCacheMap, IpCacheValue};
pub use policy::{
    Direction, IDENTITY_ANY, L4Match, LEGACY_POLICY_MAP, MatchType, POLICY_MAP, PolicyAction,
    PolicyKey, PolicyMap, PolicyValue, PolicyVerdict, evaluate, evaluate_ingress,
};
pub use protocol::Protocol;
pub use reconcile::{ReconcilePlan, ReconcileStats, plan};
pub use record::Record;
pub use service::{SERVICES_MAP, ServiceKey, ServiceMap, ServiceValue, service_entries};
pub use test_frame::{tcp_syn_frame, tcp_syn_frame_from};
pub use typed_map::{MapError, TypedMap};

/// Reserved identity: unknown.
pub const IDENTITY_UNKNOWN: u32 = 0;
/// Reserved identity: the local host.
pub const IDENTITY_HOST: u32 = 1;
/// Reserved identity: anything outside the mesh (and any source missing from
/// the ipcache).
pub const IDENTITY_WORLD: u32 = 2;
/// Reserved identity: another node of the mesh.
pub const IDENTITY_REMOTE_NODE: u32 = 6;
