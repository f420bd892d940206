//! The agent's control loop over the kernel's real maps, for benchmarks
//! (`make bench BENCH=policy`): everything the loop does on a policy change
//! (compile the rules of every endpoint, group equal ones, resolve their
//! entries for every identity, write the differences into the pinned BPF
//! maps) runs exactly as in the agent. Only attaching programs to veths is
//! left out: a thousand endpoints are written into the endpoints map at
//! made-up interface indexes instead.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use bpf::{
    BackendKey, BackendValue, CtKey, CtValue, Datapath, DatapathConfig, DatapathError,
    EndpointAttach, EndpointDetach, EndpointInfo, EndpointKey, IpCacheKey, IpCacheValue, PolicyKey,
    PolicyValue, ServiceKey, ServiceValue,
};
use kvstore::{
    ClusterName, Event, NumericIdentity, StoreValue,
    values::{IdentityEntry, PolicyDocument},
};
use tokio::sync::oneshot;

use crate::{
    control_loop::{ControlLoop, Input, LoopConfig, StoreKind},
    datapath_maps::{DatapathMaps, MapOps},
    datapath_sync::DatapathSync,
    endpoint::{self, Endpoint, EndpointId},
    metrics::AgentMetrics,
    routes,
    tables::SourceId,
};

/// The real maps; attaching writes the endpoints map only.
struct MapsOnly {
    dp: Datapath,
    next_ifindex: u32,
}

impl DatapathMaps for MapsOnly {
    fn ipcache(&self) -> &dyn MapOps<IpCacheKey, IpCacheValue> {
        self.dp.ipcache()
    }
    fn policy(&self) -> &dyn MapOps<PolicyKey, PolicyValue> {
        self.dp.policy()
    }
    fn endpoints(&self) -> &dyn MapOps<EndpointKey, EndpointInfo> {
        self.dp.endpoints()
    }
    fn services(&self) -> &dyn MapOps<ServiceKey, ServiceValue> {
        self.dp.services()
    }
    fn backends(&self) -> &dyn MapOps<BackendKey, BackendValue> {
        self.dp.backends()
    }
    fn conntrack(&self) -> &dyn MapOps<CtKey, CtValue> {
        self.dp.conntrack()
    }
    fn capacities(&self) -> Vec<(&'static str, u32)> {
        self.dp.capacities().to_vec()
    }
    fn attach_endpoint(&mut self, endpoint: &EndpointAttach) -> Result<u32, DatapathError> {
        let ifindex = self.next_ifindex;
        self.next_ifindex += 1;
        self.dp
            .endpoints()
            .upsert(&EndpointKey { ifindex }, &endpoint.info())?;
        Ok(ifindex)
    }
    fn detach_endpoint(&mut self, _: &EndpointDetach) -> Result<(), DatapathError> {
        Ok(())
    }
}

/// A loop with `endpoints` local endpoints in `apps` applications (each
/// with its own ingress policy), `identities` identities of a remote
/// cluster c2, and one clusterwide rule that admits all of c2 to every
/// endpoint on one port.
pub struct PolicyRecompute {
    control: ControlLoop,
    apps: usize,
}

/// What one policy change cost.
#[derive(Debug, Clone, Copy)]
pub struct Recompute {
    /// From the change's arrival to the last map write.
    pub elapsed: Duration,
    /// Entries in the policy map afterwards.
    pub entries: usize,
    /// Map entries the change inserted or replaced.
    pub upserts: usize,
    /// Map entries the change deleted.
    pub deletes: usize,
}

const NAMESPACE: &str = "bench";

/// Every kind of `source` says its initial list is complete.
fn synced(source: SourceId, kinds: &[StoreKind]) -> Vec<Input> {
    kinds
        .iter()
        .map(|kind| Input::synced(source, *kind))
        .collect()
}

/// The clusterwide rule: c2's identities (all of them) on `port`.
fn admit_c2(port: u16) -> (String, PolicyDocument) {
    let doc = PolicyDocument::parse(&format!(
        "kind: CiliumClusterwideNetworkPolicy\nmetadata: {{name: admit-c2}}\nspec:\n  endpointSelector: {{}}\n  ingress:\n  - fromEndpoints: [{{matchLabels: {{io.cilium.k8s.policy.cluster: c2}}}}]\n    toPorts: [{{ports: [{{port: \"{port}\", protocol: TCP}}]}}]\n"
    ))
    .expect("valid policy");
    (doc.key(), doc)
}

impl PolicyRecompute {
    /// Opens the datapath pinned in `bpffs_dir` and builds the scene.
    pub fn new(
        bpffs_dir: &Path,
        endpoints: usize,
        apps: usize,
        identities: usize,
    ) -> anyhow::Result<Self> {
        let dp = Datapath::open(DatapathConfig {
            bpffs_dir: bpffs_dir.to_owned(),
            policy_max_entries: 1 << 21,
            endpoints_max_entries: 8192,
            ..DatapathConfig::default()
        })?;
        let maps = MapsOnly {
            dp,
            next_ifindex: 100_000,
        };
        let cluster = ClusterName::new("c1")?;
        let (routes, _requests) = routes::channel();
        let (mut control, _handle) = ControlLoop::new(
            LoopConfig {
                cluster: cluster.clone(),
                cluster_id: 1,
                node_name: "n1".parse()?,
                node_ip: "192.168.1.1".parse()?,
                sync_timeout: Duration::from_secs(3600),
                pod_cidr_pools: vec!["10.1.0.0/16".parse()?],
            },
            DatapathSync::new(Box::new(maps), None)?,
            routes,
            Arc::new(AgentMetrics::new()),
        );
        control.set_pod_cidrs(vec!["10.1.0.0/16".parse()?]);
        let c2 = SourceId(2);
        let c2_name = ClusterName::new("c2")?;
        let mut inputs = vec![Input::RegisterSource {
            id: c2,
            name: "c2".into(),
            cluster_id: 2,
            kinds: StoreKind::REMOTE.to_vec(),
            pod_cidr_pools: vec!["10.2.0.0/16".parse()?],
        }];
        for i in 0..identities {
            let id = NumericIdentity::new(2 << 16 | (256 + i as u32));
            let labels = endpoint::security_labels(
                &BTreeMap::from([("app".to_string(), format!("remote-{i}"))]),
                NAMESPACE,
                &c2_name,
            );
            inputs.push(Input::Identity(
                c2,
                Event::Upsert {
                    key: id.get().to_string(),
                    value: IdentityEntry { id, labels },
                },
            ));
        }
        for app in 0..apps {
            let doc = PolicyDocument::parse(&format!(
                "kind: CiliumNetworkPolicy\nmetadata: {{name: app-{app}, namespace: {NAMESPACE}}}\nspec:\n  endpointSelector: {{matchLabels: {{app: app-{app}}}}}\n  ingress:\n  - fromEndpoints: [{{matchLabels: {{app: app-{app}}}}}]\n    toPorts: [{{ports: [{{port: \"{}\", protocol: TCP}}]}}]\n",
                9000 + app
            ))?;
            inputs.push(Input::Policy(Event::Upsert {
                key: doc.key(),
                value: doc,
            }));
        }
        let (key, doc) = admit_c2(8080);
        inputs.push(Input::Policy(Event::Upsert { key, value: doc }));
        inputs.extend(synced(SourceId::LOCAL_CLUSTER, &StoreKind::LOCAL));
        inputs.extend(synced(c2, &StoreKind::REMOTE));
        control.step_now(inputs);
        for i in 0..endpoints {
            let app = i % apps.max(1);
            let id = EndpointId::new(i as u32 + 1);
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 0)) + 10 + i as u32);
            let endpoint = Endpoint {
                id,
                name: format!("pod-{i}"),
                namespace: NAMESPACE.into(),
                netns: "/nonexistent".into(),
                ifname: "eth0".into(),
                host_ifname: endpoint::host_ifname(id),
                ip,
                ipv6: None,
                labels: BTreeMap::from([("app".to_string(), format!("app-{app}"))]),
                identity: 1 << 16 | (256 + app as u32),
                ifindex: None,
                pod: None,
                ports: Vec::new(),
            };
            let (tx, mut rx) = oneshot::channel();
            control.step_now([Input::Attach(endpoint, tx)]);
            rx.try_recv()
                .map_err(|e| anyhow::anyhow!("attach: {e}"))?
                .map_err(|e| anyhow::anyhow!("attach: {e}"))?;
        }
        Ok(Self { control, apps })
    }

    /// Number of distinct policies (endpoints with equal rules share one).
    pub fn policies(&self) -> usize {
        self.control.policy_count()
    }

    /// The clusterwide rule moves to `port`: every policy's entries for
    /// every c2 identity change. Returns the time until they are written.
    pub fn change(&mut self, port: u16) -> anyhow::Result<Recompute> {
        let (key, doc) = admit_c2(port);
        let before = self.control.written_total();
        let started = Instant::now();
        self.control
            .step_now([Input::Policy(Event::Upsert { key, value: doc })]);
        let elapsed = started.elapsed();
        let after = self.control.written_total();
        Ok(Recompute {
            elapsed,
            entries: self.control.policy_entries(),
            upserts: after.0 - before.0,
            deletes: after.1 - before.1,
        })
    }

    /// Applications (distinct rule sets) in the scene.
    pub fn apps(&self) -> usize {
        self.apps
    }
}
