use std::{
    borrow::Borrow,
    collections::HashSet,
    fmt,
    ops::Deref,
    str::FromStr,
    sync::{Arc, LazyLock, Mutex},
};

/// Label naming the cluster of a workload; part of every identity in a mesh.
pub const CLUSTER_LABEL: &str = "io.cilium.k8s.policy.cluster";
/// Label naming the namespace of a workload.
pub const NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Source of labels that come from Kubernetes (or, without Kubernetes, from the
/// endpoint's definition).
pub const SOURCE_K8S: &str = "k8s";
/// Source used when a label string has no `source:` part.
pub const SOURCE_UNSPEC: &str = "unspec";

/// Why a label string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("label {0:?} has an empty key")]
    EmptyKey(String),
    #[error("label {0:?} contains ';', which separates labels")]
    Separator(String),
    #[error("labels {first:?} and {second:?} have the same key")]
    DuplicateKey { first: String, second: String },
}

/// The text of a label's source, key or value: immutable and shared. An
/// agent keeps the labels of every identity of the mesh, and their sources
/// and keys are few ([`Label::new`] shares them: one copy each).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelText(Arc<str>);

/// Texts shared so far, and the most kept: a remote cluster chooses its
/// label keys, so what is beyond the limit is simply not shared.
static SHARED_TEXTS: LazyLock<Mutex<HashSet<Arc<str>>>> = LazyLock::new(Mutex::default);
const MAX_SHARED_TEXTS: usize = 4096;
const MAX_SHARED_LEN: usize = 128;

impl LabelText {
    /// The text, with one copy for every label that names it (up to a
    /// limit).
    pub fn shared(s: &str) -> Self {
        if s.len() > MAX_SHARED_LEN {
            return Self(s.into());
        }
        let mut texts = SHARED_TEXTS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = texts.get(s) {
            return Self(t.clone());
        }
        let t: Arc<str> = s.into();
        if texts.len() < MAX_SHARED_TEXTS {
            texts.insert(t.clone());
        }
        Self(t)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for LabelText {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for LabelText {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for LabelText {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for LabelText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for LabelText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for LabelText {
    fn from(s: &str) -> Self {
        Self(s.into())
    }
}

impl From<String> for LabelText {
    fn from(s: String) -> Self {
        Self(s.into())
    }
}

impl From<&String> for LabelText {
    fn from(s: &String) -> Self {
        Self(s.as_str().into())
    }
}

impl From<LabelText> for String {
    fn from(t: LabelText) -> Self {
        t.0.to_string()
    }
}

impl PartialEq<str> for LabelText {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for LabelText {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for LabelText {
    fn eq(&self, other: &String) -> bool {
        &*self.0 == other.as_str()
    }
}

impl PartialEq<LabelText> for str {
    fn eq(&self, other: &LabelText) -> bool {
        self == &*other.0
    }
}

impl PartialEq<LabelText> for &str {
    fn eq(&self, other: &LabelText) -> bool {
        *self == &*other.0
    }
}

impl PartialEq<LabelText> for String {
    fn eq(&self, other: &LabelText) -> bool {
        self.as_str() == &*other.0
    }
}

/// One `source:key=value` label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    pub source: LabelText,
    pub key: LabelText,
    pub value: LabelText,
}

impl Label {
    /// A label; its source and key are shared with every label that names
    /// them.
    pub fn new(source: impl AsRef<str>, key: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        Self {
            source: LabelText::shared(source.as_ref()),
            key: LabelText::shared(key.as_ref()),
            value: LabelText::from(value.as_ref()),
        }
    }

    /// A `k8s:` label.
    pub fn k8s(key: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        Self::new(SOURCE_K8S, key, value)
    }
}

impl FromStr for Label {
    type Err = LabelError;

    /// Parses `source:key=value`, `key=value` (source `unspec`) or
    /// `source:key` (empty value).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(';') {
            return Err(LabelError::Separator(s.to_string()));
        }
        let eq = s.find('=').unwrap_or(s.len());
        let (source, rest) = match s[..eq].find(':') {
            Some(colon) => (&s[..colon], &s[colon + 1..]),
            None => (SOURCE_UNSPEC, s),
        };
        let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
        if key.is_empty() {
            return Err(LabelError::EmptyKey(s.to_string()));
        }
        Ok(Self::new(source, key, value))
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}={}", self.source, self.key, self.value)
    }
}

/// A set of labels, one per key, kept sorted by key.
///
/// The canonical string, used in identity keys and as identity master values,
/// lists every label as `source:key=value;` in key order, e.g.
/// `k8s:app=web;k8s:io.cilium.k8s.policy.cluster=c1;k8s:io.kubernetes.pod.namespace=default;`.
///
/// Stored as a sorted vector: an agent keeps one per identity of the whole
/// mesh, and a handful of labels fit a vector far better than a tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Vec<Label>);

impl Labels {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a set; two labels with the same key are an error.
    pub fn from_labels(labels: impl IntoIterator<Item = Label>) -> Result<Self, LabelError> {
        let mut set = Self::new();
        for label in labels {
            if let Some(prev) = set.get(&label.key) {
                return Err(LabelError::DuplicateKey {
                    first: prev.to_string(),
                    second: label.to_string(),
                });
            }
            set.insert(label);
        }
        // Kept for the identity's life: no room to spare.
        set.0.shrink_to_fit();
        Ok(set)
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|l| l.key.as_str().cmp(key))
    }

    /// Adds or replaces the label with this key.
    pub fn insert(&mut self, label: Label) {
        match self.position(&label.key) {
            Ok(i) => self.0[i] = label,
            Err(i) => self.0.insert(i, label),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Label> {
        self.position(key).ok().map(|i| &self.0[i])
    }

    /// The value of the label with this key.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.get(key).map(|l| l.value.as_str())
    }

    /// The cluster named by the `io.cilium.k8s.policy.cluster` label.
    pub fn cluster(&self) -> Option<&str> {
        self.value(CLUSTER_LABEL)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The canonical `source:key=value;…` string.
    pub fn canonical(&self) -> String {
        let mut s = String::with_capacity(self.0.len() * 32);
        for l in &self.0 {
            s.push_str(&l.source);
            s.push(':');
            s.push_str(&l.key);
            s.push('=');
            s.push_str(&l.value);
            s.push(';');
        }
        s
    }

    /// Parses a canonical string (as stored in etcd). The trailing `;` is
    /// optional; labels may come in any order.
    pub fn parse_canonical(s: &str) -> Result<Self, LabelError> {
        Self::from_labels(
            s.split(';')
                .filter(|part| !part.is_empty())
                .map(str::parse)
                .collect::<Result<Vec<Label>, _>>()?,
        )
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

impl FromIterator<Label> for Labels {
    /// Collects labels; a later label replaces an earlier one with the same key.
    fn from_iter<I: IntoIterator<Item = Label>>(iter: I) -> Self {
        let mut set = Self::new();
        for l in iter {
            set.insert(l);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_string_is_sorted_by_key() {
        let labels: Labels = [
            Label::k8s(NAMESPACE_LABEL, "default"),
            Label::k8s("app", "web"),
            Label::k8s(CLUSTER_LABEL, "c1"),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            labels.canonical(),
            "k8s:app=web;k8s:io.cilium.k8s.policy.cluster=c1;k8s:io.kubernetes.pod.namespace=default;"
        );
        assert_eq!(labels.cluster(), Some("c1"));
    }

    #[test]
    fn parses_what_it_writes() {
        let s = "k8s:app=baz;k8s:io.cilium.k8s.policy.cluster=cluster3;k8s:io.kubernetes.pod.namespace=foo;";
        let labels = Labels::parse_canonical(s).unwrap();
        assert_eq!(labels.len(), 3);
        assert_eq!(labels.canonical(), s);
        assert_eq!(labels.value("app"), Some("baz"));
    }

    #[test]
    fn label_forms() {
        assert_eq!("k8s:a=b".parse::<Label>().unwrap(), Label::k8s("a", "b"));
        assert_eq!(
            "a=b".parse::<Label>().unwrap(),
            Label::new("unspec", "a", "b")
        );
        assert_eq!(
            "reserved:host".parse::<Label>().unwrap(),
            Label::new("reserved", "host", "")
        );
        // A ':' in the value does not move the source split.
        assert_eq!(
            "k8s:url=http://x".parse::<Label>().unwrap(),
            Label::k8s("url", "http://x")
        );
        assert_eq!(
            "k8s:=x".parse::<Label>(),
            Err(LabelError::EmptyKey("k8s:=x".into()))
        );
    }

    #[test]
    fn sources_and_keys_are_shared() {
        let a = Label::k8s("app", "a");
        let b: Label = "k8s:app=b".parse().unwrap();
        assert!(Arc::ptr_eq(&a.key.0, &b.key.0));
        assert!(Arc::ptr_eq(&a.source.0, &b.source.0));
        assert_eq!(a.key, "app");
        assert_eq!(b.to_string(), "k8s:app=b");
        let long = "k".repeat(MAX_SHARED_LEN + 1);
        assert!(!Arc::ptr_eq(
            &LabelText::shared(&long).0,
            &LabelText::shared(&long).0
        ));
    }

    #[test]
    fn duplicate_keys_are_refused() {
        assert!(matches!(
            Labels::parse_canonical("k8s:a=1;k8s:a=2;"),
            Err(LabelError::DuplicateKey { .. })
        ));
    }
}
