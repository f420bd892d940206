//! Making sure the pin directory lives on a mounted BPF filesystem.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

/// `statfs.f_type` of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The conventional bpffs mount point.
pub(crate) const DEFAULT_MOUNT: &str = "/sys/fs/bpf";

/// Serialises "check, then mount" across processes (tests run in parallel).
const LOCK_FILE: &str = "/run/clustermesh-bpffs.lock";

/// The pin directory is not usable.
#[derive(Debug, thiserror::Error)]
pub enum BpffsError {
    /// Mounting bpffs at the default mount point failed.
    #[error("cannot mount bpffs at {path}")]
    Mount {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The directory is not on a bpffs (and is not under the default mount
    /// point, which we would mount).
    #[error("{path} is not on a BPF filesystem (mount one: `mount -t bpf bpf <dir>`)")]
    NotBpffs { path: PathBuf },
    /// Creating the pin directory failed.
    #[error("cannot create pin directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statfs writes into a zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Mounts bpffs at `/sys/fs/bpf` if `dir` is below it and nothing is
/// mounted there yet, then creates `dir`, which must end up on bpffs.
pub(crate) fn ensure_pin_dir(dir: &Path) -> Result<(), BpffsError> {
    let mount_point = Path::new(DEFAULT_MOUNT);
    if dir.starts_with(mount_point) && !is_bpffs(mount_point).unwrap_or(false) {
        let lock = File::options()
            .create(true)
            .append(true)
            .open(LOCK_FILE)
            .map_err(|source| BpffsError::Mount {
                path: mount_point.into(),
                source,
            })?;
        // SAFETY: flock on an open file; released when `lock` closes.
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        if !is_bpffs(mount_point).unwrap_or(false) {
            let target = CString::new(DEFAULT_MOUNT).expect("no NUL");
            let fstype = CString::new("bpf").expect("no NUL");
            // SAFETY: valid NUL-terminated strings, no data argument.
            let rc = unsafe {
                libc::mount(
                    fstype.as_ptr(),
                    target.as_ptr(),
                    fstype.as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            if rc != 0 {
                return Err(BpffsError::Mount {
                    path: mount_point.into(),
                    source: io::Error::last_os_error(),
                });
            }
            tracing::info!(path = DEFAULT_MOUNT, "mounted bpffs");
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| BpffsError::CreateDir {
        path: dir.into(),
        source,
    })?;
    if !is_bpffs(dir).unwrap_or(false) {
        return Err(BpffsError::NotBpffs { path: dir.into() });
    }
    Ok(())
}
