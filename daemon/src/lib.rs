//! What every clustermesh daemon (agent, apiserver, operator) shares:
//! `clustermesh_build_info` and the standard `process_*` metrics, read from
//! `/proc` at scrape time.
//!
//! Not for: a daemon's own metrics (each crate registers those), or hosts
//! without `/proc` (the process metrics are then left out, never wrong).

mod process_metrics;

pub use process_metrics::register_process_metrics;
