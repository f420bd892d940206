use std::{fmt, net::IpAddr, str::FromStr};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

use super::PolicyError;

/// An IPv4 or IPv6 prefix of a policy (`fromCIDR`, `toCIDRSet[].cidr`, ...).
///
/// Written as `"10.0.0.0/8"`, `"fd00::/64"` or a bare address (`"10.1.2.3"`
/// is `/32`, `"fd00::1"` is `/128`). Host bits are cleared as Go's
/// `net.ParseCIDR` does (`10.1.2.3/8` is `10.0.0.0/8`), so two spellings of
/// one prefix compare equal; it is written back as the normalized `a/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr(pub IpNet);

/// Why a text is not a [`Cidr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The part before `/` (or the whole text) is not an IP address.
    #[error("invalid CIDR {text:?}: {address:?} is not an IPv4 or IPv6 address")]
    Address { text: String, address: String },
    /// The part after `/` is not a decimal number.
    #[error("invalid CIDR {text:?}: prefix length {len:?} is not a number")]
    PrefixLength { text: String, len: String },
    /// The prefix is longer than the address (32 bits for IPv4, 128 for IPv6).
    #[error("invalid CIDR {text:?}: prefix length {len} is above {max}")]
    PrefixTooLong { text: String, len: u32, max: u8 },
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, CidrError> {
        let (address, len) = match text.split_once('/') {
            Some((address, len)) => (address, Some(len)),
            None => (text, None),
        };
        let ip: IpAddr = address.parse().map_err(|_| CidrError::Address {
            text: text.to_string(),
            address: address.to_string(),
        })?;
        let max = match ip {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let len = match len {
            None => max,
            // Digits only: `u32::from_str` would also take a leading `+`.
            Some(len) if !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) => {
                let n: u32 = len.parse().unwrap_or(u32::MAX);
                u8::try_from(n).ok().filter(|n| *n <= max).ok_or_else(|| {
                    CidrError::PrefixTooLong {
                        text: text.to_string(),
                        len: n,
                        max,
                    }
                })?
            }
            Some(len) => {
                return Err(CidrError::PrefixLength {
                    text: text.to_string(),
                    len: len.to_string(),
                });
            }
        };
        let net = IpNet::new(ip, len).expect("the prefix length was checked against the family");
        Ok(Self(net.trunc()))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.trunc().fmt(f)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(D::Error::custom)
    }
}

/// A prefix with holes: `cidr` except every prefix of `except`
/// (`fromCIDRSet` / `toCIDRSet` entries).
///
/// Cilium's `cidrGroupRef` and `cidrGroupSelector` (prefixes from a
/// `CiliumCIDRGroup`) are refused when parsed: clustermesh has no CIDR groups
/// yet, and such an entry has no `cidr` to keep.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct CidrRule {
    /// The allowed (or denied) prefix.
    pub cidr: Cidr,
    /// Prefixes carved out of `cidr`; each lies inside it, in its family.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<Cidr>,
}

/// A `CIDRRule` as written, before the fields clustermesh does not support
/// are refused.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCidrRule {
    #[serde(default)]
    cidr: Option<Cidr>,
    #[serde(default)]
    except: Vec<Cidr>,
    #[serde(default)]
    cidr_group_ref: Option<serde_json::Value>,
    #[serde(default)]
    cidr_group_selector: Option<serde_json::Value>,
}

impl<'de> Deserialize<'de> for CidrRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawCidrRule::deserialize(d)?;
        for (name, value) in [
            ("cidrGroupRef", &raw.cidr_group_ref),
            ("cidrGroupSelector", &raw.cidr_group_selector),
        ] {
            if value.is_some() {
                return Err(D::Error::custom(format!(
                    "{name} is not supported yet (nothing was applied); list the prefixes in cidr"
                )));
            }
        }
        let cidr = raw.cidr.ok_or_else(|| D::Error::missing_field("cidr"))?;
        Ok(Self {
            cidr,
            except: raw.except,
        })
    }
}

impl CidrRule {
    /// A rule of the whole prefix (how `fromCIDR` entries are seen).
    pub fn new(cidr: Cidr) -> Self {
        Self {
            cidr,
            except: Vec::new(),
        }
    }

    /// Every `except` lies inside `cidr`, in the same family.
    pub(super) fn validate(&self, path: &str) -> Result<(), PolicyError> {
        for (i, except) in self.except.iter().enumerate() {
            let (outer, inner) = (self.cidr.0.trunc(), except.0.trunc());
            let reason = match (outer, inner) {
                (IpNet::V4(_), IpNet::V6(_)) | (IpNet::V6(_), IpNet::V4(_)) => format!(
                    "{inner} is not in the family of {outer} (an except is of its cidr's family)"
                ),
                _ if !outer.contains(&inner) => format!("{inner} is not inside {outer}"),
                _ => continue,
            };
            return Err(PolicyError::field(format!("{path}.except[{i}]"), reason));
        }
        Ok(())
    }
}
