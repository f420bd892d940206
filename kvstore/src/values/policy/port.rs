use std::fmt;

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{Error as _, Visitor},
};

use super::{FqdnSelector, L7Rules, PolicyError};

/// Cilium's `maxPorts`: at most this many entries in one `toPorts[].ports`.
pub(super) const MAX_PORTS: usize = 40;

/// One `toPorts` entry: the ports a rule allows (or denies), and in egress
/// rules the DNS lookups allowed on them (`rules.dns`).
///
/// Cilium's other L7 rules and its TLS fields (`terminatingTLS`,
/// `originatingTLS`, `serverNames`, `listener`) are read so that they are
/// refused by [`PolicyDocument::validate`](super::PolicyDocument::validate)
/// with a clear reason rather than as unknown fields; clustermesh enforces
/// L3/L4 and DNS rules only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortRule {
    /// Port and protocol pairs; any of them matches.
    pub ports: Vec<PortProtocol>,
    /// L7 rules: DNS rules only (see [`L7Rules`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<L7Rules>,
    #[doc(hidden)]
    #[serde(
        rename = "terminatingTLS",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub terminating_tls: Option<serde_json::Value>,
    #[doc(hidden)]
    #[serde(
        rename = "originatingTLS",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub originating_tls: Option<serde_json::Value>,
    #[doc(hidden)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_names: Option<serde_json::Value>,
    #[doc(hidden)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<serde_json::Value>,
}

/// A destination port (or range) and protocol.
///
/// `port` omitted, `0` or `"0"` means every port; with `endPort` it is the
/// first port of the range `port..=endPort`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortProtocol {
    /// A number (`0` = every port) or a named container port.
    #[serde(default)]
    pub port: Port,
    /// The last port of a range starting at `port`; `endPort: 0` is read as
    /// no range, as Cilium does.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "end_port"
    )]
    pub end_port: Option<u16>,
    /// The protocol; `ANY` (the default) is TCP, UDP and SCTP.
    #[serde(default)]
    pub protocol: L4Protocol,
}

/// A port number or an IANA service name (a named container port).
///
/// Read from a JSON number or a string; a string of digits is a number.
/// Written as a string (`"8080"`), as Cilium does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Port {
    /// `0` means every port.
    Number(u16),
    /// An `IANA_SVC_NAME`: 1–15 characters of `a-z`, `0-9` and `-`, at least
    /// one letter, no `-` at either end and no `--`. Checked by
    /// [`PolicyDocument::validate`](super::PolicyDocument::validate).
    Name(String),
}

impl Default for Port {
    fn default() -> Self {
        Self::Number(0)
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => n.fmt(f),
            Self::Name(name) => f.write_str(name),
        }
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PortVisitor;

        impl Visitor<'_> for PortVisitor {
            type Value = Port;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number (0-65535) or a port name")
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Port, E> {
                u16::try_from(n)
                    .map(Port::Number)
                    .map_err(|_| E::custom(format!("port {n} is out of range 0-65535")))
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Port, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!("port {n} is out of range 0-65535"))),
                }
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Port, E> {
                if s.is_empty() {
                    return Err(E::custom(
                        "port is empty; omit it or write 0 for every port",
                    ));
                }
                if !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Ok(Port::Name(s.to_string()));
                }
                // Cilium parses with Go's base prefixes, where "080" is octal.
                if s.len() > 1 && s.starts_with('0') {
                    return Err(E::custom(format!(
                        "port {s:?} has a leading zero; write it in decimal without one"
                    )));
                }
                match s.parse::<u64>() {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!("port {s} is out of range 0-65535"))),
                }
            }
        }

        d.deserialize_any(PortVisitor)
    }
}

/// `endPort`: a number, `0` (Go's omitted value) being no range.
fn end_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    match Option::<i64>::deserialize(d)? {
        None | Some(0) => Ok(None),
        Some(n) => u16::try_from(n)
            .map(Some)
            .map_err(|_| D::Error::custom(format!("endPort {n} is out of range 0-65535"))),
    }
}

/// An L4 protocol of a port rule. Written `TCP`, `UDP`, `SCTP`, `ICMP`,
/// `ICMPv6` or `ANY`; read in any case (as Cilium's `ParseL4Proto`), with
/// an empty string being `ANY`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4Protocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// SCTP (132).
    Sctp,
    /// ICMP has no ports: rules on ICMP types go in `icmps`.
    Icmp,
    /// ICMPv6 has no ports: rules on ICMPv6 types go in `icmps`.
    IcmpV6,
    /// TCP, UDP and SCTP.
    #[default]
    Any,
}

impl L4Protocol {
    /// Every protocol, in the order of their names in messages.
    pub const ALL: [Self; 6] = [
        Self::Tcp,
        Self::Udp,
        Self::Sctp,
        Self::Icmp,
        Self::IcmpV6,
        Self::Any,
    ];

    /// The name in policy documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
            Self::Icmp => "ICMP",
            Self::IcmpV6 => "ICMPv6",
            Self::Any => "ANY",
        }
    }

    fn is_icmp(self) -> bool {
        matches!(self, Self::Icmp | Self::IcmpV6)
    }
}

impl fmt::Display for L4Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for L4Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for L4Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const NAMES: &[&str] = &["TCP", "UDP", "SCTP", "ICMP", "ICMPv6", "ANY"];
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(Self::Any);
        }
        if let Some(p) = Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(&text))
        {
            return Ok(p);
        }
        if ["VRRP", "IGMP"]
            .iter()
            .any(|p| p.eq_ignore_ascii_case(&text))
        {
            return Err(D::Error::custom(format!(
                "protocol {text} is not supported yet (nothing was applied)"
            )));
        }
        Err(D::Error::unknown_variant(&text, NAMES))
    }
}

impl PortRule {
    /// The DNS rules (`rules.dns`): the lookups the proxy lets through on
    /// these ports. Empty when the port rule has none; only egress rules
    /// have them.
    pub fn dns_rules(&self) -> &[FqdnSelector] {
        self.rules.as_ref().map(L7Rules::dns).unwrap_or_default()
    }

    /// Checks the ports and the L7 rules and refuses the TLS fields; `deny`
    /// names the rule list (`ingressDeny`/`egressDeny`) when the rule is a
    /// deny rule; `ingress` says the direction.
    pub(super) fn validate(
        &self,
        path: &str,
        deny: Option<&str>,
        ingress: bool,
    ) -> Result<(), PolicyError> {
        if let (Some(list), Some(_)) = (deny, &self.rules) {
            return Err(PolicyError::field(
                format!("{path}.rules"),
                format!("rules is not allowed in {list} rules (L4 only)"),
            ));
        }
        for (name, value) in [
            ("terminatingTLS", &self.terminating_tls),
            ("originatingTLS", &self.originating_tls),
            ("serverNames", &self.server_names),
            ("listener", &self.listener),
        ] {
            if value.is_some() {
                let reason = match deny {
                    Some(list) => format!("{name} is not allowed in {list} rules (L4 only)"),
                    None => format!(
                        "{name} is not supported yet (nothing was applied); clustermesh enforces L3/L4 only"
                    ),
                };
                return Err(PolicyError::field(format!("{path}.{name}"), reason));
            }
        }
        if self.ports.len() > MAX_PORTS {
            return Err(PolicyError::field(
                format!("{path}.ports"),
                format!(
                    "{} ports; at most {MAX_PORTS} are allowed in one toPorts entry",
                    self.ports.len()
                ),
            ));
        }
        for (i, port) in self.ports.iter().enumerate() {
            port.validate(&format!("{path}.ports[{i}]"))?;
        }
        if let Some(rules) = &self.rules {
            rules.validate(&format!("{path}.rules"), &self.ports, ingress)?;
        }
        Ok(())
    }
}

impl PortProtocol {
    fn validate(&self, path: &str) -> Result<(), PolicyError> {
        if let Port::Name(name) = &self.port {
            check_port_name(name)
                .map_err(|reason| PolicyError::field(format!("{path}.port"), reason))?;
        }
        // `{port: 0, protocol: ICMP}` (all of ICMP, no type) is how
        // clustermesh policies allowed ping before `icmps` existed, and the
        // agent still enforces it that way; a port or range is meaningless.
        if self.protocol.is_icmp() && (self.port != Port::Number(0) || self.end_port.is_some()) {
            return Err(PolicyError::field(
                format!("{path}.protocol"),
                format!(
                    "{} has no ports (got port {}); match ICMP types with icmps",
                    self.protocol,
                    self.range()
                ),
            ));
        }
        if let Some(end) = self.end_port {
            let reason = match &self.port {
                Port::Name(name) => format!("a named port ({name}) cannot have an endPort"),
                Port::Number(0) => "endPort needs a non-zero port to start the range".to_string(),
                Port::Number(start) if end < *start => format!("{end} is below port {start}"),
                Port::Number(_) => return Ok(()),
            };
            return Err(PolicyError::field(format!("{path}.endPort"), reason));
        }
        Ok(())
    }

    /// `port` or `port-endPort`, for messages.
    fn range(&self) -> String {
        match self.end_port {
            Some(end) => format!("{}-{end}", self.port),
            None => self.port.to_string(),
        }
    }
}

/// Kubernetes' `IANA_SVC_NAME` rule, the reason when `name` breaks it.
pub fn check_port_name(name: &str) -> Result<(), String> {
    let reason = if name.len() > 15 {
        "is longer than 15 characters"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        "may only contain lowercase letters, digits and '-'"
    } else if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        "must contain a letter"
    } else if name.starts_with('-') || name.ends_with('-') {
        "must not start or end with '-'"
    } else if name.contains("--") {
        "must not contain \"--\""
    } else {
        return Ok(());
    };
    Err(format!(
        "port name {name:?} {reason} (an IANA service name)"
    ))
}
