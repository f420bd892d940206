use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{authorizer::Verdict, role::Role};

/// Labels of `clustermesh_apiserver_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The client certificate's CN for admin and remote clients; `unknown`
    /// for anyone else (so that random names cannot grow the label set).
    client: String,
    /// The RPC, e.g. `Range`, `Watch`, `Put`.
    method: &'static str,
    verdict: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The apiserver's Prometheus metrics (certificate expiry comes from
/// [`certs::TlsMetrics`], registered next to these). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    tls_handshake_failures: Family<ReasonLabels, Counter>,
    downstream_watchers: Gauge,
    upstream_watches: Gauge,
    upstream_watch_restarts: Counter,
    events_sent: Counter,
    slow_watcher_disconnects: Counter,
}

impl Metrics {
    /// Creates the metrics and adds them to `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "clustermesh_apiserver_requests",
            "Requests (unary RPCs and watch creations) by client certificate CN, method and verdict",
            m.requests.clone(),
        );
        registry.register(
            "clustermesh_apiserver_tls_handshake_failures",
            "TLS handshakes that failed, by reason (no-certificate, unknown-ca, bad-certificate, timeout, other)",
            m.tls_handshake_failures.clone(),
        );
        registry.register(
            "clustermesh_apiserver_downstream_watchers",
            "Watches clients hold on the apiserver",
            m.downstream_watchers.clone(),
        );
        registry.register(
            "clustermesh_apiserver_upstream_watches",
            "Watches the apiserver holds on etcd (shared ones plus history catch-ups)",
            m.upstream_watches.clone(),
        );
        registry.register(
            "clustermesh_apiserver_upstream_watch_restarts",
            "Upstream watches resumed after a break (etcd restart, network)",
            m.upstream_watch_restarts.clone(),
        );
        registry.register(
            "clustermesh_apiserver_watch_events_sent",
            "Events queued to downstream watchers",
            m.events_sent.clone(),
        );
        registry.register(
            "clustermesh_apiserver_slow_watcher_disconnects",
            "Watch streams closed because the client did not read fast enough",
            m.slow_watcher_disconnects.clone(),
        );
        m
    }

    pub(crate) fn request(
        &self,
        role: &Role,
        common_name: &str,
        method: &'static str,
        verdict: Verdict,
    ) {
        let client = match role {
            Role::Admin | Role::Remote(_) => common_name.to_owned(),
            Role::Unknown => "unknown".to_owned(),
        };
        self.requests
            .get_or_create(&RequestLabels {
                client,
                method,
                verdict: verdict.as_str(),
            })
            .inc();
    }

    pub(crate) fn tls_handshake_failed(&self, reason: &'static str) {
        self.tls_handshake_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub(crate) fn downstream_watchers(&self) -> &Gauge {
        &self.downstream_watchers
    }

    pub(crate) fn upstream_watches(&self) -> &Gauge {
        &self.upstream_watches
    }

    pub(crate) fn upstream_watch_restarted(&self) {
        self.upstream_watch_restarts.inc();
    }

    pub(crate) fn events_sent(&self, n: u64) {
        if n > 0 {
            self.events_sent.inc_by(n);
        }
    }

    pub(crate) fn slow_watcher_disconnected(&self) {
        self.slow_watcher_disconnects.inc();
    }
}
