/// Exit code for bad usage or configuration (BSD `EX_USAGE`).
pub(crate) const EXIT_USAGE: u8 = 64;
/// Exit code for any other failure.
pub(crate) const EXIT_FAILURE: u8 = 1;

/// An error that ends a command, with the exit code it maps to.
#[derive(Debug)]
pub(crate) struct CommandError {
    code: u8,
    error: anyhow::Error,
}

impl CommandError {
    /// The user asked for something that cannot work: a bad flag value, a
    /// missing or invalid input file. Exit code 64.
    pub(crate) fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: EXIT_USAGE,
            error: error.into(),
        }
    }

    /// The request was fine but carrying it out failed (e.g. writing files).
    /// Exit code 1.
    pub(crate) fn failed(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: EXIT_FAILURE,
            error: error.into(),
        }
    }

    pub(crate) fn exit_code(&self) -> u8 {
        self.code
    }

    pub(crate) fn error(&self) -> &anyhow::Error {
        &self.error
    }
}
