//! Joining a network namespace: the one place that calls `setns(2)`.
//!
//! A namespace is joined by a thread, never by a process as a whole, so
//! each situation has its own way:
//!
//! - a child between fork and exec: [`join_before_exec`] (built on
//!   [`setns`], which is async-signal-safe);
//! - the calling thread, for a few calls (netlink, ifindex look-ups), and
//!   back afterwards: [`NetNsGuard`];
//! - a closure on a dedicated thread that ends with it: [`run_in`] (sockets
//!   the closure creates stay in the namespace).

use std::{
    fs::File,
    io,
    marker::PhantomData,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd},
        unix::process::CommandExt,
    },
    path::Path,
    process::Command,
};

use crate::namespace::NetNsError;

/// The calling thread's own network namespace.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// Moves the calling thread into the network namespace open as `ns` (a
/// file such as `/run/netns/<name>` or `/proc/<pid>/ns/net`).
///
/// Async-signal-safe: the raw syscall and nothing else (no allocation, no
/// lock), so it may run in a `pre_exec` hook.
pub fn setns(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns(2) reads no memory of ours and changes only the calling
    // thread's namespace; an fd that is not a network namespace is an error.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the child that `command` spawns join the namespace `ns` before it
/// execs. The command owns the file until it is dropped, so the descriptor
/// is open in the child (it is close-on-exec and does not leak further).
pub fn join_before_exec(command: &mut Command, ns: File) {
    // SAFETY: the hook only calls `setns`, which is async-signal-safe.
    unsafe {
        command.pre_exec(move || setns(ns.as_fd()));
    }
}

/// Runs `f` on a dedicated thread that has joined the namespace at `path`,
/// and returns its result. Sockets created by `f` keep living in the
/// namespace after `f` returns, whichever thread uses them later.
pub fn run_in<F, R>(path: &Path, f: F) -> Result<R, NetNsError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let ns = open(path)?;
    run_on_thread(ns, &path.display().to_string(), f)
}

/// Opens a namespace file.
pub(crate) fn open(path: &Path) -> Result<File, NetNsError> {
    File::open(path).map_err(|source| NetNsError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// [`run_in`] for an open namespace file; `name` names it in errors.
pub(crate) fn run_on_thread<F, R>(ns: File, name: &str, f: F) -> Result<R, NetNsError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // Only this short-lived thread changes namespace.
                setns(ns.as_fd()).map_err(|source| NetNsError::Enter {
                    name: name.to_owned(),
                    source,
                })?;
                Ok(f())
            })
            .join()
            .map_err(|_| NetNsError::Panicked {
                name: name.to_owned(),
            })?
    })
}

/// While alive, the calling thread is in another network namespace; on
/// drop it returns to the one it came from. Not `Send`: only the thread
/// that entered can go back.
#[derive(Debug)]
pub struct NetNsGuard {
    original: File,
    _not_send: PhantomData<*const ()>,
}

impl NetNsGuard {
    /// Moves the calling thread into the namespace at `path` (e.g.
    /// `/run/netns/<name>`).
    pub fn enter(path: &Path) -> io::Result<Self> {
        let original = File::open(THREAD_NETNS)?;
        let target = File::open(path)?;
        setns(target.as_fd())?;
        Ok(Self {
            original,
            _not_send: PhantomData,
        })
    }
}

impl Drop for NetNsGuard {
    fn drop(&mut self) {
        if let Err(error) = setns(self.original.as_fd()) {
            // Continuing in the wrong namespace would silently misdirect
            // every later network call of this thread.
            panic!("cannot return to the original network namespace: {error}");
        }
    }
}
