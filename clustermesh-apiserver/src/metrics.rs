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

/// Labels of `clustermesh_apiserver_connections`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabels {
    /// As in [`RequestLabels::client`].
    client: String,
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
    connections: Family<ClientLabels, Gauge>,
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
            "clustermesh_apiserver_connections",
            "Open client connections (mutual TLS done) by client certificate CN",
            m.connections.clone(),
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
        self.requests
            .get_or_create(&RequestLabels {
                client: client_label(role, common_name),
                method,
                verdict: verdict.as_str(),
            })
            .inc();
    }

    /// A client connection opened; the guard counts it closed when dropped.
    pub(crate) fn connection_opened(&self, role: &Role, common_name: &str) -> ConnectionGuard {
        let gauge = self
            .connections
            .get_or_create(&ClientLabels {
                client: client_label(role, common_name),
            })
            .clone();
        gauge.inc();
        ConnectionGuard(gauge)
    }

    /// Open connections of `client` (a certificate CN), for tests.
    pub fn connections_of(&self, client: &str) -> i64 {
        self.connections
            .get(&ClientLabels {
                client: client.to_owned(),
            })
            .map_or(0, |g| g.get())
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

/// The metric's client label: the CN of a known role, `unknown` for anyone
/// else (so that random names cannot grow the label set).
fn client_label(role: &Role, common_name: &str) -> String {
    match role {
        Role::Admin | Role::Remote(_) | Role::Local => common_name.to_owned(),
        Role::Unknown => "unknown".to_owned(),
    }
}

/// Counts one open connection until dropped.
#[derive(Debug)]
pub(crate) struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
