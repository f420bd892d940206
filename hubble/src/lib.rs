//! The Hubble server a clustermesh agent embeds, wire-compatible with
//! Cilium's (see `hubble-api`):
//!
//! - [`filter`]: `FlowFilter` allow and deny lists compiled once per
//!   request and matched against flows, with Cilium's semantics;
//! - [`field_mask`]: a `GetFlowsRequest.field_mask` applied to flows;
//! - [`names`]: node full names and TLS server names as Cilium forms them.
//!
//! It knows nothing of the datapath: the agent turns its events into
//! flows and feeds them in.

pub mod field_mask;
pub mod filter;
pub mod names;
