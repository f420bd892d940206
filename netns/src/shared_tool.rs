//! Tools from the workplace's `shared/` directory (beside the checkout, or
//! `CLUSTERMESH_SHARED`), such as the real Hubble CLI for compatibility
//! tests. They exist where `shared/` does: elsewhere the tests that need
//! them skip, with the reason printed, under CI too (a clean checkout has
//! no `shared/` beside it).

use std::path::{Path, PathBuf};

/// The environment variable naming the `shared/` directory.
pub const SHARED_DIR_ENV: &str = "CLUSTERMESH_SHARED";

/// `shared/<relative>` if it exists; otherwise `None`, after saying on
/// stderr that `what` is skipped and why.
pub fn shared_tool(relative: &str, what: &str) -> Option<PathBuf> {
    let shared = std::env::var_os(SHARED_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let path = shared.join(relative);
    if path.exists() {
        return Some(path);
    }
    eprintln!(
        "skipping {what}: {} does not exist (set {SHARED_DIR_ENV} to the shared/ directory)",
        path.display()
    );
    None
}
