use etcd_client::proto::{
    PbCompactionRequest, PbCompactionResponse, PbDeleteRequest, PbDeleteResponse, PbKvService,
    PbPutRequest, PbPutResponse, PbRangeRequest, PbRangeResponse, PbRangeStreamResponse,
    PbTxnRequest, PbTxnResponse,
};
use tonic::{Request, Response, Status, codegen::BoxStream};

use crate::{
    access_guard::AccessGuard,
    authorizer::Access,
    etcd_error::EtcdError,
    key_range::KeyRange,
    upstream::{Upstream, path},
};

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
}

#[tonic::async_trait]
impl PbKvService for KvService {
    async fn range(
        &self,
        request: Request<PbRangeRequest>,
    ) -> Result<Response<PbRangeResponse>, Status> {
        let range = KeyRange::from_request(&request.get_ref().key, &request.get_ref().range_end);
        self.guard.check(&request, "Range", &Access::Read(range))?;
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
