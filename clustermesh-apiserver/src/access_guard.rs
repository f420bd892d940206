use std::sync::Arc;

use tonic::{Request, Status};
use tracing::debug;

use certs::PeerInfo;

use crate::{
    authorizer::{Access, Authorizer},
    etcd_error::EtcdError,
    metrics::Metrics,
};

/// Authorizes each unary RPC (and stream opening) on the client certificate
/// CN of its connection, counts the verdict, and refuses with etcd's
/// "permission denied".
#[derive(Debug, Clone)]
pub(crate) struct AccessGuard {
    authorizer: Arc<Authorizer>,
    metrics: Metrics,
}

impl AccessGuard {
    pub(crate) fn new(authorizer: Arc<Authorizer>, metrics: Metrics) -> Self {
        Self {
            authorizer,
            metrics,
        }
    }

    /// `Ok` if the client of `request` may do `access`.
    pub(crate) fn check<T>(
        &self,
        request: &Request<T>,
        method: &'static str,
        access: &Access,
    ) -> Result<(), Status> {
        let common_name = request
            .extensions()
            .get::<PeerInfo>()
            .map_or("", |p| p.common_name.as_str());
        let role = self.authorizer.role(common_name);
        let verdict = self.authorizer.decide(&role, access);
        self.metrics.request(&role, common_name, method, verdict);
        if verdict.is_allowed() {
            return Ok(());
        }
        debug!(client = common_name, %role, method, ?access, "request refused");
        Err(EtcdError::PermissionDenied.into())
    }
}
