//! Skipping kernel tests when not running as root.

/// Whether the process runs with effective uid 0 (needed for namespaces,
/// veths and BPF).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Returns from the calling test (which then passes) with a message on stderr
/// when the process is not root. `skip_unless_root!()` in tests returning
/// `()`, `skip_unless_root!(Ok(()))` in tests returning a `Result`.
#[macro_export]
macro_rules! skip_unless_root {
    () => {
        $crate::skip_unless_root!(())
    };
    ($ret:expr) => {
        if !$crate::is_root() {
            eprintln!(
                "skipping {}: needs root (network namespaces, veths, BPF)",
                module_path!()
            );
            return $ret;
        }
    };
}
