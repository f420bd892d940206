//! IP protocol numbers as the maps store them.

/// An L4 protocol (IANA protocol number on the wire and in the maps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// ICMP (1); policy matches it without ports.
    Icmp,
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMPv6 (58); echo only, neighbour discovery always passes.
    Icmpv6,
    /// SCTP (132); policy by port, no service translation.
    Sctp,
    /// Any other protocol number.
    Other(u8),
}

impl Protocol {
    /// The protocol number.
    pub fn number(self) -> u8 {
        match self {
            Self::Icmp => 1,
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Icmpv6 => 58,
            Self::Sctp => 132,
            Self::Other(n) => n,
        }
    }

    /// The protocol for a number.
    pub fn from_number(n: u8) -> Self {
        match n {
            1 => Self::Icmp,
            6 => Self::Tcp,
            17 => Self::Udp,
            58 => Self::Icmpv6,
            132 => Self::Sctp,
            n => Self::Other(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for n in 0..=255u8 {
            assert_eq!(Protocol::from_number(n).number(), n);
        }
        assert_eq!(Protocol::Tcp.number(), 6);
    }
}
