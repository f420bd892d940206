//! What every page sees, and the live events that keep it current.
//!
//! The relay feed adds flows, the services poller sets the global services,
//! both set their status; [`Hub::flush`] turns what changed into events
//! (`map`, `flows`, `status`, `services`, named as the page expects, see
//! `ui/API.md`) and
//! sends them to every connected page. A page that connects gets a snapshot
//! first ([`Hub::subscribe`]), taken under the same lock that orders the
//! events, so it misses nothing and sees nothing twice.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use hubble_api::flow::Flow;
use serde::Serialize;
use serde_json::json;
use tokio::sync::broadcast;

use crate::model::{Changes, Limits, Model};

/// Events a slow page may fall behind by before it is sent a new snapshot.
const CHANNEL_CAPACITY: usize = 1024;

/// One server-sent event: its name and its JSON data.
#[derive(Debug, Clone)]
pub struct Frame {
    pub event: &'static str,
    pub data: Arc<str>,
}

impl Frame {
    fn new(event: &'static str, data: &impl Serialize) -> Self {
        Self {
            event,
            data: serde_json::to_string(data)
                .expect("events serialize")
                .into(),
        }
    }
}

/// The state of the connection to the relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayState {
    Connecting,
    Connected,
    Unreachable,
}

/// The relay flows come from (or the one being tried).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RelayStatus {
    pub state: RelayState,
    pub name: String,
    pub address: String,
    pub error: Option<String>,
    pub retry_in_ms: Option<u64>,
    pub since_ms: u64,
}

/// One configured relay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RelayEntry {
    pub name: String,
    pub address: String,
    /// `connected`, `standby` (not in use) or `unreachable`.
    pub state: &'static str,
    pub error: Option<String>,
}

/// Nodes as the relay in use counts them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeCounts {
    pub connected: u32,
    pub unavailable: u32,
    pub unavailable_names: Vec<String>,
}

/// The `status` event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub relay: RelayStatus,
    pub relays: Vec<RelayEntry>,
    pub nodes: NodeCounts,
    pub flows_per_s: f64,
    pub flows_seen: u64,
    pub clusters: Vec<String>,
}

/// The backends one cluster offers a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterBackends {
    pub cluster: String,
    pub addresses: Vec<String>,
}

/// How one cluster's agent balances a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceChoice {
    pub cluster: String,
    pub node: String,
    pub active: Vec<String>,
    pub mode: String,
    pub reason: String,
}

/// A global service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GlobalService {
    pub name: String,
    pub frontend: String,
    pub protocol: String,
    pub backends: Vec<ClusterBackends>,
    pub views: Vec<ServiceChoice>,
}

/// Whether a cluster's agent answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceSource {
    pub cluster: String,
    pub node: String,
    pub ok: bool,
    pub error: Option<String>,
}

/// The `services` event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Services {
    pub services: Vec<GlobalService>,
    pub sources: Vec<ServiceSource>,
}

/// See the module documentation.
pub struct Hub {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Frame>,
}

struct Inner {
    model: Model,
    status: Status,
    /// Clusters named in the configuration (relays, agents).
    configured_clusters: Vec<String>,
    services: Services,
    flows_seen: u64,
    /// Flows counted since `rate_since`, for `flows_per_s`.
    rate_count: u64,
    rate_since: Instant,
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Hub {
    /// A hub for the relays `relays` (name, address; the first is tried
    /// first) and the clusters `clusters` the configuration names.
    pub fn new(limits: Limits, relays: &[(String, String)], clusters: Vec<String>) -> Arc<Self> {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        let (name, address) = relays.first().cloned().unwrap_or_default();
        let mut configured_clusters = clusters;
        configured_clusters.sort();
        configured_clusters.dedup();
        let status = Status {
            relay: RelayStatus {
                state: RelayState::Connecting,
                name,
                address,
                error: None,
                retry_in_ms: None,
                since_ms: now_ms(),
            },
            relays: relays
                .iter()
                .map(|(name, address)| RelayEntry {
                    name: name.clone(),
                    address: address.clone(),
                    state: "standby",
                    error: None,
                })
                .collect(),
            nodes: NodeCounts::default(),
            flows_per_s: 0.0,
            flows_seen: 0,
            clusters: configured_clusters.clone(),
        };
        Arc::new(Self {
            inner: Mutex::new(Inner {
                model: Model::new(limits),
                status,
                configured_clusters,
                services: Services::default(),
                flows_seen: 0,
                rate_count: 0,
                rate_since: Instant::now(),
            }),
            tx,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind: go on.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds flows to the map and the table (sent at the next flush).
    pub fn ingest<'a>(&self, flows: impl IntoIterator<Item = &'a Flow>) {
        let mut inner = self.lock();
        for flow in flows {
            inner.model.ingest(flow);
            inner.flows_seen += 1;
            inner.rate_count += 1;
        }
    }

    /// Sends what changed since the last flush: the boxes and arrows, the
    /// new rows, and once a second the status (flow rate, clusters).
    pub fn flush(&self) {
        let mut inner = self.lock();
        let changes = inner.model.take_changes();
        if !changes.is_empty() {
            self.send_changes(changes);
        }
        let elapsed = inner.rate_since.elapsed();
        if elapsed >= Duration::from_secs(1) {
            // One decimal: the page shows no more, and an idle mesh sends
            // no status every second.
            let rate = (inner.rate_count as f64 / elapsed.as_secs_f64() * 10.0).round() / 10.0;
            inner.rate_count = 0;
            inner.rate_since = Instant::now();
            let clusters = inner.clusters();
            let seen = inner.flows_seen;
            let status = &mut inner.status;
            let changed = status.flows_seen != seen
                || status.clusters != clusters
                || status.flows_per_s != rate;
            status.flows_per_s = rate;
            status.flows_seen = seen;
            status.clusters = clusters;
            if changed {
                let _ = self.tx.send(Frame::new("status", &inner.status));
            }
        }
    }

    fn send_changes(&self, changes: Changes) {
        if !changes.workloads.is_empty() || !changes.links.is_empty() {
            let _ = self.tx.send(Frame::new(
                "map",
                &json!({"reset": false, "workloads": changes.workloads, "links": changes.links}),
            ));
        }
        if !changes.flows.is_empty() {
            let _ = self
                .tx
                .send(Frame::new("flows", &json!({"flows": changes.flows})));
        }
    }

    /// Changes the status with `f`, and sends it if it changed.
    pub fn update_status(&self, f: impl FnOnce(&mut Status)) {
        let mut inner = self.lock();
        let before = inner.status.clone();
        f(&mut inner.status);
        if inner.status != before {
            let _ = self.tx.send(Frame::new("status", &inner.status));
        }
    }

    /// Sets the global services, and sends them if they changed.
    pub fn set_services(&self, services: Services) {
        let mut inner = self.lock();
        if inner.services != services {
            inner.services = services;
            let _ = self.tx.send(Frame::new("services", &inner.services));
        }
    }

    /// The events that bring a new page up to date, and the receiver of
    /// every later event.
    pub fn subscribe(&self) -> (Vec<Frame>, broadcast::Receiver<Frame>) {
        let mut inner = self.lock();
        // What changed but was not flushed yet goes to everyone first, so
        // that the snapshot and the stream join without a gap.
        let changes = inner.model.take_changes();
        if !changes.is_empty() {
            self.send_changes(changes);
        }
        let rx = self.tx.subscribe();
        let (workloads, links, flows) = inner.model.snapshot();
        let frames = vec![
            Frame::new("status", &inner.status),
            Frame::new(
                "map",
                &json!({"reset": true, "workloads": workloads, "links": links}),
            ),
            Frame::new("flows", &json!({"flows": flows})),
            Frame::new("services", &inner.services),
        ];
        (frames, rx)
    }

    /// Everything a page would be sent first, as one JSON object.
    pub fn snapshot(&self) -> serde_json::Value {
        let inner = self.lock();
        let (workloads, links, flows) = inner.model.snapshot();
        json!({
            "status": inner.status,
            "map": {"reset": true, "workloads": workloads, "links": links},
            "flows": {"flows": flows},
            "services": inner.services,
        })
    }
}

impl Inner {
    /// Configured clusters and those seen in flows, sorted.
    fn clusters(&self) -> Vec<String> {
        let mut all = self.configured_clusters.clone();
        for c in self.model.clusters() {
            if !all.iter().any(|x| x == c) {
                all.push(c.to_owned());
            }
        }
        all.sort();
        all
    }
}

#[cfg(test)]
mod tests {
    use hubble_api::flow::{Endpoint, Verdict};

    use super::*;

    fn flow(app: &str) -> Flow {
        Flow {
            verdict: Verdict::Forwarded as i32,
            node_name: "c1/n1".into(),
            source: Some(Endpoint {
                cluster_name: "c1".into(),
                namespace: "ns".into(),
                labels: vec![format!("k8s:app={app}")],
                ..Default::default()
            }),
            destination: Some(Endpoint {
                cluster_name: "c2".into(),
                namespace: "ns".into(),
                labels: vec!["k8s:app=server".into()],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn events(rx: &mut broadcast::Receiver<Frame>) -> Vec<(&'static str, serde_json::Value)> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|f| (f.event, serde_json::from_str(&f.data).unwrap()))
            .collect()
    }

    #[test]
    fn a_page_gets_a_snapshot_then_only_what_changed() {
        let hub = Hub::new(
            Limits::default(),
            &[("c1".into(), "10.0.0.1:4245".into())],
            vec!["c1".into()],
        );
        hub.ingest([&flow("a")]);
        let (first, mut rx) = hub.subscribe();
        let names: Vec<_> = first.iter().map(|f| f.event).collect();
        assert_eq!(names, ["status", "map", "flows", "services"]);
        let map: serde_json::Value = serde_json::from_str(&first[1].data).unwrap();
        assert_eq!(map["reset"], true);
        assert_eq!(map["workloads"].as_array().unwrap().len(), 2);
        // The unflushed flow went out (to earlier pages) before the snapshot.
        assert!(events(&mut rx).is_empty());
        hub.ingest([&flow("b")]);
        hub.flush();
        let got = events(&mut rx);
        assert_eq!(got[0].0, "map");
        assert_eq!(got[0].1["reset"], false);
        let ids: Vec<&str> = got[0].1["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["c1/ns/b", "c2/ns/server"]);
        assert_eq!(got[1].0, "flows");
        assert_eq!(got[1].1["flows"][0]["seq"], 2);
    }

    #[test]
    fn status_and_services_are_sent_only_when_they_change() {
        let hub = Hub::new(Limits::default(), &[], vec![]);
        let (_, mut rx) = hub.subscribe();
        hub.update_status(|s| s.relay.state = RelayState::Connected);
        hub.update_status(|s| s.relay.state = RelayState::Connected);
        hub.set_services(Services::default());
        let got = events(&mut rx);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1["relay"]["state"], "connected");
    }
}
