//! Temporarily moving the calling thread into another network namespace
//! (for netlink and ifindex look-ups on interfaces that live there).

use std::{fs::File, io, os::fd::AsRawFd, path::Path};

/// While alive, the calling thread is in the target namespace; on drop it
/// returns to the namespace it came from.
pub(crate) struct NetnsGuard {
    original: File,
}

impl NetnsGuard {
    /// Enters the namespace at `path` (e.g. `/run/netns/<name>`).
    pub(crate) fn enter(path: &Path) -> io::Result<Self> {
        let original = File::open("/proc/thread-self/ns/net")?;
        let target = File::open(path)?;
        // SAFETY: setns on valid namespace files affects only this thread.
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { original })
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        // SAFETY: as above; returning to the namespace we were in.
        let rc = unsafe { libc::setns(self.original.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            // Continuing in the wrong namespace would silently misdirect
            // every later network call of this thread.
            panic!(
                "cannot return to the original network namespace: {}",
                io::Error::last_os_error()
            );
        }
    }
}
