use std::{
    convert::Infallible,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use etcd_client::proto::PbWatchRequest;
use futures::stream::Empty;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{
    Request, Response, Status, Streaming,
    body::Body,
    codegen::{BoxFuture, Service, StdError, http},
    server::{Grpc, NamedService, StreamingService},
};

use certs::PeerInfo;

use crate::{
    authorizer::Authorizer,
    etcd_error::EtcdError,
    metrics::Metrics,
    watch_hub::{NoResponse, Outbox, OutboxStream, WatchBody, WatchCodec, WatchHub, WatchStream},
};

/// etcd's `Watch` gRPC service, written out by hand instead of with the
/// generated `WatchServer` so that responses are encoded once per upstream
/// response, whatever the number of watchers, and sent by reference
/// ([`WatchBody`]): tonic reads the requests and writes the response's
/// headers, the body is ours.
#[derive(Clone)]
pub(crate) struct WatchService {
    inner: Arc<Inner>,
}

struct Inner {
    hub: Arc<WatchHub>,
    authorizer: Arc<Authorizer>,
    metrics: Metrics,
    outbox_capacity: usize,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl WatchService {
    /// Stream tasks run on `tasks` and end with "server stopped" at
    /// `shutdown`.
    pub(crate) fn new(
        hub: Arc<WatchHub>,
        authorizer: Arc<Authorizer>,
        metrics: Metrics,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let outbox_capacity = hub.config().outbox_capacity;
        Self {
            inner: Arc::new(Inner {
                hub,
                authorizer,
                metrics,
                outbox_capacity,
                tasks,
                shutdown,
            }),
        }
    }
}

impl NamedService for WatchService {
    const NAME: &'static str = "etcdserverpb.Watch";
}

impl<B> Service<http::Request<B>> for WatchService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        match req.uri().path() {
            "/etcdserverpb.Watch/Watch" => Box::pin(async move {
                let mut grpc = Grpc::new(WatchCodec);
                let outbox = Arc::new(Mutex::new(None));
                let response = grpc
                    .streaming(
                        WatchMethod {
                            inner,
                            outbox: outbox.clone(),
                        },
                        req,
                    )
                    .await;
                let outbox = outbox.lock().unwrap_or_else(PoisonError::into_inner).take();
                // Without the outbox the request was refused before the
                // method ran: tonic's response says why.
                Ok(match outbox {
                    Some(stream) => response.map(|_| Body::new(WatchBody::new(stream))),
                    None => response,
                })
            }),
            _ => Box::pin(async move {
                Ok(Status::from(EtcdError::Unimplemented {
                    service: WatchService::NAME,
                    method: "unknown",
                })
                .into_http())
            }),
        }
    }
}

/// The method as tonic calls it. The response stream tonic gets is empty:
/// the outbox's stream is left in `outbox` for the body that replaces
/// tonic's.
struct WatchMethod {
    inner: Arc<Inner>,
    outbox: Arc<Mutex<Option<OutboxStream>>>,
}

impl StreamingService<PbWatchRequest> for WatchMethod {
    type Response = NoResponse;
    type ResponseStream = Empty<Result<NoResponse, Status>>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<PbWatchRequest>>) -> Self::Future {
        let inner = self.inner.clone();
        let slot = self.outbox.clone();
        Box::pin(async move {
            // Every connection reaches gRPC only after a verified handshake;
            // without the info (impossible) the stream is treated as unknown.
            let peer = request
                .extensions()
                .get::<PeerInfo>()
                .cloned()
                .unwrap_or_else(|| PeerInfo {
                    common_name: String::new(),
                    remote_addr: ([0, 0, 0, 0], 0).into(),
                });
            // Like etcd, accept the stream from anyone and decide on each
            // watch, so refusals reach the client as etcd words them.
            let closed = CancellationToken::new();
            let (outbox, stream) =
                Outbox::new(inner.outbox_capacity, closed.clone(), inner.metrics.clone());
            let watch_stream = WatchStream::new(
                inner.hub.clone(),
                inner.authorizer.clone(),
                inner.metrics.clone(),
                peer,
                outbox,
            );
            inner.tasks.spawn(watch_stream.run(
                request.into_inner(),
                closed,
                inner.shutdown.clone(),
            ));
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(stream);
            Ok(Response::new(futures::stream::empty()))
        })
    }
}
