//! The `clustermesh-apiserver`: a cluster's mutual-TLS front door.
//!
//! Remote clusters (and, with admin credentials, the local cluster) reach the
//! cluster's etcd through this server. It speaks the etcd v3 gRPC API, so
//! unmodified etcd clients work against it (`etcdctl`, the `etcd-client`
//! crate, Cilium's agents), and it adds what a bare etcd cannot:
//!
//! - Authorization by client-certificate common name ([`Authorizer`]):
//!   `remote-<cluster>` reads only the state a remote cluster needs,
//!   `admin-<this cluster>` may do everything, anyone else is refused, with
//!   etcd's own gRPC codes and messages ([`EtcdError`]).
//! - Watch fan-out ([`WatchHub`]): downstream watches of the same range share
//!   one upstream etcd watch, so etcd's load does not grow with the number of
//!   remote agents. A watch from an older revision replays history and then
//!   joins the shared stream without a gap or a duplicate; a slow watcher is
//!   disconnected instead of buffered without bound; an upstream break (etcd
//!   restart) is resumed from the last revision, invisibly downstream.
//! - The cluster's `cilium/cluster-config/<name>` key, kept published on a
//!   lease ([`ClusterConfigPublisher`]).
//! - `/healthz`, `/readyz` and Prometheus `/metrics` ([`HealthServer`],
//!   [`Metrics`]); certificates reloaded on change without dropping streams.
//!
//! [`Apiserver`] composes all of it; the binary only parses [`Args`] into a
//! [`Config`], runs it and drains it on a signal.
//!
//! The same binary runs [`Kvstoremesh`] (`clustermesh-apiserver kvstoremesh`,
//! flags [`KvstoremeshArgs`]): the mirror of every remote cluster into the
//! local etcd's `cilium/cache/…`, so that local agents read one local
//! endpoint.
//!
//! Not for: serving the local cluster's agents in the hot path of writes (they
//! talk to etcd directly), or as a general-purpose etcd proxy (it serves the
//! RPCs the mesh needs; the others answer `Unimplemented`).

mod access_guard;
mod apiserver;
mod args;
mod authorizer;
mod cluster_config_publisher;
mod config;
mod etcd_error;
mod health_server;
mod key_range;
mod kv_service;
mod kvstoremesh;
mod lease_service;
mod lock_service;
mod maintenance_service;
mod metrics;
mod proto_codec;
mod role;
mod spawn;
mod upstream;
mod watch_hub;
mod watch_service;

pub use apiserver::{Apiserver, ApiserverError};
pub use args::{Args, ArgsError, env};
pub use authorizer::{Access, Authorizer, Verdict};
pub use certs::{PeerInfo, TlsListener};
pub use cluster_config_publisher::{ClusterConfigPublisher, PublisherError, PublisherStatus};
pub use config::{Config, DEFAULT_HEALTH_LISTEN, DEFAULT_LISTEN, WatchConfig};
pub use etcd_error::{EtcdError, REASON_ETCD_UNREACHABLE, REASON_METADATA_KEY};
pub use health_server::{HealthServer, HealthServerError};
pub use key_range::KeyRange;
pub use kvstoremesh::{
    DEFAULT_KVSTOREMESH_HEALTH_LISTEN, Kvstoremesh, KvstoremeshArgs, KvstoremeshConfig,
    KvstoremeshError, KvstoremeshStatus, MirrorView, StatusBoard, kvstoremesh_env,
};
pub use metrics::Metrics;
pub use role::Role;
pub use upstream::{Upstream, UpstreamError};
pub use watch_hub::{WatchHub, WatchHubStats};
