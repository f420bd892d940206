//! Routes to remote nodes' pod CIDRs, installed on a thread of their own:
//! the control loop hands over what it knows (nodes, pools) and this plans
//! with [`route_plan::plan`], the one place that decides which CIDRs are
//! routed, and runs `ip route` (a blocking subprocess, kept off the async
//! runtime). Refusals go back to the loop for `status` and to the metrics.
//!
//! Not for: the routes of local endpoints (the endpoint manager adds them
//! with the endpoint's veth).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc,
        mpsc::{self, Receiver, RecvTimeoutError, Sender},
    },
    time::{Duration, Instant},
};

use ipnet::IpNet;
use kvstore::values::Node;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{
    control_loop::{Input, LoopHandle},
    metrics::{AgentMetrics, RemoteReasonLabel},
    plumbing,
    route_plan::{self, RefusedRoute, RouteInputs, RouteRefusal},
};

/// How often the installer looks at shutdown while idle; a failed route is
/// tried again after this long, or with the next request.
const WAKE_INTERVAL: Duration = Duration::from_secs(1);

/// What the routes are planned from: a snapshot of the loop's view.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RouteRequest {
    pub local_cluster: String,
    pub local_node: String,
    pub own_pod_cidrs: Vec<IpNet>,
    pub local_pools: Vec<IpNet>,
    /// Cluster → node name → node.
    pub nodes: BTreeMap<String, BTreeMap<String, Node>>,
    /// Every remote cluster (configured or not) → its pod pools.
    pub remote_pools: BTreeMap<String, Vec<IpNet>>,
}

/// Where the loop sends its requests; only the latest one counts.
#[derive(Debug, Clone)]
pub(crate) struct RouteHandle {
    tx: Sender<RouteRequest>,
}

impl RouteHandle {
    pub(crate) fn request(&self, request: RouteRequest) {
        // The thread is gone only when the agent stops.
        let _ = self.tx.send(request);
    }
}

/// A handle and the receiving end of the requests.
pub(crate) fn channel() -> (RouteHandle, Receiver<RouteRequest>) {
    let (tx, rx) = mpsc::channel();
    (RouteHandle { tx }, rx)
}

/// The route installer; see the module documentation.
pub(crate) struct Routes {
    netns: Option<PathBuf>,
    metrics: Arc<AgentMetrics>,
    control: LoopHandle,
    installed: BTreeMap<IpNet, IpAddr>,
    refused: Vec<RefusedRoute>,
    /// Remotes whose refusal gauges are exported.
    published: BTreeSet<String>,
    /// The node's own networks as last read, and when.
    host_networks: Option<(Instant, Vec<IpNet>)>,
}

/// How long the node's own networks, once read, stand for a sync. Reading
/// them runs `ip` three times (a fork of the agent each), and while a mesh
/// of hundreds of remotes connects, syncs follow each other back to back.
const HOST_NETWORKS_TTL: Duration = Duration::from_secs(2);

impl Routes {
    pub(crate) fn new(
        netns: Option<PathBuf>,
        metrics: Arc<AgentMetrics>,
        control: LoopHandle,
    ) -> Self {
        Self {
            netns,
            metrics,
            control,
            installed: BTreeMap::new(),
            refused: Vec::new(),
            published: BTreeSet::new(),
            host_networks: None,
        }
    }

    /// Serves requests until `shutdown` or until every [`RouteHandle`] is
    /// dropped (the loop stopped). Blocking: run it with `spawn_blocking`.
    pub(crate) fn run(mut self, requests: Receiver<RouteRequest>, shutdown: CancellationToken) {
        let mut current: Option<RouteRequest> = None;
        let mut retry = false;
        while !shutdown.is_cancelled() {
            match requests.recv_timeout(WAKE_INTERVAL) {
                Ok(request) => current = Some(request),
                Err(RecvTimeoutError::Timeout) if retry => {}
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while let Ok(newer) = requests.try_recv() {
                current = Some(newer);
            }
            if let Some(request) = &current {
                retry = !self.sync(request);
            }
        }
    }

    /// Brings the routes to the plan; false if something must be retried.
    fn sync(&mut self, request: &RouteRequest) -> bool {
        let netns = self.netns.clone();
        let netns = netns.as_deref();
        let cached = self
            .host_networks
            .take()
            .filter(|(at, _)| at.elapsed() < HOST_NETWORKS_TTL);
        let read = match cached {
            Some(c) => Ok(c),
            None => plumbing::host_networks(netns).map(|n| (Instant::now(), n)),
        };
        let host_networks = match read {
            Ok((at, n)) => {
                self.host_networks = Some((at, n.clone()));
                n
            }
            Err(e) => {
                // Without them no remote claim can be checked: route nothing
                // new from remotes until they can be read.
                warn!(error = %e, "cannot read the node's own networks; retrying");
                self.metrics.count_error("routes");
                return false;
            }
        };
        let plan = route_plan::plan(&RouteInputs {
            local_cluster: &request.local_cluster,
            local_node: &request.local_node,
            own_pod_cidrs: &request.own_pod_cidrs,
            local_pools: &request.local_pools,
            host_networks: &host_networks,
            nodes: &request.nodes,
            remote_pools: &request.remote_pools,
            installed: &self.installed,
        });
        for r in &plan.refused {
            if !self.refused.contains(r) {
                warn!(
                    remote = r.cluster,
                    node = r.node,
                    cidr = %r.cidr,
                    reason = %r.reason,
                    "refusing to route a remote node's pod CIDR"
                );
            }
        }
        if plan.refused != self.refused {
            self.refused = plan.refused;
            self.control
                .blocking_send(Input::RoutesRefused(self.refused.clone()));
        }
        self.publish_refused(request.remote_pools.keys());
        let mut done = true;
        for (cidr, via) in &plan.routes {
            if self.installed.get(cidr) == Some(via) {
                continue;
            }
            match plumbing::replace_route(netns, *cidr, *via) {
                Ok(()) => {
                    self.installed.insert(*cidr, *via);
                }
                Err(e) => {
                    warn!(%cidr, %via, error = %e, "cannot route a remote pod CIDR");
                    self.metrics.count_error("routes");
                    done = false;
                }
            }
        }
        let stale: Vec<IpNet> = self
            .installed
            .keys()
            .filter(|c| !plan.routes.contains_key(c))
            .copied()
            .collect();
        for cidr in stale {
            if plumbing::delete_route(netns, cidr).is_ok() {
                self.installed.remove(&cidr);
            }
        }
        done
    }

    /// The refused-routes gauge: current refusals by remote and reason; the
    /// gauges of remotes no longer known go.
    fn publish_refused<'a>(&mut self, remotes: impl Iterator<Item = &'a String>) {
        let remotes: BTreeSet<String> = remotes.cloned().collect();
        let label = |cluster: &str, reason: RouteRefusal| RemoteReasonLabel {
            cluster: cluster.to_string(),
            reason: reason.as_str().to_string(),
        };
        for gone in self.published.difference(&remotes) {
            for reason in RouteRefusal::ALL {
                self.metrics
                    .remote_refused_routes
                    .remove(&label(gone, reason));
            }
        }
        let mut counts: BTreeMap<(&str, RouteRefusal), i64> = BTreeMap::new();
        for remote in &remotes {
            for reason in RouteRefusal::ALL {
                counts.insert((remote.as_str(), reason), 0);
            }
        }
        for r in &self.refused {
            *counts.entry((r.cluster.as_str(), r.reason)).or_default() += 1;
        }
        for ((cluster, reason), n) in counts {
            self.metrics
                .remote_refused_routes
                .get_or_create(&label(cluster, reason))
                .set(n);
        }
        self.published = remotes;
    }
}
