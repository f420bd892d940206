//! Global services: local service definitions merged with the backends of
//! every cluster ([`service_merger`]), programmed when something they
//! depend on changed.

use std::{collections::BTreeMap, net::IpAddr};

use kvstore::{ClusterName, values::ClusterService};
use tracing::warn;

use super::sources::Sources;
use crate::{
    datapath_sync::DatapathSync,
    metrics::{AgentMetrics, RemoteReasonLabel},
    service_merger::{self, MergedFrontend, RemoteService, SkipReason},
    tables::Tables,
};

/// The merged services and whether they must be computed again.
#[derive(Default)]
pub(super) struct Services {
    /// Service name → one frontend each, as last programmed.
    pub merged: Vec<(String, MergedFrontend)>,
    dirty: bool,
    /// Remotes whose skipped-backend gauges are exported.
    skip_gauges: Vec<String>,
}

impl Services {
    /// Something a service depends on changed.
    pub(super) fn touch(&mut self) {
        self.dirty = true;
    }

    /// Merges and programs the services if anything changed since.
    pub(super) fn apply(
        &mut self,
        dp: &mut DatapathSync,
        tables: &Tables,
        sources: &Sources,
        local: (&ClusterName, u32),
        metrics: &AgentMetrics,
    ) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        self.merged = merge(tables, sources, local);
        let frontends: Vec<MergedFrontend> = self.merged.iter().map(|(_, f)| f.clone()).collect();
        if let Err(e) = dp.set_services(&frontends) {
            warn!(error = %e, "programming services failed");
            metrics.count_error("services");
            self.dirty = true;
        }
        metrics.services.set(self.merged.len() as i64);
        self.publish_skipped(metrics);
    }

    /// The skipped-backends gauge: remote backends left out now, by remote
    /// and reason (each counted once per service, whatever its ports).
    fn publish_skipped(&mut self, metrics: &AgentMetrics) {
        let mut counts: BTreeMap<(String, SkipReason), i64> = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        for (name, fe) in &self.merged {
            for s in &fe.skipped {
                if seen.insert((name, &s.cluster, s.backend.ip(), s.reason)) {
                    *counts.entry((s.cluster.clone(), s.reason)).or_default() += 1;
                }
            }
        }
        let label = |cluster: &str, reason: SkipReason| RemoteReasonLabel {
            cluster: cluster.to_string(),
            reason: reason.as_str().to_string(),
        };
        for cluster in &self.skip_gauges {
            for reason in SkipReason::ALL {
                if !counts.contains_key(&(cluster.clone(), reason)) {
                    metrics
                        .remote_skipped_backends
                        .get_or_create(&label(cluster, reason))
                        .set(0);
                }
            }
        }
        for ((cluster, reason), n) in &counts {
            metrics
                .remote_skipped_backends
                .get_or_create(&label(cluster, *reason))
                .set(*n);
            if !self.skip_gauges.contains(cluster) {
                self.skip_gauges.push(cluster.clone());
            }
        }
    }
}

/// Every local service definition with the backends of each cluster.
fn merge(
    tables: &Tables,
    sources: &Sources,
    (cluster, cluster_id): (&ClusterName, u32),
) -> Vec<(String, MergedFrontend)> {
    let local_ips = tables.local_cluster_ips();
    let mut out = Vec::new();
    for (key, def) in &tables.service_defs {
        let local: Vec<IpAddr> = match &def.backends {
            Some(backends) => backends.clone(),
            None => local_ips
                .iter()
                .filter(|(_, id)| tables.identities.get(id).is_some_and(|l| def.selects(l)))
                .map(|(ip, _)| *ip)
                .collect(),
        };
        let remote_services: Vec<(&String, u32, &ClusterService)> = tables
            .services
            .get(key)
            .into_iter()
            .flatten()
            .filter(|(name, _)| name.as_str() != cluster.as_str())
            .map(|(name, svc)| {
                let id = sources.cluster_id_of(name).unwrap_or(svc.cluster_id);
                (name, id, svc)
            })
            .collect();
        let remotes: Vec<RemoteService<'_>> = remote_services
            .iter()
            .map(|(name, id, svc)| RemoteService {
                cluster: name,
                cluster_id: *id,
                service: svc,
            })
            .collect();
        for fe in service_merger::merge(def, cluster.as_str(), cluster_id, &local, &remotes) {
            out.push((key.clone(), fe));
        }
    }
    out
}
