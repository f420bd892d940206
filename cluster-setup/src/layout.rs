//! Where a cluster's files live once installed, and where `cluster init`
//! writes them in its output directory (the same paths below the output
//! directory, so that installing is copying `<out>/etc` to `/etc`).
//!
//! ```text
//! /etc/clustermesh/apiserver/   apiserver.env, ca.crt, server.{crt,key}, etcd-{ca.crt,client.crt,client.key}
//! /etc/clustermesh/operator/    operator.env, etcd-{ca.crt,client.crt,client.key}
//! /etc/clustermesh/agent/       agent.yaml, node.env (per node), ca.crt, remote.{crt,key},
//!                               etcd-{ca.crt,client.crt,client.key}, remotes/ (one file per remote cluster)
//! /etc/clustermesh/etcd/        ca.crt, server.{crt,key}, etcd.env.example (for the etcd members)
//! /etc/systemd/system/          clustermesh-{apiserver,operator,agent}.service
//! /var/lib/clustermesh/agent/   the agent's state (StateDirectory=)
//! /run/clustermesh/             the agent's API and Hubble sockets (RuntimeDirectory=)
//! ```
//!
//! Only in the output directory (they stay with the person who runs the
//! cluster, never on its hosts): `cluster-init.yaml` (what init made),
//! `mesh-ca/` and `etcd-ca/` (the CAs' keys, when init created them) and
//! `admin/` (the admin's certificates).

use std::path::{Path, PathBuf};

/// The components of a cluster that run as systemd services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    Apiserver,
    Operator,
    Agent,
}

impl Component {
    pub const ALL: [Component; 3] = [Component::Apiserver, Component::Operator, Component::Agent];

    /// The directory name under the configuration directory.
    pub fn name(self) -> &'static str {
        match self {
            Self::Apiserver => "apiserver",
            Self::Operator => "operator",
            Self::Agent => "agent",
        }
    }

    /// The systemd unit's file name.
    pub fn unit_name(self) -> &'static str {
        match self {
            Self::Apiserver => "clustermesh-apiserver.service",
            Self::Operator => "clustermesh-operator.service",
            Self::Agent => "clustermesh-agent.service",
        }
    }

    /// The binary the unit starts.
    pub fn binary(self) -> &'static str {
        match self {
            Self::Apiserver => "clustermesh-apiserver",
            Self::Operator => "clustermesh-operator",
            Self::Agent => "clustermesh-agent",
        }
    }
}

/// The installed layout: every path relative to a root (`/` on a host; the
/// output directory itself to run the components in place, as the tests
/// do) and the directory of the binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
    bin_dir: PathBuf,
}

impl Layout {
    /// The configuration directory, relative to the root.
    pub const CONF_DIR: &str = "etc/clustermesh";
    /// The systemd units' directory, relative to the root.
    pub const UNIT_DIR: &str = "etc/systemd/system";
    /// Where the binaries are installed unless told otherwise.
    pub const DEFAULT_BIN_DIR: &str = "/usr/local/bin";
    /// The file in the output directory that records what init made.
    pub const RECORD_FILE: &str = "cluster-init.yaml";
    /// The mesh CA init created (absent when it reused one).
    pub const MESH_CA_DIR: &str = "mesh-ca";
    /// The cluster's etcd CA init created (https etcd only).
    pub const ETCD_CA_DIR: &str = "etcd-ca";
    /// The admin's certificates.
    pub const ADMIN_DIR: &str = "admin";
    /// The environment file of a node's agent (written per node).
    pub const NODE_ENV: &str = "node.env";
    /// The agents' directory of remote-cluster configs, in the agent's
    /// configuration directory.
    pub const REMOTES_DIR: &str = "remotes";

    pub fn new(root: impl Into<PathBuf>, bin_dir: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            bin_dir: bin_dir.into(),
        }
    }

    /// `/` and [`Layout::DEFAULT_BIN_DIR`]: a host.
    pub fn host() -> Self {
        Self::new("/", Self::DEFAULT_BIN_DIR)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The installed path of `relative` (a path inside the output tree).
    pub fn installed(&self, relative: &Path) -> PathBuf {
        self.root.join(relative)
    }

    /// `etc/clustermesh`, installed.
    pub fn conf_dir(&self) -> PathBuf {
        self.root.join(Self::CONF_DIR)
    }

    /// The binary of `component`.
    pub fn binary(&self, component: Component) -> PathBuf {
        self.bin_dir.join(component.binary())
    }

    /// A component's configuration directory, relative to the root.
    pub fn component_dir(component: Component) -> PathBuf {
        Path::new(Self::CONF_DIR).join(component.name())
    }

    /// A component's unit file, relative to the root.
    pub fn unit_file(component: Component) -> PathBuf {
        Path::new(Self::UNIT_DIR).join(component.unit_name())
    }

    /// The etcd members' directory, relative to the root.
    pub fn etcd_dir() -> PathBuf {
        Path::new(Self::CONF_DIR).join("etcd")
    }
}
