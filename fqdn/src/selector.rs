use std::{collections::HashSet, fmt};

use crate::DnsName;

/// Cilium's `MaxFQDNLength`: the longest `matchName` or `matchPattern`.
pub const MAX_SELECTOR_LENGTH: usize = 255;

/// A compiled `matchName` or `matchPattern` (of `toFQDNs` or of a DNS rule)
/// with Cilium's semantics (`pkg/fqdn/matchpattern`), matching
/// [`DnsName`]s.
///
/// - `matchName` is one name, any case, trailing dot implied.
/// - `matchPattern`, lowercased and made fully qualified:
///   - stars alone (`*`, `**`, `*.`) match every name, the root included;
///   - a leading run of two or more stars and a dot (`**.example.com`)
///     matches one or more whole labels (`a.example.com`,
///     `a.b.example.com`, not `example.com`);
///   - any other run of stars matches any run, empty included, of letters,
///     digits, `-` and `_` within one label: `*.example.com` matches
///     `www.example.com` but not `example.com` nor `a.b.example.com`;
///     `*example.com` matches `example.com` and `myexample.com`;
///   - everything else matches itself.
///
/// A name with other octets in a label (escaped: `\032`) matches no
/// pattern, as Cilium's regular expressions do not. Matching walks the
/// labels from the right, with no allocation and no regular expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FqdnSelector {
    /// `matchName`, normalized (`api.example.com.`).
    Name(String),
    /// `matchPattern`.
    Pattern(Pattern),
}

/// A compiled `matchPattern`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    /// Normalized as Cilium's `matchpattern.Sanitize` (lowercase, trailing
    /// dot unless stars alone).
    text: String,
    shape: Shape,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Shape {
    /// Stars alone: every name.
    All,
    /// `labels` (rightmost first), after `subdomains` (one or more whole
    /// labels) when the pattern starts with `**.`.
    Labels {
        subdomains: bool,
        labels: Vec<Vec<u8>>,
    },
}

/// Why a `matchName` or `matchPattern` is refused; the same rules as the
/// policy model's (`kvstore::values::FqdnSelector`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// An empty text.
    #[error("the selector is empty")]
    Empty,
    /// Over [`MAX_SELECTOR_LENGTH`] characters.
    #[error("the selector is {len} characters long; at most {MAX_SELECTOR_LENGTH} are allowed")]
    TooLong { len: usize },
    /// A character other than letters, digits, `-`, `_`, `.` (and `*` in
    /// a pattern).
    #[error("{text:?} has the character {c:?}, which a {what} may not contain")]
    Character {
        text: String,
        c: char,
        what: &'static str,
    },
    /// A dot at the start, or `..`.
    #[error("{text:?} has an empty label")]
    EmptyLabel { text: String },
}

/// A DNS-valid character in a label, as Cilium's `allowedDNSCharsREGroup`
/// (`[-a-zA-Z0-9_]`; names are lowercase here).
fn is_label_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
}

fn check(text: &str, pattern: bool) -> Result<(), SelectorError> {
    let what = if pattern { "matchPattern" } else { "matchName" };
    if text.is_empty() {
        return Err(SelectorError::Empty);
    }
    if text.len() > MAX_SELECTOR_LENGTH {
        return Err(SelectorError::TooLong { len: text.len() });
    }
    if let Some(c) = text.chars().find(|&c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') || pattern && c == '*')
    }) {
        return Err(SelectorError::Character {
            text: text.to_string(),
            c,
            what,
        });
    }
    if text.starts_with('.') || text.contains("..") {
        return Err(SelectorError::EmptyLabel {
            text: text.to_string(),
        });
    }
    Ok(())
}

fn fully_qualified(text: &str) -> String {
    let mut text = text.to_ascii_lowercase();
    if !text.ends_with('.') {
        text.push('.');
    }
    text
}

impl FqdnSelector {
    /// Compiles a `matchName`.
    pub fn match_name(text: &str) -> Result<Self, SelectorError> {
        check(text, false)?;
        Ok(Self::Name(fully_qualified(text)))
    }

    /// Compiles a `matchPattern`.
    pub fn match_pattern(text: &str) -> Result<Self, SelectorError> {
        check(text, true)?;
        let bare = text.strip_suffix('.').unwrap_or(text);
        if bare.bytes().all(|b| b == b'*') {
            return Ok(Self::Pattern(Pattern {
                text: text.to_string(),
                shape: Shape::All,
            }));
        }
        let text = fully_qualified(text);
        let stars = text.bytes().take_while(|&b| b == b'*').count();
        let (subdomains, rest) = match text.as_bytes().get(stars) {
            Some(b'.') if stars >= 2 => (true, &text[stars + 1..]),
            _ => (false, &text[..]),
        };
        let labels = rest
            .strip_suffix('.')
            .unwrap_or(rest)
            .rsplit('.')
            .map(|label| {
                // A run of stars is one star.
                let mut out: Vec<u8> = Vec::with_capacity(label.len());
                for b in label.bytes() {
                    if !(b == b'*' && out.last() == Some(&b'*')) {
                        out.push(b);
                    }
                }
                out
            })
            .collect();
        Ok(Self::Pattern(Pattern {
            text,
            shape: Shape::Labels { subdomains, labels },
        }))
    }

    /// Whether `name` is selected.
    pub fn matches(&self, name: &DnsName) -> bool {
        match self {
            Self::Name(n) => n == name.as_str(),
            Self::Pattern(p) => p.matches(name),
        }
    }

    /// The normalized text (`api.example.com.`, `*.example.com.`, `*`).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Name(n) => n,
            Self::Pattern(p) => &p.text,
        }
    }
}

impl fmt::Display for FqdnSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => write!(f, "matchName: {n}"),
            Self::Pattern(p) => write!(f, "matchPattern: {}", p.text),
        }
    }
}

impl Pattern {
    fn matches(&self, name: &DnsName) -> bool {
        match &self.shape {
            Shape::All => name
                .labels_rev()
                .all(|l| l.iter().all(|&b| is_label_char(b))),
            Shape::Labels { subdomains, labels } => {
                let mut names = name.labels_rev();
                for pattern in labels {
                    match names.next() {
                        Some(label) if glob(pattern, label) => {}
                        _ => return false,
                    }
                }
                if *subdomains {
                    let mut rest = names.peekable();
                    rest.peek().is_some() && rest.all(|l| l.iter().all(|&b| is_label_char(b)))
                } else {
                    names.next().is_none()
                }
            }
        }
    }
}

/// Whether one label matches one pattern label, `*` matching any run of
/// label characters. Labels with other octets never match: pattern
/// literals are label characters, and so is what `*` takes.
fn glob(pattern: &[u8], label: &[u8]) -> bool {
    if !label.iter().all(|&b| is_label_char(b)) {
        return false;
    }
    // The classic greedy match with one backtrack point: correct because a
    // star may take any octet of this label.
    let (mut p, mut l) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while l < label.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, l));
            p += 1;
        } else if p < pattern.len() && pattern[p] == label[l] {
            p += 1;
            l += 1;
        } else if let Some((sp, sl)) = star {
            p = sp + 1;
            l = sl + 1;
            star = Some((sp, sl + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// The selectors of one endpoint's DNS rules (or of one policy's
/// `toFQDNs`): a name is allowed when any selects it. Names are looked up
/// in a hash set; patterns are tried in turn.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectorSet {
    names: HashSet<String>,
    patterns: Vec<Pattern>,
    all: bool,
}

impl SelectorSet {
    /// No selector: selects nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a selector.
    pub fn insert(&mut self, selector: FqdnSelector) {
        match selector {
            FqdnSelector::Name(n) => {
                self.names.insert(n);
            }
            FqdnSelector::Pattern(Pattern {
                shape: Shape::All, ..
            }) => self.all = true,
            FqdnSelector::Pattern(p) => {
                if !self.patterns.contains(&p) {
                    self.patterns.push(p);
                }
            }
        }
    }

    /// Whether no selector was added.
    pub fn is_empty(&self) -> bool {
        !self.all && self.names.is_empty() && self.patterns.is_empty()
    }

    /// Whether some selector selects `name`.
    pub fn matches(&self, name: &DnsName) -> bool {
        let every = || {
            name.labels_rev()
                .all(|l| l.iter().all(|&b| is_label_char(b)))
        };
        self.names.contains(name.as_str())
            || self.all && every()
            || self.patterns.iter().any(|p| p.matches(name))
    }
}

impl FromIterator<FqdnSelector> for SelectorSet {
    fn from_iter<I: IntoIterator<Item = FqdnSelector>>(iter: I) -> Self {
        let mut set = Self::new();
        iter.into_iter().for_each(|s| set.insert(s));
        set
    }
}

impl Extend<FqdnSelector> for SelectorSet {
    fn extend<I: IntoIterator<Item = FqdnSelector>>(&mut self, iter: I) {
        iter.into_iter().for_each(|s| self.insert(s));
    }
}

#[cfg(test)]
mod tests;
