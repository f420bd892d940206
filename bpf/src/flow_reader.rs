//! Reading flow events from the pinned ring buffer.

use std::{
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::maps::{Map, MapData, PerCpuArray, RingBuf};

use crate::flow_event::FlowEvent;

/// Pin name of the flow events ring buffer.
pub const FLOWS_MAP: &str = "cm_flows";

/// Pin name of the per-CPU count of events the ring buffer had no room for.
pub const FLOWS_LOST_MAP: &str = "cm_flows_lost";

/// Opening or polling the ring buffer failed.
#[derive(Debug, thiserror::Error)]
pub enum FlowReaderError {
    /// The pinned ring buffer could not be opened.
    #[error("cannot open flow ring buffer {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: aya::maps::MapError,
    },
    /// Waiting for events failed.
    #[error("cannot poll the flow ring buffer")]
    Poll(#[source] std::io::Error),
    /// The lost-events counter could not be read.
    #[error("cannot read the count of lost flow events")]
    Lost(#[source] aya::maps::MapError),
}

/// A consumer of the flow ring buffer. There must be one consumer per ring
/// buffer: two readers would each see part of the events. The reader is
/// pollable (`AsFd`), so an async runtime can wait on it (e.g. tokio's
/// `AsyncFd`). While nobody reads, events accumulate up to the buffer size
/// and later ones are dropped by the datapath (never the packets).
///
/// Events: every drop; one `Forwarded` per new inbound connection that
/// passed policy; one `Translated` per new service connection.
pub struct FlowReader {
    ring: RingBuf<MapData>,
    lost: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for FlowReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowReader").finish_non_exhaustive()
    }
}

impl FlowReader {
    /// Opens the ring buffer pinned in `bpffs_dir`.
    pub fn open(bpffs_dir: &Path) -> Result<Self, FlowReaderError> {
        let path = bpffs_dir.join(FLOWS_MAP);
        let open = || -> Result<RingBuf<MapData>, aya::maps::MapError> {
            let data = MapData::from_pin(&path)?;
            RingBuf::try_from(Map::RingBuf(data))
        };
        let ring = open().map_err(|source| FlowReaderError::Open {
            path: path.clone(),
            source,
        })?;
        let lost_path = bpffs_dir.join(FLOWS_LOST_MAP);
        let lost = MapData::from_pin(&lost_path)
            .and_then(|data| PerCpuArray::try_from(Map::PerCpuArray(data)))
            .map_err(|source| FlowReaderError::Open {
                path: lost_path,
                source,
            })?;
        Ok(Self { ring, lost })
    }

    /// How many events the datapath could not write because the ring
    /// buffer was full, since the maps were created (all CPUs).
    pub fn lost_total(&self) -> Result<u64, FlowReaderError> {
        let per_cpu = self.lost.get(&0, 0).map_err(FlowReaderError::Lost)?;
        Ok(per_cpu.iter().copied().fold(0u64, u64::wrapping_add))
    }

    /// The next event already in the buffer, without waiting.
    pub fn try_next(&mut self) -> Option<FlowEvent> {
        loop {
            let item = self.ring.next()?;
            if let Some(event) = FlowEvent::decode(&item) {
                return Some(event);
            }
        }
    }

    /// The next event, waiting up to `timeout` for one.
    pub fn next_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<FlowEvent>, FlowReaderError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.try_next() {
                return Ok(Some(event));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let mut pfd = libc::pollfd {
                fd: self.ring.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
            // SAFETY: one valid pollfd for the duration of the call.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                let error = std::io::Error::last_os_error();
                if error.kind() != std::io::ErrorKind::Interrupted {
                    return Err(FlowReaderError::Poll(error));
                }
            }
        }
    }

    /// Every event already in the buffer.
    pub fn drain(&mut self) -> Vec<FlowEvent> {
        std::iter::from_fn(|| self.try_next()).collect()
    }
}

impl AsFd for FlowReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}
