use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Visitor};

use super::{L4Protocol, PolicyError};

/// Cilium's `maxICMPFields`: at most this many entries in one `icmps[].fields`.
pub(super) const MAX_ICMP_FIELDS: usize = 40;

/// The IPv4 ICMP type names Cilium accepts (`pkg/policy/api/icmp.go`), plus
/// `RouterSolicitation`, the RFC 1256 name of type 10 (Cilium spells it
/// `RouterSelection`; both are accepted).
const IPV4_TYPES: &[(&str, u8)] = &[
    ("EchoReply", 0),
    ("DestinationUnreachable", 3),
    ("Redirect", 5),
    ("Echo", 8),
    ("EchoRequest", 8),
    ("RouterAdvertisement", 9),
    ("RouterSelection", 10),
    ("RouterSolicitation", 10),
    ("TimeExceeded", 11),
    ("ParameterProblem", 12),
    ("Timestamp", 13),
    ("TimestampReply", 14),
    ("Photuris", 40),
    ("ExtendedEchoRequest", 42),
    ("ExtendedEchoReply", 43),
];

/// The ICMPv6 type names Cilium accepts (`pkg/policy/api/icmp.go`), with
/// their IANA numbers.
const IPV6_TYPES: &[(&str, u8)] = &[
    ("DestinationUnreachable", 1),
    ("PacketTooBig", 2),
    ("TimeExceeded", 3),
    ("ParameterProblem", 4),
    ("EchoRequest", 128),
    ("EchoReply", 129),
    ("MulticastListenerQuery", 130),
    ("MulticastListenerReport", 131),
    ("MulticastListenerDone", 132),
    ("RouterSolicitation", 133),
    ("RouterAdvertisement", 134),
    ("NeighborSolicitation", 135),
    ("NeighborAdvertisement", 136),
    ("RedirectMessage", 137),
    ("RouterRenumbering", 138),
    ("ICMPNodeInformationQuery", 139),
    ("ICMPNodeInformationResponse", 140),
    ("InverseNeighborDiscoverySolicitation", 141),
    ("InverseNeighborDiscoveryAdvertisement", 142),
    ("HomeAgentAddressDiscoveryRequest", 144),
    ("HomeAgentAddressDiscoveryReply", 145),
    ("MobilePrefixSolicitation", 146),
    ("MobilePrefixAdvertisement", 147),
    ("DuplicateAddressRequestCodeSuffix", 157),
    ("DuplicateAddressConfirmationCodeSuffix", 158),
    ("ExtendedEchoRequest", 160),
    ("ExtendedEchoReply", 161),
];

/// One `icmps` entry: ICMP or ICMPv6 types, any of which matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcmpRule {
    /// At most 40 types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<IcmpField>,
}

/// One ICMP type of one family.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcmpField {
    /// `IPv4` (ICMP, the default) or `IPv6` (ICMPv6).
    #[serde(default)]
    pub family: IcmpFamily,
    /// The type, by number or by name (`"type"` in documents).
    #[serde(rename = "type")]
    pub icmp_type: IcmpType,
}

/// The IP family of an [`IcmpField`].
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum IcmpFamily {
    /// ICMP (protocol 1).
    #[default]
    #[serde(rename = "IPv4")]
    Ipv4,
    /// ICMPv6 (protocol 58).
    #[serde(rename = "IPv6")]
    Ipv6,
}

/// An ICMP type: a number (0–255) or Cilium's CamelCase name for it, whose
/// number depends on the family (`EchoRequest` is 8 in IPv4, 128 in IPv6).
///
/// Numbers are read from a JSON number or a string of digits and written as
/// numbers; names are written as given.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IcmpType {
    /// A type number, used as is in either family.
    Number(u8),
    /// Checked against the field's family by
    /// [`PolicyDocument::validate`](super::PolicyDocument::validate).
    Name(String),
}

impl Default for IcmpType {
    fn default() -> Self {
        Self::Number(0)
    }
}

impl IcmpFamily {
    /// The protocol the family's types belong to.
    pub fn protocol(self) -> L4Protocol {
        match self {
            Self::Ipv4 => L4Protocol::Icmp,
            Self::Ipv6 => L4Protocol::IcmpV6,
        }
    }

    /// The number of a type name in this family.
    pub fn type_by_name(self, name: &str) -> Option<u8> {
        self.names()
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
    }

    fn names(self) -> &'static [(&'static str, u8)] {
        match self {
            Self::Ipv4 => IPV4_TYPES,
            Self::Ipv6 => IPV6_TYPES,
        }
    }

    fn other(self) -> Self {
        match self {
            Self::Ipv4 => Self::Ipv6,
            Self::Ipv6 => Self::Ipv4,
        }
    }
}

impl fmt::Display for IcmpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ipv4 => "IPv4",
            Self::Ipv6 => "IPv6",
        })
    }
}

impl IcmpField {
    /// The type number, a name resolved in the field's family; `None` for a
    /// name unknown in it (which `validate` refuses).
    pub fn try_type_number(&self) -> Option<u8> {
        match &self.icmp_type {
            IcmpType::Number(n) => Some(*n),
            IcmpType::Name(name) => self.family.type_by_name(name),
        }
    }

    /// The type number, a name resolved in the field's family.
    ///
    /// # Panics
    ///
    /// If the name is unknown in the family: a field of a document that
    /// passed [`PolicyDocument::validate`](super::PolicyDocument::validate)
    /// never is.
    pub fn type_number(&self) -> u8 {
        self.try_type_number().unwrap_or_else(|| {
            panic!(
                "ICMP type {:?} is not an {} name; validate() refuses it",
                self.icmp_type, self.family
            )
        })
    }

    fn validate(&self, path: &str) -> Result<(), PolicyError> {
        let IcmpType::Name(name) = &self.icmp_type else {
            return Ok(());
        };
        if self.family.type_by_name(name).is_some() {
            return Ok(());
        }
        let hint = if self.family.other().type_by_name(name).is_some() {
            format!(
                "; it is an {} type: set family: {}",
                self.family.other(),
                self.family.other()
            )
        } else {
            let known: Vec<&str> = self.family.names().iter().map(|(n, _)| *n).collect();
            format!("; known names: {}", known.join(", "))
        };
        Err(PolicyError::field(
            format!("{path}.type"),
            format!("{name:?} is not an {} ICMP type name{hint}", self.family),
        ))
    }
}

impl IcmpRule {
    pub(super) fn validate(&self, path: &str) -> Result<(), PolicyError> {
        if self.fields.len() > MAX_ICMP_FIELDS {
            return Err(PolicyError::field(
                format!("{path}.fields"),
                format!(
                    "{} types; at most {MAX_ICMP_FIELDS} are allowed in one icmps entry",
                    self.fields.len()
                ),
            ));
        }
        for (i, field) in self.fields.iter().enumerate() {
            field.validate(&format!("{path}.fields[{i}]"))?;
        }
        Ok(())
    }
}

impl Serialize for IcmpType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Number(n) => s.serialize_u8(*n),
            Self::Name(name) => s.serialize_str(name),
        }
    }
}

impl<'de> Deserialize<'de> for IcmpType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TypeVisitor;

        impl Visitor<'_> for TypeVisitor {
            type Value = IcmpType;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an ICMP type number (0-255) or name")
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<IcmpType, E> {
                u8::try_from(n)
                    .map(IcmpType::Number)
                    .map_err(|_| E::custom(format!("ICMP type {n} is out of range 0-255")))
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<IcmpType, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!("ICMP type {n} is out of range 0-255"))),
                }
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<IcmpType, E> {
                if s.is_empty() {
                    return Err(E::custom("ICMP type is empty"));
                }
                if !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Ok(IcmpType::Name(s.to_string()));
                }
                match s.parse::<u64>() {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!("ICMP type {s} is out of range 0-255"))),
                }
            }
        }

        d.deserialize_any(TypeVisitor)
    }
}

impl fmt::Display for IcmpType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => n.fmt(f),
            Self::Name(name) => f.write_str(name),
        }
    }
}

#[cfg(test)]
pub(super) fn names(family: IcmpFamily) -> &'static [(&'static str, u8)] {
    family.names()
}
