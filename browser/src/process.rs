//! The Chromium process and its user-data dir: started headless with a fresh
//! profile, its whole process group killed and the dir removed on drop.

use std::{
    fs::File,
    io::ErrorKind,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::{BrowserError, LaunchOptions};

/// How long Chromium may take to open its DevTools port (it starts in well
/// under a second on an idle machine; tests run several at once on 2 cores).
pub(crate) const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The file in the user-data dir that takes Chromium's stdout and stderr (a
/// file rather than a pipe: nothing has to drain it, and a failed launch
/// reads its tail).
const LOG_FILE: &str = "chromium.log";

/// How many lines of Chromium's log an error shows.
const LOG_TAIL_LINES: usize = 20;

static DIR_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A running Chromium. On drop: SIGKILL to its process group (the browser,
/// its zygote, renderers and GPU process), the browser reaped, the user-data
/// dir removed.
#[derive(Debug)]
pub(crate) struct ChromiumProcess {
    child: Child,
    /// Set once the child is reaped; until then its pid, which is also its
    /// process group id, cannot be reused, so `killpg` is safe.
    status: Option<ExitStatus>,
    /// Dropped (removed) after `drop` has killed the process.
    user_data_dir: UserDataDir,
}

impl ChromiumProcess {
    /// Creates a fresh user-data dir and starts Chromium in it, headless,
    /// with `about:blank` and a DevTools port of its choosing.
    pub(crate) fn spawn(options: &LaunchOptions) -> Result<Self, BrowserError> {
        let spawn_error = |source| BrowserError::Spawn {
            chromium: options.chromium.clone(),
            source,
        };
        // removed again if anything below fails
        let user_data_dir = UserDataDir::create().map_err(spawn_error)?;
        let log = File::create(user_data_dir.0.join(LOG_FILE)).map_err(spawn_error)?;
        // Chromium's own temp files (`org.chromium.Chromium.*`) go with the
        // user-data dir instead of staying in /tmp after a kill.
        let tmp = user_data_dir.0.join("tmp");
        std::fs::create_dir(&tmp).map_err(spawn_error)?;
        let mut command = Command::new(&options.chromium);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--mute-audio",
                // no proxy from the environment for test servers
                "--no-proxy-server",
            ])
            .arg(format!(
                "--window-size={},{}",
                options.width, options.height
            ))
            .arg(format!("--user-data-dir={}", user_data_dir.0.display()))
            .arg("--remote-debugging-port=0")
            .arg("about:blank")
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(spawn_error)?)
            .stderr(log)
            // its own group, so that killing the group reaches every child
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the
        // parent. Chromium dies with the thread that started it, so a test
        // process killed by a timeout (where no Drop runs) leaves no browser
        // behind.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(spawn_error)?;
        Ok(Self {
            child,
            status: None,
            user_data_dir,
        })
    }

    /// The browser process's id (also its process group id).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn user_data_dir(&self) -> &Path {
        &self.user_data_dir.0
    }

    /// Waits for Chromium to announce its DevTools port in the user-data dir
    /// and returns the browser's websocket URL.
    pub(crate) async fn devtools_url(&mut self) -> Result<String, BrowserError> {
        let file = self.user_data_dir().join("DevToolsActivePort");
        let deadline = Instant::now() + LAUNCH_TIMEOUT;
        loop {
            // written as "port\n/devtools/browser/<id>"; read again until whole
            if let Ok(text) = std::fs::read_to_string(&file) {
                let mut lines = text.lines();
                if let (Some(Ok(port)), Some(path)) =
                    (lines.next().map(str::parse::<u16>), lines.next())
                    && path.starts_with("/devtools/browser/")
                {
                    return Ok(format!("ws://127.0.0.1:{port}{path}"));
                }
            }
            if self.has_exited() {
                let status = self
                    .kill()
                    .expect("waiting for our own exited child cannot fail");
                return Err(BrowserError::LaunchFailed {
                    status,
                    stderr: self.log_tail(),
                });
            }
            if Instant::now() >= deadline {
                return Err(BrowserError::NoDevToolsPort {
                    user_data_dir: self.user_data_dir().to_owned(),
                    timeout: LAUNCH_TIMEOUT,
                    stderr: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the browser process has exited (without reaping it, so that
    /// its process group can still be killed safely).
    pub(crate) fn has_exited(&self) -> bool {
        if self.status.is_some() {
            return true;
        }
        let pid = libc::id_t::from(self.child.id());
        // SAFETY: siginfo_t is plain data, zeroed is a valid value; waitid
        // with WNOWAIT only reports, it reaps nothing.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
            if libc::waitid(libc::P_PID, pid, &mut info, flags) != 0 {
                // ECHILD: not our child any more, so gone
                return true;
            }
            info.si_pid() != 0
        }
    }

    /// Kills the process group (if the browser is not reaped yet) and reaps
    /// the browser; its exit status.
    pub(crate) fn kill(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(pgid) = libc::pid_t::try_from(self.child.id()) {
                // SAFETY: the group leader is our unreaped child, so `pgid`
                // names its group and no other.
                unsafe { libc::killpg(pgid, libc::SIGKILL) };
            }
            self.status = self.child.wait().ok();
        }
        self.status
    }

    /// The last lines Chromium wrote, without its D-Bus complaints (there
    /// is no system bus in a test machine, and they say nothing).
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.user_data_dir().join(LOG_FILE)).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|line| !line.contains(":ERROR:dbus/"))
            .collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for ChromiumProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh user-data dir, `<temp dir>/browser-<pid>-<n>` (tests run in
/// parallel, each browser has its own profile); removed on drop.
#[derive(Debug)]
struct UserDataDir(PathBuf);

impl UserDataDir {
    fn create() -> std::io::Result<Self> {
        loop {
            let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("browser-{}-{n}", std::process::id()));
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(Self(dir)),
                // left over by an earlier process with the same pid
                Err(error) if error.kind() == ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(error),
            }
        }
    }
}

impl Drop for UserDataDir {
    fn drop(&mut self) {
        // a renderer killed a moment ago may still be closing files in it
        for attempt in 1..=5 {
            match std::fs::remove_dir_all(&self.0) {
                Err(error) if error.kind() != ErrorKind::NotFound && attempt < 5 => {
                    std::thread::sleep(Duration::from_millis(20 * attempt));
                }
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_dirs_are_unique_and_removed_on_drop() {
        let a = UserDataDir::create().unwrap();
        let b = UserDataDir::create().unwrap();
        assert_ne!(a.0, b.0);
        std::fs::write(a.0.join("file"), "x").unwrap();
        let path = a.0.clone();
        drop(a);
        assert!(!path.exists());
    }

    #[test]
    fn chromium_keeps_its_temp_files_in_the_user_data_dir() {
        let Some(chromium) =
            crate::chromium_or_skip("chromium_keeps_its_temp_files_in_the_user_data_dir")
        else {
            return;
        };
        let process = ChromiumProcess::spawn(&LaunchOptions {
            chromium,
            width: 400,
            height: 300,
        })
        .unwrap();
        let environ = std::fs::read(format!("/proc/{}/environ", process.pid())).unwrap();
        let tmpdir = environ
            .split(|b| *b == 0)
            .find_map(|var| var.strip_prefix(b"TMPDIR="))
            .map(|v| PathBuf::from(String::from_utf8_lossy(v).into_owned()));
        let dir = process.user_data_dir().to_path_buf();
        assert_eq!(tmpdir, Some(dir.join("tmp")));
        drop(process);
        assert!(!dir.exists(), "removed with the user-data dir");
    }
}
