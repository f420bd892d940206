//! The Hubble server a clustermesh agent embeds, wire-compatible with
//! Cilium's (see `hubble-api`):
//!
//! - [`filter`]: `FlowFilter` allow and deny lists compiled once per
//!   request and matched against flows, with Cilium's semantics;
//! - [`field_mask`]: a `GetFlowsRequest.field_mask` applied to flows;
//! - [`names`]: node full names and TLS server names as Cilium forms them;
//! - [`ring`]: the ring buffer of events;
//! - [`observer`]: the local `Observer` service over a [`FlowBuffer`];
//! - [`peer`]: the `Peer` service over the nodes the agent knows;
//! - [`pki`]: a cluster's Hubble certificates, for servers and a relay run
//!   together in tests and benchmarks;
//! - [`server`]: both services and gRPC health on a unix socket and on TCP
//!   with mutual TLS.
//!
//! It knows nothing of the datapath: the agent turns its events into
//! flows and feeds them in.

pub mod client;
pub mod field_mask;
pub mod filter;
pub mod names;
pub mod observer;
pub mod peer;
pub mod pki;
pub mod ring;
pub mod server;
pub mod time;

pub use observer::{Event, FlowBuffer, FlowRecord, LocalObserver};
