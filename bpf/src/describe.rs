//! Map entries in the words of the datapath: addresses, ports in host
//! order, identities, protocols and flags by name; for `debug map` and its
//! JSON output. Never raw struct dumps.

use std::fmt;

use crate::{
    BackendKey, BackendValue, CtKey, CtScope, CtValue, Direction, EndpointInfo, EndpointKey,
    IpCacheKey, IpCacheValue, L4Match, PolicyKey, PolicyValue, Protocol, ServiceKey, ServiceValue,
};

/// One decoded field of a map key or value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue {
    /// A number (identities, IDs, counts, ports).
    Number(u64),
    /// Text (addresses, names).
    Text(String),
    /// A flag.
    Bool(bool),
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Text(t) => f.write_str(t),
            Self::Bool(b) => write!(f, "{}", if *b { "yes" } else { "no" }),
        }
    }
}

/// Named fields in a fixed order. Fields named `identity` or ending in
/// `_identity` hold security identities (the agent adds their labels).
pub type Fields = Vec<(&'static str, FieldValue)>;

/// A map key or value that can say what it holds.
pub trait Describe {
    fn describe(&self) -> Fields;
}

/// A map value, which may need its key to be read (addresses take the
/// key's family).
pub trait DescribeValue<K> {
    fn describe(&self, key: &K) -> Fields;
}

fn text(v: impl ToString) -> FieldValue {
    FieldValue::Text(v.to_string())
}

fn num(v: impl Into<u64>) -> FieldValue {
    FieldValue::Number(v.into())
}

fn addr_or_invalid<T: ToString>(v: Option<T>) -> FieldValue {
    v.map(text).unwrap_or_else(|| text("invalid"))
}

/// `tcp`, `udp`, `icmp`, `icmpv6`, or the number.
pub fn protocol_name(p: Protocol) -> String {
    match p {
        Protocol::Tcp => "tcp".into(),
        Protocol::Udp => "udp".into(),
        Protocol::Icmp => "icmp".into(),
        Protocol::Icmpv6 => "icmpv6".into(),
        Protocol::Sctp => "sctp".into(),
        Protocol::Other(n) => format!("proto-{n}"),
    }
}

impl Describe for IpCacheKey {
    fn describe(&self) -> Fields {
        vec![
            ("prefix", addr_or_invalid(self.net())),
            ("cluster_id", num(self.cluster_id)),
        ]
    }
}

impl DescribeValue<IpCacheKey> for IpCacheValue {
    fn describe(&self, _: &IpCacheKey) -> Fields {
        vec![
            ("identity", num(self.sec_identity)),
            (
                "host",
                self.tunnel_endpoint()
                    .map(text)
                    .unwrap_or_else(|| text("-")),
            ),
        ]
    }
}

impl Describe for PolicyKey {
    fn describe(&self) -> Fields {
        let l4 = self.l4();
        let protocol = l4
            .protocol()
            .map_or_else(|| "any".to_string(), protocol_name);
        let port = match l4 {
            L4Match::Port(p, port) if !matches!(p, Protocol::Icmp | Protocol::Icmpv6) => num(port),
            _ => text(l4.port_text()),
        };
        vec![
            ("policy", num(self.policy_id)),
            (
                "direction",
                text(match self.direction() {
                    Direction::Ingress => "ingress",
                    Direction::Egress => "egress",
                }),
            ),
            (
                "identity",
                if self.sec_identity == crate::IDENTITY_ANY {
                    text("any")
                } else {
                    num(self.sec_identity)
                },
            ),
            ("protocol", text(protocol)),
            ("port", port),
        ]
    }
}

impl DescribeValue<PolicyKey> for PolicyValue {
    fn describe(&self, _: &PolicyKey) -> Fields {
        let action = match self.action() {
            Some(crate::PolicyAction::Allow) => "allow".to_string(),
            Some(crate::PolicyAction::Deny) => "deny".to_string(),
            None => format!("unknown-{}", self.action),
        };
        let mut fields = vec![("action", text(action))];
        if self.match_type() != crate::MatchType::None {
            fields.push(("match", text(self.match_type().as_str())));
        }
        if self.cookie != 0 {
            fields.push(("rule", num(self.cookie)));
        }
        if self.proxy_port() != 0 {
            fields.push(("proxy_port", num(self.proxy_port())));
        }
        fields
    }
}

impl Describe for EndpointKey {
    fn describe(&self) -> Fields {
        vec![("ifindex", num(self.ifindex))]
    }
}

impl DescribeValue<EndpointKey> for EndpointInfo {
    fn describe(&self, _: &EndpointKey) -> Fields {
        vec![
            ("endpoint", num(self.endpoint_id)),
            ("identity", num(self.sec_identity)),
            ("policy", num(self.policy().policy_id)),
            ("ingress_enforced", FieldValue::Bool(self.policy().ingress)),
            ("egress_enforced", FieldValue::Bool(self.policy().egress)),
        ]
    }
}

impl Describe for ServiceKey {
    fn describe(&self) -> Fields {
        vec![
            ("frontend", addr_or_invalid(self.frontend())),
            ("protocol", text(protocol_name(self.protocol()))),
            ("slot", num(self.slot)),
        ]
    }
}

impl DescribeValue<ServiceKey> for ServiceValue {
    fn describe(&self, key: &ServiceKey) -> Fields {
        if key.slot == 0 {
            vec![("backend_slots", num(self.count))]
        } else {
            vec![("backend", num(self.backend_id))]
        }
    }
}

impl Describe for BackendKey {
    fn describe(&self) -> Fields {
        vec![("backend", num(self.backend_id))]
    }
}

impl DescribeValue<BackendKey> for BackendValue {
    fn describe(&self, _: &BackendKey) -> Fields {
        vec![
            ("address", addr_or_invalid(self.addr())),
            ("protocol", text(protocol_name(self.protocol()))),
            ("cluster_id", num(self.cluster_id)),
        ]
    }
}

impl Describe for CtKey {
    fn describe(&self) -> Fields {
        vec![
            (
                "scope",
                text(match self.scope() {
                    CtScope::Egress => "egress".to_string(),
                    CtScope::Ingress => "ingress".to_string(),
                    CtScope::Service => "service".to_string(),
                    CtScope::Proxy => "proxy".to_string(),
                    CtScope::Other(n) => format!("unknown-{n}"),
                }),
            ),
            ("protocol", text(protocol_name(self.protocol()))),
            ("source", addr_or_invalid(self.src())),
            ("destination", addr_or_invalid(self.dst())),
        ]
    }
}

impl DescribeValue<CtKey> for CtValue {
    fn describe(&self, key: &CtKey) -> Fields {
        let mut fields = vec![
            ("src_identity", num(self.src_identity)),
            ("created_ns", num(self.created_ns)),
            ("last_seen_ns", num(self.last_seen_ns)),
            ("seen_reply", FieldValue::Bool(self.seen_reply())),
            ("closing", FieldValue::Bool(self.closing())),
        ];
        if self.backend_id != 0 {
            fields.push(("backend", num(self.backend_id)));
        }
        if let Some(upstream) = self.proxy_upstream(key) {
            fields.push(("upstream", text(upstream)));
        } else if let Some(rev) = self.rev_nat(key) {
            fields.push(("reverse_nat", text(rev)));
        }
        if self.proxied() {
            fields.push(("proxied", FieldValue::Bool(true)));
        }
        fields
    }
}

/// `name=value name=value`, for one line of a table.
pub fn fields_line(fields: &Fields) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_in_host_order_and_flags_by_name() {
        let key = PolicyKey::ingress(7, 65_800, L4Match::Port(Protocol::Tcp, 8080));
        assert_eq!(
            fields_line(&key.describe()),
            "policy=7 direction=ingress identity=65800 protocol=tcp port=8080"
        );
        assert_eq!(
            fields_line(&PolicyValue::ALLOW.describe(&key)),
            "action=allow"
        );
        assert_eq!(
            fields_line(&PolicyValue::new(crate::PolicyAction::Deny, &key, 3).describe(&key)),
            "action=deny match=l3-l4 rule=3"
        );
        let any = PolicyKey::ingress(7, crate::IDENTITY_ANY, L4Match::Any);
        assert_eq!(
            fields_line(&any.describe()),
            "policy=7 direction=ingress identity=any protocol=any port=any"
        );
        let range = PolicyKey::egress(7, 9, L4Match::ports(Protocol::Udp, 8080, 13));
        assert_eq!(
            fields_line(&range.describe()),
            "policy=7 direction=egress identity=9 protocol=udp port=8080-8087"
        );
        let echo = PolicyKey::egress(7, 9, L4Match::icmp_type(Protocol::Icmp, 8));
        assert_eq!(
            fields_line(&echo.describe()),
            "policy=7 direction=egress identity=9 protocol=icmp port=type 8"
        );
        let ep = EndpointInfo::new(3, 65_900, crate::EndpointPolicy::ingress(5));
        assert_eq!(
            fields_line(&ep.describe(&EndpointKey { ifindex: 12 })),
            "endpoint=3 identity=65900 policy=5 ingress_enforced=yes egress_enforced=no"
        );
    }

    #[test]
    fn addresses_read_as_addresses() {
        let key = IpCacheKey::new("10.1.2.0/24".parse().unwrap());
        assert_eq!(
            fields_line(&key.describe()),
            "prefix=10.1.2.0/24 cluster_id=0"
        );
        let fe: std::net::SocketAddr = "10.96.0.10:80".parse().unwrap();
        let skey = ServiceKey::new(fe, Protocol::Tcp, 0);
        assert_eq!(
            fields_line(&skey.describe()),
            "frontend=10.96.0.10:80 protocol=tcp slot=0"
        );
    }
}
