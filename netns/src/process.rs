//! A child process (iperf3 server, ping loop) killed on drop.

use std::{
    io::Read,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{
    command::{CommandError, describe},
    namespace::NetNsError,
};

/// Starting, waiting for or running a process failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// Preparing the namespace for the command failed.
    #[error(transparent)]
    Namespace(#[from] NetNsError),
    /// The command could not be started or failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// Waiting for the process failed.
    #[error("cannot wait for `{command}`")]
    Wait {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// The process did not exit before the deadline (it was killed).
    #[error("`{command}` did not exit within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
}

/// The collected result of a finished [`Process`].
#[derive(Debug, Clone)]
pub struct ProcessOutput {
    /// How the process exited.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// A running child with stdout/stderr collected in the background; killed
/// (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Process {
    command: String,
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Process {
    /// Spawns `command` with piped stdout/stderr.
    pub fn spawn(mut command: Command) -> Result<Self, ProcessError> {
        let line = describe(&command);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| CommandError::Spawn {
                command: line.clone(),
                source,
            })?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(pipe) = child.stdout.take() {
            readers.push(collect(pipe, stdout.clone()));
        }
        if let Some(pipe) = child.stderr.take() {
            readers.push(collect(pipe, stderr.clone()));
        }
        Ok(Self {
            command: line,
            child,
            stdout,
            stderr,
            readers,
        })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// What the process wrote to stdout so far.
    pub fn stdout_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().expect("stdout buffer")).into_owned()
    }

    /// Waits up to `timeout` for the process to exit by itself and returns
    /// its output; kills it and fails if it does not.
    pub fn wait_timeout(mut self, timeout: Duration) -> Result<ProcessOutput, ProcessError> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    return Err(ProcessError::Timeout {
                        command: self.command.clone(),
                        timeout,
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(source) => {
                    return Err(ProcessError::Wait {
                        command: self.command.clone(),
                        source,
                    });
                }
            }
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let take = |buf: &Arc<Mutex<Vec<u8>>>| {
            String::from_utf8_lossy(&buf.lock().expect("output buffer")).into_owned()
        };
        Ok(ProcessOutput {
            status,
            stdout: take(&self.stdout),
            stderr: take(&self.stderr),
        })
    }

    /// Sends a signal (e.g. `libc::SIGINT` to make ping print its summary).
    pub fn signal(&self, signal: i32) -> Result<(), ProcessError> {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap_or(libc::pid_t::MAX);
        // SAFETY: kill on our own (not yet reaped) child.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(ProcessError::Wait {
                command: self.command.clone(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn collect(mut pipe: impl Read + Send + 'static, buf: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.lock()
                .expect("output buffer")
                .extend_from_slice(&chunk[..n]);
        }
    })
}
