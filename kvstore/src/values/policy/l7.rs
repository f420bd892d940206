use serde::{Deserialize, Serialize};

use super::{FqdnSelector, L4Protocol, PolicyError, Port, PortProtocol, fqdn::SelectorUse};

/// `toPorts[].rules`: the L7 rules of a port rule (Cilium's `L7Rules`).
///
/// clustermesh enforces DNS rules (`dns`), the lookups an endpoint may make
/// through the agent's DNS proxy. Cilium's other kinds (`http`, `kafka`,
/// `l7proto` with `l7`) are read so that they are refused by name rather
/// than as unknown fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L7Rules {
    /// The DNS names that may be looked up (Cilium's `PortRuleDNS`); any
    /// entry matching allows the lookup. Egress only, on a port rule of port
    /// numbers (53) over UDP, TCP or ANY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Vec<FqdnSelector>>,
    #[doc(hidden)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<serde_json::Value>,
    #[doc(hidden)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<serde_json::Value>,
    #[doc(hidden)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l7proto: Option<serde_json::Value>,
    #[doc(hidden)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l7: Option<serde_json::Value>,
}

impl L7Rules {
    /// The DNS rules; empty when there are none (`dns: []` is none, as in
    /// Cilium: the port rule is then L4 only).
    pub fn dns(&self) -> &[FqdnSelector] {
        self.dns.as_deref().unwrap_or_default()
    }

    /// `path` is the rules' (`spec.egress[0].toPorts[1].rules`); `ports` are
    /// the port rule's; `ingress` says the direction.
    pub(super) fn validate(
        &self,
        path: &str,
        ports: &[PortProtocol],
        ingress: bool,
    ) -> Result<(), PolicyError> {
        for (kind, present) in [
            ("http", self.http.is_some()),
            ("kafka", self.kafka.is_some()),
            ("l7proto", self.l7proto.is_some() || self.l7.is_some()),
        ] {
            if present {
                return Err(PolicyError::field(
                    path,
                    format!(
                        "rules is not supported yet (nothing was applied) for {kind}; clustermesh enforces L3/L4 and DNS rules only"
                    ),
                ));
            }
        }
        let dns = self.dns();
        if dns.is_empty() {
            return Ok(());
        }
        let dns_path = format!("{path}.dns");
        if ingress {
            return Err(PolicyError::field(
                dns_path,
                "DNS rules are not allowed on ingress (they allow an endpoint's own lookups)",
            ));
        }
        // The DNS proxy takes the traffic of the rule's ports: they must be
        // ports a DNS server listens on, one by one, over UDP or TCP.
        let ports_path = path.strip_suffix(".rules").unwrap_or(path);
        if ports.is_empty() {
            return Err(PolicyError::field(
                format!("{ports_path}.ports"),
                "DNS rules need their port (53) listed in ports",
            ));
        }
        for (i, port) in ports.iter().enumerate() {
            let at = format!("{ports_path}.ports[{i}]");
            let reason = match (&port.port, port.end_port, port.protocol) {
                (Port::Number(0), _, _) => {
                    "DNS rules need a port number (53); port 0 is every port".to_string()
                }
                (Port::Name(name), _, _) => {
                    format!("DNS rules need a port number (53), not the named port {name}")
                }
                (Port::Number(_), Some(_), _) => {
                    return Err(PolicyError::field(
                        format!("{at}.endPort"),
                        "DNS rules do not support port ranges",
                    ));
                }
                (_, None, L4Protocol::Udp | L4Protocol::Tcp | L4Protocol::Any) => continue,
                (_, None, protocol) => {
                    return Err(PolicyError::field(
                        format!("{at}.protocol"),
                        format!("DNS rules apply to UDP, TCP or ANY, not {protocol}"),
                    ));
                }
            };
            return Err(PolicyError::field(format!("{at}.port"), reason));
        }
        for (i, selector) in dns.iter().enumerate() {
            selector.validate(&format!("{dns_path}[{i}]"), SelectorUse::Dns)?;
        }
        Ok(())
    }
}
