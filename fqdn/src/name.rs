use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

/// The longest name, in octets of its labels and the dots between them
/// (RFC 1035's 255 octets on the wire, less the first length octet and the
/// root label).
pub const MAX_NAME_LENGTH: usize = 253;

/// The longest label, in octets (RFC 1035).
pub const MAX_LABEL_LENGTH: usize = 63;

/// A DNS name as policy sees it: fully qualified, lowercase ASCII, written
/// with its trailing dot (`api.example.com.`), the root being `.`. This is
/// how Cilium keys its caches and matches selectors (`dns.FQDN` of the
/// lower-cased query name).
///
/// Octets other than letters, digits and ASCII punctuation are written in
/// the presentation format's escapes (`\032`, and `\.` for a dot inside a
/// label), so that any name on the wire has one text; such names contain a
/// `\` and match no selector, as in Cilium. At most [`MAX_NAME_LENGTH`]
/// octets, labels of at most [`MAX_LABEL_LENGTH`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsName(String);

/// Why a text is not a [`DnsName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing at all (the root is `.`).
    #[error("the name is empty (the root is \".\")")]
    Empty,
    /// Longer than [`MAX_NAME_LENGTH`] octets.
    #[error("the name is {len} octets long; at most {MAX_NAME_LENGTH} are allowed")]
    TooLong { len: usize },
    /// A label longer than [`MAX_LABEL_LENGTH`] octets.
    #[error("a label of the name is {len} octets long; at most {MAX_LABEL_LENGTH} are allowed")]
    LabelTooLong { len: usize },
    /// `a..b`, or a dot at the start.
    #[error("the name {name:?} has an empty label")]
    EmptyLabel { name: String },
    /// A space, a control character or a non-ASCII character, or a `\`
    /// that starts no escape.
    #[error("the name {name:?} has the character {c:?}, which is not written as is in a name")]
    Character { name: String, c: char },
}

impl DnsName {
    /// The root, `.`.
    pub fn root() -> Self {
        Self(".".into())
    }

    /// Reads a name in presentation format (`API.example.com` or
    /// `api.example.com.`, escapes allowed), lowercases it and adds the
    /// trailing dot.
    pub fn new(text: &str) -> Result<Self, NameError> {
        if text.is_empty() {
            return Err(NameError::Empty);
        }
        if text == "." {
            return Ok(Self::root());
        }
        let bytes = text.as_bytes();
        let bad = |c: char| NameError::Character {
            name: text.to_string(),
            c,
        };
        let (mut octets, mut label, mut ends_with_dot) = (0usize, 0usize, false);
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            ends_with_dot = b == b'.';
            if b == b'.' {
                if label == 0 {
                    return Err(NameError::EmptyLabel {
                        name: text.to_string(),
                    });
                }
                (label, octets, i) = (0, octets + 1, i + 1);
                continue;
            }
            if b == b'\\' {
                // `\DDD` (a decimal octet) or `\X` (X itself).
                let decimal = bytes
                    .get(i + 1..i + 4)
                    .filter(|d| d.iter().all(u8::is_ascii_digit))
                    .map(|d| d.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')));
                match (decimal, bytes.get(i + 1)) {
                    (Some(n), _) if n <= 255 => i += 4,
                    (None, Some(next)) if next.is_ascii_graphic() && !next.is_ascii_digit() => {
                        i += 2
                    }
                    _ => return Err(bad('\\')),
                }
            } else if b.is_ascii_graphic() {
                i += 1;
            } else {
                return Err(bad(text[i..].chars().next().unwrap_or('\u{fffd}')));
            }
            label += 1;
            octets += 1;
            if label > MAX_LABEL_LENGTH {
                return Err(NameError::LabelTooLong { len: label });
            }
        }
        let mut name = text.to_ascii_lowercase();
        if ends_with_dot {
            // The trailing dot ends the name; it is no octet of it.
            octets -= 1;
        } else {
            name.push('.');
        }
        if octets > MAX_NAME_LENGTH {
            return Err(NameError::TooLong { len: octets });
        }
        Ok(Self(name))
    }

    /// The name of labels read off the wire, escaped where needed.
    pub(crate) fn from_labels<'a>(
        labels: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, NameError> {
        let mut name = String::new();
        let mut octets = 0usize;
        for label in labels {
            if label.is_empty() {
                return Err(NameError::EmptyLabel { name });
            }
            if label.len() > MAX_LABEL_LENGTH {
                return Err(NameError::LabelTooLong { len: label.len() });
            }
            octets += label.len() + 1;
            if octets > MAX_NAME_LENGTH + 1 {
                return Err(NameError::TooLong { len: octets - 1 });
            }
            for &b in label {
                match b.to_ascii_lowercase() {
                    b @ (b'.' | b'\\') => {
                        name.push('\\');
                        name.push(b as char);
                    }
                    b if b.is_ascii_graphic() => name.push(b as char),
                    b => {
                        name.push('\\');
                        name.push_str(&format!("{b:03}"));
                    }
                }
            }
            name.push('.');
        }
        if name.is_empty() {
            return Ok(Self::root());
        }
        Ok(Self(name))
    }

    /// The text, with its trailing dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the root (`.`).
    pub fn is_root(&self) -> bool {
        self.0 == "."
    }

    /// The labels from the rightmost (the TLD) to the leftmost, split at
    /// every dot: a label with an escaped dot comes in two pieces, both
    /// holding a `\`, which no selector matches.
    pub(crate) fn labels_rev(&self) -> impl Iterator<Item = &[u8]> {
        let body = self.0.strip_suffix('.').unwrap_or(&self.0);
        body.as_bytes()
            .rsplit(|&b| b == b'.')
            .filter(|_| !body.is_empty())
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl FromStr for DnsName {
    type Err = NameError;

    fn from_str(text: &str) -> Result<Self, NameError> {
        Self::new(text)
    }
}

impl AsRef<str> for DnsName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for DnsName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DnsName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::new(&text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercase_and_fully_qualified() {
        assert_eq!(
            DnsName::new("API.Example.com").unwrap().as_str(),
            "api.example.com."
        );
        assert_eq!(
            DnsName::new("api.example.com.").unwrap().as_str(),
            "api.example.com."
        );
        assert_eq!(DnsName::new(".").unwrap(), DnsName::root());
        assert!(DnsName::root().is_root());
        assert_eq!(
            DnsName::new("_http._tcp.x").unwrap().as_str(),
            "_http._tcp.x."
        );
        let abc = DnsName::new("a.b.c").unwrap();
        let labels: Vec<&[u8]> = abc.labels_rev().collect();
        assert_eq!(labels, [&b"c"[..], b"b", b"a"]);
        assert_eq!(DnsName::root().labels_rev().count(), 0);
    }

    #[test]
    fn bad_names_are_refused_with_a_reason() {
        assert_eq!(DnsName::new(""), Err(NameError::Empty));
        assert!(matches!(
            DnsName::new("a..b"),
            Err(NameError::EmptyLabel { .. })
        ));
        assert!(matches!(
            DnsName::new(".a"),
            Err(NameError::EmptyLabel { .. })
        ));
        assert!(matches!(
            DnsName::new("a b.com"),
            Err(NameError::Character { c: ' ', .. })
        ));
        assert!(matches!(
            DnsName::new("exämple.com"),
            Err(NameError::Character { c: 'ä', .. })
        ));
        assert!(matches!(
            DnsName::new("a\\"),
            Err(NameError::Character { c: '\\', .. })
        ));
        assert!(matches!(
            DnsName::new("a\\999"),
            Err(NameError::Character { .. })
        ));
        let label = "a".repeat(64);
        assert_eq!(
            DnsName::new(&label),
            Err(NameError::LabelTooLong { len: 64 })
        );
        // 4 labels of 63 and the dots: 255 octets; 253 is the most.
        let long = [&"a".repeat(63)[..]; 4].join(".");
        assert_eq!(DnsName::new(&long), Err(NameError::TooLong { len: 255 }));
        let most = format!("{}.{}", [&"a".repeat(63)[..]; 3].join("."), "a".repeat(61));
        assert_eq!(most.len(), 253);
        assert!(DnsName::new(&most).is_ok());
        assert!(DnsName::new(&format!("{most}.")).is_ok());
    }

    #[test]
    fn wire_labels_are_escaped_and_read_back() {
        let name = DnsName::from_labels([&b"A b"[..], b"x.y", b"\\", b"com"]).unwrap();
        assert_eq!(name.as_str(), "a\\032b.x\\.y.\\\\.com.");
        assert_eq!(DnsName::new(name.as_str()).unwrap(), name);
        assert_eq!(DnsName::from_labels([]).unwrap(), DnsName::root());
        let long: Vec<Vec<u8>> = vec![vec![b'a'; 63]; 4];
        assert!(matches!(
            DnsName::from_labels(long.iter().map(Vec::as_slice)),
            Err(NameError::TooLong { .. })
        ));
        // Serialized as its text, checked when read.
        let json = serde_json::to_string(&name).unwrap();
        assert_eq!(serde_json::from_str::<DnsName>(&json).unwrap(), name);
        assert!(serde_json::from_str::<DnsName>("\"a..b\"").is_err());
    }
}
