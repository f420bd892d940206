//! The mesh's networks: a fabric bridge in its own namespace that every
//! control-plane and node namespace plugs into (one flat L2, as nodes of
//! clusters with routable node networks see each other), the root
//! namespace's port on it, and partitions cut with nftables bridge rules.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// Where `ip netns` keeps named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// The file of the named namespace (for `setns` and `CNI_NETNS`).
pub(crate) fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Runs `f` on a thread inside the named network namespace.
pub fn in_netns<R: Send>(name: &str, f: impl FnOnce() -> R + Send) -> Result<R> {
    Ok(netns::run_in(&netns_path(name), f)?)
}

/// Runs `program args` (in `netns` if given) and returns stdout.
pub(crate) fn run(netns: Option<&str>, program: &str, args: &[&str]) -> Result<String> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => Command::new(program),
    };
    cmd.args(args);
    let out = cmd.output().with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}`{} failed: {}",
            args.join(" "),
            netns.map(|n| format!(" in {n}")).unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn ip(args: &[&str]) -> Result<String> {
    run(None, "ip", args)
}

/// One `nft` command (a single argument, as nft reads it) in the fabric.
fn nft(fabric: &str, command: &str) -> Result<String> {
    run(Some(fabric), "nft", &[command])
}

pub(crate) fn netns_exists(name: &str) -> bool {
    netns_path(name).exists()
}

/// Creates a namespace (replacing a leftover of the same name) with
/// loopback up.
pub(crate) fn create_netns(name: &str) -> Result<()> {
    if netns_exists(name) {
        let _ = ip(&["netns", "del", name]);
    }
    ip(&["netns", "add", name])?;
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

pub(crate) fn delete_netns(name: &str) {
    if netns_exists(name) {
        let _ = ip(&["netns", "del", name]);
    }
}

/// The fabric: a bridge `br0` in `fabric`.
pub(crate) fn create_fabric(fabric: &str) -> Result<()> {
    create_netns(fabric)?;
    // Without multicast snooping: IPv6 neighbour discovery between nodes
    // must not depend on the bridge having learnt MLD memberships.
    ip(&[
        "-n",
        fabric,
        "link",
        "add",
        "br0",
        "type",
        "bridge",
        "mcast_snooping",
        "0",
    ])?;
    ip(&["-n", fabric, "link", "set", "br0", "up"])?;
    // A table for partitions; empty until a cut.
    nft(fabric, "add table bridge mesh")?;
    nft(
        fabric,
        "add chain bridge mesh forward { type filter hook forward priority 0 ; policy accept ; }",
    )?;
    Ok(())
}

/// Plugs namespace `ns` (or the root namespace, with `ns` = `None`) into
/// the fabric with `ip/16` on interface `ifname`; `peer` names the fabric side.
pub(crate) fn plug(
    fabric: &str,
    ns: Option<&str>,
    ifname: &str,
    peer: &str,
    ip_addr: Ipv4Addr,
) -> Result<()> {
    match ns {
        Some(ns) => {
            ip(&[
                "-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", peer, "netns",
                fabric,
            ])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip_addr}/16"),
                "dev",
                ifname,
            ])?;
            ip(&["-n", ns, "link", "set", ifname, "up"])?;
        }
        None => {
            if ip(&["link", "show", ifname]).is_ok() {
                let _ = ip(&["link", "del", ifname]);
            }
            ip(&[
                "link", "add", ifname, "type", "veth", "peer", "name", peer, "netns", fabric,
            ])?;
            ip(&["addr", "add", &format!("{ip_addr}/16"), "dev", ifname])?;
            ip(&["link", "set", ifname, "up"])?;
        }
    }
    ip(&["-n", fabric, "link", "set", peer, "master", "br0"])?;
    ip(&["-n", fabric, "link", "set", peer, "up"])?;
    Ok(())
}

/// Gives namespace `ns`'s interface `ifname` (plugged by [`plug`]) an IPv6
/// address too, without duplicate address detection (addresses are unique
/// by plan, and a tentative one would not answer for a second).
pub(crate) fn add_ipv6(ns: &str, ifname: &str, addr: Ipv6Addr, prefix_len: u8) -> Result<()> {
    ip(&[
        "-n",
        ns,
        "-6",
        "addr",
        "add",
        &format!("{addr}/{prefix_len}"),
        "dev",
        ifname,
        "nodad",
    ])?;
    Ok(())
}

/// Drops all traffic between two sets of prefixes, both ways (IPv4 and
/// IPv6 prefixes each against those of their own family).
pub(crate) fn cut(fabric: &str, chain: &str, a: &[String], b: &[String]) -> Result<()> {
    let _ = nft(fabric, &format!("delete chain bridge mesh {chain}"));
    nft(fabric, &format!("add chain bridge mesh {chain}"))?;
    let family = |p: &str| if p.contains(':') { "ip6" } else { "ip" };
    for x in a {
        for y in b.iter().filter(|y| family(y) == family(x)) {
            for (from, to) in [(x, y), (y, x)] {
                let f = family(from);
                nft(
                    fabric,
                    &format!("add rule bridge mesh {chain} {f} saddr {from} {f} daddr {to} drop"),
                )?;
            }
        }
    }
    nft(
        fabric,
        &format!("add rule bridge mesh forward jump {chain}"),
    )?;
    Ok(())
}

/// Removes a cut.
pub(crate) fn heal(fabric: &str, chain: &str) -> Result<()> {
    // The jump rule references the chain: delete it first, by handle.
    let listing = run(
        Some(fabric),
        "nft",
        &["-a", "list", "chain", "bridge", "mesh", "forward"],
    )?;
    for line in listing
        .lines()
        .filter(|l| l.contains(&format!("jump {chain} ")))
    {
        if let Some(handle) = line.rsplit("handle ").next() {
            nft(
                fabric,
                &format!("delete rule bridge mesh forward handle {}", handle.trim()),
            )?;
        }
    }
    let _ = nft(fabric, &format!("delete chain bridge mesh {chain}"));
    Ok(())
}
