//! Kubernetes label selectors over Cilium labels (`source:key=value`), as
//! Hubble's `source_label`, `destination_label` and `node_labels` filters
//! read them.
//!
//! The syntax is Kubernetes' (`k8s.io/apimachinery/pkg/labels`): comma
//! separated requirements, all of which must hold, each one of `key`,
//! `!key`, `key=value`, `key==value`, `key!=value`, `key in (a,b)`,
//! `key notin (a,b)`, `key>n` and `key<n`. Cilium extends the key with a
//! label source: `k8s:app` only matches the label `app` of source `k8s`,
//! while a key without a source (`app`) matches that key from any source,
//! as Cilium's `any:` source does.

use std::fmt;

/// Label source that matches every source (Cilium's `LabelSourceAny`).
const ANY_SOURCE: &str = "any";

/// Source of a label written without one (Cilium's `LabelSourceUnspec`).
const UNSPEC_SOURCE: &str = "unspec";

/// A parsed selector: a flow's labels match when every requirement holds.
/// An empty selector matches every label set, as in Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LabelSelector {
    requirements: Vec<Requirement>,
}

/// Why a selector does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SelectorError(String);

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: LabelKey,
    op: Operator,
}

/// A selector key: `None` as the source matches any source.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LabelKey {
    source: Option<String>,
    key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Operator {
    Exists,
    DoesNotExist,
    /// `=`, `==` and `in`.
    In(Vec<String>),
    /// `!=` and `notin`: also holds when the key is absent.
    NotIn(Vec<String>),
    GreaterThan(i64),
    LessThan(i64),
}

impl LabelSelector {
    /// Parses `selector`.
    pub(crate) fn parse(selector: &str) -> Result<Self, SelectorError> {
        Parser::new(selector).parse()
    }

    /// Whether `labels` (Cilium's `source:key=value` strings) match.
    pub(crate) fn matches<S: AsRef<str>>(&self, labels: &[S]) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl Requirement {
    fn matches<S: AsRef<str>>(&self, labels: &[S]) -> bool {
        // As Cilium's LabelArray.Get: the first label with the key wins.
        let value = labels
            .iter()
            .map(|l| split_label(l.as_ref()))
            .find(|(source, key, _)| self.key.selects(source, key))
            .map(|(_, _, value)| value);
        match (&self.op, value) {
            (Operator::Exists, found) => found.is_some(),
            (Operator::DoesNotExist, found) => found.is_none(),
            (Operator::In(values), Some(v)) => values.iter().any(|x| x == v),
            (Operator::In(_), None) => false,
            (Operator::NotIn(values), Some(v)) => !values.iter().any(|x| x == v),
            (Operator::NotIn(_), None) => true,
            (Operator::GreaterThan(n), Some(v)) => v.parse::<i64>().is_ok_and(|v| v > *n),
            (Operator::LessThan(n), Some(v)) => v.parse::<i64>().is_ok_and(|v| v < *n),
            (Operator::GreaterThan(_) | Operator::LessThan(_), None) => false,
        }
    }
}

impl LabelKey {
    fn selects(&self, source: &str, key: &str) -> bool {
        key == self.key && self.source.as_deref().is_none_or(|s| s == source)
    }
}

/// Splits a Cilium label `source:key=value` into its parts. A label without
/// a source before its value (`key=value`) has the `unspec` source.
fn split_label(label: &str) -> (&str, &str, &str) {
    let (source, rest) = match label.find([':', '=']) {
        Some(i) if label.as_bytes()[i] == b':' => (&label[..i], &label[i + 1..]),
        _ => (UNSPEC_SOURCE, label),
    };
    let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
    (source, key, value)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'a> {
    Ident(&'a str),
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    Greater,
    Less,
    Open,
    Close,
    Comma,
    End,
}

impl fmt::Display for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => write!(f, "{s:?}"),
            Token::Not => f.write_str("'!'"),
            Token::Equals => f.write_str("'='"),
            Token::DoubleEquals => f.write_str("'=='"),
            Token::NotEquals => f.write_str("'!='"),
            Token::Greater => f.write_str("'>'"),
            Token::Less => f.write_str("'<'"),
            Token::Open => f.write_str("'('"),
            Token::Close => f.write_str("')'"),
            Token::Comma => f.write_str("','"),
            Token::End => f.write_str("end of selector"),
        }
    }
}

/// Characters that end an identifier (Kubernetes' special symbols).
fn is_special(c: char) -> bool {
    matches!(c, '!' | '=' | '(' | ')' | ',' | '<' | '>')
}

/// A recursive-descent parser over the Kubernetes selector grammar, with
/// one token of lookahead.
struct Parser<'a> {
    rest: &'a str,
    peeked: Option<Token<'a>>,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Self {
            rest: input,
            peeked: None,
        }
    }

    fn lex(&mut self) -> Token<'a> {
        self.rest = self.rest.trim_start();
        let mut chars = self.rest.chars();
        let Some(c) = chars.next() else {
            return Token::End;
        };
        let second = chars.next();
        let (token, len) = match (c, second) {
            ('!', Some('=')) => (Token::NotEquals, 2),
            ('!', _) => (Token::Not, 1),
            ('=', Some('=')) => (Token::DoubleEquals, 2),
            ('=', _) => (Token::Equals, 1),
            ('>', _) => (Token::Greater, 1),
            ('<', _) => (Token::Less, 1),
            ('(', _) => (Token::Open, 1),
            (')', _) => (Token::Close, 1),
            (',', _) => (Token::Comma, 1),
            _ => {
                let len = self
                    .rest
                    .find(|c: char| c.is_whitespace() || is_special(c))
                    .unwrap_or(self.rest.len());
                (Token::Ident(&self.rest[..len]), len)
            }
        };
        self.rest = &self.rest[len..];
        token
    }

    fn next(&mut self) -> Token<'a> {
        self.peeked.take().unwrap_or_else(|| self.lex())
    }

    fn peek(&mut self) -> &Token<'a> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lex());
        }
        self.peeked.as_ref().expect("just peeked")
    }

    fn parse(mut self) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        if *self.peek() == Token::End {
            return Ok(LabelSelector { requirements });
        }
        loop {
            requirements.push(self.requirement()?);
            match self.next() {
                Token::End => return Ok(LabelSelector { requirements }),
                Token::Comma => {}
                other => return Err(unexpected(&other, "',' or end of selector")),
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if *self.peek() == Token::Not {
            self.next();
            let key = self.key()?;
            return Ok(Requirement {
                key,
                op: Operator::DoesNotExist,
            });
        }
        let key = self.key()?;
        let op = match self.peek() {
            Token::End | Token::Comma => Operator::Exists,
            _ => match self.next() {
                Token::Equals | Token::DoubleEquals => Operator::In(vec![self.exact_value()?]),
                Token::NotEquals => Operator::NotIn(vec![self.exact_value()?]),
                Token::Greater => Operator::GreaterThan(self.integer()?),
                Token::Less => Operator::LessThan(self.integer()?),
                Token::Ident("in") => Operator::In(self.value_set()?),
                Token::Ident("notin") => Operator::NotIn(self.value_set()?),
                other => {
                    return Err(unexpected(
                        &other,
                        "'=', '==', '!=', 'in', 'notin', '>' or '<'",
                    ));
                }
            },
        };
        Ok(Requirement { key, op })
    }

    fn key(&mut self) -> Result<LabelKey, SelectorError> {
        match self.next() {
            Token::Ident(ident) => parse_key(ident),
            other => Err(unexpected(&other, "a label key")),
        }
    }

    /// The value after `=`, `==` or `!=`: absent means the empty value.
    fn exact_value(&mut self) -> Result<String, SelectorError> {
        match self.peek() {
            Token::End | Token::Comma => Ok(String::new()),
            _ => match self.next() {
                Token::Ident(v) => parse_value(v),
                other => Err(unexpected(&other, "a label value")),
            },
        }
    }

    fn integer(&mut self) -> Result<i64, SelectorError> {
        match self.next() {
            Token::Ident(v) => v
                .parse()
                .map_err(|_| SelectorError(format!("{v:?} is not an integer"))),
            other => Err(unexpected(&other, "an integer")),
        }
    }

    /// `( value, value, ... )`: at least one value; an empty element is
    /// the empty value.
    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            Token::Open => {}
            other => return Err(unexpected(&other, "'('")),
        }
        let mut values = Vec::new();
        let mut expect_value = true;
        loop {
            match self.next() {
                Token::Close => {
                    if expect_value && !values.is_empty() {
                        values.push(String::new());
                    }
                    break;
                }
                Token::Comma => {
                    if expect_value {
                        values.push(String::new());
                    }
                    expect_value = true;
                }
                Token::Ident(v) if expect_value => {
                    values.push(parse_value(v)?);
                    expect_value = false;
                }
                other => return Err(unexpected(&other, "a label value, ',' or ')'")),
            }
        }
        if values.is_empty() {
            return Err(SelectorError(
                "'in' and 'notin' need at least one value".to_owned(),
            ));
        }
        Ok(values)
    }
}

fn unexpected(found: &Token<'_>, expected: &str) -> SelectorError {
    SelectorError(format!("found {found}, expected {expected}"))
}

/// Parses `[source:]key`. Cilium turns it into the Kubernetes key
/// `source.key` (`any.key` without a source), which must be a qualified
/// name; the same rule is checked here.
fn parse_key(ident: &str) -> Result<LabelKey, SelectorError> {
    let (source, key) = match ident.split_once(':') {
        Some((source, key)) => (Some(source), key),
        None => (None, ident),
    };
    let qualified = format!("{}.{key}", source.unwrap_or(ANY_SOURCE));
    if !is_qualified_name(&qualified) {
        return Err(SelectorError(format!(
            "invalid label key {ident:?}: want [source:]key with a key of letters, \
             digits, '-', '_', '.' and an optional 'prefix/'"
        )));
    }
    Ok(LabelKey {
        source: source.filter(|s| *s != ANY_SOURCE).map(str::to_owned),
        key: key.to_owned(),
    })
}

fn parse_value(value: &str) -> Result<String, SelectorError> {
    if value.is_empty() || is_name(value) {
        Ok(value.to_owned())
    } else {
        Err(SelectorError(format!(
            "invalid label value {value:?}: want at most 63 letters, digits, '-', '_' \
             or '.', starting and ending with a letter or digit"
        )))
    }
}

/// Kubernetes' qualified name: `[dns-subdomain/]name`.
fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name(name),
        None => is_name(s),
    }
}

/// At most 63 of `[A-Za-z0-9_.-]`, starting and ending alphanumeric.
fn is_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// At most 253 of `[a-z0-9.-]`, starting and ending alphanumeric.
fn is_dns_subdomain(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 253
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    const FOO: &[&str] = &[
        "k8s:app=foo",
        "k8s:io.kubernetes.pod.namespace=default",
        "k8s:tier=3",
        "container:app=bar",
        "reserved:world",
    ];

    #[test]
    fn splits_cilium_labels() {
        assert_eq!(split_label("k8s:app=foo"), ("k8s", "app", "foo"));
        assert_eq!(split_label("reserved:world"), ("reserved", "world", ""));
        assert_eq!(split_label("app=a:b"), ("unspec", "app", "a:b"));
        assert_eq!(split_label("plain"), ("unspec", "plain", ""));
        assert_eq!(
            split_label("k8s:app.kubernetes.io/name=x=y"),
            ("k8s", "app.kubernetes.io/name", "x=y")
        );
    }

    #[test]
    fn selectors_match_like_cilium() {
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("k8s:app=foo", true),
            ("k8s:app==foo", true),
            ("app=foo", true),
            ("any:app=foo", true),
            ("container:app=foo", false),
            // The first label with the key decides, as LabelArray.Get.
            ("app=bar", false),
            ("container:app=bar", true),
            ("k8s:app=bar", false),
            ("k8s:app", true),
            ("app", true),
            ("!app", false),
            ("!k8s:version", true),
            ("k8s:app!=foo", false),
            ("k8s:app!=bar", true),
            ("version!=1", true),
            ("k8s:app in (foo, bar)", true),
            ("k8s:app in (bar,baz)", false),
            ("k8s:app notin (bar,baz)", true),
            ("k8s:app notin (foo)", false),
            ("version notin (1)", true),
            ("reserved:world", true),
            ("reserved:host", false),
            ("k8s:world", false),
            ("k8s:app=foo,reserved:world", true),
            ("k8s:app=foo, !reserved:world", false),
            (
                "k8s:app in (foo, bar), k8s:io.kubernetes.pod.namespace=default",
                true,
            ),
            ("k8s:tier>2", true),
            ("k8s:tier>3", false),
            ("k8s:tier<4", true),
            ("k8s:app>1", false),
            ("missing>1", false),
        ];
        for (s, want) in cases {
            assert_eq!(sel(s).matches(FOO), *want, "{s:?}");
        }
        assert!(sel("!app").matches::<&str>(&[]));
        assert!(!sel("app").matches::<&str>(&[]));
    }

    #[test]
    fn node_labels_without_source() {
        let labels = [
            "kubernetes.io/hostname=node-1",
            "topology.kubernetes.io/zone=a",
        ];
        assert!(sel("kubernetes.io/hostname=node-1").matches(&labels));
        assert!(sel("unspec:topology.kubernetes.io/zone in (a, b)").matches(&labels));
        assert!(!sel("k8s:kubernetes.io/hostname=node-1").matches(&labels));
    }

    #[test]
    fn bad_selectors_are_rejected() {
        let cases: &[(&str, &str)] = &[
            (
                "k8s:app=foo=bar",
                "found '=', expected ',' or end of selector",
            ),
            ("app in foo", "found \"foo\", expected '('"),
            ("app in ()", "need at least one value"),
            (
                "app in (a b)",
                "found \"b\", expected a label value, ',' or ')'",
            ),
            ("app foo", "found \"foo\", expected '='"),
            ("=foo", "found '=', expected a label key"),
            ("app=", ""),
            ("app,", "found end of selector, expected a label key"),
            ("!", "expected a label key"),
            ("app>x", "\"x\" is not an integer"),
            (":app", "invalid label key \":app\""),
            ("k8s:app=-x", "invalid label value \"-x\""),
            ("app=a/b", "invalid label value"),
            ("Foo/app", "invalid label key"),
        ];
        for (s, want) in cases {
            match LabelSelector::parse(s) {
                Ok(_) if want.is_empty() => {}
                Ok(parsed) => panic!("{s:?} parsed as {parsed:?}, want error {want:?}"),
                Err(e) => assert!(
                    !want.is_empty() && e.to_string().contains(want),
                    "{s:?}: error {e:?}, want {want:?}"
                ),
            }
        }
    }

    #[test]
    fn empty_values() {
        assert!(sel("reserved:world=").matches(FOO));
        assert!(sel("reserved:world in (,x)").matches(FOO));
        assert!(sel("reserved:world in (x,)").matches(FOO));
        assert!(!sel("reserved:world!=").matches(FOO));
    }
}
