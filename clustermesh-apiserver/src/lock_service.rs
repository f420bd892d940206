use std::{
    convert::Infallible,
    task::{Context, Poll},
};

use prost::bytes::Bytes;
use tonic::{
    Request, Response, Status,
    body::Body,
    codegen::{BoxFuture, Service, StdError, http},
    server::{Grpc, NamedService, UnaryService},
};

use crate::{
    access_guard::AccessGuard,
    authorizer::Access,
    etcd_error::EtcdError,
    proto_codec::RawCodec,
    upstream::{Upstream, path},
};

/// etcd's `v3lockpb.Lock` service (distributed locks held on a lease), for
/// the admin only. `etcd-client` does not export this service's server
/// trait, and the apiserver has nothing to look at inside its messages, so
/// requests and responses are forwarded to etcd as bytes.
#[derive(Debug, Clone)]
pub(crate) struct LockService {
    guard: AccessGuard,
    upstream: Upstream,
}

impl LockService {
    pub(crate) fn new(guard: AccessGuard, upstream: Upstream) -> Self {
        Self { guard, upstream }
    }
}

impl NamedService for LockService {
    const NAME: &'static str = "v3lockpb.Lock";
}

impl<B> Service<http::Request<B>> for LockService
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
        let target = match req.uri().path() {
            "/v3lockpb.Lock/Lock" => Some(("Lock", path::LOCK_LOCK)),
            "/v3lockpb.Lock/Unlock" => Some(("Unlock", path::LOCK_UNLOCK)),
            _ => None,
        };
        let service = self.clone();
        Box::pin(async move {
            let Some((method, path)) = target else {
                return Ok(Status::from(EtcdError::Unimplemented {
                    service: LockService::NAME,
                    method: "unknown",
                })
                .into_http());
            };
            let mut grpc = Grpc::new(RawCodec);
            Ok(grpc
                .unary(
                    Forward {
                        service,
                        method,
                        path,
                    },
                    req,
                )
                .await)
        })
    }
}

/// One Lock RPC: authorize, then forward the bytes.
struct Forward {
    service: LockService,
    method: &'static str,
    path: &'static str,
}

impl UnaryService<Bytes> for Forward {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let Self {
            service,
            method,
            path,
        } = Self {
            service: self.service.clone(),
            method: self.method,
            path: self.path,
        };
        Box::pin(async move {
            service.guard.check(&request, method, &Access::Lease)?;
            service
                .upstream
                .unary_raw(path, request.into_inner())
                .await
                .map(Response::new)
        })
    }
}
