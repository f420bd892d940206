//! Builds the front end (`web/`, TypeScript bundled by esbuild) into
//! `$OUT_DIR/web` and lists its files for `include_bytes!`, so that the
//! binary carries the whole UI.
//!
//! `CLUSTERMESH_UI_DIST=DIR` embeds an already built front end instead
//! (DIR holds `index.html` and `assets/`), for machines without Node.js.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    let web = manifest.join("web");
    println!("cargo:rerun-if-env-changed=CLUSTERMESH_UI_DIST");
    let dist = match std::env::var_os("CLUSTERMESH_UI_DIST") {
        Some(dir) => PathBuf::from(dir),
        None => {
            for input in [
                "src",
                "index.html",
                "build.mjs",
                "package.json",
                "package-lock.json",
                "tsconfig.json",
            ] {
                println!("cargo:rerun-if-changed={}", web.join(input).display());
            }
            let dist = out.join("web");
            build_front_end(&web, &dist);
            dist
        }
    };
    let mut files = Vec::new();
    collect(&dist, &dist, &mut files);
    files.sort();
    assert!(
        files.iter().any(|(name, _)| name == "index.html"),
        "the front end in {} has no index.html",
        dist.display()
    );
    let mut table = String::from(
        "/// The front end's files: path (relative to the UI's root) and content.\npub(super) static FILES: &[(&str, &[u8])] = &[\n",
    );
    for (name, path) in &files {
        writeln!(
            table,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .expect("write to a string");
    }
    table.push_str("];\n");
    std::fs::write(out.join("web_files.rs"), table).expect("write web_files.rs");
}

/// `npm ci` (when `node_modules` does not match the lock file) and the
/// bundle, with a message that says what to install when npm is missing.
fn build_front_end(web: &Path, dist: &Path) {
    let lock = web.join("package-lock.json");
    let installed = web.join("node_modules/.package-lock.json");
    let stale = match (std::fs::metadata(&lock), std::fs::metadata(&installed)) {
        (Ok(l), Ok(i)) => match (l.modified(), i.modified()) {
            (Ok(l), Ok(i)) => l > i,
            _ => true,
        },
        _ => true,
    };
    if stale {
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(web),
            "npm ci",
        );
    }
    let _ = std::fs::remove_dir_all(dist);
    run(
        Command::new("npm")
            .args(["run", "--silent", "build", "--", "--outdir"])
            .arg(dist)
            .current_dir(web),
        "npm run build",
    );
}

fn run(command: &mut Command, what: &str) {
    match command.status() {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("{what} in ui/web failed ({status}); see its output above"),
        Err(e) => panic!(
            "cannot run {what} for the Hubble UI's front end ({e}): install Node.js and npm \
             (`make deps` does), or set CLUSTERMESH_UI_DIST to an already built front end"
        ),
    }
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let name = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            files.push((name, path));
        }
    }
}
