//! Where a peer (or the Peer service) listens, as the Peer service
//! announces it.

use std::{fmt, net::IpAddr, path::PathBuf, str::FromStr};

/// The port of a Hubble server when an address names none
/// (`hubble-listen-address`, Cilium's `defaults.ServerPort`).
pub const DEFAULT_PEER_PORT: u16 = hubble::names::SERVER_PORT;

/// A Hubble server's address. Accepted forms, as Cilium's peer client
/// accepts them (`pkg/hubble/peer/types/peer.go`): `ip`, `ip:port`,
/// `[ipv6]:port`, `host:port`, `unix:///path` or `/path` (a unix socket).
/// A bare IP or host name gets [`DEFAULT_PEER_PORT`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerAddress {
    Tcp { host: Host, port: u16 },
    Unix(PathBuf),
}

/// The host part of a TCP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

/// Why an address cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerAddressError {
    #[error("empty address")]
    Empty,
    #[error("invalid address {address:?}: the unix socket path is empty")]
    EmptyUnixPath { address: String },
    #[error("invalid address {address:?}: the port must be a number from 1 to 65535")]
    InvalidPort { address: String },
    #[error("invalid address {address:?}: {reason}")]
    InvalidHost {
        address: String,
        reason: &'static str,
    },
}

impl FromStr for PeerAddress {
    type Err = PeerAddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let address = s.trim();
        if address.is_empty() {
            return Err(PeerAddressError::Empty);
        }
        if let Some(path) = address.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(PeerAddressError::EmptyUnixPath {
                    address: address.to_owned(),
                });
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if address.starts_with('/') {
            return Ok(Self::Unix(PathBuf::from(address)));
        }
        if let Ok(ip) = address.parse::<IpAddr>() {
            return Ok(Self::Tcp {
                host: Host::Ip(ip),
                port: DEFAULT_PEER_PORT,
            });
        }
        let invalid_port = || PeerAddressError::InvalidPort {
            address: address.to_owned(),
        };
        let invalid_host = |reason| PeerAddressError::InvalidHost {
            address: address.to_owned(),
            reason,
        };
        let (host, port) = if let Some(rest) = address.strip_prefix('[') {
            let (ip, after) = rest
                .split_once(']')
                .ok_or_else(|| invalid_host("an IPv6 address in brackets lacks its ']'"))?;
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| invalid_host("not an IP address in brackets"))?;
            let port = match after {
                "" => DEFAULT_PEER_PORT,
                _ => parse_port(after.strip_prefix(':').ok_or_else(invalid_port)?)
                    .ok_or_else(invalid_port)?,
            };
            (Host::Ip(ip), port)
        } else {
            let (host, port) = match address.rsplit_once(':') {
                Some((host, port)) => (host, parse_port(port).ok_or_else(invalid_port)?),
                None => (address, DEFAULT_PEER_PORT),
            };
            if host.contains(':') {
                return Err(invalid_host("an IPv6 address with a port needs brackets"));
            }
            if host.is_empty() {
                return Err(invalid_host("the host is empty"));
            }
            let valid = host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
            if !valid {
                return Err(invalid_host("the host is not an IP address or a DNS name"));
            }
            match host.parse::<IpAddr>() {
                Ok(ip) => (Host::Ip(ip), port),
                Err(_) => (Host::Name(host.to_owned()), port),
            }
        };
        Ok(Self::Tcp { host, port })
    }
}

fn parse_port(s: &str) -> Option<u16> {
    s.parse::<u16>().ok().filter(|p| *p != 0)
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Self::Ip(ip) => write!(f, "{ip}"),
            Self::Name(name) => f.write_str(name),
        }
    }
}

impl fmt::Display for PeerAddress {
    /// `host:port` (IPv6 in brackets), or the socket's path as Cilium's
    /// relay shows it in `GetNodes`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { host, port } => write!(f, "{host}:{port}"),
            Self::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn tcp(host: Host, port: u16) -> PeerAddress {
        PeerAddress::Tcp { host, port }
    }

    #[test]
    fn the_forms_cilium_accepts() {
        let v4 = Host::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        let v6 = Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST));
        let cases = [
            ("10.0.0.1", tcp(v4.clone(), 4244)),
            ("10.0.0.1:4000", tcp(v4.clone(), 4000)),
            ("::1", tcp(v6.clone(), 4244)),
            ("[::1]:4000", tcp(v6.clone(), 4000)),
            ("[::1]", tcp(v6, 4244)),
            (
                "hubble-peer.kube-system.svc:443",
                tcp(Host::Name("hubble-peer.kube-system.svc".into()), 443),
            ),
            ("node-1", tcp(Host::Name("node-1".into()), 4244)),
            (
                "unix:///var/run/cilium/hubble.sock",
                PeerAddress::Unix("/var/run/cilium/hubble.sock".into()),
            ),
            ("/tmp/x.sock", PeerAddress::Unix("/tmp/x.sock".into())),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<PeerAddress>(), Ok(want), "{text}");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in ["10.0.0.1:4244", "[::1]:4000", "node-1:4244", "/tmp/x.sock"] {
            let addr: PeerAddress = text.parse().unwrap();
            assert_eq!(addr.to_string(), text);
            assert_eq!(addr.to_string().parse::<PeerAddress>(), Ok(addr));
        }
    }

    #[test]
    fn clear_errors() {
        let err = |s: &str| s.parse::<PeerAddress>().unwrap_err().to_string();
        assert_eq!(err(""), "empty address");
        assert_eq!(
            err("unix://"),
            "invalid address \"unix://\": the unix socket path is empty"
        );
        assert_eq!(
            err("10.0.0.1:0"),
            "invalid address \"10.0.0.1:0\": the port must be a number from 1 to 65535"
        );
        assert_eq!(
            err("node:http"),
            "invalid address \"node:http\": the port must be a number from 1 to 65535"
        );
        assert_eq!(
            err("fe80::1::2:80"),
            "invalid address \"fe80::1::2:80\": an IPv6 address with a port needs brackets"
        );
        assert_eq!(
            err("no spaces:80"),
            "invalid address \"no spaces:80\": the host is not an IP address or a DNS name"
        );
        assert_eq!(err(":80"), "invalid address \":80\": the host is empty");
    }
}
