//! A named network namespace (`ip netns`), deleted on drop.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use crate::{
    address::Address,
    command::{self, CommandError},
    enter,
    name::unique_name,
    process::{Process, ProcessError},
    route::Route,
};

/// Where `ip netns add` bind-mounts namespaces.
const NETNS_RUN_DIR: &str = "/run/netns";

/// Failures of namespace operations that are not a plain `ip` command.
#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    /// `ip netns add` failed.
    #[error("cannot create network namespace {name}")]
    Create {
        name: String,
        #[source]
        source: CommandError,
    },
    /// The namespace file could not be opened.
    #[error("cannot open network namespace {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `setns` into the namespace failed.
    #[error("cannot enter network namespace {name}")]
    Enter {
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// The closure run inside the namespace panicked.
    #[error("the closure run in network namespace {name} panicked")]
    Panicked { name: String },
    /// Writing a sysctl inside the namespace failed.
    #[error("cannot set sysctl {key} in network namespace {name}")]
    Sysctl {
        name: String,
        key: String,
        #[source]
        source: std::io::Error,
    },
    /// An interface name did not resolve to an index inside the namespace.
    #[error("no interface {ifname} in network namespace {name}")]
    Ifindex {
        name: String,
        ifname: String,
        #[source]
        source: std::io::Error,
    },
}

/// A network namespace created with `ip netns add` and deleted on drop
/// (which also deletes every interface, address and route inside it).
#[derive(Debug)]
pub struct NetNs {
    name: String,
    path: PathBuf,
}

impl NetNs {
    /// Creates the namespace `name` with its loopback up and IPv6 duplicate
    /// address detection off (so IPv6 addresses, link-local ones included,
    /// are usable at once instead of "tentative" for a second or two). A
    /// stale namespace of the same name (left by a dead process) is replaced.
    pub fn new(name: &str) -> Result<Self, NetNsError> {
        let create = |name: &str| command::ip(None, &["netns", "add", name]);
        if let Err(error) = create(name) {
            if !error.stderr().contains("exists") {
                return Err(NetNsError::Create {
                    name: name.to_owned(),
                    source: error,
                });
            }
            let _ = command::ip(None, &["netns", "del", name]);
            create(name).map_err(|source| NetNsError::Create {
                name: name.to_owned(),
                source,
            })?;
        }
        let ns = Self {
            name: name.to_owned(),
            path: Path::new(NETNS_RUN_DIR).join(name),
        };
        for scope in ["all", "default"] {
            ns.sysctl(&format!("net/ipv6/conf/{scope}/accept_dad"), "0")?;
        }
        ns.link_up("lo").map_err(|source| NetNsError::Create {
            name: name.to_owned(),
            source,
        })?;
        Ok(ns)
    }

    /// A namespace named by [`unique_name`]`(prefix)`.
    pub fn unique(prefix: &str) -> Result<Self, NetNsError> {
        Self::new(&unique_name(prefix))
    }

    /// The namespace name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file (`/run/netns/<name>`), for `setns` elsewhere.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `ip -n <name> args...`; returns stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String, CommandError> {
        command::ip(Some(&self.name), args)
    }

    /// A [`Command`] that runs `program` inside the namespace (the child joins
    /// it before exec, see [`crate::join_before_exec`]).
    pub fn command(&self, program: &str) -> Result<Command, NetNsError> {
        let mut command = Command::new(program);
        enter::join_before_exec(&mut command, self.open()?);
        Ok(command)
    }

    /// Runs `program args...` inside the namespace and returns its output
    /// whatever its exit status.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output, ProcessError> {
        let mut command = self.command(program)?;
        command.args(args).stdin(Stdio::null());
        Ok(command::output(&mut command)?)
    }

    /// Runs `program args...` inside the namespace; a failure exit is an
    /// error carrying stderr. Returns stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, ProcessError> {
        let mut command = self.command(program)?;
        command.args(args).stdin(Stdio::null());
        let output = command::run(&mut command)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Starts `program args...` inside the namespace; it is killed when the
    /// returned guard drops.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Result<Process, ProcessError> {
        let mut command = self.command(program)?;
        command.args(args);
        Process::spawn(command)
    }

    /// Runs `f` on a dedicated thread that has joined this namespace, and
    /// returns its result. Sockets created by `f` keep living in the
    /// namespace after `f` returns, whichever thread uses them later.
    pub fn enter<F, R>(&self, f: F) -> Result<R, NetNsError>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        enter::run_on_thread(self.open()?, &self.name, f)
    }

    /// Sets `/proc/sys/<key>` (dots or slashes) inside the namespace, e.g.
    /// `net.ipv4.ip_forward` = `1`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), NetNsError> {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        self.enter(|| std::fs::write(&path, value))?
            .map_err(|source| NetNsError::Sysctl {
                name: self.name.clone(),
                key: key.to_owned(),
                source,
            })
    }

    /// Turns on IPv4 and IPv6 forwarding (a router/node namespace).
    pub fn enable_forwarding(&self) -> Result<(), NetNsError> {
        self.sysctl("net.ipv4.ip_forward", "1")?;
        self.sysctl("net.ipv6.conf.all.forwarding", "1")
    }

    /// The index of interface `ifname` inside the namespace.
    pub fn ifindex(&self, ifname: &str) -> Result<u32, NetNsError> {
        let c_name = std::ffi::CString::new(ifname).map_err(|e| NetNsError::Ifindex {
            name: self.name.clone(),
            ifname: ifname.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?;
        // SAFETY: if_nametoindex reads a valid NUL-terminated string.
        let index = self.enter(|| unsafe { libc::if_nametoindex(c_name.as_ptr()) })?;
        if index == 0 {
            return Err(NetNsError::Ifindex {
                name: self.name.clone(),
                ifname: ifname.to_owned(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(index)
    }

    /// `ip link set <dev> up`.
    pub fn link_up(&self, dev: &str) -> Result<(), CommandError> {
        self.ip(&["link", "set", dev, "up"]).map(drop)
    }

    /// `ip link set <dev> down`.
    pub fn link_down(&self, dev: &str) -> Result<(), CommandError> {
        self.ip(&["link", "set", dev, "down"]).map(drop)
    }

    /// Adds `cidr` (e.g. `10.0.0.1/24`, `fd00::1/64`) to `dev`. IPv6
    /// addresses skip duplicate address detection so they work at once.
    pub fn add_addr(&self, dev: &str, cidr: &str) -> Result<Address, CommandError> {
        Address::add(Some(&self.name), dev, cidr)
    }

    /// Adds a route to `dest` (`default`, a CIDR or an address) via a
    /// gateway and/or a device.
    pub fn add_route(
        &self,
        dest: &str,
        via: Option<&str>,
        dev: Option<&str>,
    ) -> Result<Route, CommandError> {
        Route::add(Some(&self.name), dest, via, dev)
    }

    fn open(&self) -> Result<File, NetNsError> {
        enter::open(&self.path)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(error) = command::ip(None, &["netns", "del", &self.name]) {
            eprintln!("netns: cannot delete namespace {}: {error}", self.name);
        }
    }
}
