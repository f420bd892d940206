//! The systemd units of a cluster: the templates in `deploy/systemd/` (the
//! one source), rendered for a [`Layout`]; and the reverse, the command a
//! rendered unit starts (program, arguments, environment), so that tests
//! and harnesses start exactly what systemd would.

use std::path::{Path, PathBuf};

use crate::layout::{Component, Layout};

/// Why a unit's command cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no ExecStart= in [Service]")]
    NoExecStart { path: PathBuf },
    #[error("{path}: {line:?}: {reason}")]
    Unsupported {
        path: PathBuf,
        line: String,
        reason: &'static str,
    },
}

/// The template of `component`'s unit, with `@BINDIR@` and `@CONFDIR@`.
pub fn template(component: Component) -> &'static str {
    match component {
        Component::Apiserver => include_str!("../../deploy/systemd/clustermesh-apiserver.service"),
        Component::Operator => include_str!("../../deploy/systemd/clustermesh-operator.service"),
        Component::Agent => include_str!("../../deploy/systemd/clustermesh-agent.service"),
    }
}

/// The sysusers.d entry of the user the apiserver and operator run as.
pub fn sysusers() -> &'static str {
    include_str!("../../deploy/systemd/clustermesh.sysusers.conf")
}

/// `component`'s unit for `layout`.
pub fn render(component: Component, layout: &Layout) -> String {
    template(component)
        .replace("@BINDIR@", &layout.bin_dir().display().to_string())
        .replace("@CONFDIR@", &layout.conf_dir().display().to_string())
}

/// What a unit starts: `ExecStart=` with the environment of its
/// `Environment=` lines and then its `EnvironmentFile=`s (later wins, as
/// in systemd). Only the subset of the unit syntax our units use is
/// understood; anything else (specifiers, `$VARIABLES`, quoting in
/// `ExecStart=`) is refused rather than guessed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// In order; a later entry of the same name wins.
    pub env: Vec<(String, String)>,
}

impl UnitCommand {
    /// Reads the unit at `path` and the environment files it names.
    pub fn from_unit_file(path: &Path) -> Result<Self, UnitError> {
        let text = read(path)?;
        let unsupported = |line: &str, reason| UnitError::Unsupported {
            path: path.to_path_buf(),
            line: line.to_owned(),
            reason,
        };
        let mut section = "";
        let mut exec = None;
        let mut env = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with('[') {
                section = line;
                continue;
            }
            if section != "[Service]" {
                continue;
            }
            if line.ends_with('\\') {
                return Err(unsupported(line, "continued lines are not supported"));
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key.trim() {
                "Environment" => {
                    for assignment in value.split_whitespace() {
                        env.push(assignment_pair(assignment).ok_or_else(|| {
                            unsupported(line, "expected NAME=VALUE (without quotes)")
                        })?);
                    }
                }
                "EnvironmentFile" => {
                    let (optional, file) = match value.strip_prefix('-') {
                        Some(file) => (true, file),
                        None => (false, value),
                    };
                    let file = Path::new(file.trim());
                    match std::fs::read_to_string(file) {
                        Ok(text) => env.extend(parse_env_file(&text)),
                        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(source) => {
                            return Err(UnitError::Read {
                                path: file.to_path_buf(),
                                source,
                            });
                        }
                    }
                }
                "ExecStart" => {
                    if value.contains(['$', '%', '"', '\'']) {
                        return Err(unsupported(
                            line,
                            "specifiers, variables and quotes are not supported",
                        ));
                    }
                    let value = value.trim_start_matches(['-', '@', ':', '+', '!']);
                    let mut words = value.split_whitespace().map(str::to_owned);
                    let program = words
                        .next()
                        .ok_or_else(|| unsupported(line, "no program"))?;
                    exec = Some((PathBuf::from(program), words.collect()));
                }
                _ => {}
            }
        }
        let (program, args) = exec.ok_or_else(|| UnitError::NoExecStart {
            path: path.to_path_buf(),
        })?;
        Ok(Self { program, args, env })
    }

    /// A [`std::process::Command`] that runs it (with the caller's
    /// environment plus the unit's).
    pub fn command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.program);
        cmd.args(&self.args);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }
}

/// The `NAME=VALUE` lines of an environment file (systemd's
/// `EnvironmentFile=`): comments and blank lines skipped, one pair of
/// surrounding quotes removed.
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            Some((k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

fn assignment_pair(assignment: &str) -> Option<(String, String)> {
    if assignment.contains(['"', '\'', '%', '$']) {
        return None;
    }
    let (k, v) = assignment.split_once('=')?;
    Some((k.to_owned(), v.to_owned()))
}

fn read(path: &Path) -> Result<String, UnitError> {
    std::fs::read_to_string(path).map_err(|source| UnitError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_every_placeholder() {
        let layout = Layout::new("/srv/c1", "/opt/cm/bin");
        for c in Component::ALL {
            let unit = render(c, &layout);
            assert!(
                !unit.contains("@BINDIR@") && !unit.contains("@CONFDIR@"),
                "{c:?}: {unit}"
            );
            assert!(
                unit.contains(&format!("ExecStart=/opt/cm/bin/{}", c.binary())),
                "{c:?}"
            );
            assert!(unit.contains("/srv/c1/etc/clustermesh/"), "{c:?}");
            assert!(unit.contains("Restart=on-failure"), "{c:?}");
            assert!(unit.contains("NoNewPrivileges=yes"), "{c:?}");
        }
        assert!(render(Component::Apiserver, &layout).contains("\nUser=clustermesh\n"));
        assert!(!render(Component::Agent, &layout).contains("\nUser="));
        assert!(sysusers().contains("u clustermesh"));
    }

    #[test]
    fn a_unit_command_has_the_units_environment_then_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("x.env");
        std::fs::write(&env, "# comment\nB=from-file\n\nC=\"quoted\"\n").unwrap();
        let unit = dir.path().join("x.service");
        std::fs::write(
            &unit,
            format!(
                "[Unit]\nDescription=x\n[Service]\nEnvironment=A=1 B=unit\nEnvironmentFile={}\n\
                 EnvironmentFile=-{}/missing.env\nExecStart=/bin/prog run --config /c.yaml\n",
                env.display(),
                dir.path().display()
            ),
        )
        .unwrap();
        let cmd = UnitCommand::from_unit_file(&unit).unwrap();
        assert_eq!(cmd.program, Path::new("/bin/prog"));
        assert_eq!(cmd.args, ["run", "--config", "/c.yaml"]);
        let pairs: Vec<(&str, &str)> = cmd
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("A", "1"),
                ("B", "unit"),
                ("B", "from-file"),
                ("C", "quoted")
            ]
        );

        std::fs::write(&unit, "[Service]\nExecStart=/bin/prog %H\n").unwrap();
        assert!(matches!(
            UnitCommand::from_unit_file(&unit),
            Err(UnitError::Unsupported { .. })
        ));
        std::fs::write(&unit, "[Service]\nEnvironmentFile=/nonexistent/x.env\n").unwrap();
        assert!(matches!(
            UnitCommand::from_unit_file(&unit),
            Err(UnitError::Read { .. })
        ));
    }
}
