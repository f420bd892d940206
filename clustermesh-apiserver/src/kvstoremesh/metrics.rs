use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};

use super::status::CellState;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target_cluster: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    target_cluster: String,
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InvalidLabels {
    target_cluster: String,
    kind: String,
    reason: String,
}

/// kvstoremesh's Prometheus metrics (`clustermesh_kvstoremesh_*`, after
/// Cilium's `cilium_kvstoremesh_*`), set from the remotes' views at every
/// status refresh. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub(super) struct KvstoremeshMetrics {
    remote_clusters: Gauge,
    readiness: Family<TargetLabels, Gauge>,
    failures: Family<TargetLabels, Gauge>,
    last_failure: Family<TargetLabels, Gauge>,
    entries: Family<KindLabels, Gauge>,
    invalid: Family<InvalidLabels, Gauge>,
    bootstrap_seconds: Gauge<f64, AtomicU64>,
}

impl KvstoremeshMetrics {
    /// Creates the metrics and adds them to `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("clustermesh_kvstoremesh");
        r.register(
            "remote_clusters",
            "Remote clusters configured",
            m.remote_clusters.clone(),
        );
        r.register(
            "remote_cluster_readiness_status",
            "Whether a remote is connected and completely mirrored (1) or not (0)",
            m.readiness.clone(),
        );
        r.register(
            "remote_cluster_failures",
            "Failed attempts to reach a remote, and its outages, since start",
            m.failures.clone(),
        );
        r.register(
            "remote_cluster_last_failure_ts",
            "Unix time of a remote's last failure",
            m.last_failure.clone(),
        );
        r.register(
            "entries",
            "Entries mirrored, by remote and kind",
            m.entries.clone(),
        );
        r.register(
            "invalid_values",
            "Values of a remote refused by the current connection, by kind and reason",
            m.invalid.clone(),
        );
        r.register(
            "bootstrap_seconds",
            "Seconds from start until ready (every remote present at start mirrored, or timed out)",
            m.bootstrap_seconds.clone(),
        );
        m
    }

    /// Sets everything from the remotes' current states.
    pub(super) fn observe(&self, remotes: &[&CellState]) {
        self.remote_clusters.set(remotes.len() as i64);
        // Reasons come and go with each list: start over.
        self.invalid.clear();
        for state in remotes {
            let view = &state.view;
            let target = TargetLabels {
                target_cluster: view.name.clone(),
            };
            self.readiness
                .get_or_create(&target)
                .set(i64::from(view.ready));
            self.failures
                .get_or_create(&target)
                .set(view.failures as i64);
            if let Some(ts) = state.last_failure {
                self.last_failure.get_or_create(&target).set(ts as i64);
            }
            for (kind, n) in &view.entries {
                self.entries
                    .get_or_create(&KindLabels {
                        target_cluster: view.name.clone(),
                        kind: kind.clone(),
                    })
                    .set(*n as i64);
            }
            for (kind_reason, n) in &view.invalid {
                let (kind, reason) = kind_reason.split_once('/').unwrap_or(("", kind_reason));
                self.invalid
                    .get_or_create(&InvalidLabels {
                        target_cluster: view.name.clone(),
                        kind: kind.to_owned(),
                        reason: reason.to_owned(),
                    })
                    .set(*n as i64);
            }
        }
    }

    /// A removed remote's series go.
    pub(super) fn forget(&self, remote: &str, kinds: impl IntoIterator<Item = &'static str>) {
        let target = TargetLabels {
            target_cluster: remote.to_owned(),
        };
        self.readiness.remove(&target);
        self.failures.remove(&target);
        self.last_failure.remove(&target);
        for kind in kinds {
            self.entries.remove(&KindLabels {
                target_cluster: remote.to_owned(),
                kind: kind.to_owned(),
            });
        }
    }

    pub(super) fn bootstrapped(&self, seconds: f64) {
        self.bootstrap_seconds.set(seconds);
    }
}
