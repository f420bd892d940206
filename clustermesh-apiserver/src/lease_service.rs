use etcd_client::proto::{
    PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseKeepAliveRequest, PbLeaseKeepAliveResponse,
    PbLeaseLeasesRequest, PbLeaseLeasesResponse, PbLeaseRevokeRequest, PbLeaseRevokeResponse,
    PbLeaseService, PbLeaseTimeToLiveRequest, PbLeaseTimeToLiveResponse,
};
use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    access_guard::AccessGuard,
    authorizer::Access,
    upstream::{Upstream, path},
};

/// etcd's `Lease` service, for the admin only, forwarded to etcd. A
/// keep-alive stream is piped both ways for as long as the client keeps it.
#[derive(Debug, Clone)]
pub(crate) struct LeaseService {
    guard: AccessGuard,
    upstream: Upstream,
}

impl LeaseService {
    pub(crate) fn new(guard: AccessGuard, upstream: Upstream) -> Self {
        Self { guard, upstream }
    }
}

#[tonic::async_trait]
impl PbLeaseService for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<PbLeaseGrantRequest>,
    ) -> Result<Response<PbLeaseGrantResponse>, Status> {
        self.guard.check(&request, "LeaseGrant", &Access::Lease)?;
        self.upstream
            .unary(path::LEASE_GRANT, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn lease_revoke(
        &self,
        request: Request<PbLeaseRevokeRequest>,
    ) -> Result<Response<PbLeaseRevokeResponse>, Status> {
        self.guard.check(&request, "LeaseRevoke", &Access::Lease)?;
        self.upstream
            .unary(path::LEASE_REVOKE, request.into_inner())
            .await
            .map(Response::new)
    }

    type LeaseKeepAliveStream = Streaming<PbLeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<PbLeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        self.guard
            .check(&request, "LeaseKeepAlive", &Access::Lease)?;
        // Forward requests until the client ends or breaks its side.
        let requests = request
            .into_inner()
            .take_while(|r| futures::future::ready(r.is_ok()))
            .filter_map(|r| futures::future::ready(r.ok()));
        self.upstream
            .streaming(path::LEASE_KEEP_ALIVE, requests)
            .await
            .map(Response::new)
    }

    async fn lease_time_to_live(
        &self,
        request: Request<PbLeaseTimeToLiveRequest>,
    ) -> Result<Response<PbLeaseTimeToLiveResponse>, Status> {
        self.guard
            .check(&request, "LeaseTimeToLive", &Access::Lease)?;
        self.upstream
            .unary(path::LEASE_TIME_TO_LIVE, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn lease_leases(
        &self,
        request: Request<PbLeaseLeasesRequest>,
    ) -> Result<Response<PbLeaseLeasesResponse>, Status> {
        self.guard.check(&request, "LeaseLeases", &Access::Lease)?;
        self.upstream
            .unary(path::LEASE_LEASES, request.into_inner())
            .await
            .map(Response::new)
    }
}
