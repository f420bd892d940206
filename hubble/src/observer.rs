//! The local `Observer` service: flows from one node's ring buffer, with
//! the semantics of Cilium's local observer (`hubble.md` §2):
//!
//! - where a request starts: `first` at the oldest entry; `follow` alone at
//!   the newest; otherwise walking back from the newest until `number`
//!   flows that pass the filters are found, or until a flow older than
//!   `since` (which takes precedence over `number`);
//! - reading on: flows newer than `until` end the stream, older than
//!   `since` are skipped; lost events bypass filters and time range and
//!   do not count toward `number`; without `follow` the stream ends after
//!   `number` flows or at the entry that was newest when it started;
//! - `GetNodes` is Unimplemented (only a relay knows nodes).

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use futures::Stream;
use hubble_api::{
    flow::{Flow, LostEvent, LostEventSource},
    observer::{
        GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest, GetNamespacesResponse,
        GetNodesRequest, GetNodesResponse, Namespace, ServerStatusRequest, ServerStatusResponse,
        get_flows_response::ResponseTypes, observer_server::Observer,
    },
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, metadata::MetadataValue};

use crate::{
    field_mask::FlowMask,
    filter::FlowFilters,
    ring::{Capacity, Read, Ring, Seq},
    time::{system_time, timestamp},
};

/// How many entries a reader copies out of the ring per lock.
const CHUNK: usize = 512;

/// How many responses may wait for a slow client before the reader waits.
const STREAM_QUEUE: usize = 256;

/// How long `GetNamespaces` remembers a namespace after its last flow.
const NAMESPACE_TTL: Duration = Duration::from_secs(3600);

/// The window `ServerStatus.flows_rate` averages over.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// The response header that carries the server's version (the Hubble CLI
/// compares it with its own).
pub const SERVER_VERSION_HEADER: &str = "hubble-server-version";

/// A flow as the ring holds it: cheap to clone, turned into a protobuf
/// [`Flow`] only when a reader looks at it.
pub trait FlowRecord: Clone + Send + Sync + 'static {
    /// When the flow was observed.
    fn time(&self) -> SystemTime;
    /// The flow, with every field the server knows (including `time` and
    /// `node_name`).
    fn to_flow(&self) -> Flow;
}

/// Ready-made flows (tests, replays).
impl FlowRecord for Flow {
    fn time(&self) -> SystemTime {
        self.time.map_or(SystemTime::UNIX_EPOCH, system_time)
    }

    fn to_flow(&self) -> Flow {
        self.clone()
    }
}

/// One ring entry.
#[derive(Debug, Clone)]
pub enum Event<T> {
    Flow(T),
    /// Events lost before they reached the ring, when it was noticed.
    Lost {
        event: LostEvent,
        at: SystemTime,
    },
}

/// A node's flow ring and what `ServerStatus` reports about it. The agent
/// writes, the observer (any number of streams) reads.
#[derive(Debug)]
pub struct FlowBuffer<T> {
    ring: Ring<Event<T>>,
    seen_flows: AtomicU64,
    lost_events: AtomicU64,
}

impl<T: FlowRecord> FlowBuffer<T> {
    pub fn new(capacity: Capacity) -> Self {
        Self {
            ring: Ring::new(capacity),
            seen_flows: AtomicU64::new(0),
            lost_events: AtomicU64::new(0),
        }
    }

    /// Appends a batch (one lock, one wake-up of followers).
    pub fn push_batch(&self, events: impl IntoIterator<Item = Event<T>>) {
        let (mut flows, mut lost) = (0, 0);
        self.ring
            .push_batch(events.into_iter().inspect(|e| match e {
                Event::Flow(_) => flows += 1,
                Event::Lost { event, .. } => lost += event.num_events_lost,
            }));
        self.seen_flows.fetch_add(flows, Ordering::Relaxed);
        self.lost_events.fetch_add(lost, Ordering::Relaxed);
    }

    /// Records that `n` events from `source` were lost before the ring.
    pub fn push_lost(&self, source: LostEventSource, n: u64) {
        let at = SystemTime::now();
        self.push_batch([Event::Lost {
            event: lost_event(source, n, at),
            at,
        }]);
    }

    /// The ring (for readers).
    pub fn ring(&self) -> &Ring<Event<T>> {
        &self.ring
    }

    /// Flows written since start.
    pub fn seen_flows(&self) -> u64 {
        self.seen_flows.load(Ordering::Relaxed)
    }

    /// Events reported lost before the ring since start.
    pub fn lost_events(&self) -> u64 {
        self.lost_events.load(Ordering::Relaxed)
    }
}

fn lost_event(source: LostEventSource, n: u64, at: SystemTime) -> LostEvent {
    LostEvent {
        source: source.into(),
        num_events_lost: n,
        cpu: None,
        first: Some(timestamp(at)),
        last: Some(timestamp(at)),
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct LocalObserver<T> {
    buffer: Arc<FlowBuffer<T>>,
    /// This node's name in responses that carry no flow (`cluster/node`).
    node_name: String,
    version: String,
    started: Instant,
    namespaces: Mutex<NamespaceTracker>,
}

#[derive(Debug, Default)]
struct NamespaceTracker {
    scanned: Seq,
    seen: HashMap<(String, String), SystemTime>,
}

/// What one `GetFlows` asks for, checked.
struct Query {
    number: u64,
    first: bool,
    follow: bool,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
    filters: FlowFilters,
    mask: FlowMask,
}

impl Query {
    fn new(req: GetFlowsRequest) -> Result<Self, Status> {
        if req.first && req.follow {
            return Err(Status::invalid_argument(
                "first cannot be specified with follow",
            ));
        }
        let filters = FlowFilters::compile(&req.whitelist, &req.blacklist)
            .map_err(|e| Status::invalid_argument(format!("invalid flow filter: {e}")))?;
        let mask = FlowMask::compile(req.field_mask.as_ref())
            .map_err(|e| Status::invalid_argument(format!("invalid field mask: {e}")))?;
        let since = req.since.map(system_time);
        let until = req.until.map(system_time);
        if let (Some(since), Some(until)) = (since, until)
            && since > until
        {
            return Err(Status::invalid_argument("since is after until"));
        }
        Ok(Self {
            number: req.number,
            first: req.first,
            follow: req.follow,
            since,
            until,
            filters,
            mask,
        })
    }

    fn in_range(&self, t: SystemTime) -> bool {
        self.since.is_none_or(|since| t >= since) && self.until.is_none_or(|until| t <= until)
    }
}

type FlowStream = Pin<Box<dyn Stream<Item = Result<GetFlowsResponse, Status>> + Send>>;

impl<T: FlowRecord> LocalObserver<T> {
    pub fn new(buffer: Arc<FlowBuffer<T>>, node_name: String, version: String) -> Self {
        Self {
            buffer,
            node_name,
            version,
            started: Instant::now(),
            namespaces: Mutex::default(),
        }
    }

    /// Where a query starts reading.
    fn start(&self, q: &Query) -> Seq {
        let ring = self.buffer.ring();
        if q.first && q.since.is_none() {
            return ring.oldest_seq();
        }
        let next = ring.next_seq();
        if q.follow && q.number == 0 && q.since.is_none() {
            return next;
        }
        if q.first || (q.number == 0 && q.since.is_none()) {
            return ring.oldest_seq();
        }
        // Walk back in chunks, judging each entry outside the lock.
        let (mut before, mut matched, mut chunk) = (next, 0u64, Vec::with_capacity(CHUNK));
        loop {
            chunk.clear();
            let start = ring.read_back(before, CHUNK, &mut chunk);
            if chunk.is_empty() {
                return before;
            }
            for (i, event) in chunk.iter().enumerate().rev() {
                let Event::Flow(record) = event else { continue };
                let t = record.time();
                if let Some(since) = q.since {
                    if t < since {
                        return start + i as u64 + 1;
                    }
                    continue;
                }
                if q.until.is_some_and(|until| t > until) {
                    continue;
                }
                if q.filters.matches(&record.to_flow()) {
                    matched += 1;
                    if matched == q.number {
                        return start + i as u64;
                    }
                }
            }
            before = start;
        }
    }

    /// Streams what `q` selects into `tx` until done or the client leaves.
    async fn stream(
        buffer: Arc<FlowBuffer<T>>,
        node_name: String,
        q: Query,
        mut seq: Seq,
        tx: mpsc::Sender<Result<GetFlowsResponse, Status>>,
    ) {
        let ring = buffer.ring();
        // Without follow, read up to what was written when the request came.
        let end = (!q.follow).then(|| ring.next_seq());
        let (mut sent, mut chunk) = (0u64, Vec::with_capacity(CHUNK));
        loop {
            chunk.clear();
            let read = match end {
                Some(end) if seq >= end => return,
                Some(end) => {
                    let max = usize::try_from(end - seq).map_or(CHUNK, |n| n.min(CHUNK));
                    ring.read(seq, max, &mut chunk)
                }
                None => ring.read(seq, CHUNK, &mut chunk),
            };
            match read {
                Read::End => {
                    if end.is_some() {
                        return;
                    }
                    tokio::select! {
                        () = ring.wait_for(seq) => {}
                        () = tx.closed() => return,
                    }
                }
                Read::Lost { lost, resume } => {
                    let at = SystemTime::now();
                    let event = lost_event(LostEventSource::HubbleRingBuffer, lost, at);
                    if tx
                        .send(Ok(lost_response(event, &node_name, at)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    seq = resume;
                }
                Read::Entries(n) => {
                    seq += n as u64;
                    for event in chunk.drain(..) {
                        let response = match event {
                            Event::Lost { event, at } => lost_response(event, &node_name, at),
                            Event::Flow(record) => {
                                let t = record.time();
                                if q.until.is_some_and(|until| t > until) {
                                    return;
                                }
                                if !q.in_range(t) {
                                    continue;
                                }
                                let flow = record.to_flow();
                                if !q.filters.matches(&flow) {
                                    continue;
                                }
                                sent += 1;
                                flow_response(q.mask.apply(flow))
                            }
                        };
                        if tx.send(Ok(response)).await.is_err() {
                            return;
                        }
                        if !q.follow && q.number > 0 && sent >= q.number {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Flows per second over the last minute, or over the buffered span
    /// when the buffer is younger than that.
    fn flows_rate(&self) -> f64 {
        let ring = self.buffer.ring();
        let now = SystemTime::now();
        let window_start = now - RATE_WINDOW;
        let (mut before, mut count, mut oldest) = (ring.next_seq(), 0u64, None);
        let mut chunk = Vec::with_capacity(CHUNK);
        'walk: loop {
            chunk.clear();
            let start = ring.read_back(before, CHUNK, &mut chunk);
            if chunk.is_empty() {
                break;
            }
            for event in chunk.iter().rev() {
                if let Event::Flow(record) = event {
                    let t = record.time();
                    if t < window_start {
                        oldest = Some(window_start);
                        break 'walk;
                    }
                    count += 1;
                    oldest = Some(t);
                }
            }
            before = start;
        }
        let span = oldest
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or_default()
            .max(Duration::from_secs(1));
        count as f64 / span.as_secs_f64()
    }

    /// Adds the namespaces of flows written since the last call and forgets
    /// those unseen for an hour. Called on `GetNamespaces` and periodically
    /// by the server, so that namespaces outlive their flows in the ring.
    pub fn track_namespaces(&self) {
        let mut tracker = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        let ring = self.buffer.ring();
        let mut chunk = Vec::with_capacity(CHUNK);
        loop {
            chunk.clear();
            match ring.read(tracker.scanned, CHUNK, &mut chunk) {
                Read::End => break,
                Read::Lost { resume, .. } => tracker.scanned = resume,
                Read::Entries(n) => {
                    tracker.scanned += n as u64;
                    for event in &chunk {
                        let Event::Flow(record) = event else { continue };
                        let (flow, t) = (record.to_flow(), record.time());
                        for ep in [&flow.source, &flow.destination].into_iter().flatten() {
                            if !ep.namespace.is_empty() {
                                let key = (ep.cluster_name.clone(), ep.namespace.clone());
                                let seen = tracker.seen.entry(key).or_insert(t);
                                *seen = (*seen).max(t);
                            }
                        }
                    }
                }
            }
        }
        let horizon = SystemTime::now() - NAMESPACE_TTL;
        tracker.seen.retain(|_, t| *t >= horizon);
    }

    fn with_version<M>(&self, message: M) -> Response<M> {
        let mut response = Response::new(message);
        if let Ok(v) = MetadataValue::try_from(self.version.as_str()) {
            response.metadata_mut().insert(SERVER_VERSION_HEADER, v);
        }
        response
    }
}

fn flow_response(flow: Flow) -> GetFlowsResponse {
    GetFlowsResponse {
        node_name: flow.node_name.clone(),
        time: flow.time,
        response_types: Some(ResponseTypes::Flow(flow)),
    }
}

fn lost_response(event: LostEvent, node_name: &str, at: SystemTime) -> GetFlowsResponse {
    GetFlowsResponse {
        node_name: node_name.to_owned(),
        time: Some(timestamp(at)),
        response_types: Some(ResponseTypes::LostEvents(event)),
    }
}

#[tonic::async_trait]
impl<T: FlowRecord> Observer for LocalObserver<T> {
    type GetFlowsStream = FlowStream;

    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        let query = Query::new(request.into_inner())?;
        let start = self.start(&query);
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        tokio::spawn(Self::stream(
            self.buffer.clone(),
            self.node_name.clone(),
            query,
            start,
            tx,
        ));
        Ok(self.with_version(Box::pin(ReceiverStream::new(rx)) as FlowStream))
    }

    async fn get_nodes(
        &self,
        _request: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        Err(Status::unimplemented(
            "GetNodes is served by Hubble Relay, not by a node's Hubble server",
        ))
    }

    async fn get_namespaces(
        &self,
        _request: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        self.track_namespaces();
        let tracker = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        let mut namespaces: Vec<Namespace> = tracker
            .seen
            .keys()
            .map(|(cluster, namespace)| Namespace {
                cluster: cluster.clone(),
                namespace: namespace.clone(),
            })
            .collect();
        namespaces.sort_by(|a, b| (&a.cluster, &a.namespace).cmp(&(&b.cluster, &b.namespace)));
        Ok(self.with_version(GetNamespacesResponse { namespaces }))
    }

    async fn server_status(
        &self,
        _request: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        let ring = self.buffer.ring();
        Ok(self.with_version(ServerStatusResponse {
            num_flows: ring.len() as u64,
            max_flows: ring.capacity() as u64,
            seen_flows: self.buffer.seen_flows(),
            uptime_ns: u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            num_connected_nodes: None,
            num_unavailable_nodes: None,
            unavailable_nodes: Vec::new(),
            version: self.version.clone(),
            flows_rate: self.flows_rate(),
        }))
    }
}
