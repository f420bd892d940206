//! Why a daemon's main stopped with an error.

use std::fmt;

use crate::Exit;

/// What a daemon's main returns when it fails: the error, printed as one
/// line with its causes, and the code the process exits with. Any error
/// converts into one with [`Exit::Failure`] (so `?` works); configuration
/// problems use [`DaemonError::usage`].
#[derive(Debug)]
pub struct DaemonError {
    exit: Exit,
    error: anyhow::Error,
}

impl DaemonError {
    /// An error that exits with `exit`.
    pub fn new(exit: Exit, error: impl Into<anyhow::Error>) -> Self {
        Self {
            exit,
            error: error.into(),
        }
    }

    /// Bad flags, configuration or files ([`Exit::Usage`]).
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self::new(Exit::Usage, error)
    }

    /// The code the process exits with.
    pub fn exit(&self) -> Exit {
        self.exit
    }
}

impl<E: Into<anyhow::Error>> From<E> for DaemonError {
    fn from(error: E) -> Self {
        Self::new(Exit::Failure, error)
    }
}

impl fmt::Display for DaemonError {
    /// The error and its causes, `outer: inner: root`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}
