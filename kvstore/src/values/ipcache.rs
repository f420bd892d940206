use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::serde_util::{mask_prefix_len, opt_base64, opt_ip, prefix_len_mask};
use crate::{
    identity::NumericIdentity,
    value::{DecodeError, InvalidReason, StoreValue, decode_json},
};

/// An ipcache entry: which identity an IP (or prefix) has and which node hosts
/// it. Stored at `cilium/state/ip/v1/default/<IP>` (or `<IP>/<len>` for a
/// prefix) as Cilium's `IPIdentityPair` JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpIdentityPair {
    #[serde(rename = "IP")]
    pub ip: IpAddr,
    /// Netmask bytes for a prefix entry; `None` (JSON `null`) for a host entry.
    #[serde(rename = "Mask", default, with = "opt_base64")]
    pub mask: Option<Vec<u8>>,
    /// The node that hosts the IP; `None` is Go's empty `net.IP` (`""`).
    #[serde(rename = "HostIP", default, with = "opt_ip")]
    pub host_ip: Option<IpAddr>,
    #[serde(rename = "ID")]
    pub id: NumericIdentity,
    /// IPsec key index.
    #[serde(rename = "Key", default)]
    pub key: u8,
    #[serde(rename = "Metadata", default)]
    pub metadata: String,
    #[serde(
        rename = "K8sNamespace",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub k8s_namespace: String,
    #[serde(
        rename = "K8sPodName",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub k8s_pod_name: String,
    #[serde(
        rename = "K8sPodUID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub k8s_pod_uid: String,
    #[serde(
        rename = "K8sServiceAccount",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub k8s_service_account: String,
    #[serde(
        rename = "NamedPorts",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "super::serde_util::null_as_default"
    )]
    pub named_ports: Vec<NamedPort>,
}

/// A named container port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedPort {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Port")]
    pub port: u16,
    #[serde(rename = "Protocol")]
    pub protocol: String,
}

impl NamedPort {
    /// Why the declaration cannot be used, if it cannot: the name must be
    /// an IANA service name, the port not 0, the protocol TCP, UDP or SCTP.
    pub fn problem(&self) -> Option<String> {
        if let Err(reason) = super::check_port_name(&self.name) {
            return Some(reason);
        }
        if self.port == 0 {
            return Some(format!("port {:?} has port number 0", self.name));
        }
        if !["TCP", "UDP", "SCTP"]
            .iter()
            .any(|p| p.eq_ignore_ascii_case(&self.protocol))
        {
            return Some(format!(
                "port {:?} has protocol {:?}; use TCP, UDP or SCTP",
                self.name, self.protocol
            ));
        }
        None
    }
}

impl IpIdentityPair {
    /// A host entry (no mask) with the fields the agent fills in.
    pub fn host(ip: IpAddr, id: NumericIdentity, host_ip: Option<IpAddr>) -> Self {
        Self {
            ip,
            mask: None,
            host_ip,
            id,
            key: 0,
            metadata: String::new(),
            k8s_namespace: String::new(),
            k8s_pod_name: String::new(),
            k8s_pod_uid: String::new(),
            k8s_service_account: String::new(),
            named_ports: Vec::new(),
        }
    }

    /// The prefix this entry covers (`/32` or `/128` for a host entry).
    pub fn prefix(&self) -> IpNet {
        let max = if self.ip.is_ipv4() { 32 } else { 128 };
        let len = match self.mask.as_deref() {
            // Go may keep an IPv4 mask in its 16-byte form, with 96 leading ones.
            Some(mask) if self.ip.is_ipv4() && mask.len() == 16 => {
                mask_prefix_len(mask).map(|l| l.saturating_sub(96))
            }
            Some(mask) => mask_prefix_len(mask),
            None => None,
        };
        let len = len.unwrap_or(max).min(max);
        IpNet::new(self.ip, len).expect("length clamped to the family's maximum")
    }

    /// Sets the mask from a prefix length.
    pub fn with_prefix_len(mut self, len: u8) -> Self {
        let bytes = if self.ip.is_ipv4() { 4 } else { 16 };
        self.mask = Some(prefix_len_mask(len, bytes));
        self
    }

    /// Whether the entry is a host entry (full-length or no mask).
    fn is_host(&self) -> bool {
        self.prefix().prefix_len() == self.prefix().max_prefix_len()
    }
}

impl StoreValue for IpIdentityPair {
    const KIND: &'static str = "ipcache entry";

    fn decode(key: &str, bytes: &[u8]) -> Result<Self, DecodeError> {
        let pair: Self = decode_json(Self::KIND, key, bytes)?;
        let invalid = |reason, detail: String| DecodeError::new(Self::KIND, key, reason, detail);
        if let Some(mask) = &pair.mask {
            let expected = if pair.ip.is_ipv4() { [4, 16] } else { [16, 16] };
            if !expected.contains(&mask.len()) || mask_prefix_len(mask).is_none() {
                return Err(invalid(
                    InvalidReason::Malformed,
                    format!("mask {mask:?} is not a valid netmask"),
                ));
            }
        }
        // Policies resolve egress rules against named ports: one that
        // cannot be used is a broken value, not one to guess about.
        if let Some(problem) = pair.named_ports.iter().find_map(NamedPort::problem) {
            return Err(invalid(InvalidReason::Malformed, problem));
        }
        // Cilium rejects a value whose IP[/len] differs from the key suffix.
        let Some(net) = crate::keys::parse_ipcache(key) else {
            return Err(invalid(
                InvalidReason::InvalidAddress,
                "key is not an IP or prefix".into(),
            ));
        };
        // A bare address is its host prefix.
        let matches = net == pair.prefix() && (key.contains('/') || pair.is_host());
        if !matches {
            return Err(invalid(
                InvalidReason::KeyMismatch,
                format!("value is for {}, not for the key", pair.prefix()),
            ));
        }
        Ok(pair)
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("ipcache entries always serialize")
    }

    fn key(&self) -> String {
        if self.is_host() {
            self.ip.to_string()
        } else {
            self.prefix().to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(json: &str, key: &str) -> Result<IpIdentityPair, DecodeError> {
        IpIdentityPair::decode(key, json.as_bytes())
    }

    #[test]
    fn host_entry_round_trip() {
        let p = IpIdentityPair::host(
            "10.0.0.1".parse().unwrap(),
            NumericIdentity::new(65792),
            Some("192.168.0.1".parse().unwrap()),
        );
        let bytes = p.encode();
        assert_eq!(IpIdentityPair::decode(&p.key(), &bytes).unwrap(), p);
        assert_eq!(p.key(), "10.0.0.1");
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["HostIP"], "192.168.0.1");
        assert_eq!(v["Mask"], serde_json::Value::Null);
    }

    #[test]
    fn prefix_entry_key() {
        let p = IpIdentityPair::host("10.1.0.0".parse().unwrap(), NumericIdentity::new(300), None)
            .with_prefix_len(16);
        assert_eq!(p.key(), "10.1.0.0/16");
        let v: serde_json::Value = serde_json::from_slice(&p.encode()).unwrap();
        assert_eq!(v["Mask"], "//8AAA==");
        assert_eq!(v["HostIP"], "");
        assert_eq!(
            IpIdentityPair::decode("10.1.0.0/16", &p.encode()).unwrap(),
            p
        );
        let err = IpIdentityPair::decode("10.1.0.0", &p.encode()).unwrap_err();
        assert_eq!(err.reason, InvalidReason::KeyMismatch);
    }

    #[test]
    fn rejects_mismatch_and_garbage() {
        let json = r#"{"IP":"10.0.0.1","HostIP":"","ID":300,"Key":0,"Metadata":""}"#;
        assert!(pair(json, "10.0.0.1").is_ok());
        assert_eq!(
            pair(json, "10.0.0.2").unwrap_err().reason,
            InvalidReason::KeyMismatch
        );
        assert_eq!(
            pair(json, "nonsense").unwrap_err().reason,
            InvalidReason::InvalidAddress
        );
        assert_eq!(
            pair("{", "10.0.0.1").unwrap_err().reason,
            InvalidReason::Malformed
        );
        assert_eq!(
            pair(r#"{"IP":"10.0.0.300","ID":1}"#, "10.0.0.1")
                .unwrap_err()
                .reason,
            InvalidReason::Malformed
        );
        assert_eq!(
            pair(r#"{"IP":"10.0.0.1","Mask":"/wD/AA==","ID":1}"#, "10.0.0.1")
                .unwrap_err()
                .reason,
            InvalidReason::Malformed
        );
    }

    #[test]
    fn named_ports_must_be_usable() {
        let with = |ports: &str| {
            pair(
                &format!(r#"{{"IP":"10.0.0.1","ID":300,"NamedPorts":[{ports}]}}"#),
                "10.0.0.1",
            )
        };
        let ok = with(r#"{"Name":"http","Port":8080,"Protocol":"TCP"}"#).unwrap();
        assert_eq!(ok.named_ports[0].port, 8080);
        for (bad, says) in [
            (
                r#"{"Name":"HTTP","Port":8080,"Protocol":"TCP"}"#,
                "lowercase",
            ),
            (
                r#"{"Name":"http","Port":0,"Protocol":"TCP"}"#,
                "port number 0",
            ),
            (
                r#"{"Name":"http","Port":80,"Protocol":"ICMP"}"#,
                "TCP, UDP or SCTP",
            ),
        ] {
            let err = with(bad).unwrap_err();
            assert_eq!(err.reason, InvalidReason::Malformed, "{bad}");
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
    }
}
