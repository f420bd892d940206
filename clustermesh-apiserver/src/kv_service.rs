use std::{
    convert::Infallible,
    task::{Context, Poll},
};

use etcd_client::proto::{
    PbCompactionRequest, PbCompactionResponse, PbDeleteRequest, PbDeleteResponse, PbKvServer,
    PbKvService, PbPutRequest, PbPutResponse, PbRangeRequest, PbRangeResponse,
    PbRangeStreamResponse, PbTxnRequest, PbTxnResponse,
};
use prost::{Message, bytes::Bytes};
use tonic::{
    Request, Response, Status,
    body::Body,
    codegen::{BoxFuture, BoxStream, Service, StdError, http},
    server::{Grpc, NamedService, UnaryService},
};

use crate::{
    access_guard::AccessGuard,
    authorizer::Access,
    etcd_error::EtcdError,
    key_range::KeyRange,
    proto_codec::RawCodec,
    upstream::{Upstream, path},
};

/// The gRPC path of `Range`.
const RANGE_PATH: &str = "/etcdserverpb.KV/Range";

/// etcd's `KV` service as served: a `Range` is forwarded as bytes (its
/// request is decoded only to authorize it, and etcd's answer goes back to
/// the client unchanged), every other method to [`KvService`].
///
/// A page of a large list is up to 8 MiB and 100,000 keys: decoding etcd's
/// answer into messages and encoding it again cost the apiserver more than
/// serving it, and two allocations a key.
#[derive(Debug, Clone)]
pub(crate) struct KvRouter {
    service: KvService,
    others: PbKvServer<KvService>,
}

impl KvRouter {
    pub(crate) fn new(guard: AccessGuard, upstream: Upstream) -> Self {
        let service = KvService::new(guard, upstream);
        Self {
            others: PbKvServer::new(service.clone()),
            service,
        }
    }
}

impl NamedService for KvRouter {
    const NAME: &'static str = <PbKvServer<KvService> as NamedService>::NAME;
}

impl<B> Service<http::Request<B>> for KvRouter
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
        if req.uri().path() != RANGE_PATH {
            return self.others.call(req);
        }
        let range = ForwardRange(self.service.clone());
        Box::pin(async move { Ok(Grpc::new(RawCodec).unary(range, req).await) })
    }
}

/// One `Range`: authorize, then forward the bytes both ways.
struct ForwardRange(KvService);

impl UnaryService<Bytes> for ForwardRange {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move {
            // As tonic answers a request it cannot decode.
            let range = PbRangeRequest::decode(request.get_ref().clone())
                .map_err(|e| Status::internal(e.to_string()))?;
            service.authorize_range(&request, &range)?;
            service
                .upstream
                .unary_raw(path::KV_RANGE, request.into_inner())
                .await
                .map(Response::new)
        })
    }
}

/// etcd's `KV` service: ranges for every role inside what it may read,
/// writes for the admin only, each forwarded to etcd unchanged (so
/// responses, revisions and errors are etcd's own).
#[derive(Debug, Clone)]
pub(crate) struct KvService {
    guard: AccessGuard,
    upstream: Upstream,
}

impl KvService {
    pub(crate) fn new(guard: AccessGuard, upstream: Upstream) -> Self {
        Self { guard, upstream }
    }

    /// Whether the client may read what `range` asks for.
    fn authorize_range<T>(
        &self,
        request: &Request<T>,
        range: &PbRangeRequest,
    ) -> Result<(), Status> {
        let keys = KeyRange::from_request(&range.key, &range.range_end);
        self.guard.check(request, "Range", &Access::Read(keys))
    }
}

#[tonic::async_trait]
impl PbKvService for KvService {
    async fn range(
        &self,
        request: Request<PbRangeRequest>,
    ) -> Result<Response<PbRangeResponse>, Status> {
        // Served by [`KvRouter`] without decoding etcd's answer; this is
        // the same call through the generated service.
        self.authorize_range(&request, request.get_ref())?;
        self.upstream
            .unary(path::KV_RANGE, request.into_inner())
            .await
            .map(Response::new)
    }

    type RangeStreamStream = BoxStream<PbRangeStreamResponse>;

    /// Not in etcd 3.4 either.
    async fn range_stream(
        &self,
        _request: Request<PbRangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        Err(EtcdError::Unimplemented {
            service: "etcdserverpb.KV",
            method: "RangeStream",
        }
        .into())
    }

    async fn put(&self, request: Request<PbPutRequest>) -> Result<Response<PbPutResponse>, Status> {
        self.guard.check(&request, "Put", &Access::Write)?;
        self.upstream
            .unary(path::KV_PUT, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn delete_range(
        &self,
        request: Request<PbDeleteRequest>,
    ) -> Result<Response<PbDeleteResponse>, Status> {
        self.guard.check(&request, "DeleteRange", &Access::Write)?;
        self.upstream
            .unary(path::KV_DELETE_RANGE, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn txn(&self, request: Request<PbTxnRequest>) -> Result<Response<PbTxnResponse>, Status> {
        self.guard.check(&request, "Txn", &Access::Write)?;
        self.upstream
            .unary(path::KV_TXN, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn compact(
        &self,
        request: Request<PbCompactionRequest>,
    ) -> Result<Response<PbCompactionResponse>, Status> {
        self.guard.check(&request, "Compact", &Access::Write)?;
        self.upstream
            .unary(path::KV_COMPACT, request.into_inner())
            .await
            .map(Response::new)
    }
}
