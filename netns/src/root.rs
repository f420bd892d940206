//! Kernel tests that cannot run without root: skipped with a reason on a
//! developer's machine, failed under CI.

/// Whether the process runs with effective uid 0 (needed for namespaces,
/// veths and BPF).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether the environment says this is a CI run (`CI=true`, or `CI=1`), where
/// a test that cannot run is a failure rather than a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value.eq_ignore_ascii_case("true") || value == "1")
}

/// Whether `test`, which needs root (network namespaces, veths, BPF), can run.
///
/// As root: `true`. Otherwise, under CI ([`in_ci`]) it panics with the reason,
/// so that CI never reports a kernel test as passed that did not run; outside
/// CI it prints the reason on stderr and returns `false`, and the caller
/// returns early (the test is skipped). Every kernel test and benchmark goes
/// through here, directly or through [`skip_unless_root!`](crate::skip_unless_root).
pub fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    let reason = "needs root (network namespaces, veths, BPF)";
    if in_ci() {
        panic!("{test} {reason} and CI=true: run CI as root (.ci/run refuses otherwise)");
    }
    eprintln!("skipping {test}: {reason}; not run (under CI=true this fails)");
    false
}

/// Returns from the calling test with a message on stderr when the process is
/// not root, and fails the test instead under `CI=true` ([`root_or_skip`]).
/// `skip_unless_root!()` in tests returning `()`, `skip_unless_root!(Ok(()))`
/// in tests returning a `Result`.
#[macro_export]
macro_rules! skip_unless_root {
    () => {
        $crate::skip_unless_root!(())
    };
    ($ret:expr) => {
        // The calling function's path, for the message.
        fn here() {}
        let test = ::std::any::type_name_of_val(&here);
        if !$crate::root_or_skip(test.strip_suffix("::here").unwrap_or(test)) {
            return $ret;
        }
    };
}
