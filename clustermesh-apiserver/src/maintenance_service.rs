use etcd_client::proto::{
    PbAlarmRequest, PbAlarmResponse, PbDefragmentRequest, PbDefragmentResponse, PbDowngradeRequest,
    PbDowngradeResponse, PbHashKvRequest, PbHashKvResponse, PbHashRequest, PbHashResponse,
    PbMaintenanceService, PbMoveLeaderRequest, PbMoveLeaderResponse, PbSnapshotRequest,
    PbSnapshotResponse, PbStatusRequest, PbStatusResponse,
};
use tonic::{Request, Response, Status, codegen::BoxStream};

use crate::{
    access_guard::AccessGuard,
    authorizer::Access,
    etcd_error::EtcdError,
    upstream::{Upstream, path},
};

const SERVICE: &str = "etcdserverpb.Maintenance";

/// etcd's `Maintenance` service: `Status` only (health checks, `etcdctl
/// endpoint status`, clients that pin the etcd cluster ID), forwarded to
/// etcd. Operating etcd (defragment, snapshot, alarms, leader moves) is done
/// on etcd itself, not through the mesh's front door.
#[derive(Debug, Clone)]
pub(crate) struct MaintenanceService {
    guard: AccessGuard,
    upstream: Upstream,
}

impl MaintenanceService {
    pub(crate) fn new(guard: AccessGuard, upstream: Upstream) -> Self {
        Self { guard, upstream }
    }
}

fn unimplemented(method: &'static str) -> Status {
    EtcdError::Unimplemented {
        service: SERVICE,
        method,
    }
    .into()
}

#[tonic::async_trait]
impl PbMaintenanceService for MaintenanceService {
    async fn alarm(
        &self,
        _request: Request<PbAlarmRequest>,
    ) -> Result<Response<PbAlarmResponse>, Status> {
        Err(unimplemented("Alarm"))
    }

    async fn status(
        &self,
        request: Request<PbStatusRequest>,
    ) -> Result<Response<PbStatusResponse>, Status> {
        self.guard.check(&request, "Status", &Access::Status)?;
        self.upstream
            .unary(path::MAINTENANCE_STATUS, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn defragment(
        &self,
        _request: Request<PbDefragmentRequest>,
    ) -> Result<Response<PbDefragmentResponse>, Status> {
        Err(unimplemented("Defragment"))
    }

    async fn hash(
        &self,
        _request: Request<PbHashRequest>,
    ) -> Result<Response<PbHashResponse>, Status> {
        Err(unimplemented("Hash"))
    }

    async fn hash_kv(
        &self,
        _request: Request<PbHashKvRequest>,
    ) -> Result<Response<PbHashKvResponse>, Status> {
        Err(unimplemented("HashKV"))
    }

    type SnapshotStream = BoxStream<PbSnapshotResponse>;

    async fn snapshot(
        &self,
        _request: Request<PbSnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(unimplemented("Snapshot"))
    }

    async fn move_leader(
        &self,
        _request: Request<PbMoveLeaderRequest>,
    ) -> Result<Response<PbMoveLeaderResponse>, Status> {
        Err(unimplemented("MoveLeader"))
    }

    async fn downgrade(
        &self,
        _request: Request<PbDowngradeRequest>,
    ) -> Result<Response<PbDowngradeResponse>, Status> {
        Err(unimplemented("Downgrade"))
    }
}
