//! What every clustermesh daemon (agent, apiserver, operator) shares:
//! `clustermesh_build_info` and the standard `process_*` metrics, read from
//! `/proc` at scrape time; the JSON body of `/healthz` and `/readyz`.
//!
//! Not for: a daemon's own metrics (each crate registers those), or hosts
//! without `/proc` (the process metrics are then left out, never wrong).

mod health;
mod process_metrics;

pub use health::{Check, Health};

pub use process_metrics::register_process_metrics;
