//! The etcd-backed store of clustermesh.
//!
//! - [`Client`]: the etcd operations the mesh needs (get, paginated list,
//!   create-only, compare-and-swap, leases, locks) with clear errors and a
//!   deadline on every request; plain or mutual TLS.
//! - [`Session`]: one lease per process, kept alive; its loss is detected and a
//!   new lease replaces it.
//! - [`WatchStore`]: the read side, list-then-watch of a prefix that survives
//!   etcd restarts and compaction without missing or repeating an event;
//!   [`RestartableWatchStore`] the same across one connection after another.
//! - [`SyncStore`]: the write side, the keys a process owns, re-created when the
//!   session or someone else removes them, with a canary once the initial set
//!   is written.
//! - [`Allocator`]: lock-free, cluster-wide identity allocation;
//!   [`IdentityCache`]: the identities of a cluster (local or remote, validated);
//!   [`IdentityGc`]: the operator's collector of unused identities.
//! - The contract of why a server failed beyond its gRPC code ([`reason`]).
//! - The key layout ([`keys`]) and Cilium-compatible values ([`values`]), with
//!   the newtypes they are made of ([`ClusterName`], [`ClusterId`],
//!   [`NumericIdentity`], [`Labels`], [`KeyPrefix`]).
//!
//! Not for: talking to a Kubernetes API server, or storing anything but mesh
//! state (the value types validate what Cilium's agents would).

mod allocator;
mod backoff;
mod client;
mod cluster;
mod error;
mod identity;
mod identity_cache;
mod identity_gc;
pub mod keys;
mod labels;
mod list_budget;
mod page;
mod prefix;
pub mod reason;
pub mod remote;
mod session;
mod short_key;
mod sync_store;
mod tick_grid;
mod value;
pub mod values;
mod watch_store;
mod watch_task;

pub use allocator::{
    Allocation, Allocator, AllocatorConfig, AllocatorError, AllocatorRunner, AllocatorStats,
};
pub use backoff::Backoff;
pub use client::{
    Client, ClientConfig, Kv, LeaseId, LockGuard, Pager, ServerStatus, TlsConfig, may_send_again,
};
pub use cluster::{
    ClusterError, ClusterId, ClusterName, MAX_CLUSTER_NAME_LEN, MaxConnectedClusters,
};
pub use error::{Error, ErrorKind};
pub use identity::{IdentityRange, NumericIdentity};
pub use identity_cache::{IdentityCache, IdentityCacheRunner, remote_identity_validator};
pub use identity_gc::{GcRound, IdentityGc, IdentityGcConfig};
pub use labels::{
    CLUSTER_LABEL, Label, LabelError, LabelText, Labels, NAMESPACE_LABEL, SOURCE_K8S, SOURCE_UNSPEC,
};
pub use list_budget::ListBudget;
pub use page::{KvRef, Page};
pub use prefix::KeyPrefix;
pub use session::{
    DEFAULT_SESSION_TTL, SESSION_RETRY_INTERVAL, Session, SessionHandle, SessionState,
};
pub use sync_store::{SyncStatus, SyncStore, SyncStoreConfig, SyncStoreRunner};
pub use tick_grid::on_grid;
pub use value::{DecodeError, InvalidReason, RawEntry, StoreValue};
pub use watch_store::{
    Event, RestartableWatchStore, Validator, WatchStore, WatchStoreConfig, WatchStoreStats,
};
pub use watch_task::WatchTask;
