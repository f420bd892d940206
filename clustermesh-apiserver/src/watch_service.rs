use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use etcd_client::proto::PbWatchRequest;
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
    watch_hub::{Outbox, OutboxStream, WatchCodec, WatchHub, WatchMessage, WatchStream},
};

/// etcd's `Watch` gRPC service, written out by hand instead of with the
/// generated `WatchServer` so that responses can use [`WatchCodec`] (one
/// encoding per upstream response, whatever the number of watchers).
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
                Ok(grpc.streaming(WatchMethod(inner), req).await)
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

struct WatchMethod(Arc<Inner>);

impl StreamingService<PbWatchRequest> for WatchMethod {
    type Response = WatchMessage;
    type ResponseStream = OutboxStream;
    type Future = BoxFuture<Response<OutboxStream>, Status>;

    fn call(&mut self, request: Request<Streaming<PbWatchRequest>>) -> Self::Future {
        let inner = self.0.clone();
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
            Ok(Response::new(stream))
        })
    }
}
