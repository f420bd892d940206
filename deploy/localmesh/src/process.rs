//! Daemons of the mesh: started in a network namespace, in their own session
//! (they outlive the `clustermesh` command), logging to a file; stopped by
//! PID after checking the PID is still theirs.

use std::{
    fs::File,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::state::ProcessInfo;

/// Starts `program args` as a daemon inside `netns` (a name under
/// /run/netns; `None` = the root namespace).
pub(crate) fn spawn_daemon(
    netns: Option<&str>,
    program: &Path,
    args: &[String],
    envs: &[(&str, &str)],
    log: &Path,
) -> Result<ProcessInfo> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let ns_file = match netns {
        Some(name) => Some(
            File::open(Path::new("/run/netns").join(name))
                .with_context(|| format!("open network namespace {name}"))?,
        ),
        None => None,
    };
    let fd = ns_file.as_ref().map(|f| f.as_raw_fd());
    // SAFETY: setsid and setns are async-signal-safe; the namespace file stays
    // open in the parent until the child has been spawned.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = fd
                && libc::setns(fd, libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("start {}", program.display()))?;
    let pid = child.id();
    // The child is a daemon: nobody waits for it here; the kernel reaps it
    // when this process exits (or `down` kills it).
    std::mem::forget(child);
    Ok(ProcessInfo {
        pid,
        program: program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        log: log.to_path_buf(),
    })
}

/// Whether `p` still runs (and is the program it was).
pub fn is_running(p: &ProcessInfo) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", p.pid)) else {
        return false;
    };
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", p.pid)).unwrap_or_default();
    // A zombie has exited.
    let zombie = stat
        .rsplit(')')
        .next()
        .is_some_and(|rest| rest.trim_start().starts_with('Z'));
    !zombie && String::from_utf8_lossy(&cmdline).contains(&p.program)
}

/// Stops a daemon: SIGTERM, then SIGKILL after `grace`.
pub(crate) fn stop(p: &ProcessInfo, grace: Duration) {
    if !is_running(p) {
        return;
    }
    signal(p, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !is_running(p) {
            reap(p);
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(p, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_running(p) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    reap(p);
}

/// Kills a daemon at once (a crash).
pub(crate) fn kill(p: &ProcessInfo) {
    if is_running(p) {
        signal(p, libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_running(p) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    reap(p);
}

fn signal(p: &ProcessInfo, sig: libc::c_int) {
    // SAFETY: kill(2) on a PID we just checked belongs to our program.
    unsafe {
        libc::kill(p.pid as libc::pid_t, sig);
    }
}

/// Reaps the process if it is our child (started by this process).
fn reap(p: &ProcessInfo) {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on one PID; harmless if it is not our child.
    unsafe {
        libc::waitpid(p.pid as libc::pid_t, &mut status, libc::WNOHANG);
    }
}

/// The last `lines` lines of a log, for error messages.
pub fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Where the mesh's binaries are: `bin_dir/<name>`, with a clear error.
pub(crate) fn binary(bin_dir: &Path, name: &str) -> Result<PathBuf> {
    let path = bin_dir.join(name);
    if !path.is_file() {
        anyhow::bail!(
            "{} not found; build the workspace first (`cargo build --workspace`, or `make demo`)",
            path.display()
        );
    }
    Ok(path)
}
