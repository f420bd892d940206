use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

/// Mode of private key files: readable by the owner only.
pub(crate) const KEY_MODE: u32 = 0o600;
/// Mode of certificate files: public.
pub(crate) const CERT_MODE: u32 = 0o644;

/// Why writing a PEM file failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("failed to create directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Writes `contents` to `path` so that a reader (or a file watcher) sees either
/// the old file or the complete new one: write a temporary file in the same
/// directory with the final `mode`, flush it to disk, rename it over `path`.
/// The mode is set when the file is created, so a key is never readable by
/// others, not even for a moment. The temporary name is random, so that
/// writers of one directory never share one.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{:016x}",
        file_name.to_string_lossy(),
        rand::random::<u64>()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // Exactly `mode`, whatever the umask took away at creation.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// [`write_atomically`], its failure naming the file.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), WriteError> {
    write_atomically(path, contents, mode).map_err(|source| WriteError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Creates `dir` (and its parents) if it is missing.
pub(crate) fn create_dir(dir: &Path) -> Result<(), WriteError> {
    fs::create_dir_all(dir).map_err(|source| WriteError::CreateDir {
        path: dir.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn replaces_atomically_with_the_requested_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.key");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();

        write_atomic(&path, b"new", KEY_MODE).unwrap();

        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["x.key"], "temporary file left behind");
    }

    #[test]
    fn error_names_the_path() {
        let err = write_atomic(Path::new("/nonexistent-dir/x.crt"), b"x", CERT_MODE).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x.crt"), "{err}");
    }
}
