//! Kubernetes mode benchmarks (`make bench BENCH=k8s`); prints one JSON
//! object per line on stdout, progress on stderr.
//!
//! The setup is the one of `tests/kubernetes.rs`: a real etcd for the
//! mesh, a real kube-apiserver v1.20.2 with its controller manager (its own
//! etcd), the policy CRDs installed, 100 Node objects `n1`…`n100` (so the
//! controller manager's pod GC leaves Pods on them alone), three nodes
//! `n1`–`n3` on a fabric bridge, each with a real `clustermesh-agent
//! --k8s-kubeconfig` and a Pod `target-<k>` (`app: target`) added through
//! the real CNI binary with the kubelet's `K8S_POD_*` arguments; `n1` also
//! has a Pod `client` (`app: client`). The effect of an object is read from
//! each node's pinned BPF maps (the kernel's copy, what packets see),
//! polled every 0.5 ms from this process; the API socket's
//! `/v1/maps/{policy,services}` shows the same rows.
//!
//! * `k8s_policy_to_map_p50_ms` / `k8s_policy_to_map_p99_ms`: 100 rounds,
//!   one at a time; each creates a CiliumNetworkPolicy through the API
//!   (`Api::create`) selecting `app: target` and allowing `app: client` on
//!   a port of its own (20000 + round); the clock starts just before the
//!   create call and stops when the entry `(target endpoint, ingress,
//!   client identity, tcp/port)` is in the policy map of every node (the
//!   slowest node counts). Earlier rounds' policies stay: round `n` is
//!   resolved with `n` policies on the endpoint. Baseline
//!   `raw_watch_policy_p50_ms` / `raw_watch_policy_p99_ms`: a bare
//!   `kube::runtime::watcher` on CiliumNetworkPolicies in this process,
//!   the same create calls, the same clock start, stopped when the watcher
//!   yields the object. The difference is the agent's work (its watch,
//!   decoding, the control loop's policy resolution and map writes).
//! * `k8s_service_to_map_p50_ms` / `k8s_service_to_map_p99_ms`: 100 rounds;
//!   each writes an Endpoints object (two ready addresses, the `target`
//!   Pods of `n1` and `n2`, port 8080; untimed) and then creates its
//!   selector-less Service (port 80 → 8080); the clock starts just before
//!   the Service's create call and stops when the frontend `clusterIP:80`
//!   has its master entry with 2 slots and both backend slots in the
//!   services map of every node. Baseline `raw_watch_service_p50_ms` /
//!   `raw_watch_service_p99_ms`: a bare watcher on Services, the same
//!   clock. Selector-less, so that the controller manager's endpoints
//!   controller is not part of the figure.
//! * `k8s_agent_rss_mb_10k_pods`: VmRSS of `n1`'s agent after 10,000 Pods
//!   (spread over the 100 node names: 100 on `n1`, which its agent
//!   watches) and 100 selector-less Services with 100 ready addresses each
//!   (10,000 Endpoints addresses, every one a backend in the BPF maps) were
//!   created (32 requests in flight) and the agent settled: it counts its
//!   Pods, its services map holds every frontend with its 100 backends, and
//!   VmRSS moved less than 1 % over one second. Baseline
//!   `agent_rss_mb_0_pods`: the same agent, settled the same way, just
//!   before those objects were created (after the latency rounds: it holds
//!   the 4 bench Pods, 101 policies and 101 Services already).
//!
//! Needs root (namespaces, bpffs) and the kube binaries (`make
//! kube-server`); without either it says why on stderr and prints nothing.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    collections::HashMap,
    fmt::Debug,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use bench_report::Better;
use bpf::{
    L4Match, POLICY_MAP, PolicyKey, PolicyMap, Protocol, SERVICES_MAP, ServiceKey, ServiceMap,
};
use etcd_harness::TestEtcd;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s::testing::KubeServer;
use k8s_openapi::api::core::v1::{Endpoints, Node as KubeNode, Pod, Service};
use kube::{
    Api, Resource, ResourceExt as _,
    api::{DynamicObject, PostParams},
    runtime::{WatchStreamExt as _, watcher},
};
use kvstore::values::PolicyKind;
use serde::de::DeserializeOwned;
use support::{Fabric, Node, NodeSpec, wait_for};
use tokio::runtime::Runtime;

const BENCH: bench_report::Bench = bench_report::Bench::new("k8s");
const NS: &str = "default";

/// Nodes with an agent (`n1`…`n3`).
const AGENT_NODES: usize = 3;
/// Node objects (`n1`…`n100`); the bulk Pods are spread over them.
const NODE_NAMES: usize = 100;

const POLICY_ROUNDS: u16 = 100;
const FIRST_PORT: u16 = 20_000;
const SERVICE_ROUNDS: usize = 100;

const BULK_PODS: usize = 10_000;
const BULK_SERVICES: usize = 100;
const ADDRESSES_PER_SERVICE: usize = 100;
const IN_FLIGHT: usize = 32;

/// How often the maps are read while a round waits.
const POLL: Duration = Duration::from_micros(500);
/// How long one round may take before the bench fails.
const ROUND_DEADLINE: Duration = Duration::from_secs(30);
/// How long the agent may take to settle after the bulk objects.
const SETTLE_DEADLINE: Duration = Duration::from_secs(120);

fn main() -> Result<()> {
    if !netns::root_or_skip("the k8s bench") {
        return Ok(());
    }
    if let Err(why) = k8s::testing::available() {
        eprintln!("skipping the k8s bench: {why}");
        return Ok(());
    }
    let started = Instant::now();
    let rt = Runtime::new()?;
    eprintln!("k8s bench: etcd, kube-apiserver v1.20.2, {AGENT_NODES} agents");
    let etcd = rt.block_on(TestEtcd::start())?;
    let kube = rt.block_on(KubeServer::start())?;
    let client = rt.block_on(kube.client())?;
    rt.block_on(k8s::crd::install(&client, Duration::from_secs(30)))?;
    let node_names: Vec<String> = (1..=NODE_NAMES).map(|k| format!("n{k}")).collect();
    rt.block_on(create_all(
        Api::<KubeNode>::all(client.clone()),
        node_names.iter().map(|n| kube_node(n)).collect(),
    ))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let mut bench_pods = vec![pod("client", "n1", "client")];
    bench_pods
        .extend((1..=AGENT_NODES).map(|k| pod(&format!("target-{k}"), &format!("n{k}"), "target")));
    rt.block_on(create_all(pods.clone(), bench_pods))?;

    let mut fabric = Fabric::new()?;
    let mut nodes = Vec::new();
    for k in 1..=AGENT_NODES {
        let spec = NodeSpec {
            cluster: "c1".into(),
            cluster_id: 1,
            name: format!("n{k}"),
            ip: Ipv4Addr::new(192, 168, 79, k as u8),
            pod_cidr: format!("10.13.{k}.0/24"),
            etcd: etcd.endpoint(),
            clustermesh_dir: None,
            kubeconfig: Some(kube.kubeconfig().to_path_buf()),
        };
        let mut node = Node::new(spec, &mut fabric)?;
        node.start_agent()?;
        nodes.push(node);
    }
    let client_pod = nodes[0].add_k8s_pod(NS, "client")?;
    let targets = nodes
        .iter()
        .enumerate()
        .map(|(k, n)| n.add_k8s_pod(NS, &format!("target-{}", k + 1)))
        .collect::<Result<Vec<_>>>()?;
    for t in &targets {
        ensure!(
            t.endpoint.labels.get("app").map(String::as_str) == Some("target"),
            "{} has its Pod's labels: {:?}",
            t.name,
            t.endpoint.labels
        );
    }
    eprintln!(
        "  ready after {:.1} s; client identity {}",
        started.elapsed().as_secs_f64(),
        client_pod.endpoint.identity
    );

    eprintln!(
        "policy: {POLICY_ROUNDS} CiliumNetworkPolicies, each until in every node's policy map"
    );
    let policy = policy_rounds(&rt, &client, &nodes, &targets, client_pod.endpoint.identity)?;
    policy.emit("k8s_policy_to_map", "raw_watch_policy");

    eprintln!("services: {SERVICE_ROUNDS} Services, each until in every node's services map");
    let backends = [IpAddr::V4(targets[0].ip), IpAddr::V4(targets[1].ip)];
    let service = service_rounds(&rt, &client, &nodes, &backends)?;
    service.emit("k8s_service_to_map", "raw_watch_service");

    eprintln!(
        "memory: {BULK_PODS} Pods over {NODE_NAMES} nodes, {BULK_SERVICES} Services x {ADDRESSES_PER_SERVICE} addresses"
    );
    let (before, after) = rss_with_bulk(&rt, &client, &nodes[0])?;
    BENCH.emit(
        "k8s_agent_rss_mb_10k_pods",
        after,
        "MB",
        Better::Lower,
        Some(("agent_rss_mb_0_pods", before)),
    );
    eprintln!(
        "k8s bench: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    drop(targets);
    drop(client_pod);
    drop(nodes);
    drop(fabric);
    drop(kube);
    drop(etcd);
    Ok(())
}

/// A Pod object on `node` (nothing runs it: the CNI call is the container
/// runtime's part).
fn pod(name: &str, node: &str, app: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "example.invalid/app:1"}]},
    }))
    .expect("a valid Pod")
}

fn kube_node(name: &str) -> KubeNode {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
    }))
    .expect("a valid Node")
}

/// A selector-less Service, port 80 → 8080.
fn service(name: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    }))
    .expect("a valid Service")
}

/// The Endpoints of a selector-less Service: `addresses` ready on 8080.
fn endpoints(name: &str, addresses: impl IntoIterator<Item = IpAddr>) -> Endpoints {
    let addresses: Vec<_> = addresses
        .into_iter()
        .map(|ip| serde_json::json!({"ip": ip.to_string()}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": name, "namespace": NS},
        "subsets": [{"addresses": addresses, "ports": [{"port": 8080, "protocol": "TCP"}]}],
    }))
    .expect("valid Endpoints")
}

/// A CiliumNetworkPolicy: `app: client` may reach `app: target` on `port`.
fn allow_client(name: &str, port: u16) -> DynamicObject {
    let resource = k8s::crd::api_resource(PolicyKind::CiliumNetworkPolicy);
    let mut obj = DynamicObject::new(name, &resource).within(NS);
    obj.data = serde_json::json!({"spec": {
        "endpointSelector": {"matchLabels": {"app": "target"}},
        "ingress": [{
            "fromEndpoints": [{"matchLabels": {"app": "client"}}],
            "toPorts": [{"ports": [{"port": port.to_string(), "protocol": "TCP"}]}],
        }],
    }});
    obj
}

/// Creates `objects` through `api`, [`IN_FLIGHT`] at a time, with progress
/// on stderr for long lists.
async fn create_all<K>(api: Api<K>, objects: Vec<K>) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + Debug,
    K::DynamicType: Default,
{
    let total = objects.len();
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let started = Instant::now();
    let mut done = 0;
    let mut creates = futures::stream::iter(objects.into_iter().map(|obj| {
        let api = api.clone();
        async move {
            api.create(&PostParams::default(), &obj)
                .await
                .with_context(|| {
                    format!(
                        "create {} {}",
                        K::kind(&K::DynamicType::default()),
                        obj.name_any()
                    )
                })
        }
    }))
    .buffer_unordered(IN_FLIGHT);
    while creates.try_next().await?.is_some() {
        done += 1;
        if total >= 1000 && done % 2000 == 0 {
            eprintln!(
                "  {done}/{total} {kind} objects ({:.0}/s)",
                done as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

/// A bare `kube::runtime::watcher` in this process: when each object
/// (by name) was first yielded after the initial list.
struct RawWatch {
    arrivals: Arc<Mutex<HashMap<String, Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RawWatch {
    fn start<K>(rt: &Runtime, api: Api<K>) -> Result<Self>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    {
        let arrivals = Arc::new(Mutex::new(HashMap::new()));
        let (ready, listed) = tokio::sync::oneshot::channel();
        let seen = arrivals.clone();
        let task = rt.spawn(async move {
            let mut ready = Some(ready);
            let mut events =
                std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
            let mut errors = 0u64;
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                    }
                    Ok(watcher::Event::Apply(obj)) => {
                        let at = Instant::now();
                        seen.lock()
                            .expect("arrivals")
                            .entry(obj.name_any())
                            .or_insert(at);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        errors += 1;
                        if errors == 1 {
                            eprintln!("  raw watcher: {e} (retrying with backoff)");
                        }
                    }
                }
            }
        });
        rt.block_on(async { tokio::time::timeout(ROUND_DEADLINE, listed).await })
            .context("the raw watcher's initial list")??;
        Ok(Self { arrivals, task })
    }

    /// When the watcher yielded `name`, waiting for it up to the round's
    /// deadline.
    fn arrival(&self, name: &str, start: Instant) -> Result<Duration> {
        loop {
            if let Some(at) = self.arrivals.lock().expect("arrivals").get(name) {
                return Ok(at.saturating_duration_since(start));
            }
            if start.elapsed() > ROUND_DEADLINE {
                bail!("the raw watcher never saw {name}");
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for RawWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `done(node)` for every node until all are true: the time from
/// `start` until the last became true.
fn until_every_node(
    what: &str,
    start: Instant,
    nodes: usize,
    mut done: impl FnMut(usize) -> bool,
) -> Result<Duration> {
    let mut pending: Vec<usize> = (0..nodes).collect();
    loop {
        pending.retain(|&k| !done(k));
        let elapsed = start.elapsed();
        if pending.is_empty() {
            return Ok(elapsed);
        }
        if elapsed > ROUND_DEADLINE {
            bail!("{what}: not in the maps of nodes {pending:?} after {elapsed:?}");
        }
        std::thread::sleep(POLL);
    }
}

/// Latencies of the rounds of one phase, through the agents and through
/// the bare watcher.
struct Rounds {
    agent: Vec<f64>,
    raw: Vec<f64>,
}

impl Rounds {
    fn new() -> Self {
        Self {
            agent: Vec::new(),
            raw: Vec::new(),
        }
    }

    fn push(&mut self, round: usize, agent: Duration, raw: Duration) {
        self.agent.push(agent.as_secs_f64() * 1000.0);
        self.raw.push(raw.as_secs_f64() * 1000.0);
        if round % 20 == 19 {
            eprintln!(
                "  round {}: agents {:.1} ms, raw watch {:.1} ms",
                round + 1,
                self.agent[round],
                self.raw[round]
            );
        }
    }

    fn emit(&self, metric: &str, baseline: &str) {
        for (p, name) in [(0.50, "p50"), (0.99, "p99")] {
            BENCH.emit(
                &format!("{metric}_{name}_ms"),
                percentile(&self.agent, p),
                "ms",
                Better::Lower,
                Some((&format!("{baseline}_{name}_ms"), percentile(&self.raw, p))),
            );
        }
        eprintln!(
            "  max: agents {:.1} ms, raw watch {:.1} ms",
            percentile(&self.agent, 1.0),
            percentile(&self.raw, 1.0)
        );
    }
}

/// Nearest-rank percentile.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn policy_rounds(
    rt: &Runtime,
    client: &kube::Client,
    nodes: &[Node],
    targets: &[support::Pod],
    client_identity: u32,
) -> Result<Rounds> {
    let maps = nodes
        .iter()
        .map(|n| PolicyMap::open_pinned(&n.bpffs, POLICY_MAP))
        .collect::<Result<Vec<_>, _>>()?;
    let endpoint_maps = nodes
        .iter()
        .map(|n| bpf::EndpointMap::open_pinned(&n.bpffs, bpf::ENDPOINTS_MAP))
        .collect::<Result<Vec<_>, _>>()?;
    // The policy the target endpoint of node k follows (its entries are
    // keyed by that policy's id).
    let policy_of = |k: usize, endpoint_id: u32| -> Option<u32> {
        endpoint_maps[k]
            .dump()
            .ok()?
            .into_values()
            .find(|i| i.endpoint_id == endpoint_id)
            .map(|i| i.policy().policy_id)
    };
    let resource = k8s::crd::api_resource(PolicyKind::CiliumNetworkPolicy);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &resource);
    let raw = RawWatch::start(rt, api.clone())?;
    let mut rounds = Rounds::new();
    // Round 0 is a warm-up (the first policy turns enforcement on).
    for round in 0..=usize::from(POLICY_ROUNDS) {
        let port = FIRST_PORT + round as u16;
        let name = format!("bench-allow-{port}");
        let key = |k: usize| {
            policy_of(k, targets[k].endpoint.id.get()).map(|policy_id| {
                PolicyKey::ingress(
                    policy_id,
                    client_identity,
                    L4Match::Port(Protocol::Tcp, port),
                )
            })
        };
        let policy = allow_client(&name, port);
        let start = Instant::now();
        rt.block_on(api.create(&PostParams::default(), &policy))?;
        let agent = until_every_node(&name, start, maps.len(), |k| {
            key(k).is_some_and(|key| maps[k].get(&key).ok().flatten().is_some())
        })?;
        let raw = raw.arrival(&name, start)?;
        if round > 0 {
            rounds.push(round - 1, agent, raw);
        }
    }
    // The agent's API shows the same rows.
    let last = FIRST_PORT + POLICY_ROUNDS;
    let rows: Vec<agent::MapEntryView> = nodes[0].api().get("/v1/maps/policy")?;
    ensure!(
        rows.iter()
            .any(|r| r.key_fields.get("port") == Some(&last.into())),
        "/v1/maps/policy of n1 has port {last}"
    );
    Ok(rounds)
}

fn service_rounds(
    rt: &Runtime,
    client: &kube::Client,
    nodes: &[Node],
    backends: &[IpAddr],
) -> Result<Rounds> {
    let maps = nodes
        .iter()
        .map(|n| ServiceMap::open_pinned(&n.bpffs, SERVICES_MAP))
        .collect::<Result<Vec<_>, _>>()?;
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let endpoint_objects: Api<Endpoints> = Api::namespaced(client.clone(), NS);
    let raw = RawWatch::start(rt, services.clone())?;
    let mut rounds = Rounds::new();
    for round in 0..=SERVICE_ROUNDS {
        let name = format!("bench-svc-{round}");
        rt.block_on(endpoint_objects.create(
            &PostParams::default(),
            &endpoints(&name, backends.iter().copied()),
        ))?;
        let start = Instant::now();
        let svc = rt.block_on(services.create(&PostParams::default(), &service(&name)))?;
        let vip: IpAddr = svc
            .spec
            .and_then(|s| s.cluster_ip)
            .context("a cluster IP")?
            .parse()?;
        let frontend = SocketAddr::new(vip, 80);
        let agent = until_every_node(&name, start, maps.len(), |k| {
            has_backends(&maps[k], frontend, backends.len())
        })?;
        let raw = raw.arrival(&name, start)?;
        if round > 0 {
            rounds.push(round - 1, agent, raw);
        }
    }
    Ok(rounds)
}

/// Whether `frontend` (TCP) has `count` backend slots, each filled.
fn has_backends(map: &ServiceMap, frontend: SocketAddr, count: usize) -> bool {
    let slot = |s: u16| {
        map.get(&ServiceKey::new(frontend, Protocol::Tcp, s))
            .ok()
            .flatten()
    };
    slot(0).is_some_and(|m| usize::from(m.count) == count)
        && (1..=count as u16).all(|s| slot(s).is_some_and(|v| v.backend_id != 0))
}

/// VmRSS of a process, MB.
fn rss_mb(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("VmRSS in /proc/<pid>/status")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb / 1024.0)
}

/// VmRSS once it moved less than 1 % over the last second (sampled every
/// 100 ms).
fn settled_rss_mb(pid: u32) -> Result<f64> {
    let deadline = Instant::now() + SETTLE_DEADLINE;
    let mut samples: Vec<f64> = Vec::new();
    loop {
        samples.push(rss_mb(pid)?);
        if samples.len() > 10 {
            let window = &samples[samples.len() - 11..];
            let (lo, hi) = window
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
            if hi - lo < 0.01 * hi {
                return Ok(*window.last().expect("samples"));
            }
        }
        if Instant::now() > deadline {
            bail!("the agent's RSS did not settle: {samples:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `n1`'s agent RSS before and after the bulk objects, MB.
fn rss_with_bulk(rt: &Runtime, client: &kube::Client, n1: &Node) -> Result<(f64, f64)> {
    let pid = n1.agent_pid().context("n1's agent runs")?;
    let before = settled_rss_mb(pid)?;
    eprintln!("  before: {before:.1} MB");
    let local_before = n1.status().kubernetes.context("Kubernetes mode")?.resources["pods"].objects;

    let started = Instant::now();
    let pods = (0..BULK_PODS)
        .map(|i| {
            pod(
                &format!("bulk-{i}"),
                &format!("n{}", i % NODE_NAMES + 1),
                &format!("bulk-{}", i % BULK_SERVICES),
            )
        })
        .collect();
    rt.block_on(create_all(Api::namespaced(client.clone(), NS), pods))?;
    // Service s's addresses: the notional IPs of its Pods.
    let address = |i: usize| IpAddr::V4(Ipv4Addr::from(0x0ac8_0000 + i as u32));
    let endpoints_objects = (0..BULK_SERVICES)
        .map(|s| {
            endpoints(
                &format!("bulk-{s}"),
                (0..ADDRESSES_PER_SERVICE).map(|a| address(a * BULK_SERVICES + s)),
            )
        })
        .collect();
    rt.block_on(create_all(
        Api::namespaced(client.clone(), NS),
        endpoints_objects,
    ))?;
    let services: Vec<Service> = rt.block_on(async {
        let api: Api<Service> = Api::namespaced(client.clone(), NS);
        futures::stream::iter((0..BULK_SERVICES).map(|s| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &service(&format!("bulk-{s}")))
                    .await
            }
        }))
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await
    })?;
    eprintln!(
        "  created in {:.1} s; waiting for n1's agent to settle",
        started.elapsed().as_secs_f64()
    );

    let local = local_before + BULK_PODS / NODE_NAMES;
    wait_for("n1's agent to count its Pods", || {
        n1.status()
            .kubernetes
            .is_some_and(|k| k.resources.get("pods").is_some_and(|r| r.objects == local))
    });
    let map = ServiceMap::open_pinned(&n1.bpffs, SERVICES_MAP)?;
    let frontends: Vec<SocketAddr> = services
        .iter()
        .map(|s| {
            let ip: IpAddr = s
                .spec
                .as_ref()
                .and_then(|s| s.cluster_ip.as_deref())
                .context("a cluster IP")?
                .parse()?;
            Ok(SocketAddr::new(ip, 80))
        })
        .collect::<Result<_>>()?;
    wait_for(
        "every bulk Service with its backends in n1's services map",
        || {
            frontends
                .iter()
                .all(|f| has_backends(&map, *f, ADDRESSES_PER_SERVICE))
        },
    );
    eprintln!(
        "  in the maps {:.1} s after the first create",
        started.elapsed().as_secs_f64()
    );
    let after = settled_rss_mb(pid)?;
    eprintln!("  after: {after:.1} MB");
    Ok((before, after))
}
