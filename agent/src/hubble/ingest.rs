//! The one consumer of the datapath's flow ring buffer: it turns batches
//! of events into Hubble flows (both ends looked up once per batch), counts
//! them in the metrics, and reports events the kernel had no room for as
//! lost events.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use bpf::{FlowEvent, FlowReader, FlowReaderError};
use hubble::{Event, FlowBuffer};
use hubble_api::flow::LostEventSource;
use tokio_util::sync::CancellationToken;

use super::{
    directory::FlowDirectory,
    metrics::{BatchCounts, HubbleMetrics},
    record::{AgentFlow, NodeContext},
};
use crate::metrics::AgentMetrics;

/// How long one wait for events lasts, so that shutdown is seen.
const POLL: Duration = Duration::from_millis(200);

/// At most this many events are turned into flows per batch.
pub(crate) const BATCH: usize = 4096;

/// How often the kernel's lost-events counter is read.
const LOST_CHECK: Duration = Duration::from_millis(500);

/// How often the offset between the kernel's monotonic clock and the
/// wall clock is measured again (it moves when the wall clock is set).
const CLOCK_CHECK: Duration = Duration::from_secs(1);

/// See the module documentation.
pub(crate) struct Ingest {
    pub bpffs_dir: PathBuf,
    pub buffer: Arc<FlowBuffer<AgentFlow>>,
    pub directory: Arc<FlowDirectory>,
    pub node: Arc<NodeContext>,
    pub metrics: Arc<AgentMetrics>,
    pub hubble_metrics: HubbleMetrics,
}

impl Ingest {
    /// Reads on a blocking thread (off the async runtime) until shutdown.
    pub(crate) async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tokio::task::spawn_blocking(move || {
            let mut reader = FlowReader::open(&self.bpffs_dir)?;
            let mut batch = Batch::new(reader.lost_total().unwrap_or(0));
            while !shutdown.is_cancelled() {
                self.poll(&mut reader, &mut batch)?;
            }
            anyhow::Ok(())
        })
        .await?
    }

    /// One turn of the reader: waits up to [`POLL`] for an event, turns it
    /// and up to a batch of those behind it into flows, and reads the
    /// kernel's lost-events count when it is due (or when idle). Returns
    /// how many events were read.
    pub(crate) fn poll(
        &self,
        reader: &mut FlowReader,
        batch: &mut Batch,
    ) -> Result<usize, FlowReaderError> {
        let Some(first) = reader.next_timeout(POLL)? else {
            self.check_lost(reader, batch);
            return Ok(0);
        };
        batch.events.push(first);
        fill(reader, batch);
        let n = batch.events.len();
        self.ingest(batch);
        if batch.lost_checked.elapsed() >= LOST_CHECK {
            self.check_lost(reader, batch);
        }
        Ok(n)
    }

    /// Turns the batch's events into flows in the buffer.
    pub(crate) fn ingest(&self, batch: &mut Batch) {
        let offset = batch.clock.offset();
        {
            let entries = self.directory.read();
            let node = &self.node;
            batch.flows.extend(batch.events.iter().map(|e| {
                batch.counts.count(e);
                Event::Flow(AgentFlow::new(
                    e.clone(),
                    offset.wall(e.timestamp),
                    &entries,
                    node,
                ))
            }));
        }
        batch.events.clear();
        self.buffer.push_batch(batch.flows.drain(..));
        batch.counts.flush(&self.hubble_metrics, &self.metrics);
    }

    /// Turns every event already in the ring into flows, batch by batch;
    /// returns how many there were.
    pub(crate) fn drain(&self, reader: &mut FlowReader, batch: &mut Batch) -> usize {
        let mut n = 0;
        loop {
            fill(reader, batch);
            if batch.events.is_empty() {
                return n;
            }
            n += batch.events.len();
            self.ingest(batch);
        }
    }

    pub(crate) fn check_lost(&self, reader: &FlowReader, batch: &mut Batch) {
        batch.lost_checked = Instant::now();
        let Ok(total) = reader.lost_total() else {
            return;
        };
        let lost = total.saturating_sub(batch.lost_seen);
        batch.lost_seen = total;
        if lost > 0 {
            self.buffer
                .push_lost(LostEventSource::PerfEventRingBuffer, lost);
            self.hubble_metrics
                .lost(LostEventSource::PerfEventRingBuffer, lost);
        }
    }
}

/// Adds events already in the ring to the batch, up to [`BATCH`].
fn fill(reader: &mut FlowReader, batch: &mut Batch) {
    while batch.events.len() < BATCH {
        match reader.try_next() {
            Some(event) => batch.events.push(event),
            None => break,
        }
    }
}

/// Buffers reused from batch to batch.
pub(crate) struct Batch {
    pub events: Vec<FlowEvent>,
    flows: Vec<Event<AgentFlow>>,
    counts: BatchCounts,
    clock: Clock,
    lost_seen: u64,
    lost_checked: Instant,
}

impl Batch {
    pub(crate) fn new(lost_seen: u64) -> Self {
        Self {
            events: Vec::with_capacity(BATCH),
            flows: Vec::with_capacity(BATCH),
            counts: BatchCounts::default(),
            clock: Clock::default(),
            lost_seen,
            lost_checked: Instant::now(),
        }
    }
}

/// Kernel monotonic time (`bpf_ktime_get_ns`) to wall-clock time.
#[derive(Default)]
struct Clock {
    measured: Option<(Instant, Offset)>,
}

#[derive(Clone, Copy)]
struct Offset {
    /// Wall clock minus monotonic clock.
    wall_minus_mono: Duration,
}

impl Offset {
    fn wall(self, monotonic: Duration) -> SystemTime {
        SystemTime::UNIX_EPOCH + self.wall_minus_mono + monotonic
    }
}

impl Clock {
    fn offset(&mut self) -> Offset {
        match self.measured {
            Some((at, offset)) if at.elapsed() < CLOCK_CHECK => offset,
            _ => {
                let offset = Offset {
                    wall_minus_mono: clock(libc::CLOCK_REALTIME)
                        .saturating_sub(clock(libc::CLOCK_MONOTONIC)),
                };
                self.measured = Some((Instant::now(), offset));
                offset
            }
        }
    }
}

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the duration of the call.
    unsafe { libc::clock_gettime(id, &mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_time_maps_to_now() {
        let offset = Clock::default().offset();
        let wall = offset.wall(clock(libc::CLOCK_MONOTONIC));
        let now = SystemTime::now();
        let skew = now.duration_since(wall).unwrap_or_else(|e| e.duration());
        assert!(skew < Duration::from_secs(1), "{skew:?}");
    }
}
