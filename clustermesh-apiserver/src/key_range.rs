use std::fmt;

/// The keys an etcd request covers, decoded from its `key` and `range_end`
/// fields the way etcd reads them:
///
/// | `range_end` | keys |
/// |---|---|
/// | empty | `key` alone |
/// | `"\0"` | every key `>= key` ("from key") |
/// | anything else | the half-open interval `[key, range_end)` |
///
/// A prefix request (`etcdctl get --prefix P`) is the interval
/// `[P, prefix_end(P))`, so it needs no case of its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyRange {
    Key(Vec<u8>),
    Interval { start: Vec<u8>, end: Vec<u8> },
    FromKey(Vec<u8>),
}

impl KeyRange {
    /// Reads a request's `key` and `range_end`.
    pub fn from_request(key: &[u8], range_end: &[u8]) -> Self {
        match range_end {
            [] => Self::Key(key.to_vec()),
            [0] => Self::FromKey(key.to_vec()),
            end => Self::Interval {
                start: key.to_vec(),
                end: end.to_vec(),
            },
        }
    }

    /// The request's `key` and `range_end` that read as `self`: the inverse
    /// of [`KeyRange::from_request`].
    pub fn to_request(&self) -> (&[u8], &[u8]) {
        match self {
            Self::Key(key) => (key, &[]),
            Self::FromKey(start) => (start, &[0]),
            Self::Interval { start, end } => (start, end),
        }
    }

    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let start = prefix.into();
        match prefix_end(&start) {
            Some(end) => Self::Interval { start, end },
            None => Self::FromKey(start),
        }
    }

    /// Whether every key of `other` is also a key of `self`. Empty or
    /// inverted intervals are contained in nothing: etcd returns nothing for
    /// them, and refusing them costs an honest client nothing.
    pub fn contains(&self, other: &KeyRange) -> bool {
        // Turn both sides into [start, end) with `None` as +infinity.
        let Some((start, end)) = other.bounds() else {
            return false;
        };
        let Some((outer_start, outer_end)) = self.bounds() else {
            return false;
        };
        if start < outer_start {
            return false;
        }
        match (end, outer_end) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(end), Some(outer_end)) => end <= outer_end,
        }
    }

    /// `[start, end)` with `None` for "no upper bound", or `None` when the
    /// range is empty.
    fn bounds(&self) -> Option<(&[u8], Option<Vec<u8>>)> {
        match self {
            Self::Key(key) => {
                let mut end = key.clone();
                end.push(0);
                Some((key, Some(end)))
            }
            Self::Interval { start, end } if start < end => Some((start, Some(end.clone()))),
            Self::Interval { .. } => None,
            Self::FromKey(start) => Some((start, None)),
        }
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's
/// `GetPrefixRangeEnd`); `None` when there is none (empty or all-`0xff`).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match self {
            Self::Key(key) => write!(f, "{:?}", s(key)),
            Self::Interval { start, end } => write!(f, "[{:?}, {:?})", s(start), s(end)),
            Self::FromKey(start) => write!(f, "[{:?}, ∞)", s(start)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, end: &str) -> KeyRange {
        KeyRange::from_request(key.as_bytes(), end.as_bytes())
    }

    #[test]
    fn decodes_requests_like_etcd() {
        assert_eq!(req("a", ""), KeyRange::Key(b"a".to_vec()));
        assert_eq!(req("a", "\0"), KeyRange::FromKey(b"a".to_vec()));
        assert_eq!(req("a/", "a0"), KeyRange::prefix("a/"));
        assert_eq!(prefix_end(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff"), None);
        assert_eq!(KeyRange::prefix(""), KeyRange::FromKey(Vec::new()));
    }

    #[test]
    fn to_request_reverses_from_request() {
        for (key, end) in [("a", ""), ("a", "\0"), ("a/", "a0"), ("b", "a"), ("", "\0")] {
            let range = req(key, end);
            assert_eq!(range.to_request(), (key.as_bytes(), end.as_bytes()));
        }
    }

    #[test]
    fn containment() {
        let state = KeyRange::prefix("cilium/state/");
        assert!(state.contains(&req("cilium/state/", "cilium/state0")));
        assert!(state.contains(&req("cilium/state/ip/v1/", "cilium/state/ip/v10")));
        assert!(state.contains(&req("cilium/state/x", "")));
        assert!(state.contains(&req("cilium/state/a", "cilium/state/b")));
        // Reaching past the end, starting before, from-key, empty, inverted.
        assert!(!state.contains(&req("cilium/state/a", "cilium/state1")));
        assert!(!state.contains(&req("cilium/state", "cilium/state0")));
        assert!(!state.contains(&req("cilium/state/", "\0")));
        assert!(!state.contains(&req("cilium/state/b", "cilium/state/b")));
        assert!(!state.contains(&req("cilium/state/b", "cilium/state/a")));
        assert!(!state.contains(&req("cilium/state", "")));

        let key = KeyRange::Key(b"cilium/cluster-config/c1".to_vec());
        assert!(key.contains(&req("cilium/cluster-config/c1", "")));
        assert!(key.contains(&req(
            "cilium/cluster-config/c1",
            "cilium/cluster-config/c1\0"
        )));
        // A prefix read of `…/c1` also covers `…/c10`.
        assert!(!key.contains(&req("cilium/cluster-config/c1", "cilium/cluster-config/c2")));
        assert!(!key.contains(&req("cilium/cluster-config/c10", "")));

        assert!(KeyRange::FromKey(Vec::new()).contains(&req("", "\0")));
    }
}
