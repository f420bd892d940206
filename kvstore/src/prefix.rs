use std::fmt;

/// A key prefix that always ends in `/`, so that watching `…/c1/` never sees
/// keys of `…/c10/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    /// `path` with a `/` appended unless it already ends in one.
    pub fn new(path: impl Into<String>) -> Self {
        let mut s = path.into();
        if !s.ends_with('/') {
            s.push('/');
        }
        Self(s)
    }

    /// The prefix including its trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix without its trailing `/` (the form canaries are named by).
    pub fn trimmed(&self) -> &str {
        &self.0[..self.0.len() - 1]
    }

    /// A sub-prefix: `self` + `segment` + `/`.
    pub fn child(&self, segment: &str) -> Self {
        Self::new(format!("{}{}", self.0, segment))
    }

    /// The full key for `suffix` under this prefix.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}{}", self.0, suffix)
    }

    /// The part of `key` after the prefix, if `key` is under it.
    pub fn strip<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.0.as_str())
    }

    /// The first key after every key of the prefix (etcd's `range_end` for a
    /// prefix range).
    pub fn range_end(&self) -> Vec<u8> {
        let mut end = self.0.as_bytes().to_vec();
        // The prefix ends in '/', which is not 0xff, so incrementing it is enough.
        *end.last_mut().expect("a prefix is never empty") += 1;
        end
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for KeyPrefix {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_ends_in_slash() {
        assert_eq!(KeyPrefix::new("a/c1").as_str(), "a/c1/");
        assert_eq!(KeyPrefix::new("a/c1/").as_str(), "a/c1/");
        assert_eq!(KeyPrefix::new("a").child("c1").as_str(), "a/c1/");
        assert_eq!(KeyPrefix::new("a/c1").trimmed(), "a/c1");
    }

    #[test]
    fn c1_is_not_c10() {
        let p = KeyPrefix::new("nodes/c1");
        assert_eq!(p.strip("nodes/c1/n1"), Some("n1"));
        assert_eq!(p.strip("nodes/c10/n1"), None);
        assert_eq!(p.range_end(), b"nodes/c10".to_vec());
        assert!(b"nodes/c10/n1".as_slice() >= p.range_end().as_slice());
    }
}
