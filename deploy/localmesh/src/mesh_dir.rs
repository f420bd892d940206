//! The mesh directory: `up` takes only a new or empty directory outside any
//! other mesh, and `down` removes only what `up` made there.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::{error::refuse, state::MeshState};

/// Checks `dir` for `up` and creates it when missing. Returns its canonical
/// path and whether it was created here.
pub(crate) fn prepare(dir: &Path) -> Result<(PathBuf, bool)> {
    let absolute =
        std::path::absolute(dir).with_context(|| format!("resolve {}", dir.display()))?;
    // `up --dir M/c1` inside a running mesh M would later remove M's files.
    for ancestor in absolute.ancestors().skip(1) {
        if MeshState::path(ancestor).is_file() {
            refuse!(
                "{} is inside the mesh at {}; choose a directory outside it",
                dir.display(),
                ancestor.display()
            );
        }
    }
    let created = match std::fs::read_dir(&absolute) {
        Ok(mut entries) => {
            if MeshState::path(&absolute).exists() {
                refuse!(
                    "{} already holds a mesh; run `clustermesh down --dir {}` first",
                    dir.display(),
                    dir.display()
                );
            }
            if let Some(entry) = entries.next() {
                let name = entry
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .unwrap_or_default();
                refuse!(
                    "{} is not empty (it holds {name:?}); `up` needs a new or empty directory, \
                     because `down` removes what `up` made there",
                    dir.display()
                );
            }
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&absolute)
                .with_context(|| format!("create {}", dir.display()))?;
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            refuse!("{} is not a directory", dir.display())
        }
        Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
    };
    let canonical =
        std::fs::canonicalize(&absolute).with_context(|| format!("resolve {}", dir.display()))?;
    Ok((canonical, created))
}

/// Checks that `dir/mesh.json` describes the mesh in `dir` (a copied
/// `mesh.json` must not make `down` remove another mesh's files).
pub(crate) fn check_owner(dir: &Path, state: &MeshState) -> Result<()> {
    let here = std::fs::canonicalize(dir).with_context(|| format!("resolve {}", dir.display()))?;
    if here != state.dir {
        refuse!(
            "{} describes the mesh at {}, not one in {}; nothing was removed",
            MeshState::path(dir).display(),
            state.dir.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Removes what the mesh made in its directory, then the directory itself
/// when `up` created it and nothing else is left in it.
pub(crate) fn remove_owned(state: &MeshState, progress: &mut dyn FnMut(&str)) -> Result<()> {
    let mut owned = state.owned.clone();
    if owned.is_empty() {
        // A mesh.json from before ownership was recorded: what `up` made then.
        owned.push("pki".into());
        owned.extend(state.clusters.iter().map(|c| PathBuf::from(&c.name)));
    }
    for name in &owned {
        if name.is_absolute() || name.components().count() != 1 {
            // Only direct children of the mesh directory are ever recorded.
            continue;
        }
        let path = state.dir.join(name);
        let result = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(_) => continue,
        };
        result.with_context(|| format!("remove {}", path.display()))?;
    }
    let json = MeshState::path(&state.dir);
    let _ = std::fs::remove_file(json.with_extension("json.tmp"));
    std::fs::remove_file(&json).with_context(|| format!("remove {}", json.display()))?;
    let left: Vec<String> = std::fs::read_dir(&state.dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if !left.is_empty() {
        progress(&format!(
            "kept {}: it holds files the mesh did not make ({})",
            state.dir.display(),
            left.join(", ")
        ));
    } else if state.created_dir {
        std::fs::remove_dir(&state.dir)
            .with_context(|| format!("remove {}", state.dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_empty_and_nested_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("important.txt"), "notes").unwrap();
        let err = prepare(&d).unwrap_err();
        assert!(err.downcast_ref::<crate::Refused>().is_some(), "{err:#}");
        assert!(err.to_string().contains("not empty"), "{err:#}");
        assert_eq!(
            std::fs::read_to_string(d.join("important.txt")).unwrap(),
            "notes"
        );

        let m = tmp.path().join("m");
        std::fs::create_dir_all(m.join("c1")).unwrap();
        std::fs::write(m.join("mesh.json"), "{}").unwrap();
        for inside in [m.join("c1"), m.join("c1/new"), m.join("new")] {
            let err = prepare(&inside).unwrap_err();
            assert!(err.to_string().contains("inside the mesh"), "{err:#}");
        }
        assert!(!m.join("new").exists() && !m.join("c1/new").exists());

        let (canonical, created) = prepare(&tmp.path().join("fresh")).unwrap();
        assert!(created && canonical.is_dir());
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(!prepare(&empty).unwrap().1);
    }

    fn state(dir: &Path, created_dir: bool) -> MeshState {
        MeshState::new(dir.to_path_buf(), 0, PathBuf::new(), created_dir)
    }

    #[test]
    fn removes_only_what_it_owns() {
        let tmp = tempfile::tempdir().unwrap();
        let d = std::fs::canonicalize(tmp.path()).unwrap().join("d");
        std::fs::create_dir(&d).unwrap();
        let mut s = state(&d, true);
        s.save().unwrap();
        std::fs::create_dir_all(s.own("pki").unwrap().join("sub")).unwrap();
        std::fs::write(s.own("c1").unwrap(), "x").unwrap();
        std::fs::write(d.join("important.txt"), "notes").unwrap();
        let mut said = Vec::new();
        remove_owned(&s, &mut |m| said.push(m.to_string())).unwrap();
        let left: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["important.txt"]);
        assert!(said[0].contains("important.txt"), "{said:?}");

        // Nothing else left: the directory `up` created goes too.
        std::fs::remove_file(d.join("important.txt")).unwrap();
        s.save().unwrap();
        remove_owned(&s, &mut |_| {}).unwrap();
        assert!(!d.exists());
    }

    #[test]
    fn a_copied_mesh_json_removes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let (a, b) = (root.join("a"), root.join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let s = state(&a, true);
        let err = check_owner(&b, &s).unwrap_err();
        assert!(err.downcast_ref::<crate::Refused>().is_some(), "{err:#}");
        check_owner(&a, &s).unwrap();
    }
}
