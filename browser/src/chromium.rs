//! Where Chromium is, and skipping tests on machines without it.

use std::{
    env,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

/// Environment variable naming the Chromium binary to use instead of the
/// default (`/usr/bin/chromium`, then `chromium` on `PATH`).
pub const CHROMIUM_ENV: &str = "CHROMIUM";

/// Debian's launcher script (package `chromium`).
const DEBIAN_CHROMIUM: &str = "/usr/bin/chromium";

/// Where Chromium is: `$CHROMIUM` if set (taken as given, so that a wrong
/// value fails at launch instead of silently skipping), else
/// `/usr/bin/chromium`, else `chromium` on `PATH`; `None` when none exists.
pub fn chromium_path() -> Option<PathBuf> {
    if let Some(path) = env::var_os(CHROMIUM_ENV).filter(|path| !path.is_empty()) {
        return Some(PathBuf::from(path));
    }
    if is_executable(Path::new(DEBIAN_CHROMIUM)) {
        return Some(PathBuf::from(DEBIAN_CHROMIUM));
    }
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join("chromium"))
        .find(|path| is_executable(path))
}

/// Whether `test`, which needs Chromium, can run: `Some(path)` when
/// [`chromium_path`] finds it. Otherwise it prints
/// `skipping <test>: needs Chromium (apt-get install chromium)` on stderr
/// and returns `None`, and the caller returns early; under CI
/// ([`netns::in_ci`]) it panics with that reason instead, so that CI never
/// reports a browser test as passed that did not run.
pub fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    if let Some(path) = chromium_path() {
        return Some(path);
    }
    let reason = "needs Chromium (apt-get install chromium)";
    if netns::in_ci() {
        panic!("{test} {reason} and CI=true: `make deps` installs it");
    }
    eprintln!("skipping {test}: {reason}");
    None
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_are_told_from_other_files() {
        assert!(is_executable(Path::new("/bin/sh")));
        assert!(!is_executable(Path::new("/etc/passwd")));
        assert!(!is_executable(Path::new("/nonexistent/chromium")));
        assert!(!is_executable(Path::new("/usr")));
    }
}
