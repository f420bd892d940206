//! Loading the datapath object, reusing pinned maps, and attaching the
//! programs to endpoint veths.

use std::{
    ffi::CString,
    io,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        SchedClassifier, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
    },
};

use netns::NetNsGuard;

use crate::{
    backend::{BACKENDS_MAP, BackendMap},
    bpffs::{BpffsError, DEFAULT_MOUNT, ensure_pin_dir},
    conntrack::{CONNTRACK_MAP, ConntrackMap},
    endpoint::{ENDPOINTS_MAP, EndpointInfo, EndpointKey, EndpointMap, EndpointPolicy},
    flow_reader::{FLOWS_MAP, FlowReader, FlowReaderError},
    ipcache::{IPCACHE_MAP, IpCacheMap},
    policy::{LEGACY_POLICY_MAP, POLICY_MAP, PolicyMap},
    service::{SERVICES_MAP, ServiceMap},
    syscall,
    typed_map::MapError,
};

/// The compiled object (built from `c/datapath.c` by `build.rs`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/datapath.o"));

/// The eBPF object file the datapath loads (for tools and the layout test).
pub fn datapath_object() -> &'static [u8] {
    OBJECT
}

/// Name of the program for traffic delivered to an endpoint.
const TO_ENDPOINT: &str = "cm_to_endpoint";
/// Name of the program for traffic sent by an endpoint.
const FROM_ENDPOINT: &str = "cm_from_endpoint";

/// TC filter priority and handle of our programs: fixed, so that a
/// restarted loader replaces its own filters in place.
const TC_PRIORITY: u16 = 1;
const TC_HANDLE: TcHandle = TcHandle::new(0, 1);

/// The two programs, by where they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Program {
    /// `cm_to_endpoint`, on the host-side veth's TC egress.
    ToEndpoint,
    /// `cm_from_endpoint`, on the host-side veth's TC ingress.
    FromEndpoint,
}

impl Program {
    fn name(self) -> &'static str {
        match self {
            Self::ToEndpoint => TO_ENDPOINT,
            Self::FromEndpoint => FROM_ENDPOINT,
        }
    }

    fn attach_type(self) -> TcAttachType {
        match self {
            Self::ToEndpoint => TcAttachType::Egress,
            Self::FromEndpoint => TcAttachType::Ingress,
        }
    }
}

/// The ipcache map's default capacity (Cilium's).
pub const DEFAULT_IPCACHE_MAX_ENTRIES: u32 = 512 * 1024;

/// Datapath settings. Map sizes apply when a map is first created; pinned
/// maps are reused with the size they were created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatapathConfig {
    /// bpffs directory holding the pinned maps (default
    /// `/sys/fs/bpf/clustermesh`; bpffs is mounted at `/sys/fs/bpf` if
    /// needed).
    pub bpffs_dir: PathBuf,
    /// ipcache capacity (default 524,288, Cilium's).
    pub ipcache_max_entries: u32,
    /// Policy entries of all policies together (default 65,536; endpoints
    /// whose rules resolve the same share one policy).
    pub policy_max_entries: u32,
    /// Conntrack entries (default 65,536; LRU, preallocated).
    pub conntrack_max_entries: u32,
    /// Service slots including master entries (default 65,536).
    pub services_max_entries: u32,
    /// Backends mesh-wide (default 65,536, Cilium's).
    pub backends_max_entries: u32,
    /// Endpoints per node (default 4,096).
    pub endpoints_max_entries: u32,
    /// Flow ring buffer size in bytes, a power of two (default 1 MiB).
    pub flow_ring_bytes: u32,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        Self {
            bpffs_dir: Path::new(DEFAULT_MOUNT).join("clustermesh"),
            ipcache_max_entries: DEFAULT_IPCACHE_MAX_ENTRIES,
            policy_max_entries: 64 * 1024,
            conntrack_max_entries: 64 * 1024,
            services_max_entries: 64 * 1024,
            backends_max_entries: 64 * 1024,
            endpoints_max_entries: 4096,
            flow_ring_bytes: 1 << 20,
        }
    }
}

/// Which endpoint interface to attach to, and its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointAttach {
    /// The endpoint's host-side veth.
    pub ifname: String,
    /// The network namespace file holding `ifname` (e.g.
    /// `/run/netns/node1`); `None` = the calling thread's namespace. All
    /// endpoints of one datapath must live in one namespace (their
    /// ifindexes key the endpoints map).
    pub netns: Option<PathBuf>,
    /// Endpoint id (reported in flow events).
    pub endpoint_id: u32,
    /// The endpoint's security identity.
    pub identity: u32,
    /// The policy it follows and where it is enforced.
    pub policy: EndpointPolicy,
}

impl EndpointAttach {
    /// The endpoints-map entry this attachment writes.
    pub fn info(&self) -> EndpointInfo {
        EndpointInfo::new(self.endpoint_id, self.identity, self.policy)
    }
}

/// Which endpoint interface to detach from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointDetach {
    /// The endpoint's host-side veth.
    pub ifname: String,
    /// The network namespace file holding `ifname`.
    pub netns: Option<PathBuf>,
}

/// A TC classifier that does nothing (`return TC_ACT_OK`), for measuring
/// what the datapath's programs cost per packet above the bare test run.
#[derive(Debug)]
pub struct EmptyClassifier {
    fd: std::os::fd::OwnedFd,
}

impl EmptyClassifier {
    /// Loads it into the kernel (needs root).
    pub fn load() -> io::Result<Self> {
        Ok(Self {
            fd: syscall::load_empty_classifier()?,
        })
    }

    /// Runs it on `packet` `repeat` times with `BPF_PROG_TEST_RUN`.
    pub fn test_run(&self, packet: &[u8], repeat: u32) -> io::Result<TestRun> {
        let (retval, ns_per_run) = syscall::test_run(self.fd.as_fd(), packet, repeat)?;
        Ok(TestRun { retval, ns_per_run })
    }
}

/// One `BPF_PROG_TEST_RUN` measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return code (`TC_ACT_OK` = 0, `TC_ACT_SHOT` = 2).
    pub retval: u32,
    /// Average run time per repetition as measured by the kernel, in ns.
    pub ns_per_run: u32,
}

/// A datapath operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The pin directory is unusable.
    #[error("cannot prepare the pin directory")]
    PinDir(#[from] BpffsError),
    /// The object could not be loaded (maps created/reused).
    #[error("cannot load the datapath object with maps pinned in {dir}")]
    Load {
        dir: PathBuf,
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// A program failed verification or loading.
    #[error("cannot load program {program}")]
    LoadProgram {
        program: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A pinned map could not be opened as a typed handle.
    #[error(transparent)]
    Map(#[from] MapError),
    /// Entering the endpoint's network namespace failed.
    #[error("cannot enter network namespace {path}")]
    EnterNetns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The interface does not exist (in that namespace).
    #[error("no interface {ifname}")]
    NoInterface {
        ifname: String,
        #[source]
        source: io::Error,
    },
    /// Attaching a program with netlink failed.
    #[error("cannot attach {program} to {ifname}")]
    Attach {
        program: &'static str,
        ifname: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// Detaching a program failed.
    #[error("cannot detach {program} from {ifname}")]
    Detach {
        program: &'static str,
        ifname: String,
        #[source]
        source: Box<aya::programs::tc::TcError>,
    },
    /// `BPF_PROG_TEST_RUN` failed.
    #[error("cannot test-run program {program}")]
    TestRun {
        program: &'static str,
        #[source]
        source: io::Error,
    },
    /// Removing the pin directory failed.
    #[error("cannot remove pin directory {path}")]
    RemovePins {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Opening the flow ring buffer failed.
    #[error(transparent)]
    Flows(#[from] FlowReaderError),
}

/// The loaded datapath: programs ready to attach and typed handles on the
/// pinned maps.
///
/// Restart safety: maps are pinned by name under
/// [`DatapathConfig::bpffs_dir`]; a later `open` on the same directory
/// reuses them with their content. Programs are attached with netlink TC
/// filters at a fixed priority/handle, which outlive this process; dropping
/// a `Datapath` leaves them attached and enforcing, and attaching again
/// replaces each filter's program atomically (no packet sees no program).
/// [`detach_endpoint`](Self::detach_endpoint) withdraws, [`remove_pins`]
/// deletes the maps.
///
/// [`remove_pins`]: Self::remove_pins
pub struct Datapath {
    ebpf: Ebpf,
    config: DatapathConfig,
    ipcache: IpCacheMap,
    policy: PolicyMap,
    endpoints: EndpointMap,
    conntrack: ConntrackMap,
    services: ServiceMap,
    backends: BackendMap,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Datapath {
    /// Loads the programs, creating the maps or reusing pinned ones (never
    /// clearing them).
    pub fn open(config: DatapathConfig) -> Result<Self, DatapathError> {
        let dir = config.bpffs_dir.clone();
        ensure_pin_dir(&dir)?;
        // An earlier version's policy map (a hash map this version cannot
        // use); programs still attached keep it alive until replaced.
        match std::fs::remove_file(dir.join(LEGACY_POLICY_MAP)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(DatapathError::RemovePins {
                    path: dir.join(LEGACY_POLICY_MAP),
                    source: e,
                });
            }
            _ => {}
        }
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&dir)
            .map_max_entries(IPCACHE_MAP, config.ipcache_max_entries)
            .map_max_entries(POLICY_MAP, config.policy_max_entries)
            .map_max_entries(CONNTRACK_MAP, config.conntrack_max_entries)
            .map_max_entries(SERVICES_MAP, config.services_max_entries)
            .map_max_entries(BACKENDS_MAP, config.backends_max_entries)
            .map_max_entries(ENDPOINTS_MAP, config.endpoints_max_entries)
            .map_max_entries(FLOWS_MAP, config.flow_ring_bytes)
            .load(OBJECT)
            .map_err(|source| DatapathError::Load {
                dir: dir.clone(),
                source: Box::new(source),
            })?;
        for program in [TO_ENDPOINT, FROM_ENDPOINT] {
            classifier(&mut ebpf, program)
                .load()
                .map_err(|source| DatapathError::LoadProgram {
                    program,
                    source: Box::new(source),
                })?;
        }
        Ok(Self {
            ipcache: IpCacheMap::open_pinned(&dir, IPCACHE_MAP)?,
            policy: PolicyMap::open_pinned(&dir, POLICY_MAP)?,
            endpoints: EndpointMap::open_pinned(&dir, ENDPOINTS_MAP)?,
            conntrack: ConntrackMap::open_pinned(&dir, CONNTRACK_MAP)?,
            services: ServiceMap::open_pinned(&dir, SERVICES_MAP)?,
            backends: BackendMap::open_pinned(&dir, BACKENDS_MAP)?,
            ebpf,
            config,
        })
    }

    /// `(map, max entries)` of the maps as the kernel holds them: pinned
    /// maps reused from an earlier run keep the size they were created with.
    pub fn capacities(&self) -> [(&'static str, u32); 6] {
        [
            ("ipcache", self.ipcache.capacity()),
            ("policy", self.policy.capacity()),
            ("endpoints", self.endpoints.capacity()),
            ("conntrack", self.conntrack.capacity()),
            ("services", self.services.capacity()),
            ("backends", self.backends.capacity()),
        ]
    }

    /// The configuration this datapath was opened with.
    pub fn config(&self) -> &DatapathConfig {
        &self.config
    }

    /// The ipcache (prefix -> identity).
    pub fn ipcache(&self) -> &IpCacheMap {
        &self.ipcache
    }

    /// The shared policy map (keyed by endpoint id).
    pub fn policy(&self) -> &PolicyMap {
        &self.policy
    }

    /// The endpoints map (host-side ifindex -> endpoint configuration).
    pub fn endpoints(&self) -> &EndpointMap {
        &self.endpoints
    }

    /// The conntrack map.
    pub fn conntrack(&self) -> &ConntrackMap {
        &self.conntrack
    }

    /// The services map (frontend slots).
    pub fn services(&self) -> &ServiceMap {
        &self.services
    }

    /// The backends map.
    pub fn backends(&self) -> &BackendMap {
        &self.backends
    }

    /// A reader of the flow events ring buffer (one consumer at a time).
    pub fn flow_reader(&self) -> Result<FlowReader, DatapathError> {
        Ok(FlowReader::open(&self.config.bpffs_dir)?)
    }

    /// Configures the endpoint and attaches both programs to its host-side
    /// veth (adding the clsact qdisc if missing). Attaching where our
    /// filters already exist (a restarted loader) replaces their programs
    /// atomically. Returns the interface index.
    pub fn attach_endpoint(&mut self, endpoint: &EndpointAttach) -> Result<u32, DatapathError> {
        let _netns = enter(endpoint.netns.as_deref())?;
        let ifindex = ifindex(&endpoint.ifname)?;
        self.endpoints
            .upsert(&EndpointKey { ifindex }, &endpoint.info())?;
        // Fails with EEXIST when the qdisc is there already; a real problem
        // surfaces as an attach error below.
        let _ = tc::qdisc_add_clsact(&endpoint.ifname);
        for program in [Program::FromEndpoint, Program::ToEndpoint] {
            self.attach(&endpoint.ifname, program)?;
        }
        tracing::debug!(ifname = %endpoint.ifname, ifindex, endpoint_id = endpoint.endpoint_id, "attached endpoint");
        Ok(ifindex)
    }

    /// Detaches both programs from the endpoint's veth and removes its
    /// configuration. Its conntrack entries stay until they expire (the
    /// agent's collector) or the LRU evicts them.
    pub fn detach_endpoint(&mut self, endpoint: &EndpointDetach) -> Result<(), DatapathError> {
        let _netns = enter(endpoint.netns.as_deref())?;
        let ifindex = ifindex(&endpoint.ifname)?;
        for program in [Program::ToEndpoint, Program::FromEndpoint] {
            tc::qdisc_detach_program(&endpoint.ifname, program.attach_type(), program.name())
                .map_err(|source| DatapathError::Detach {
                    program: program.name(),
                    ifname: endpoint.ifname.clone(),
                    source: Box::new(source),
                })?;
        }
        self.endpoints.delete(&EndpointKey { ifindex })?;
        Ok(())
    }

    /// Runs `program` on `packet` (an Ethernet frame) `repeat` times with
    /// `BPF_PROG_TEST_RUN`. The test run's interface is the loopback
    /// device (ifindex 1), so an endpoint entry for ifindex 1 selects the
    /// configuration the run uses.
    pub fn test_run(
        &self,
        program: Program,
        packet: &[u8],
        repeat: u32,
    ) -> Result<TestRun, DatapathError> {
        let prog: &SchedClassifier = self
            .ebpf
            .program(program.name())
            .expect("object defines the program")
            .try_into()
            .expect("program is a classifier");
        let fd = prog.fd().map_err(|e| DatapathError::TestRun {
            program: program.name(),
            source: io::Error::other(e),
        })?;
        let (retval, ns_per_run) =
            syscall::test_run(fd.as_fd(), packet, repeat).map_err(|source| {
                DatapathError::TestRun {
                    program: program.name(),
                    source,
                }
            })?;
        Ok(TestRun { retval, ns_per_run })
    }

    /// Deletes the pinned maps in `bpffs_dir` (programs still attached keep
    /// their maps alive until detached). Missing directories are fine.
    pub fn remove_pins(bpffs_dir: &Path) -> Result<(), DatapathError> {
        match std::fs::remove_dir_all(bpffs_dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(DatapathError::RemovePins {
                path: bpffs_dir.into(),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    fn attach(&mut self, ifname: &str, program: Program) -> Result<(), DatapathError> {
        let prog = classifier(&mut self.ebpf, program.name());
        let attach_error = |source| DatapathError::Attach {
            program: program.name(),
            ifname: ifname.to_owned(),
            source: Box::new(source),
        };
        // Replace our existing filter in place if there is one; else create.
        let replaced = SchedClassifierLink::attached(
            ifname,
            program.attach_type(),
            TC_PRIORITY,
            TC_HANDLE,
            None,
        )
        .ok()
        .and_then(|link| prog.attach_to_link(link).ok());
        let link_id = match replaced {
            Some(id) => id,
            None => prog
                .attach_with_options(
                    ifname,
                    program.attach_type(),
                    TcAttachOptions::Netlink(NlOptions {
                        priority: TC_PRIORITY,
                        handle: TC_HANDLE,
                        classid: None,
                    }),
                )
                .map_err(attach_error)?,
        };
        // The filter must outlive this process: take the link out of aya's
        // bookkeeping (which detaches on drop) and forget it.
        let link = prog.take_link(link_id).map_err(attach_error)?;
        std::mem::forget(link);
        Ok(())
    }
}

fn classifier<'a>(ebpf: &'a mut Ebpf, name: &str) -> &'a mut SchedClassifier {
    ebpf.program_mut(name)
        .expect("object defines the program")
        .try_into()
        .expect("program is a classifier")
}

fn enter(netns: Option<&Path>) -> Result<Option<NetNsGuard>, DatapathError> {
    netns
        .map(|path| {
            NetNsGuard::enter(path).map_err(|source| DatapathError::EnterNetns {
                path: path.into(),
                source,
            })
        })
        .transpose()
}

fn ifindex(ifname: &str) -> Result<u32, DatapathError> {
    let no_interface = |source| DatapathError::NoInterface {
        ifname: ifname.to_owned(),
        source,
    };
    let c_name = CString::new(ifname)
        .map_err(|e| no_interface(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c_name.as_ptr()) } {
        0 => Err(no_interface(io::Error::last_os_error())),
        index => Ok(index),
    }
}
