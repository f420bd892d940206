//! Command-line parsing failures, the same for every daemon.

use crate::Exit;

/// Parses the process's arguments as `P`. On `--help`, `--version` or bad
/// flags, prints what clap has to say and returns how to exit.
pub fn parse_flags<P: clap::Parser>() -> Result<P, Exit> {
    P::try_parse().map_err(flags_error)
}

/// Prints a clap error (or the help or version text it carries) and returns
/// the exit: [`Exit::Success`] for `--help` and `--version`, else
/// [`Exit::Usage`].
pub fn flags_error(error: clap::Error) -> Exit {
    let _ = error.print();
    if error.use_stderr() {
        Exit::Usage
    } else {
        Exit::Success
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[arg(long)]
        name: String,
    }

    #[test]
    fn help_succeeds_and_bad_flags_are_usage_errors() {
        let exit = |args: &[&str]| {
            Flags::try_parse_from(args)
                .map_err(flags_error)
                .unwrap_err()
        };
        assert_eq!(exit(&["d", "--help"]), Exit::Success);
        assert_eq!(exit(&["d", "--bogus"]), Exit::Usage);
        assert_eq!(exit(&["d"]), Exit::Usage);
    }
}
