//! Hubble's name patterns (`source_fqdn`, `destination_fqdn`, `node_name`),
//! compiled to one anchored regular expression per filter field, as
//! Cilium's `pkg/hubble/filters/patterns.go` does.
//!
//! An FQDN pattern is trimmed, loses one trailing dot and is lowercased;
//! `*` matches any run of `[-.0-9a-z]`, and the literal characters are
//! `[-.0-9_a-z]`. A node name pattern is `[cluster/]node`, each side an
//! FQDN pattern; an empty side (`cluster/`, `/node`) or a missing cluster
//! (`node`) matches any name.

use regex::Regex;

/// What an empty side of a node name pattern matches: one FQDN.
const ANY_FQDN: &str = r"(?:[-0-9_a-z]+(?:\.[-0-9_a-z]+)*)";

/// The cluster Cilium assumes for a node name without a `cluster/` part.
const DEFAULT_CLUSTER: &str = "default";

/// FQDN patterns, any of which may match.
#[derive(Debug, Clone)]
pub(crate) struct FqdnPatterns(Regex);

impl FqdnPatterns {
    /// Compiles `patterns`; the error names the bad pattern and says why.
    pub(crate) fn compile<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        let mut alternatives = Vec::with_capacity(patterns.len());
        for pattern in patterns {
            let pattern = pattern.as_ref();
            alternatives.push(fqdn_regex(pattern).map_err(|reason| PatternError {
                pattern: pattern.to_owned(),
                reason,
            })?);
        }
        Ok(Self(anchored(&alternatives)))
    }

    /// Whether any of `names` matches.
    pub(crate) fn matches_any(&self, names: &[String]) -> bool {
        names.iter().any(|n| self.0.is_match(n))
    }
}

/// Node name patterns, any of which may match.
#[derive(Debug, Clone)]
pub(crate) struct NodeNamePatterns {
    /// Against `cluster/node` names.
    qualified: Regex,
    /// Against names without a cluster, which Cilium reads as
    /// `default/<name>`: the node sides of the patterns whose cluster side
    /// matches `default`. `None` when there are none.
    unqualified: Option<Regex>,
}

impl NodeNamePatterns {
    /// Compiles `patterns`; the error names the bad pattern and says why.
    pub(crate) fn compile<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        let mut qualified = Vec::with_capacity(patterns.len());
        let mut unqualified = Vec::new();
        for pattern in patterns {
            let pattern = pattern.as_ref();
            let (cluster, node) = node_name_regexes(pattern).map_err(|reason| PatternError {
                pattern: pattern.to_owned(),
                reason,
            })?;
            if anchored(std::slice::from_ref(&cluster)).is_match(DEFAULT_CLUSTER) {
                unqualified.push(node.clone());
            }
            qualified.push(format!("{cluster}/{node}"));
        }
        Ok(Self {
            qualified: anchored(&qualified),
            unqualified: (!unqualified.is_empty()).then(|| anchored(&unqualified)),
        })
    }

    /// Whether `node_name` (`cluster/node`, or `node` in the default
    /// cluster) matches; an empty name never does.
    pub(crate) fn matches(&self, node_name: &str) -> bool {
        if node_name.is_empty() {
            false
        } else if node_name.contains('/') {
            self.qualified.is_match(node_name)
        } else {
            self.unqualified
                .as_ref()
                .is_some_and(|r| r.is_match(node_name))
        }
    }
}

/// A pattern that does not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PatternError {
    pub(crate) pattern: String,
    pub(crate) reason: String,
}

/// `\A(?:a|b|...)\z`. The alternatives are built from an escaped alphabet,
/// so the expression always compiles.
fn anchored(alternatives: &[String]) -> Regex {
    Regex::new(&format!(r"\A(?:{})\z", alternatives.join("|")))
        .expect("patterns only hold escaped literals and character classes")
}

fn fqdn_regex(pattern: &str) -> Result<String, String> {
    let pattern = pattern.trim();
    let pattern = pattern.strip_suffix('.').unwrap_or(pattern).to_lowercase();
    if pattern.is_empty() {
        return Err("empty pattern".to_owned());
    }
    if pattern.ends_with('.') {
        return Err("multiple trailing dots in pattern".to_owned());
    }
    let mut re = String::with_capacity(pattern.len() * 2);
    for c in pattern.chars() {
        match c {
            '.' => re.push_str(r"\."),
            '*' => re.push_str("[-.0-9a-z]*"),
            '-' | '_' | '0'..='9' | 'a'..='z' => re.push(c),
            _ => return Err(format!("{c:?}: invalid character in pattern")),
        }
    }
    Ok(re)
}

/// The cluster and node regular expressions of `[cluster/]node`.
fn node_name_regexes(pattern: &str) -> Result<(String, String), String> {
    if pattern.is_empty() {
        return Err("empty pattern".to_owned());
    }
    let (cluster, node) = match pattern.split('/').collect::<Vec<_>>()[..] {
        [node] => ("", node),
        [cluster, node] => (cluster, node),
        _ => return Err("too many slashes in pattern".to_owned()),
    };
    let side = |p: &str| {
        if p.is_empty() {
            Ok(ANY_FQDN.to_owned())
        } else {
            fqdn_regex(p)
        }
    };
    Ok((side(cluster)?, side(node)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fqdn_patterns() {
        let p = FqdnPatterns::compile(&["*.cilium.io", "Example.COM."]).unwrap();
        let yes = |n: &str| p.matches_any(&[n.to_owned()]);
        assert!(yes("docs.cilium.io"));
        assert!(yes("a.b.cilium.io"));
        assert!(yes(".cilium.io"));
        assert!(yes("example.com"));
        assert!(!yes("cilium.io"));
        assert!(!yes("example.com."));
        assert!(!yes("www.example.com"));
        assert!(!p.matches_any(&[]));
    }

    #[test]
    fn bad_fqdn_patterns() {
        for (pattern, reason) in [
            ("", "empty pattern"),
            (" . ", "empty pattern"),
            ("a..", "multiple trailing dots in pattern"),
            ("a?b", "'?': invalid character in pattern"),
            ("a/b", "'/': invalid character in pattern"),
        ] {
            let err = FqdnPatterns::compile(&[pattern]).unwrap_err();
            assert_eq!(err.pattern, pattern);
            assert_eq!(err.reason, reason, "{pattern:?}");
        }
    }

    #[test]
    fn node_name_patterns() {
        let cases: &[(&str, &[(&str, bool)])] = &[
            (
                "k8s*",
                &[
                    ("k8s1", true),
                    ("default/k8s1", true),
                    ("c1/k8s1", true),
                    ("c1/k8s.node", true),
                    ("c1/node", false),
                    ("", false),
                ],
            ),
            (
                "c1/",
                &[
                    ("c1/node-a", true),
                    ("c1/a.b", true),
                    ("c10/node-a", false),
                    ("node-a", false),
                ],
            ),
            ("default/", &[("node-a", true), ("default/node-a", true)]),
            ("/node-a", &[("node-a", true), ("c2/node-a", true)]),
            (
                "c*/node-?",
                &[], // invalid, checked below
            ),
            (
                "c1/*.company.com",
                &[
                    ("c1/n1.company.com", true),
                    ("c1/company.com", false),
                    ("c2/n1.company.com", false),
                ],
            ),
            ("c1/a/b", &[]),
        ];
        for (pattern, flows) in cases {
            let Ok(p) = NodeNamePatterns::compile(&[*pattern]) else {
                assert!(flows.is_empty(), "{pattern:?} should compile");
                continue;
            };
            for (name, want) in *flows {
                assert_eq!(p.matches(name), *want, "{pattern:?} vs {name:?}");
            }
        }
    }

    #[test]
    fn bad_node_name_patterns() {
        for (pattern, reason) in [
            ("", "empty pattern"),
            ("a/b/c", "too many slashes in pattern"),
            ("c1/node_?", "'?': invalid character in pattern"),
            ("c 1/node", "' ': invalid character in pattern"),
        ] {
            let err = NodeNamePatterns::compile(&[pattern]).unwrap_err();
            assert_eq!(err.reason, reason, "{pattern:?}");
        }
    }

    #[test]
    fn any_of_several_node_patterns() {
        let p = NodeNamePatterns::compile(&["c1/a", "c2/"]).unwrap();
        assert!(p.matches("c1/a"));
        assert!(p.matches("c2/zzz"));
        assert!(!p.matches("c1/b"));
        assert!(!p.matches("a"));
    }
}
