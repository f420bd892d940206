//! Exit codes, the same in every subcommand (and in the daemons):
//! 0 success, 64 usage or input error, 69 a service the command needs is
//! unavailable, 1 any other failure.

/// Exit code for bad usage or input (BSD `EX_USAGE`): a bad flag, an unknown
/// cluster, an invalid document.
pub(crate) const EXIT_USAGE: u8 = 64;
/// Exit code when a service the command needs does not answer
/// (BSD `EX_UNAVAILABLE`): an agent, an etcd, an apiserver.
pub(crate) const EXIT_UNAVAILABLE: u8 = 69;
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

    /// Something the command needs does not answer. Exit code 69.
    pub(crate) fn unavailable(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: EXIT_UNAVAILABLE,
            error: error.into(),
        }
    }

    /// Carrying out the request failed. Exit code 1, unless the error says
    /// it was refused as given (64) or that a service did not answer (69).
    pub(crate) fn failed(error: impl Into<anyhow::Error>) -> Self {
        let error = error.into();
        let code = error
            .chain()
            .find_map(|e| {
                if e.is::<localmesh::Refused>() {
                    Some(EXIT_USAGE)
                } else if e.is::<localmesh::Unavailable>() {
                    Some(EXIT_UNAVAILABLE)
                } else {
                    None
                }
            })
            .unwrap_or(EXIT_FAILURE);
        Self { code, error }
    }

    pub(crate) fn exit_code(&self) -> u8 {
        self.code
    }

    pub(crate) fn error(&self) -> &anyhow::Error {
        &self.error
    }

    /// The error and its causes on one line, each said once.
    pub(crate) fn message(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for e in self.error.chain() {
            let text = e.to_string();
            if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
                parts.push(text);
            }
        }
        parts.join(": ")
    }
}

impl From<std::io::Error> for CommandError {
    /// Writing the command's output failed (a closed pipe is handled before).
    fn from(error: std::io::Error) -> Self {
        Self::failed(error)
    }
}
