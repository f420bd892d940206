//! The relay's `Observer` service.

use std::{sync::Arc, time::Duration};

use futures::future::join_all;
use hubble_api::observer::{
    GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest, GetNamespacesResponse,
    GetNodesRequest, GetNodesResponse, Namespace, ServerStatusRequest, ServerStatusResponse,
    observer_client::ObserverClient, observer_server::Observer,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{
    Request, Response, Status,
    metadata::{MetadataMap, MetadataValue},
};
use tracing::warn;

use crate::{
    Peer, PeerPool, flow_collector::FlowCollector, namespaces::merge_namespaces, nodes::node,
    peer_answer::PeerAnswer, server_status::aggregate_status, status_message,
};

/// The response header naming the relay's version (Cilium's
/// `hubble-relay-version`; the CLI compares it with its own).
pub const RELAY_VERSION_HEADER: &str = "hubble-relay-version";

/// How the relay's Observer behaves; the defaults are Cilium's
/// (`pkg/hubble/relay/defaults`).
#[derive(Debug, Clone)]
pub struct ObserverConfig {
    /// The relay's node name: `node_name` of the node status events it
    /// sends.
    pub node_name: String,
    /// The relay's version, in `ServerStatus` and the response header.
    pub version: String,
    /// Capacity of the sort buffer that merges the nodes' flows (100).
    pub sort_buffer_max_len: usize,
    /// Age after which a buffered flow is sent even if the buffer is not
    /// full, checked as often (1s).
    pub sort_buffer_drain_timeout: Duration,
    /// Window in which `NODE_ERROR` events with the same message are merged
    /// (10s).
    pub error_aggregation_window: Duration,
    /// How often a following `GetFlows` looks for new peers (2s).
    pub peer_update_interval: Duration,
    /// Deadline of a unary call to one peer (`ServerStatus`,
    /// `GetNamespaces`), so that a frozen node cannot hold the answer (our
    /// addition; Cilium waits).
    pub peer_request_timeout: Duration,
}

impl ObserverConfig {
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            sort_buffer_max_len: 100,
            sort_buffer_drain_timeout: Duration::from_secs(1),
            error_aggregation_window: Duration::from_secs(10),
            peer_update_interval: Duration::from_secs(2),
            peer_request_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `observer.Observer` over the peers of a [`PeerPool`]: `GetFlows`
/// ([`FlowCollector`]), `ServerStatus` (aggregated), `GetNodes` (one node per
/// peer) and `GetNamespaces` (merged). Every response carries the
/// `hubble-relay-version` header. `GetFlows` streams run as tasks of
/// `tracker` and stop on `shutdown`.
#[derive(Debug, Clone)]
pub struct RelayObserver {
    pool: PeerPool,
    config: Arc<ObserverConfig>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl RelayObserver {
    pub fn new(
        pool: PeerPool,
        config: ObserverConfig,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            pool,
            config: Arc::new(config),
            tracker,
            shutdown,
        }
    }

    fn respond<T>(&self, message: T) -> Response<T> {
        let mut response = Response::new(message);
        if let Ok(v) = MetadataValue::try_from(self.config.version.as_str()) {
            response.metadata_mut().insert(RELAY_VERSION_HEADER, v);
        }
        response
    }

    /// Calls `call` on every available peer at once, each within the peer
    /// request timeout; the answers are in pool order.
    async fn ask_all<T, F, Fut>(
        &self,
        metadata: &MetadataMap,
        call: F,
    ) -> Vec<(Peer, PeerAnswer<T>)>
    where
        F: Fn(ObserverClient<tonic::transport::Channel>, MetadataMap) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let timeout = self.config.peer_request_timeout;
        let asks = self.pool.list().into_iter().map(|peer| {
            let call = peer
                .available_connection()
                .map(|c| call(ObserverClient::new(c.channel()), metadata.clone()));
            async move {
                let answer = match call {
                    None => PeerAnswer::Unavailable,
                    Some(call) => match tokio::time::timeout(timeout, call).await {
                        Ok(Ok(r)) => PeerAnswer::Answered(r.into_inner()),
                        Ok(Err(status)) => PeerAnswer::Failed(status_message(&status)),
                        Err(_) => PeerAnswer::Failed(format!("no answer within {timeout:?}")),
                    },
                };
                if let PeerAnswer::Failed(error) = &answer {
                    warn!(peer = %peer.name, %error, "peer call failed");
                }
                (peer, answer)
            }
        });
        join_all(asks).await
    }
}

#[tonic::async_trait]
impl Observer for RelayObserver {
    type GetFlowsStream = ReceiverStream<Result<GetFlowsResponse, Status>>;

    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        let metadata = forwarded_metadata(request.metadata());
        let request = request.into_inner();
        if request.first && request.follow {
            return Err(Status::invalid_argument(
                "first cannot be specified with follow",
            ));
        }
        let (out, rx) = mpsc::channel(self.config.sort_buffer_max_len.max(1));
        self.tracker.spawn(FlowCollector::run(
            self.pool.clone(),
            self.config.clone(),
            request,
            metadata,
            out,
            self.shutdown.clone(),
        ));
        Ok(self.respond(ReceiverStream::new(rx)))
    }

    async fn get_nodes(
        &self,
        request: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        let metadata = forwarded_metadata(request.metadata());
        let answers = self
            .ask_all(&metadata, |mut client, metadata| async move {
                client
                    .server_status(with_metadata(ServerStatusRequest {}, metadata))
                    .await
            })
            .await;
        let nodes = answers
            .iter()
            .map(|(peer, answer)| node(peer, answer))
            .collect();
        Ok(self.respond(GetNodesResponse { nodes }))
    }

    async fn get_namespaces(
        &self,
        request: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        let metadata = forwarded_metadata(request.metadata());
        let answers = self
            .ask_all(&metadata, |mut client, metadata| async move {
                client
                    .get_namespaces(with_metadata(GetNamespacesRequest {}, metadata))
                    .await
            })
            .await;
        // Partial answers are fine: a failed peer only loses its own.
        let namespaces = merge_namespaces(answers.into_iter().filter_map(|(_, a)| match a {
            PeerAnswer::Answered(r) => Some(r.namespaces),
            _ => None::<Vec<Namespace>>,
        }));
        Ok(self.respond(GetNamespacesResponse { namespaces }))
    }

    async fn server_status(
        &self,
        request: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        let metadata = forwarded_metadata(request.metadata());
        let answers = self
            .ask_all(&metadata, |mut client, metadata| async move {
                client
                    .server_status(with_metadata(ServerStatusRequest {}, metadata))
                    .await
            })
            .await;
        let answers: Vec<_> = answers.into_iter().map(|(p, a)| (p.name, a)).collect();
        Ok(self.respond(aggregate_status(&self.config.version, &answers)))
    }
}

/// The client's metadata to pass on to the peers (Cilium forwards the
/// incoming metadata), without the transport's own headers: `grpc-*`
/// (timeout, encodings), `user-agent`, `te`, `content-type`.
/// A request to a peer carrying the metadata forwarded from the client.
pub(crate) fn with_metadata<T>(message: T, metadata: MetadataMap) -> Request<T> {
    let mut request = Request::new(message);
    *request.metadata_mut() = metadata;
    request
}

fn forwarded_metadata(incoming: &MetadataMap) -> MetadataMap {
    let mut headers = incoming.clone().into_headers();
    let drop: Vec<_> = headers
        .keys()
        .filter(|k| {
            let k = k.as_str();
            k.starts_with("grpc-") || matches!(k, "user-agent" | "te" | "content-type" | "host")
        })
        .cloned()
        .collect();
    for k in drop {
        headers.remove(k);
    }
    MetadataMap::from_headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_headers_are_not_forwarded() {
        let mut md = MetadataMap::new();
        md.insert("authorization", "Bearer x".parse().unwrap());
        md.insert("x-request-id", "42".parse().unwrap());
        md.insert("grpc-timeout", "5S".parse().unwrap());
        md.insert("grpc-accept-encoding", "gzip".parse().unwrap());
        md.insert("user-agent", "hubble/1.16".parse().unwrap());
        md.insert("te", "trailers".parse().unwrap());
        let out = forwarded_metadata(&md);
        let mut keys: Vec<_> = out.keys().map(|k| format!("{k:?}")).collect();
        keys.sort();
        assert_eq!(
            keys,
            ["Ascii(\"authorization\")", "Ascii(\"x-request-id\")"]
        );
    }
}
