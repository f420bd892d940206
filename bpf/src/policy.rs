//! The policy map: one LPM trie shared by all endpoints, keyed by policy id
//! (endpoints whose rules resolve the same share one), peer identity,
//! direction, protocol and a prefix of the destination port; plus the pure
//! evaluation the datapath does.

use std::collections::BTreeMap;

use crate::{protocol::Protocol, record::Record, typed_map::TypedMap};

/// Pin name of the policy map (`_v2`: an LPM trie; earlier versions pinned
/// a hash map as [`LEGACY_POLICY_MAP`]).
pub const POLICY_MAP: &str = "cm_policy_v2";

/// Pin name of the policy map of earlier versions (a hash map keyed by
/// endpoint id), removed when the datapath is opened.
pub const LEGACY_POLICY_MAP: &str = "cm_policy";

/// `sec_identity` of a key that matches every identity.
pub const IDENTITY_ANY: u32 = 0;

/// Bits of a key that always match: policy id, identity, direction.
const FIXED_BITS: u32 = 72;

/// Which traffic of the endpoint a policy entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Traffic delivered to the endpoint, by source identity.
    Ingress,
    /// Traffic sent by the endpoint, by destination identity.
    Egress,
}

impl Direction {
    /// Both directions.
    pub const ALL: [Self; 2] = [Self::Ingress, Self::Egress];

    /// `ingress` or `egress`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }

    fn number(self) -> u8 {
        match self {
            Self::Ingress => 0,
            Self::Egress => 1,
        }
    }
}

/// The L4 part of a policy entry. ICMP and ICMPv6 have no ports: their
/// "port" is the type (high byte) and code (low byte), so that a type is an
/// 8-bit [`L4Match::Ports`] block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4Match {
    /// Any protocol, any port.
    Any,
    /// Every port of one protocol (ICMP: every type).
    Protocol(Protocol),
    /// One destination port of one protocol.
    Port(Protocol, u16),
    /// The aligned block of `2^(16 - bits)` ports that starts at `first`
    /// (`1 <= bits <= 15`; build with [`L4Match::ports`], which normalizes
    /// 0 and 16 bits to the variants above).
    Ports {
        protocol: Protocol,
        first: u16,
        bits: u8,
    },
}

impl L4Match {
    /// The block of ports of `protocol` that share the first `bits` bits of
    /// `port` (16 = exactly `port`, 0 = every port).
    pub fn ports(protocol: Protocol, port: u16, bits: u8) -> Self {
        match bits.min(16) {
            0 => Self::Protocol(protocol),
            16 => Self::Port(protocol, port),
            bits => Self::Ports {
                protocol,
                first: port & mask(bits),
                bits,
            },
        }
    }

    /// The fewest aligned blocks that cover exactly `first..=last`.
    pub fn port_range(protocol: Protocol, first: u16, last: u16) -> Vec<Self> {
        let mut out = Vec::new();
        let (mut lo, hi) = (u32::from(first), u32::from(last));
        while lo <= hi {
            // The largest aligned block starting at lo that ends <= hi.
            let mut size = if lo == 0 {
                1 << 16
            } else {
                1u32 << lo.trailing_zeros()
            };
            while lo + size - 1 > hi {
                size >>= 1;
            }
            let bits = 16 - size.trailing_zeros() as u8;
            out.push(Self::ports(protocol, lo as u16, bits));
            lo += size;
        }
        out
    }

    /// ICMP (or ICMPv6) messages of one type.
    pub fn icmp_type(protocol: Protocol, icmp_type: u8) -> Self {
        Self::ports(protocol, u16::from(icmp_type) << 8, 8)
    }

    /// The protocol (`None` for [`L4Match::Any`]).
    pub fn protocol(&self) -> Option<Protocol> {
        match *self {
            Self::Any => None,
            Self::Protocol(p) | Self::Port(p, _) | Self::Ports { protocol: p, .. } => Some(p),
        }
    }

    /// `(first, prefix bits)` of the port part (bits 0: every port).
    pub fn port_prefix(&self) -> (u16, u8) {
        match *self {
            Self::Any | Self::Protocol(_) => (0, 0),
            Self::Port(_, port) => (port, 16),
            Self::Ports { first, bits, .. } => (first, bits),
        }
    }

    /// The first and last port of the block.
    pub fn port_bounds(&self) -> (u16, u16) {
        let (first, bits) = self.port_prefix();
        (first, first | !mask(bits))
    }

    /// Bits of the key it matches after the fixed part.
    fn prefix_bits(&self) -> u32 {
        match self {
            Self::Any => 0,
            _ => 8 + u32::from(self.port_prefix().1),
        }
    }

    /// Whether every packet this matches is also matched by `self`
    /// (`self` is the wider or equal block).
    pub fn covers(&self, other: &Self) -> bool {
        match (self.protocol(), other.protocol()) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) if a != b => false,
            _ => {
                let (first, bits) = self.port_prefix();
                let (other_first, other_bits) = other.port_prefix();
                other_bits >= bits && other_first & mask(bits) == first
            }
        }
    }

    /// The port part for people: `any`, `80`, `80-87`; for ICMP
    /// `type 8` (or `type 8 code 0`).
    pub fn port_text(&self) -> String {
        let icmp = matches!(self.protocol(), Some(Protocol::Icmp | Protocol::Icmpv6));
        let (first, bits) = self.port_prefix();
        let (lo, hi) = self.port_bounds();
        match (icmp, bits) {
            (_, 0) => "any".to_string(),
            (true, 16) => format!("type {} code {}", first >> 8, first & 0xff),
            (true, b) if b >= 8 => format!("type {}", first >> 8),
            (_, 16) => first.to_string(),
            _ => format!("{lo}-{hi}"),
        }
    }

    /// Whether a packet of `protocol` to `port` (ICMP: type << 8 | code)
    /// matches.
    pub fn matches(&self, protocol: Protocol, port: u16) -> bool {
        self.covers(&Self::Port(protocol, port))
    }
}

fn mask(bits: u8) -> u16 {
    match bits {
        0 => 0,
        b => u16::MAX << (16 - u32::from(b.min(16))),
    }
}

/// policy key (`struct policy_key`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyKey {
    pub(crate) prefixlen: u32,
    /// The policy the entry belongs to (see [`crate::EndpointPolicy`]).
    pub policy_id: u32,
    /// The peer identity, or [`IDENTITY_ANY`].
    pub sec_identity: u32,
    pub(crate) direction: u8,
    pub(crate) protocol: u8,
    pub(crate) dport: [u8; 2],
}

// SAFETY: repr(C), padding-free (16 bytes), any bits.
unsafe impl Record for PolicyKey {}

impl Ord for PolicyKey {
    /// By policy, direction, identity, then the L4 block (wider first).
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.sort_key().cmp(&other.sort_key())
    }
}

impl PartialOrd for PolicyKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PolicyKey {
    /// The fields in [`Ord`] order packed into one number (policy 32 bits,
    /// direction 8, identity 32, protocol 8, port 16, prefix length 32):
    /// the agent keeps hundreds of thousands of keys in ordered maps, and
    /// one comparison of a `u128` is much cheaper than six of fields.
    fn sort_key(&self) -> u128 {
        u128::from(self.policy_id) << 96
            | u128::from(self.direction) << 88
            | u128::from(self.sec_identity) << 56
            | u128::from(self.protocol) << 48
            | u128::from(u16::from_be_bytes(self.dport)) << 32
            | u128::from(self.prefixlen)
    }

    /// An entry of policy `policy_id` about peers with `identity`
    /// ([`IDENTITY_ANY`] for all) and traffic matching `l4`.
    pub fn new(policy_id: u32, direction: Direction, identity: u32, l4: L4Match) -> Self {
        let (port, _) = l4.port_prefix();
        Self {
            prefixlen: FIXED_BITS + l4.prefix_bits(),
            policy_id,
            sec_identity: identity,
            direction: direction.number(),
            protocol: l4.protocol().map_or(0, Protocol::number),
            dport: port.to_be_bytes(),
        }
    }

    /// An ingress entry.
    pub fn ingress(policy_id: u32, identity: u32, l4: L4Match) -> Self {
        Self::new(policy_id, Direction::Ingress, identity, l4)
    }

    /// An egress entry.
    pub fn egress(policy_id: u32, identity: u32, l4: L4Match) -> Self {
        Self::new(policy_id, Direction::Egress, identity, l4)
    }

    /// The smallest and the largest key of a policy (for ranges over a
    /// `BTreeMap` in [`Ord`] order).
    pub fn bounds(policy_id: u32) -> (Self, Self) {
        let lo = Self {
            prefixlen: 0,
            policy_id,
            sec_identity: 0,
            direction: 0,
            protocol: 0,
            dport: [0; 2],
        };
        let hi = Self {
            prefixlen: u32::MAX,
            policy_id,
            sec_identity: u32::MAX,
            direction: u8::MAX,
            protocol: u8::MAX,
            dport: [u8::MAX; 2],
        };
        (lo, hi)
    }

    /// The smallest and the largest key of one identity in one direction
    /// of a policy.
    pub fn identity_bounds(policy_id: u32, direction: Direction, identity: u32) -> (Self, Self) {
        let (mut lo, mut hi) = Self::bounds(policy_id);
        lo.direction = direction.number();
        hi.direction = direction.number();
        lo.sec_identity = identity;
        hi.sec_identity = identity;
        (lo, hi)
    }

    /// The L4 match of the entry.
    pub fn l4(&self) -> L4Match {
        let bits = self.prefixlen.saturating_sub(FIXED_BITS);
        if bits < 8 || self.protocol == 0 {
            return L4Match::Any;
        }
        L4Match::ports(
            Protocol::from_number(self.protocol),
            u16::from_be_bytes(self.dport),
            (bits - 8).min(16) as u8,
        )
    }

    /// The direction of the entry.
    pub fn direction(&self) -> Direction {
        if self.direction == 0 {
            Direction::Ingress
        } else {
            Direction::Egress
        }
    }

    /// The same entry for another policy.
    pub fn with_policy_id(mut self, policy_id: u32) -> Self {
        self.policy_id = policy_id;
        self
    }
}

/// What a matching entry does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyAction {
    /// Allow (unless a deny entry also matches).
    Allow,
    /// Deny; wins over any allow.
    Deny,
}

impl PolicyAction {
    /// `allow` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// What kind of entry decided (Hubble's `policy_match_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MatchType {
    /// No entry (not enforced, or default deny).
    None = 0,
    /// An identity, every port.
    L3Only = 1,
    /// An identity and a port (block).
    L3L4 = 2,
    /// Any identity, a port (block).
    L4Only = 3,
    /// Any identity, every port.
    All = 4,
    /// An identity, every port of one protocol.
    L3Proto = 5,
    /// Any identity, every port of one protocol.
    ProtoOnly = 6,
}

impl MatchType {
    /// The kind of `key`.
    pub fn of(key: &PolicyKey) -> Self {
        let any = key.sec_identity == IDENTITY_ANY;
        match (any, key.l4()) {
            (false, L4Match::Any) => Self::L3Only,
            (false, L4Match::Protocol(_)) => Self::L3Proto,
            (false, _) => Self::L3L4,
            (true, L4Match::Any) => Self::All,
            (true, L4Match::Protocol(_)) => Self::ProtoOnly,
            (true, _) => Self::L4Only,
        }
    }

    /// From the number in maps and flows (unknown numbers are `None`).
    pub fn from_number(n: u8) -> Self {
        match n {
            1 => Self::L3Only,
            2 => Self::L3L4,
            3 => Self::L4Only,
            4 => Self::All,
            5 => Self::L3Proto,
            6 => Self::ProtoOnly,
            _ => Self::None,
        }
    }

    /// Cilium's name (`l3-only`, `l3-l4`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::L3Only => "l3-only",
            Self::L3L4 => "l3-l4",
            Self::L4Only => "l4-only",
            Self::All => "all",
            Self::L3Proto => "l3-proto",
            Self::ProtoOnly => "proto-only",
        }
    }
}

/// policy value (`struct policy_value`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyValue {
    pub(crate) action: u8,
    pub(crate) match_type: u8,
    /// Non-zero (network order): new connections go through the agent's
    /// proxy on this port (DNS rules).
    pub(crate) proxy_port: [u8; 2],
    /// Which rule made the entry (the agent's numbering; 0 = none).
    pub cookie: u32,
}

// SAFETY: repr(C), padding-free (8 bytes), any bits.
unsafe impl Record for PolicyValue {}

impl PolicyValue {
    /// An allow entry without match type or rule.
    pub const ALLOW: Self = Self {
        action: 1,
        match_type: 0,
        proxy_port: [0; 2],
        cookie: 0,
    };
    /// A deny entry without match type or rule.
    pub const DENY: Self = Self {
        action: 2,
        match_type: 0,
        proxy_port: [0; 2],
        cookie: 0,
    };

    /// The value of `key` doing `action` for the rule `cookie`.
    pub fn new(action: PolicyAction, key: &PolicyKey, cookie: u32) -> Self {
        Self {
            action: match action {
                PolicyAction::Allow => 1,
                PolicyAction::Deny => 2,
            },
            match_type: MatchType::of(key) as u8,
            proxy_port: [0; 2],
            cookie,
        }
    }

    /// The same entry sending new connections through the agent's proxy
    /// on `port` (0: straight to the peer).
    pub fn with_proxy_port(mut self, port: u16) -> Self {
        self.proxy_port = port.to_be_bytes();
        self
    }

    /// The port of the agent's proxy new connections go through (0: none).
    pub fn proxy_port(&self) -> u16 {
        u16::from_be_bytes(self.proxy_port)
    }

    /// The action (`None` for an unknown action byte, which the datapath
    /// ignores).
    pub fn action(&self) -> Option<PolicyAction> {
        match self.action {
            1 => Some(PolicyAction::Allow),
            2 => Some(PolicyAction::Deny),
            _ => None,
        }
    }

    /// The kind of entry, as flows report it.
    pub fn match_type(&self) -> MatchType {
        MatchType::from_number(self.match_type)
    }
}

impl From<PolicyAction> for PolicyValue {
    fn from(action: PolicyAction) -> Self {
        match action {
            PolicyAction::Allow => Self::ALLOW,
            PolicyAction::Deny => Self::DENY,
        }
    }
}

/// Handle on the pinned policy map.
pub type PolicyMap = TypedMap<PolicyKey, PolicyValue>;

/// A verdict as the datapath reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyVerdict {
    pub action: PolicyAction,
    /// The entry that decided (`None`: not enforced, or default deny).
    pub entry: Option<(PolicyKey, PolicyValue)>,
}

/// The longest entry of `policy_id` for `identity` that matches.
fn longest(
    entries: &BTreeMap<PolicyKey, PolicyValue>,
    policy_id: u32,
    direction: Direction,
    identity: u32,
    protocol: Protocol,
    port: u16,
) -> Option<(PolicyKey, PolicyValue)> {
    let candidates = (0..=16u8)
        .rev()
        .map(|bits| L4Match::ports(protocol, port, bits))
        .chain([L4Match::Any]);
    for l4 in candidates {
        let key = PolicyKey::new(policy_id, direction, identity, l4);
        if let Some(v) = entries.get(&key) {
            return Some((key, *v));
        }
    }
    None
}

/// Whether a new connection is allowed, exactly as the datapath decides it
/// (sans-IO; for tests, debugging and `explain` tools).
///
/// When `enforced` is false everything is allowed. Otherwise the longest
/// entry for the identity and the longest for [`IDENTITY_ANY`] are found
/// (the LPM lookups); a deny in either denies, else an allow in either
/// allows (the identity's is reported), else the default is deny. `port`
/// is the destination port, or for ICMP `type << 8 | code`.
pub fn evaluate(
    entries: &BTreeMap<PolicyKey, PolicyValue>,
    policy_id: u32,
    direction: Direction,
    enforced: bool,
    identity: u32,
    protocol: Protocol,
    port: u16,
) -> PolicyVerdict {
    if !enforced {
        return PolicyVerdict {
            action: PolicyAction::Allow,
            entry: None,
        };
    }
    let mut allow = None;
    for id in [identity, IDENTITY_ANY] {
        match longest(entries, policy_id, direction, id, protocol, port) {
            Some(hit) if hit.1.action() == Some(PolicyAction::Deny) => {
                return PolicyVerdict {
                    action: PolicyAction::Deny,
                    entry: Some(hit),
                };
            }
            Some(hit) if hit.1.action() == Some(PolicyAction::Allow) && allow.is_none() => {
                allow = Some(hit);
            }
            _ => {}
        }
    }
    PolicyVerdict {
        action: if allow.is_some() {
            PolicyAction::Allow
        } else {
            PolicyAction::Deny
        },
        entry: allow,
    }
}

/// [`evaluate`] for ingress, returning only the action.
pub fn evaluate_ingress(
    entries: &BTreeMap<PolicyKey, PolicyValue>,
    policy_id: u32,
    enforced: bool,
    identity: u32,
    protocol: Protocol,
    port: u16,
) -> PolicyAction {
    evaluate(
        entries,
        policy_id,
        Direction::Ingress,
        enforced,
        identity,
        protocol,
        port,
    )
    .action
}

#[cfg(test)]
mod tests {
    use super::*;

    const EP: u32 = 7;
    const WEB: u32 = 300;
    const DB: u32 = 301;

    fn entries(list: &[(u32, L4Match, PolicyAction)]) -> BTreeMap<PolicyKey, PolicyValue> {
        list.iter()
            .map(|(id, l4, a)| {
                let k = PolicyKey::ingress(EP, *id, *l4);
                (k, PolicyValue::new(*a, &k, 1))
            })
            .collect()
    }

    fn verdict(
        e: &BTreeMap<PolicyKey, PolicyValue>,
        id: u32,
        p: Protocol,
        port: u16,
    ) -> PolicyAction {
        evaluate_ingress(e, EP, true, id, p, port)
    }

    use PolicyAction::{Allow, Deny};

    #[test]
    fn not_enforced_allows_everything() {
        let e = BTreeMap::new();
        assert_eq!(evaluate_ingress(&e, EP, false, 2, Protocol::Tcp, 22), Allow);
        assert_eq!(verdict(&e, 2, Protocol::Tcp, 22), Deny);
    }

    #[test]
    fn exact_port_and_identity() {
        let e = entries(&[(WEB, L4Match::Port(Protocol::Tcp, 80), Allow)]);
        assert_eq!(verdict(&e, WEB, Protocol::Tcp, 80), Allow);
        assert_eq!(verdict(&e, WEB, Protocol::Tcp, 81), Deny);
        assert_eq!(verdict(&e, WEB, Protocol::Udp, 80), Deny);
        assert_eq!(verdict(&e, DB, Protocol::Tcp, 80), Deny);
    }

    #[test]
    fn wildcards() {
        let e = entries(&[
            (WEB, L4Match::Protocol(Protocol::Udp), Allow),
            (IDENTITY_ANY, L4Match::Port(Protocol::Tcp, 443), Allow),
            (DB, L4Match::Any, Allow),
        ]);
        assert_eq!(verdict(&e, WEB, Protocol::Udp, 5353), Allow);
        assert_eq!(verdict(&e, 2, Protocol::Tcp, 443), Allow);
        assert_eq!(verdict(&e, DB, Protocol::Icmp, 0x0800), Allow);
        assert_eq!(verdict(&e, WEB, Protocol::Tcp, 80), Deny);
    }

    #[test]
    fn a_deny_for_any_identity_wins_over_the_identity_allow() {
        let e = entries(&[
            (WEB, L4Match::Protocol(Protocol::Tcp), Allow),
            (IDENTITY_ANY, L4Match::Port(Protocol::Tcp, 22), Deny),
        ]);
        assert_eq!(verdict(&e, WEB, Protocol::Tcp, 80), Allow);
        assert_eq!(verdict(&e, WEB, Protocol::Tcp, 22), Deny);
    }

    #[test]
    fn the_longest_entry_of_an_identity_decides() {
        // The agent turns covered allows into denies; the datapath then
        // only needs the longest match.
        let e = entries(&[
            (WEB, L4Match::Protocol(Protocol::Tcp), Deny),
            (WEB, L4Match::Port(Protocol::Tcp, 80), Allow),
        ]);
        assert_eq!(verdict(&e, WEB, Protocol::Tcp, 80), Allow);
        assert_eq!(verdict(&e, WEB, Protocol::Tcp, 81), Deny);
    }

    #[test]
    fn verdicts_report_the_deciding_entry() {
        let e = entries(&[
            (WEB, L4Match::Port(Protocol::Tcp, 80), Allow),
            (IDENTITY_ANY, L4Match::Any, Allow),
        ]);
        let v = evaluate(&e, EP, Direction::Ingress, true, WEB, Protocol::Tcp, 80);
        assert_eq!(v.entry.unwrap().1.match_type(), MatchType::L3L4);
        let v = evaluate(&e, EP, Direction::Ingress, true, DB, Protocol::Tcp, 80);
        assert_eq!(v.entry.unwrap().1.match_type(), MatchType::All);
        let v = evaluate(&e, EP, Direction::Egress, true, DB, Protocol::Tcp, 80);
        assert_eq!((v.action, v.entry), (Deny, None), "other direction");
    }

    #[test]
    fn port_ranges_split_into_aligned_blocks() {
        let blocks = |a, b| L4Match::port_range(Protocol::Tcp, a, b);
        assert_eq!(blocks(80, 80), vec![L4Match::Port(Protocol::Tcp, 80)]);
        assert_eq!(blocks(0, 65535), vec![L4Match::Protocol(Protocol::Tcp)]);
        for (a, b) in [
            (1, 65535),
            (80, 90),
            (1024, 2047),
            (7, 9000),
            (65534, 65535),
        ] {
            let bl = blocks(a, b);
            let covered = |port| bl.iter().filter(|m| m.matches(Protocol::Tcp, port)).count();
            for port in 0..=65535u16 {
                let want = usize::from((a..=b).contains(&port));
                assert_eq!(covered(port), want, "{a}-{b} port {port}");
            }
            assert!(bl.len() <= 30, "{a}-{b}: {} blocks", bl.len());
        }
        assert_eq!(blocks(1024, 2047).len(), 1);
        assert_eq!(
            blocks(80, 90)[0].port_bounds(),
            (80, 87),
            "the first block of 80-90"
        );
    }

    #[test]
    fn covers_and_icmp_types() {
        let tcp = L4Match::Protocol(Protocol::Tcp);
        let block = L4Match::ports(Protocol::Tcp, 1024, 6);
        assert!(L4Match::Any.covers(&tcp));
        assert!(tcp.covers(&block));
        assert!(block.covers(&L4Match::Port(Protocol::Tcp, 1500)));
        assert!(!block.covers(&tcp));
        assert!(!block.covers(&L4Match::Port(Protocol::Udp, 1500)));
        let echo = L4Match::icmp_type(Protocol::Icmp, 8);
        assert!(echo.matches(Protocol::Icmp, 0x0800));
        assert!(!echo.matches(Protocol::Icmp, 0x0000));
        let e = entries(&[(WEB, echo, Allow)]);
        assert_eq!(verdict(&e, WEB, Protocol::Icmp, 0x0800), Allow);
        assert_eq!(verdict(&e, WEB, Protocol::Icmp, 0x0d00), Deny);
    }

    #[test]
    fn key_round_trips_l4_and_direction() {
        for l4 in [
            L4Match::Any,
            L4Match::Protocol(Protocol::Icmp),
            L4Match::Port(Protocol::Udp, 53),
            L4Match::ports(Protocol::Tcp, 8080, 13),
            L4Match::icmp_type(Protocol::Icmpv6, 128),
        ] {
            let k = PolicyKey::new(1, Direction::Egress, 5, l4);
            assert_eq!(k.l4(), l4);
            assert_eq!(k.direction(), Direction::Egress);
        }
        let k = PolicyKey::ingress(1, 5, L4Match::Port(Protocol::Tcp, 0x1234));
        assert_eq!(k.dport, [0x12, 0x34], "network byte order");
        assert_eq!(k.prefixlen, 96);
        assert_eq!(PolicyKey::ingress(1, 5, L4Match::Any).prefixlen, 72);
        let (lo, hi) = PolicyKey::bounds(1);
        assert!(lo <= k && k <= hi);
        assert!(PolicyKey::bounds(2).0 > hi);
        let (lo, hi) = PolicyKey::identity_bounds(1, Direction::Ingress, 5);
        assert!(lo <= k && k <= hi);
        let other = PolicyKey::ingress(1, 6, L4Match::Any);
        assert!(other > hi);
        assert!(PolicyKey::egress(1, 5, L4Match::Any) > hi);
    }
}
