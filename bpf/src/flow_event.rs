//! Flow events: what the datapath reports through its ring buffer.

use std::{net::IpAddr, time::Duration};

use crate::{
    address::decode,
    policy::{Direction, MatchType},
    protocol::Protocol,
    record::Record,
};

/// What the datapath did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// A new inbound connection passed the endpoint's policy.
    Forwarded,
    /// The packet was dropped (see [`DropReason`]).
    Dropped,
    /// A new connection to a service frontend was sent to a backend (the
    /// event shows the backend as destination).
    Translated,
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// No policy entry allows it (default deny).
    Policy,
    /// A deny entry matched.
    PolicyDeny,
    /// The service frontend has no (usable) backend.
    NoBackend,
    /// No conntrack entry could be created.
    ConntrackFull,
    /// Headers could not be parsed.
    Malformed,
    /// Rewriting addresses or checksums failed.
    Nat,
    /// Policy sends it through the agent's proxy, which takes only TCP and
    /// UDP.
    Proxy,
    /// A reason this version does not know.
    Other(u8),
}

/// Where the packet was seen, relative to the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowDirection {
    /// Delivered to the endpoint (host-side veth TC egress).
    ToEndpoint,
    /// Sent by the endpoint (host-side veth TC ingress).
    FromEndpoint,
}

/// One decoded flow event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowEvent {
    /// Monotonic kernel time (`CLOCK_MONOTONIC`) of the event.
    pub timestamp: Duration,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (ICMP echo: id on requests, 0 on replies).
    pub sport: u16,
    /// Destination port (ICMP echo: 0 on requests, id on replies).
    pub dport: u16,
    /// L4 protocol.
    pub protocol: Protocol,
    /// Identity of the source (from the ipcache; 2 = world when unknown).
    pub src_identity: u32,
    /// Identity of the destination (0 when not looked up).
    pub dst_identity: u32,
    /// What happened.
    pub verdict: Verdict,
    /// Why it was dropped (`Some` only for [`Verdict::Dropped`]).
    pub drop_reason: Option<DropReason>,
    /// The host-side interface the program ran on.
    pub ifindex: u32,
    /// Toward or from the endpoint.
    pub direction: FlowDirection,
    /// Whether the packet is a reply of its connection (`None`: unknown,
    /// e.g. a malformed packet).
    pub is_reply: Option<bool>,
    /// TCP flags (`FIN` = 0x01 … `CWR` = 0x80; 0 for other protocols).
    pub tcp_flags: u8,
    /// ICMP (or ICMPv6) type and code.
    pub icmp: Option<(u8, u8)>,
    /// The policy entry that decided a new connection: its direction,
    /// kind and rule cookie (`None` where no entry decided: not enforced,
    /// default deny, or not a policy decision).
    pub policy: Option<PolicyMatch>,
}

/// Which policy entry decided a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyMatch {
    /// The policy's direction (ingress of the destination, egress of the source).
    pub direction: Direction,
    /// What kind of entry matched.
    pub match_type: MatchType,
    /// The rule that made the entry (the agent's numbering).
    pub cookie: u32,
}

/// Ring buffer record (`struct flow_event`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct FlowEventRecord {
    pub(crate) timestamp_ns: u64,
    pub(crate) saddr: [u8; 16],
    pub(crate) daddr: [u8; 16],
    pub(crate) sport: [u8; 2],
    pub(crate) dport: [u8; 2],
    pub(crate) protocol: u8,
    pub(crate) family: u8,
    pub(crate) verdict: u8,
    pub(crate) drop_reason: u8,
    pub(crate) src_identity: u32,
    pub(crate) dst_identity: u32,
    pub(crate) ifindex: u32,
    pub(crate) direction: u8,
    pub(crate) reply: u8,
    pub(crate) l4_flags: u8,
    pub(crate) icmp_code: u8,
    pub(crate) policy_cookie: u32,
    pub(crate) match_type: u8,
    pub(crate) policy_dir: u8,
    pub(crate) pad: [u8; 2],
}

// SAFETY: repr(C), padding-free (72 bytes), any bits.
unsafe impl Record for FlowEventRecord {}

impl FlowEvent {
    /// Decodes a ring buffer record; `None` for a short or unknown record.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < size_of::<FlowEventRecord>() {
            return None;
        }
        let r: FlowEventRecord = crate::record::from_bytes(bytes);
        let protocol = Protocol::from_number(r.protocol);
        let verdict = match r.verdict {
            1 => Verdict::Forwarded,
            2 => Verdict::Dropped,
            3 => Verdict::Translated,
            _ => return None,
        };
        let drop_reason = (verdict == Verdict::Dropped).then_some(match r.drop_reason {
            1 => DropReason::Policy,
            2 => DropReason::PolicyDeny,
            3 => DropReason::NoBackend,
            4 => DropReason::ConntrackFull,
            5 => DropReason::Malformed,
            6 => DropReason::Nat,
            7 => DropReason::Proxy,
            n => DropReason::Other(n),
        });
        Some(Self {
            timestamp: Duration::from_nanos(r.timestamp_ns),
            src: decode(&r.saddr, r.family)?,
            dst: decode(&r.daddr, r.family)?,
            sport: u16::from_be_bytes(r.sport),
            dport: u16::from_be_bytes(r.dport),
            protocol,
            src_identity: r.src_identity,
            dst_identity: r.dst_identity,
            verdict,
            drop_reason,
            ifindex: r.ifindex,
            direction: if r.direction == 0 {
                FlowDirection::ToEndpoint
            } else {
                FlowDirection::FromEndpoint
            },
            is_reply: match r.reply {
                1 => Some(false),
                2 => Some(true),
                _ => None,
            },
            tcp_flags: if protocol == Protocol::Tcp {
                r.l4_flags
            } else {
                0
            },
            icmp: matches!(protocol, Protocol::Icmp | Protocol::Icmpv6)
                .then_some((r.l4_flags, r.icmp_code)),
            policy: match MatchType::from_number(r.match_type) {
                MatchType::None => None,
                match_type => Some(PolicyMatch {
                    direction: if r.policy_dir == 0 {
                        Direction::Ingress
                    } else {
                        Direction::Egress
                    },
                    match_type,
                    cookie: r.policy_cookie,
                }),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::as_bytes;

    #[test]
    fn decodes_a_drop() {
        let mut saddr = [0u8; 16];
        saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        let mut daddr = [0u8; 16];
        daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        let r = FlowEventRecord {
            timestamp_ns: 5,
            saddr,
            daddr,
            sport: 1234u16.to_be_bytes(),
            dport: 80u16.to_be_bytes(),
            protocol: 6,
            family: 4,
            verdict: 2,
            drop_reason: 1,
            src_identity: 300,
            dst_identity: 301,
            ifindex: 9,
            direction: 0,
            reply: 1,
            l4_flags: 0x02,
            icmp_code: 0,
            policy_cookie: 0,
            match_type: 0,
            policy_dir: 0,
            pad: [0; 2],
        };
        let e = FlowEvent::decode(as_bytes(&r)).unwrap();
        assert_eq!(e.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((e.sport, e.dport), (1234, 80));
        assert_eq!(e.verdict, Verdict::Dropped);
        assert_eq!(e.drop_reason, Some(DropReason::Policy));
        assert_eq!(e.direction, FlowDirection::ToEndpoint);
        assert_eq!((e.is_reply, e.tcp_flags, e.icmp), (Some(false), 0x02, None));
        assert_eq!(e.policy, None);
        assert!(FlowEvent::decode(&as_bytes(&r)[..10]).is_none());
        let allowed = FlowEventRecord {
            verdict: 1,
            policy_cookie: 12,
            match_type: 2,
            policy_dir: 1,
            ..r
        };
        let e = FlowEvent::decode(as_bytes(&allowed)).unwrap();
        assert_eq!(
            e.policy,
            Some(PolicyMatch {
                direction: Direction::Egress,
                match_type: MatchType::L3L4,
                cookie: 12
            })
        );
    }
}
