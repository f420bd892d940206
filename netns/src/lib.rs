//! RAII network namespaces, veth pairs, addresses, routes and processes for
//! kernel tests and the local mesh.
//!
//! Everything a test creates is removed when its guard drops, also when the
//! test panics: [`NetNs`] deletes the namespace (and with it every interface,
//! address and route inside), [`Veth`] deletes the pair, [`Address`] and
//! [`Route`] remove themselves, [`Process`] kills its child. Configuration
//! shells out to `ip` (iproute2); errors carry the command line and its
//! stderr. Code that must run inside a namespace (a `TcpListener`, a netlink
//! call) uses [`NetNs::enter`] or [`run_in`], which run a closure on a
//! dedicated thread that has joined the namespace; sockets created there stay
//! in it. This crate is also the one place that calls `setns(2)`: [`setns`]
//! itself (async-signal-safe, for `pre_exec` hooks), [`join_before_exec`] for
//! a child process, and [`NetNsGuard`] for the calling thread until it drops.
//! For throughput benchmarks: [`RoutedPair`] (two pods routed through a
//! node namespace) and [`iperf`] (iperf3 between namespaces, and its figures).
//!
//! Not for production network management: there is no netlink API here, and
//! names are expected to be unique per process ([`unique_name`]). (The
//! `setns` helpers are the exception: plain syscalls without `ip`, which the
//! agent and its datapath use too.)

mod address;
mod command;
mod enter;
pub mod iperf;
mod name;
mod namespace;
mod process;
mod root;
mod route;
mod routed_pair;
mod shared_tool;
mod veth;
mod wait;

pub use address::Address;
pub use command::CommandError;
pub use enter::{NetNsGuard, join_before_exec, run_in, setns};
pub use name::unique_name;
pub use namespace::{NetNs, NetNsError};
pub use process::{Process, ProcessError, ProcessOutput};
pub use root::{in_ci, is_root, root_or_skip};
pub use route::Route;
pub use routed_pair::{RoutedPair, RoutedPairError};
pub use shared_tool::{SHARED_DIR_ENV, shared_tool};
pub use veth::Veth;
pub use wait::wait_until;
