//! The exit codes of the clustermesh binaries.

/// How a clustermesh binary exits: BSD `sysexits.h` codes where one fits,
/// so that scripts and supervisors can tell a bad invocation (do not retry)
/// from a peer that does not answer (retry later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Exit {
    /// Done, or `--help` / `--version` printed.
    Success = 0,
    /// Anything else; the message on stderr says what.
    Failure = 1,
    /// `EX_USAGE`: bad flags, configuration or files; nothing was changed.
    Usage = 64,
    /// `EX_UNAVAILABLE`: something the command needs does not answer.
    Unavailable = 69,
}

impl Exit {
    /// The numeric exit code.
    pub const fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        Self::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_ones() {
        let codes = [Exit::Success, Exit::Failure, Exit::Usage, Exit::Unavailable].map(Exit::code);
        assert_eq!(codes, [0, 1, 64, 69]);
    }
}
