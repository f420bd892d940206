use serde::{Deserialize, Serialize};

use super::PolicyError;

/// Cilium's `MaxFQDNLength`: the longest `matchName` or `matchPattern`.
pub const MAX_FQDN_LENGTH: usize = 255;

/// A DNS name or a wildcard pattern of names (Cilium's `FQDNSelector`): an
/// entry of `egress[].toFQDNs`, and, as Cilium's `PortRuleDNS`, of
/// `toPorts[].rules.dns`.
///
/// - `matchName` is one name (`api.example.com`; a trailing `.` is implied),
///   any case, of letters, digits, `-`, `_` and `.`.
/// - `matchPattern` may also hold `*`: `*` matches any run of letters,
///   digits, `-` and `_` within one label (`*.example.com` matches
///   `www.example.com`, not `example.com` nor `a.b.example.com`); a leading
///   `**.` matches one or more whole labels; a pattern of stars alone (`*`)
///   matches every name.
///
/// In `toFQDNs` an entry has exactly one of the two; in `rules.dns` it may
/// have both (either matches), as in Cilium. Both are at most 255
/// characters, of non-empty labels. Matching itself is the `fqdn` crate's
/// (`fqdn::FqdnSelector`); this type only reads and checks policies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FqdnSelector {
    /// One DNS name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_name: Option<String>,
    /// A DNS name with `*` wildcards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_pattern: Option<String>,
}

/// Where a selector is written, for the rules that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SelectorUse {
    /// `toFQDNs`: exactly one of `matchName` and `matchPattern`.
    ToFqdns,
    /// `rules.dns`: at least one of them.
    Dns,
}

impl FqdnSelector {
    /// A `matchName` selector.
    pub fn name(name: impl Into<String>) -> Self {
        Self {
            match_name: Some(name.into()),
            match_pattern: None,
        }
    }

    /// A `matchPattern` selector.
    pub fn pattern(pattern: impl Into<String>) -> Self {
        Self {
            match_name: None,
            match_pattern: Some(pattern.into()),
        }
    }

    /// `path` is the entry's (`spec.egress[0].toFQDNs[1]`).
    pub(super) fn validate(&self, path: &str, usage: SelectorUse) -> Result<(), PolicyError> {
        match (&self.match_name, &self.match_pattern, usage) {
            (None, None, _) => {
                return Err(PolicyError::field(
                    path,
                    "one of matchName and matchPattern is required",
                ));
            }
            (Some(_), Some(_), SelectorUse::ToFqdns) => {
                return Err(PolicyError::field(
                    path,
                    "matchName and matchPattern are mutually exclusive in a toFQDNs entry; write two entries",
                ));
            }
            _ => {}
        }
        if let Some(name) = &self.match_name {
            check_fqdn(name, false)
                .map_err(|reason| PolicyError::field(format!("{path}.matchName"), reason))?;
        }
        if let Some(pattern) = &self.match_pattern {
            check_fqdn(pattern, true)
                .map_err(|reason| PolicyError::field(format!("{path}.matchPattern"), reason))?;
        }
        Ok(())
    }
}

/// Cilium's checks of a `matchName` (or, with `pattern`, a `matchPattern`):
/// its characters, its length, and the CRD's shape
/// `^([-a-zA-Z0-9_]+[.]?)+$` (no empty label). The reason when it fails.
///
/// The `fqdn` crate applies the same rules when it compiles a selector; its
/// tests check that both accept the same texts.
pub(super) fn check_fqdn(text: &str, pattern: bool) -> Result<(), String> {
    let what = if pattern { "pattern" } else { "name" };
    if text.is_empty() {
        return Err(format!("the {what} is empty; omit the field instead"));
    }
    if text.len() > MAX_FQDN_LENGTH {
        return Err(format!(
            "the {what} is {} characters long; at most {MAX_FQDN_LENGTH} are allowed",
            text.len()
        ));
    }
    if let Some(c) = text.chars().find(|&c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') || pattern && c == '*')
    }) {
        let allowed = if pattern {
            "letters, digits, '-', '_', '.' and '*'"
        } else {
            "letters, digits, '-', '_' and '.'"
        };
        return Err(format!(
            "{text:?} has the character {c:?}; a {what} may only contain {allowed}"
        ));
    }
    if text.starts_with('.') || text.contains("..") {
        return Err(format!(
            "{text:?} has an empty label (a '.' at its start or \"..\")"
        ));
    }
    Ok(())
}
