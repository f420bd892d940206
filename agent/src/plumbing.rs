//! Kernel networking for endpoints and routes, done with iproute2 inside the
//! right network namespaces.
//!
//! An endpoint is a veth pair: the host side (`cm…`) stays in the node's
//! namespace and carries the datapath programs; the other end moves into
//! the pod's namespace under the requested name. The pod gets its address
//! as a /32 and a default route via the node's router IP (the first address
//! of the pod CIDR), which every host-side veth carries, so the pod's ARP
//! for its gateway is answered by its own veth and no bridge is needed.
//!
//! IPv6 mirrors it: a dual-stack pod also gets its IPv6 address as a /128
//! and a default route via the IPv6 router address (`<v6 pod CIDR>::1`),
//! which every host-side veth carries too, so neighbour discovery for the
//! gateway is answered by the pod's own veth. Addresses are added without
//! duplicate address detection: they are unique by allocation, and a
//! tentative address would not answer (nor be usable) for a second.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::Command,
};

use ipnet::IpNet;

/// An iproute2 or sysctl step failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlumbingError {
    #[error("cannot open network namespace {path}")]
    OpenNetns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("cannot parse the output of `{command}`")]
    Parse {
        command: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Runs `program args…` inside the namespace at `netns` (`None`: the
/// agent's own) and returns its stdout.
pub(crate) fn run_in(
    netns: Option<&Path>,
    program: &str,
    args: &[&str],
) -> Result<String, PlumbingError> {
    let command = format!("{program} {}", args.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(path) = netns {
        let ns = File::open(path).map_err(|source| PlumbingError::OpenNetns {
            path: path.to_path_buf(),
            source,
        })?;
        netns::join_before_exec(&mut cmd, ns);
    }
    let out = cmd.output().map_err(|source| PlumbingError::Spawn {
        command: command.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(PlumbingError::Failed {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(netns: Option<&Path>, args: &[&str]) -> Result<String, PlumbingError> {
    run_in(netns, "ip", args)
}

fn sysctl(netns: Option<&Path>, key: &str, value: &str) -> Result<(), PlumbingError> {
    run_in(netns, "sysctl", &["-qw", &format!("{key}={value}")]).map(|_| ())
}

/// One endpoint's link, as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndpointLink<'a> {
    /// The node's namespace (where the host side lives).
    pub node_netns: Option<&'a Path>,
    /// The pod's namespace.
    pub pod_netns: &'a Path,
    pub host_ifname: &'a str,
    pub pod_ifname: &'a str,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    /// The IPv6 address and IPv6 gateway of a dual-stack endpoint.
    pub ipv6: Option<(Ipv6Addr, Ipv6Addr)>,
}

/// Prepares the node's namespace: forwarding on, reverse-path filtering
/// loose (traffic from other nodes arrives on whatever interface routes it).
pub(crate) fn prepare_node(node_netns: Option<&Path>) -> Result<(), PlumbingError> {
    sysctl(node_netns, "net.ipv4.ip_forward", "1")?;
    sysctl(node_netns, "net.ipv4.conf.all.rp_filter", "0")?;
    sysctl(node_netns, "net.ipv4.conf.default.rp_filter", "0")?;
    Ok(())
}

/// Prepares the node's namespace for IPv6 pods: forwarding on (IPv6 has no
/// reverse-path filter of its own).
pub(crate) fn prepare_node_v6(node_netns: Option<&Path>) -> Result<(), PlumbingError> {
    sysctl(node_netns, "net.ipv6.conf.all.forwarding", "1")?;
    sysctl(node_netns, "net.ipv6.conf.default.forwarding", "1")?;
    Ok(())
}

/// Creates the veth pair, moves the peer into the pod and configures both
/// ends. Replaces a leftover host interface of the same name.
pub(crate) fn create_endpoint_link(link: &EndpointLink<'_>) -> Result<(), PlumbingError> {
    let node = link.node_netns;
    let tmp_peer = format!("{}p", &link.host_ifname[..link.host_ifname.len().min(14)]);
    if link_exists(node, link.host_ifname) {
        delete_endpoint_link(node, link.host_ifname)?;
    }
    ip(
        node,
        &[
            "link",
            "add",
            link.host_ifname,
            "type",
            "veth",
            "peer",
            "name",
            &tmp_peer,
        ],
    )?;
    let result = configure(link, &tmp_peer);
    if result.is_err() {
        let _ = delete_endpoint_link(node, link.host_ifname);
    }
    result
}

fn configure(link: &EndpointLink<'_>, tmp_peer: &str) -> Result<(), PlumbingError> {
    let node = link.node_netns;
    let pod = Some(link.pod_netns);
    let pod_path = link.pod_netns.to_string_lossy();
    ip(node, &["link", "set", tmp_peer, "netns", &pod_path])?;
    ip(pod, &["link", "set", tmp_peer, "name", link.pod_ifname])?;
    ip(
        pod,
        &[
            "addr",
            "add",
            &format!("{}/32", link.ip),
            "dev",
            link.pod_ifname,
        ],
    )?;
    ip(pod, &["link", "set", link.pod_ifname, "up"])?;
    ip(pod, &["link", "set", "lo", "up"])?;
    let gw = link.gateway.to_string();
    ip(
        pod,
        &[
            "route",
            "replace",
            &gw,
            "dev",
            link.pod_ifname,
            "scope",
            "link",
        ],
    )?;
    ip(
        pod,
        &[
            "route",
            "replace",
            "default",
            "via",
            &gw,
            "dev",
            link.pod_ifname,
        ],
    )?;
    sysctl(
        node,
        &format!("net.ipv4.conf.{}.rp_filter", link.host_ifname),
        "0",
    )?;
    ip(
        node,
        &[
            "addr",
            "add",
            &format!("{gw}/32"),
            "dev",
            link.host_ifname,
            "scope",
            "link",
        ],
    )?;
    ip(node, &["link", "set", link.host_ifname, "up"])?;
    ip(
        node,
        &[
            "route",
            "replace",
            &format!("{}/32", link.ip),
            "dev",
            link.host_ifname,
        ],
    )?;
    if let Some((ipv6, gateway)) = link.ipv6 {
        configure_v6(link, ipv6, gateway)?;
    }
    Ok(())
}

/// The IPv6 half of [`configure`], the same steps with `/128`s.
fn configure_v6(
    link: &EndpointLink<'_>,
    ipv6: Ipv6Addr,
    gateway: Ipv6Addr,
) -> Result<(), PlumbingError> {
    let node = link.node_netns;
    let pod = Some(link.pod_netns);
    let gw = gateway.to_string();
    ip(
        pod,
        &[
            "-6",
            "addr",
            "add",
            &format!("{ipv6}/128"),
            "dev",
            link.pod_ifname,
            "nodad",
        ],
    )?;
    ip(
        pod,
        &["-6", "route", "replace", &gw, "dev", link.pod_ifname],
    )?;
    ip(
        pod,
        &[
            "-6",
            "route",
            "replace",
            "default",
            "via",
            &gw,
            "dev",
            link.pod_ifname,
        ],
    )?;
    ip(
        node,
        &[
            "-6",
            "addr",
            "add",
            &format!("{gw}/128"),
            "dev",
            link.host_ifname,
            "nodad",
        ],
    )?;
    ip(
        node,
        &[
            "-6",
            "route",
            "replace",
            &format!("{ipv6}/128"),
            "dev",
            link.host_ifname,
        ],
    )?;
    Ok(())
}

/// Deletes the pair (the peer goes with it). Missing is fine.
pub(crate) fn delete_endpoint_link(
    node_netns: Option<&Path>,
    host_ifname: &str,
) -> Result<(), PlumbingError> {
    match ip(node_netns, &["link", "del", host_ifname]) {
        Ok(_) => Ok(()),
        Err(PlumbingError::Failed { stderr, .. }) if stderr.contains("Cannot find device") => {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Whether an interface exists in the namespace.
pub(crate) fn link_exists(netns: Option<&Path>, ifname: &str) -> bool {
    ip(netns, &["link", "show", ifname]).is_ok()
}

/// Routes `cidr` via `gateway` (another node), replacing what was there.
pub(crate) fn replace_route(
    netns: Option<&Path>,
    cidr: IpNet,
    gateway: IpAddr,
) -> Result<(), PlumbingError> {
    ip(
        netns,
        &[
            "route",
            "replace",
            &cidr.to_string(),
            "via",
            &gateway.to_string(),
        ],
    )
    .map(|_| ())
}

/// Removes the route to `cidr`; missing is fine.
pub(crate) fn delete_route(netns: Option<&Path>, cidr: IpNet) -> Result<(), PlumbingError> {
    match ip(netns, &["route", "del", &cidr.to_string()]) {
        Ok(_) => Ok(()),
        Err(PlumbingError::Failed { stderr, .. }) if stderr.contains("No such process") => Ok(()),
        Err(e) => Err(e),
    }
}

/// The networks this namespace reaches directly: the prefix of every address
/// on its interfaces, and the routes the kernel, DHCP or an administrator
/// (`proto static`) put there. Routes this agent installs (`proto boot`,
/// through a gateway) are not among them.
pub(crate) fn host_networks(netns: Option<&Path>) -> Result<Vec<IpNet>, PlumbingError> {
    let parse = |args: &[&str]| -> Result<serde_json::Value, PlumbingError> {
        let out = ip(netns, args)?;
        serde_json::from_str(&out).map_err(|source| PlumbingError::Parse {
            command: format!("ip {}", args.join(" ")),
            source,
        })
    };
    let mut nets = Vec::new();
    let addrs = parse(&["-j", "addr", "show"])?;
    for link in addrs.as_array().into_iter().flatten() {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            let (Some(local), Some(len)) = (a["local"].as_str(), a["prefixlen"].as_u64()) else {
                continue;
            };
            if let Ok(ip) = local.parse::<IpAddr>()
                && let Ok(net) = IpNet::new(ip, len as u8)
            {
                nets.push(net.trunc());
            }
        }
    }
    for family in ["-4", "-6"] {
        let routes = parse(&["-j", family, "route", "show"])?;
        for r in routes.as_array().into_iter().flatten() {
            let proto = r["protocol"].as_str().unwrap_or("boot");
            if !matches!(proto, "kernel" | "dhcp" | "static") {
                continue;
            }
            if let Some(dst) = r["dst"].as_str()
                && let Some(net) = dst
                    .parse::<IpNet>()
                    .ok()
                    .or_else(|| dst.parse::<IpAddr>().ok().map(IpNet::from))
            {
                nets.push(net.trunc());
            }
        }
    }
    nets.sort();
    nets.dedup();
    Ok(nets)
}

/// The namespace path for a name (`/run/netns/<name>`) or a path.
pub(crate) fn netns_path(name_or_path: &str) -> PathBuf {
    if name_or_path.contains('/') {
        PathBuf::from(name_or_path)
    } else {
        Path::new("/run/netns").join(name_or_path)
    }
}
