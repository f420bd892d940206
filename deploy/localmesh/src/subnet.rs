//! Which fabric subnet a mesh uses: `172.(16+k).0.0/16`, k in 0..16, taken
//! with a lock directory so that meshes (and parallel tests) never share one.

use std::path::PathBuf;

use anyhow::{Result, bail};

const LOCKS: &str = "/run/clustermesh/subnets";

fn lock_path(k: u8) -> PathBuf {
    PathBuf::from(LOCKS).join(k.to_string())
}

/// Takes a free subnet index for the mesh in `owner` (its directory).
pub(crate) fn acquire(owner: &std::path::Path) -> Result<u8> {
    std::fs::create_dir_all(LOCKS)?;
    for k in 0..16u8 {
        let path = lock_path(k);
        // A lock whose mesh directory is gone is stale (its mesh was removed
        // without `down`, or a test cleaned up its temp dir).
        if let Ok(holder) = std::fs::read_to_string(path.join("owner"))
            && !std::path::Path::new(holder.trim()).exists()
        {
            let _ = std::fs::remove_dir_all(&path);
        }
        if std::fs::create_dir(&path).is_ok() {
            std::fs::write(path.join("owner"), owner.to_string_lossy().as_bytes())?;
            return Ok(k);
        }
    }
    bail!("all 16 local mesh subnets are in use; remove a mesh with `clustermesh down --dir DIR`")
}

pub(crate) fn release(k: u8) {
    let _ = std::fs::remove_dir_all(lock_path(k));
}
