//! Serde helpers for Go's JSON conventions.

use std::net::IpAddr;

use base64::{Engine, engine::general_purpose::STANDARD};
use serde::{Deserialize, Deserializer, Serializer, de::Error};

/// Go writes a nil map or slice as `null`: read it as the empty value.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Go's `net.IP`: a string, `""` for a nil address.
pub(crate) mod opt_ip {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(ip: &Option<IpAddr>, s: S) -> Result<S::Ok, S::Error> {
        match ip {
            Some(ip) => s.collect_str(ip),
            None => s.serialize_str(""),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
        match Option::<String>::deserialize(d)?.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => s.parse().map(Some).map_err(D::Error::custom),
        }
    }
}

/// Go's `[]byte` (e.g. `net.IPMask`): base64, `null` for nil.
pub(crate) mod opt_base64 {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match b {
            Some(b) => s.serialize_str(&STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => STANDARD.decode(s).map(Some).map_err(D::Error::custom),
        }
    }
}

/// Prefix length of a contiguous netmask, `None` if it is not contiguous.
pub(crate) fn mask_prefix_len(mask: &[u8]) -> Option<u8> {
    let mut ones = 0u32;
    let mut seen_zero = false;
    for byte in mask {
        for bit in (0..8).rev() {
            if byte & (1 << bit) != 0 {
                if seen_zero {
                    return None;
                }
                ones += 1;
            } else {
                seen_zero = true;
            }
        }
    }
    u8::try_from(ones).ok()
}

/// The netmask bytes for a prefix length (4 bytes for IPv4, 16 for IPv6).
pub(crate) fn prefix_len_mask(len: u8, bytes: usize) -> Vec<u8> {
    (0..bytes)
        .map(|i| {
            let bits = (len as usize).saturating_sub(i * 8).min(8);
            (0xFFu16 << (8 - bits)) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(mask_prefix_len(&[255, 255, 255, 0]), Some(24));
        assert_eq!(mask_prefix_len(&[255, 0, 255, 0]), None);
        assert_eq!(prefix_len_mask(24, 4), vec![255, 255, 255, 0]);
        assert_eq!(prefix_len_mask(20, 4), vec![255, 255, 240, 0]);
        assert_eq!(prefix_len_mask(0, 4), vec![0, 0, 0, 0]);
        assert_eq!(prefix_len_mask(64, 16)[7..9], [255, 0]);
        assert_eq!(STANDARD.encode(prefix_len_mask(24, 4)), "////AA==");
    }
}

/// A label map whose values must be strings: YAML's `app: 5` or `x: true`
/// is refused (quote it: `app: "5"`), so a selector never matches a label
/// value nobody wrote.
pub(crate) mod string_map {
    use std::{collections::BTreeMap, fmt};

    use serde::{
        Deserializer,
        de::{self, MapAccess, Visitor},
    };

    struct StrictString;

    impl<'de> Visitor<'de> for StrictString {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string (quote numbers and booleans, e.g. \"5\")")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
    }

    struct Value;

    impl<'de> de::DeserializeSeed<'de> for Value {
        type Value = String;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
            d.deserialize_any(StrictString)
        }
    }

    struct Map;

    impl<'de> Visitor<'de> for Map {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of label keys to string values")
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }

        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let mut map = BTreeMap::new();
            while let Some(key) = access.next_key::<String>()? {
                let value = access
                    .next_value_seed(Value)
                    .map_err(|e| de::Error::custom(format_args!("label {key:?}: {e}")))?;
                map.insert(key, value);
            }
            Ok(map)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, String>, D::Error> {
        d.deserialize_any(Map)
    }
}
