//! What every clustermesh daemon (agent, apiserver, operator) shares:
//!
//! - how its binary runs: [`Daemon`] sets up logging, runs the async main
//!   until it ends or [`shutdown`] (SIGTERM or SIGINT) cancels it, drains,
//!   and exits with a named [`Exit`] code ([`parse_flags`] does the same for
//!   bad flags);
//! - `clustermesh_build_info` and the standard `process_*` metrics, read from
//!   `/proc` at scrape time; the JSON body of `/healthz` and `/readyz`.
//!
//! Not for: a daemon's own metrics (each crate registers those), its
//! configuration, or hosts without `/proc` (the process metrics are then left
//! out, never wrong).

mod daemon;
mod daemon_error;
mod error_chain;
mod exit;
mod flags;
mod health;
mod process_metrics;
mod shutdown;

pub use daemon::{DEFAULT_LOG_ENV, Daemon};
pub use daemon_error::DaemonError;
pub use error_chain::error_chain;
pub use exit::Exit;
pub use flags::{flags_error, parse_flags};
pub use health::{Check, Health};
pub use process_metrics::register_process_metrics;
pub use shutdown::shutdown;
