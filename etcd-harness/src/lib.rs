//! A real etcd server for tests and benchmarks.
//!
//! [`TestEtcd::start`] runs the Debian `etcd` binary on free 127.0.0.1 ports with
//! its data in a fresh temporary directory, and returns once the server answers
//! `/health`. The handle can stop, kill, pause and restart the same server (same
//! data, same ports) for outage tests, and removes everything on drop, also when
//! the test panics. etcd is started with `PR_SET_PDEATHSIG`, so even a test
//! process killed by a timeout does not leave an etcd behind.
//!
//! [`TestEtcdCluster`] runs three such servers as one etcd cluster, to kill
//! and restart members (the leader, or the one a client is on).
//!
//! [`TcpProxy`] sits between a client and a server and can cut and restore
//! the connection, to partition a watcher from an etcd that keeps running.
//!
//! [`wait_until`] and [`eventually`] wait for a condition with a deadline.
//!
//! [`watch_load`] is a benchmark's watch load: lightweight `Watch` clients
//! that time every event, and a writer of time-stamped values.
//!
//! Not for production: the product's binaries connect to an etcd they are given.

mod cluster;
mod etcd;
mod port;
mod proxy;
mod wait;
pub mod watch_load;

pub use cluster::{CLUSTER_SIZE, TestEtcdCluster};
pub use etcd::{EtcdOptions, ServerTls, TestEtcd};
pub use port::free_port;
pub use proxy::TcpProxy;
pub use wait::{eventually, wait_until};

/// Makes the process `cmd` starts die (SIGKILL) with the thread that
/// starts it, so a test killed by a timeout leaves no server behind.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
