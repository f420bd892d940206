use std::{borrow::Borrow, fmt, hash::Hash};

/// Longest key kept inline (an IPv4 address, a name, most IPv6 addresses).
const INLINE: usize = 22;

/// A key as a [`crate::WatchStore`] remembers it: short keys inline, longer
/// ones on the heap. A store of a remote cluster holds one per entry, and
/// most keys (IP addresses) fit in the 24 bytes a boxed string would take
/// before its heap allocation.
#[derive(Clone)]
pub(crate) enum ShortKey {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl ShortKey {
    pub(crate) fn new(s: &str) -> Self {
        if s.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Self::Inline {
                len: s.len() as u8,
                bytes,
            }
        } else {
            Self::Heap(s.into())
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            // The bytes were copied from a `str` of exactly this length.
            Self::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..*len as usize]).expect("copied from a str")
            }
            Self::Heap(s) => s,
        }
    }
}

impl Borrow<str> for ShortKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for ShortKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ShortKey {}

/// Hashes like the `str` it holds, so that maps can be queried with `&str`.
impl Hash for ShortKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for ShortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn inline_and_heap_keys_behave_like_strings() {
        assert_eq!(std::mem::size_of::<ShortKey>(), 24);
        let short = ShortKey::new("10.244.1.79");
        let long = ShortKey::new("fd00:10:244:1::d643:abcd:1234");
        assert!(matches!(short, ShortKey::Inline { .. }));
        assert!(matches!(long, ShortKey::Heap(_)));
        let mut map = HashMap::new();
        map.insert(short.clone(), 1);
        map.insert(long, 2);
        assert_eq!(map.get("10.244.1.79"), Some(&1));
        assert_eq!(map.get("fd00:10:244:1::d643:abcd:1234"), Some(&2));
        assert_eq!(short.as_str(), "10.244.1.79");
        assert_eq!(ShortKey::new(""), ShortKey::new(""));
    }
}
