//! Which fabric subnet a mesh uses: `172.(16+k).0.0/16`, k in 0..16, taken
//! with a lock directory so that meshes (and parallel tests) never share one,
//! and never one that clashes with an address or route of the host (Docker's
//! bridge takes 172.17.0.0/16, for instance).

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::Result;
use ipnet::Ipv4Net;

use crate::{error::refuse, topology};

const LOCKS: &str = "/run/clustermesh/subnets";
/// How many fabric subnets there are.
pub(crate) const SUBNETS: u8 = 16;

fn lock_path(k: u8) -> PathBuf {
    PathBuf::from(LOCKS).join(k.to_string())
}

/// The fabric subnet with index `k`.
pub(crate) fn fabric(k: u8) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(172, 16 + k, 0, 0), 16).expect("valid /16")
}

/// The index of a fabric subnet given as `172.N.0.0/16`.
pub fn parse(text: &str) -> Result<u8> {
    let net: Option<Ipv4Net> = text.parse().ok();
    match net.and_then(|n| (0..SUBNETS).find(|&k| fabric(k) == n)) {
        Some(k) => Ok(k),
        None => refuse!(
            "--subnet {text:?} is not a local mesh subnet: give one of 172.16.0.0/16 … 172.31.0.0/16"
        ),
    }
}

/// Takes the fabric subnet for the mesh in `owner` (its directory): `wanted`
/// or else the first one that is free and clashes with nothing on the host.
pub(crate) fn acquire(owner: &Path, wanted: Option<u8>) -> Result<u8> {
    std::fs::create_dir_all(LOCKS)?;
    let host = host_prefixes();
    let candidates: Vec<u8> = match wanted {
        Some(k) => vec![k],
        None => (0..SUBNETS).collect(),
    };
    let mut skipped = Vec::new();
    for k in candidates {
        let net = fabric(k);
        if let Some(line) = clash(net, &host) {
            if wanted.is_some() {
                refuse!(
                    "subnet {net} clashes with the host's `{line}`; choose another with --subnet"
                );
            }
            skipped.push(format!("{net} (host: {line})"));
            continue;
        }
        let path = lock_path(k);
        // A lock whose mesh directory is gone is stale (its mesh was removed
        // without `down`, or a test cleaned up its temp dir).
        if let Ok(holder) = std::fs::read_to_string(path.join("owner"))
            && !Path::new(holder.trim()).exists()
        {
            let _ = std::fs::remove_dir_all(&path);
        }
        if std::fs::create_dir(&path).is_ok() {
            std::fs::write(path.join("owner"), owner.to_string_lossy().as_bytes())?;
            return Ok(k);
        }
        if wanted.is_some() {
            let holder = std::fs::read_to_string(path.join("owner")).unwrap_or_default();
            refuse!("subnet {net} is used by the mesh at {}", holder.trim());
        }
        skipped.push(format!("{net} (another mesh)"));
    }
    refuse!(
        "no local mesh subnet is free: {}; remove a mesh with `clustermesh down --dir DIR`",
        skipped.join(", ")
    )
}

pub(crate) fn release(k: u8) {
    let _ = std::fs::remove_dir_all(lock_path(k));
}

/// The host's IPv4 routes and addresses, as (prefix, the line that shows it).
fn host_prefixes() -> Vec<(Ipv4Net, String)> {
    let mut found = Vec::new();
    if let Ok(routes) = topology::ip(&["-o", "-4", "route", "show", "table", "all"]) {
        found.extend(routes.lines().filter_map(|l| {
            let first = l.split_whitespace().next()?;
            // `local`/`broadcast` entries repeat the addresses below.
            let prefix = parse_prefix(first)?;
            Some((prefix, l.trim().to_string()))
        }));
    }
    if let Ok(addrs) = topology::ip(&["-o", "-4", "addr", "show"]) {
        found.extend(addrs.lines().filter_map(|l| {
            let mut words = l.split_whitespace();
            let dev = words.nth(1)?;
            let cidr = words.skip_while(|w| *w != "inet").nth(1)?;
            let prefix = cidr.parse::<Ipv4Net>().ok()?.trunc();
            Some((prefix, format!("{cidr} on {dev}")))
        }));
    }
    found
}

/// `10.0.0.0/8` or `10.1.2.3` (a host route); not `default` (it overlaps
/// everything and routes nothing specific).
fn parse_prefix(word: &str) -> Option<Ipv4Net> {
    if let Ok(net) = word.parse::<Ipv4Net>() {
        return (net.prefix_len() > 0).then_some(net);
    }
    word.parse::<Ipv4Addr>()
        .ok()
        .map(|a| Ipv4Net::new(a, 32).expect("/32"))
}

/// The first host prefix that overlaps `net`, if any. Loopback never does.
fn clash(net: Ipv4Net, host: &[(Ipv4Net, String)]) -> Option<String> {
    host.iter()
        .find(|(p, _)| {
            !p.addr().is_loopback() && (p.contains(&net.addr()) || net.contains(&p.addr()))
        })
        .map(|(_, line)| line.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(lines: &[(&str, &str)]) -> Vec<(Ipv4Net, String)> {
        lines
            .iter()
            .map(|(p, l)| (parse_prefix(p).unwrap(), l.to_string()))
            .collect()
    }

    #[test]
    fn overlapping_routes_clash_and_default_does_not() {
        assert_eq!(parse_prefix("default"), None);
        assert_eq!(parse_prefix("0.0.0.0/0"), None);
        let h = host(&[
            ("172.17.0.0/16", "172.17.0.0/16 dev docker0 proto kernel"),
            ("172.20.5.9", "172.20.5.9 via 192.0.2.1 dev eth0"),
            ("172.0.0.0/8", "172.0.0.0/8 via 10.0.0.1"),
            ("127.0.0.0/8", "local 127.0.0.0/8 dev lo"),
        ]);
        assert_eq!(
            clash(fabric(1), &h[..1]).as_deref(),
            Some("172.17.0.0/16 dev docker0 proto kernel")
        );
        assert!(clash(fabric(0), &h[..2]).is_none());
        assert!(
            clash(fabric(4), &h[..2]).is_some(),
            "a host route inside the subnet"
        );
        assert!(clash(fabric(9), &h).is_some(), "a wider route around it");
        assert!(clash(fabric(9), &h[3..]).is_none());
    }

    #[test]
    fn subnet_flag() {
        assert_eq!(parse("172.16.0.0/16").unwrap(), 0);
        assert_eq!(parse("172.31.0.0/16").unwrap(), 15);
        for bad in ["172.32.0.0/16", "10.0.0.0/16", "172.16.0.0/24", "x"] {
            let e = parse(bad).unwrap_err();
            assert!(e.downcast_ref::<crate::Refused>().is_some(), "{bad}");
        }
    }
}
