//! `GetFlows` across every peer: fan-out, node status events, error
//! aggregation and the time-ordered merge.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Instant, SystemTime},
};

use hubble_api::{
    observer::{GetFlowsRequest, GetFlowsResponse, observer_client::ObserverClient},
    relay::NodeState,
};
use tokio::{
    sync::mpsc,
    task::{self, JoinSet},
    time::MissedTickBehavior,
};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, metadata::MetadataMap};
use tracing::{debug, warn};

use crate::{
    Connection, ObserverConfig, Peer, PeerPool,
    error_aggregator::ErrorAggregator,
    node_status::node_status_response,
    sort_buffer::{SortBuffer, SortKey, sort_buffer_len},
    status_message,
};

type Out = mpsc::Sender<Result<GetFlowsResponse, Status>>;

/// One `GetFlows` call of a client, as Cilium's relay serves it
/// (`pkg/hubble/relay/observer`):
///
/// 1. The peers are listed; every available one is asked for flows with the
///    client's request, unmodified (so `number` is per node) and its
///    metadata. The client first gets `NODE_CONNECTED` naming them, then
///    `NODE_UNAVAILABLE` naming the others (if any), before any flow.
/// 2. Responses go through the [`ErrorAggregator`] (a failed peer stream
///    becomes `NODE_ERROR`) and the [`SortBuffer`] (capacity
///    `min(sort_buffer_max_len, number × peers)`), drained of what is older
///    than the drain timeout on every tick of that timeout.
/// 3. With `follow`, the peers are listed again every
///    `peer_update_interval`, and streams start from the newly available
///    ones (announced with `NODE_CONNECTED`; Cilium's relay announces none).
///    A peer whose stream ended is started again when it is available.
///    Without `follow`, the call ends once every peer stream has ended and
///    the buffers are drained.
///
/// It stops as soon as the client goes away or the relay shuts down.
pub(crate) struct FlowCollector {
    pool: PeerPool,
    config: Arc<ObserverConfig>,
    request: GetFlowsRequest,
    metadata: MetadataMap,
    /// Peers with a stream running.
    connected: HashSet<String>,
    streams: JoinSet<Result<(), String>>,
    /// The peer of each stream task.
    tasks: HashMap<task::Id, String>,
    responses: mpsc::Sender<GetFlowsResponse>,
}

impl FlowCollector {
    /// Streams the flows for `request` into `out` until done.
    pub(crate) async fn run(
        pool: PeerPool,
        config: Arc<ObserverConfig>,
        request: GetFlowsRequest,
        metadata: MetadataMap,
        out: Out,
        shutdown: CancellationToken,
    ) {
        let peers = pool.list();
        let qlen = sort_buffer_len(config.sort_buffer_max_len, request.number, peers.len());
        let (responses, mut rx) = mpsc::channel(qlen);
        let follow = request.follow;
        let mut collector = Self {
            pool,
            config: config.clone(),
            request,
            metadata,
            connected: HashSet::new(),
            streams: JoinSet::new(),
            tasks: HashMap::new(),
            responses,
        };
        let (connected, unavailable) = collector.collect(&peers);
        debug!(?connected, ?unavailable, follow, qlen, "relaying flows");
        let now = SystemTime::now();
        let mut first =
            vec![collector.status(NodeState::NodeConnected, connected, String::new(), now)];
        if !unavailable.is_empty() {
            first.push(collector.status(
                NodeState::NodeUnavailable,
                unavailable,
                String::new(),
                now,
            ));
        }
        for response in first {
            if out.send(Ok(response)).await.is_err() {
                return;
            }
        }
        let mut merge = Merge {
            errors: ErrorAggregator::new(config.error_aggregation_window),
            sorted: SortBuffer::new(qlen),
            out,
        };
        let mut drain = tokio::time::interval_at(
            tokio::time::Instant::now() + config.sort_buffer_drain_timeout,
            config.sort_buffer_drain_timeout,
        );
        drain.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut relist = tokio::time::interval_at(
            tokio::time::Instant::now() + config.peer_update_interval,
            config.peer_update_interval,
        );
        relist.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            if !follow && collector.streams.is_empty() {
                break;
            }
            let error_due = merge.errors.deadline();
            let sent = tokio::select! {
                biased;
                () = merge.out.closed() => return,
                () = shutdown.cancelled() => return,
                Some(response) = rx.recv() => merge.push(response).await,
                Some(done) = collector.streams.join_next_with_id() => {
                    let (name, result) = match done {
                        Ok((id, result)) => (collector.tasks.remove(&id).unwrap_or_default(), result),
                        Err(e) => (collector.tasks.remove(&e.id()).unwrap_or_default(), Err(e.to_string())),
                    };
                    collector.connected.remove(&name);
                    match result {
                        Ok(()) => true,
                        Err(message) => {
                            warn!(peer = %name, error = %message, "cannot retrieve flows from peer");
                            let error = collector.status(NodeState::NodeError, vec![name], message, SystemTime::now());
                            merge.push(error).await
                        }
                    }
                }
                _ = drain.tick() => {
                    let cutoff = SystemTime::now()
                        .checked_sub(config.sort_buffer_drain_timeout)
                        .unwrap_or(SystemTime::UNIX_EPOCH);
                    let due = merge.sorted.pop_older_than(SortKey::from_system_time(cutoff));
                    merge.send_all(due).await
                }
                () = sleep_until(error_due), if error_due.is_some() => {
                    match merge.errors.release_due(Instant::now()) {
                        Some(error) => merge.sort(error).await,
                        None => true,
                    }
                }
                _ = relist.tick(), if follow => {
                    let peers = collector.pool.list();
                    let before = collector.connected.clone();
                    let _ = collector.collect(&peers);
                    let new: Vec<String> = peers
                        .iter()
                        .filter(|p| collector.connected.contains(&p.name) && !before.contains(&p.name))
                        .map(|p| p.name.clone())
                        .collect();
                    if new.is_empty() {
                        true
                    } else {
                        debug!(peers = ?new, "relaying flows from more peers");
                        let event = collector.status(NodeState::NodeConnected, new, String::new(), SystemTime::now());
                        merge.sort(event).await
                    }
                }
            };
            if !sent {
                return;
            }
        }
        // Every peer stream ended; what they sent last may still be queued.
        while let Ok(response) = rx.try_recv() {
            if !merge.push(response).await {
                return;
            }
        }
        if let Some(error) = merge.errors.finish()
            && !merge.sort(error).await
        {
            return;
        }
        let rest = merge.sorted.drain();
        merge.send_all(rest).await;
    }

    /// Starts a stream from every available peer that has none; returns the
    /// names of the peers with a stream and of the unavailable ones.
    fn collect(&mut self, peers: &[Peer]) -> (Vec<String>, Vec<String>) {
        let mut connected = Vec::new();
        let mut unavailable = Vec::new();
        for peer in peers {
            if self.connected.contains(&peer.name) {
                connected.push(peer.name.clone());
                continue;
            }
            let Some(connection) = peer.available_connection() else {
                unavailable.push(peer.name.clone());
                continue;
            };
            connected.push(peer.name.clone());
            self.connected.insert(peer.name.clone());
            let stream = retrieve(
                connection.clone(),
                self.request.clone(),
                self.metadata.clone(),
                self.responses.clone(),
            );
            let id = self.streams.spawn(stream).id();
            self.tasks.insert(id, peer.name.clone());
        }
        (connected, unavailable)
    }

    fn status(
        &self,
        state: NodeState,
        names: Vec<String>,
        message: String,
        now: SystemTime,
    ) -> GetFlowsResponse {
        node_status_response(&self.config.node_name, state, names, message, now)
    }
}

/// The pipeline after the peers: error aggregation, then the sort, then the
/// client. Each method returns false once the client is gone.
struct Merge {
    errors: ErrorAggregator,
    sorted: SortBuffer,
    out: Out,
}

impl Merge {
    async fn push(&mut self, response: GetFlowsResponse) -> bool {
        for r in self.errors.push(response, Instant::now()) {
            if !self.sort(r).await {
                return false;
            }
        }
        true
    }

    async fn sort(&mut self, response: GetFlowsResponse) -> bool {
        match self.sorted.push(response) {
            Some(oldest) => self.out.send(Ok(oldest)).await.is_ok(),
            None => true,
        }
    }

    async fn send_all(&mut self, responses: Vec<GetFlowsResponse>) -> bool {
        for r in responses {
            if self.out.send(Ok(r)).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// Streams one peer's flows into `responses`. A stream that ends, or that
/// the relay cut because the peer was deleted or moved, is no error.
async fn retrieve(
    connection: Connection,
    request: GetFlowsRequest,
    metadata: MetadataMap,
    responses: mpsc::Sender<GetFlowsResponse>,
) -> Result<(), String> {
    let mut client = ObserverClient::new(connection.channel());
    let call = crate::observer::with_metadata(request, metadata);
    let stream = async move {
        let mut stream = client.get_flows(call).await?.into_inner();
        while let Some(response) = stream.message().await? {
            if responses.send(response).await.is_err() {
                break;
            }
        }
        Ok::<(), Status>(())
    };
    let result = tokio::select! {
        () = connection.closed() => return Ok(()),
        r = stream => r,
    };
    match result {
        Ok(()) => Ok(()),
        Err(s) if s.code() == Code::Cancelled || connection.is_closing() => Ok(()),
        Err(s) => Err(status_message(&s)),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await;
    }
}
