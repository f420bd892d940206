//! Daemons of the mesh: started in a network namespace, in their own session
//! (they outlive the `clustermesh` command), logging to a file; stopped by
//! PID after checking the PID is still theirs.

use std::{
    fs::File,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::{error::refuse, interrupt, state::ProcessInfo, topology};

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
    // SAFETY: setsid(2) is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    if let Some(name) = netns {
        let ns = File::open(topology::netns_path(name))
            .with_context(|| format!("open network namespace {name}"))?;
        netns::join_before_exec(&mut cmd, ns);
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

/// How often [`stop`] looks whether SIGTERM did its job.
const STOP_POLL: Duration = Duration::from_millis(50);
/// How long a process may take to die of SIGKILL before we stop waiting.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often [`kill`] looks whether SIGKILL did its job.
const KILL_POLL: Duration = Duration::from_millis(20);
/// How often [`wait_until`] polls.
const READY_POLL: Duration = Duration::from_millis(100);

/// Stops a daemon: SIGTERM, then SIGKILL after `grace`.
pub(crate) fn stop(p: &ProcessInfo, grace: Duration) {
    if !is_running(p) {
        return;
    }
    signal(p, libc::SIGTERM);
    if exits_within(p, grace, STOP_POLL) {
        reap(p);
    } else {
        kill(p);
    }
}

/// Kills a daemon at once (a crash).
pub(crate) fn kill(p: &ProcessInfo) {
    if is_running(p) {
        signal(p, libc::SIGKILL);
        exits_within(p, KILL_TIMEOUT, KILL_POLL);
    }
    reap(p);
}

/// Looks every `poll` whether `p` is gone; whether it went within `timeout`.
fn exits_within(p: &ProcessInfo, timeout: Duration, poll: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !is_running(p) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(poll);
    }
}

/// Refuses to start what runs already: a second copy would fail on its
/// ports and overwrite the first one's PID, which nothing could stop then.
pub(crate) fn refuse_running(
    what: &str,
    cluster: &str,
    process: Option<&ProcessInfo>,
) -> Result<()> {
    if let Some(p) = process
        && is_running(p)
    {
        refuse!(
            "{what} of {cluster} is already running (pid {}); stop it first with \
             `clustermesh mesh stop {what} {cluster}`",
            p.pid
        );
    }
    Ok(())
}

/// Polls `ok` until it holds; fails at once when `process` exits or `up`
/// is interrupted, and after `timeout` with the process's last log line.
pub(crate) fn wait_until(
    what: &str,
    timeout: Duration,
    process: Option<&ProcessInfo>,
    mut ok: impl FnMut() -> bool,
) -> Result<()> {
    let start = Instant::now();
    while !ok() {
        interrupt::check()?;
        if let Some(p) = process
            && !is_running(p)
        {
            anyhow::bail!(
                "{what}: the process exited: {} (log: {})",
                failure_cause(&p.log),
                p.log.display()
            );
        }
        if start.elapsed() > timeout {
            let log = process
                .map(|p| {
                    format!(
                        "; last log line: {} (log: {})",
                        failure_cause(&p.log),
                        p.log.display()
                    )
                })
                .unwrap_or_default();
            anyhow::bail!("{what} not ready within {timeout:?}{log}");
        }
        std::thread::sleep(READY_POLL);
    }
    Ok(())
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

/// The line of a log that says why a daemon failed: the last one that
/// reads like an error (else the last line), without colour codes, short.
pub(crate) fn failure_cause(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<String> = text
        .lines()
        .map(strip_ansi)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let is_error = |l: &&String| {
        let l = l.to_ascii_lowercase();
        ["error", "fatal", "panicked", "refused", "in use", "denied"]
            .iter()
            .any(|w| l.contains(w))
    };
    let line = lines
        .iter()
        .rev()
        .find(is_error)
        .or(lines.last())
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| "(empty log)".into());
    const MAX: usize = 300;
    match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// Removes ANSI escape sequences (`ESC [ … letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_cause_is_the_last_error_line_without_colour() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(
            &log,
            "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m starting\n\
             \u{1b}[31mERROR\u{1b}[0m bind 172.16.1.2:2443: Address already in use (os error 98)\n\
             INFO shutting down\n",
        )
        .unwrap();
        assert_eq!(
            failure_cause(&log),
            "ERROR bind 172.16.1.2:2443: Address already in use (os error 98)"
        );
        std::fs::write(&log, "only line\n").unwrap();
        assert_eq!(failure_cause(&log), "only line");
        assert_eq!(failure_cause(&dir.path().join("none")), "(empty log)");
    }
}
