//! Running external commands (mostly `ip`) with errors that say what failed.

use std::process::{Command, Output};

/// An external command could not be started or exited with a failure.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program could not be started at all.
    #[error("cannot run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// The program ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

impl CommandError {
    /// The stderr of a command that ran and failed (empty otherwise).
    pub fn stderr(&self) -> &str {
        match self {
            Self::Failed { stderr, .. } => stderr,
            Self::Spawn { .. } => "",
        }
    }
}

/// Renders a command line for error messages.
pub(crate) fn describe(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs the command to completion; a non-zero exit is an error.
pub(crate) fn run(command: &mut Command) -> Result<Output, CommandError> {
    let output = output(command)?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(CommandError::Failed {
            command: describe(command),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Runs the command to completion and returns its output whatever the exit.
pub(crate) fn output(command: &mut Command) -> Result<Output, CommandError> {
    command.output().map_err(|source| CommandError::Spawn {
        command: describe(command),
        source,
    })
}

/// `ip [-n ns] args...`, failing with the command's stderr.
pub(crate) fn ip(netns: Option<&str>, args: &[&str]) -> Result<String, CommandError> {
    let mut command = Command::new("ip");
    if let Some(ns) = netns {
        command.args(["-n", ns]);
    }
    command.args(args);
    let output = run(&mut command)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
