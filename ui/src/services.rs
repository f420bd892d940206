//! The global services panel: each cluster's agent is asked how it
//! balances every service (`GET /v1/services` on its API socket), and the
//! answers are merged per service: the backends each cluster offers, and
//! for each cluster which clusters serve it now and why.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use agent::{ApiClient, ServiceView};
use tokio_util::sync::CancellationToken;

use crate::hub::{ClusterBackends, GlobalService, Hub, ServiceChoice, ServiceSource, Services};

/// How long an agent may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// A cluster's agents, asked in order until one answers.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub cluster: String,
    /// Node name (for the panel) and API socket.
    pub sockets: Vec<(String, PathBuf)>,
}

/// Asks every cluster's agents every `interval` until `shutdown`.
pub async fn run(
    hub: Arc<Hub>,
    agents: Vec<AgentSpec>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    if agents.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let agents = agents.clone();
        let Ok(answers) = tokio::task::spawn_blocking(move || ask_all(&agents)).await else {
            continue;
        };
        hub.set_services(merge(&answers));
    }
}

/// What one cluster's agent said (or why none answered).
#[derive(Debug, Clone)]
pub struct Answer {
    pub cluster: String,
    pub node: String,
    pub services: Result<Vec<ServiceView>, String>,
}

fn ask_all(agents: &[AgentSpec]) -> Vec<Answer> {
    agents.iter().map(ask).collect()
}

fn ask(agent: &AgentSpec) -> Answer {
    let mut last = Answer {
        cluster: agent.cluster.clone(),
        node: String::new(),
        services: Err("no agent socket configured".into()),
    };
    for (node, socket) in &agent.sockets {
        let mut client = ApiClient::new(socket);
        client.set_timeout(ANSWER_TIMEOUT);
        last = Answer {
            cluster: agent.cluster.clone(),
            node: node.clone(),
            services: client
                .get::<Vec<ServiceView>>("/v1/services")
                .map_err(|e| e.to_string()),
        };
        if last.services.is_ok() {
            break;
        }
    }
    last
}

/// The panel's content from every cluster's answer: global services only
/// (a cluster's own local services are not the mesh's business).
pub fn merge(answers: &[Answer]) -> Services {
    // (name, frontend, protocol) -> (cluster -> backends, views)
    type Key = (String, String, String);
    type Entry = (BTreeMap<String, Vec<String>>, Vec<ServiceChoice>);
    let mut merged: BTreeMap<Key, Entry> = BTreeMap::new();
    for answer in answers {
        let Ok(services) = &answer.services else {
            continue;
        };
        for s in services
            .iter()
            .filter(|s| s.mode != "local-service" && !s.mode.is_empty())
        {
            let entry = merged
                .entry((s.name.clone(), s.frontend.clone(), s.protocol.clone()))
                .or_default();
            for c in &s.candidates {
                let list = entry.0.entry(c.cluster.clone()).or_default();
                if !list.contains(&c.address) {
                    list.push(c.address.clone());
                    list.sort();
                }
            }
            entry.1.push(ServiceChoice {
                cluster: answer.cluster.clone(),
                node: answer.node.clone(),
                active: s.active_clusters.clone(),
                mode: if s.active_clusters.is_empty() {
                    "none".into()
                } else {
                    s.mode.clone()
                },
                reason: s.reason.clone(),
            });
        }
    }
    Services {
        services: merged
            .into_iter()
            .map(
                |((name, frontend, protocol), (backends, views))| GlobalService {
                    name,
                    frontend,
                    protocol,
                    backends: backends
                        .into_iter()
                        .map(|(cluster, addresses)| ClusterBackends { cluster, addresses })
                        .collect(),
                    views,
                },
            )
            .collect(),
        sources: answers
            .iter()
            .map(|a| ServiceSource {
                cluster: a.cluster.clone(),
                node: a.node.clone(),
                ok: a.services.is_ok(),
                error: a.services.as_ref().err().cloned(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use agent::CandidateView;

    use super::*;

    fn view(mode: &str, active: &[&str], reason: &str, candidates: &[(&str, &str)]) -> ServiceView {
        ServiceView {
            name: "demo/echo".into(),
            frontend: "10.96.0.10:80".into(),
            protocol: "TCP".into(),
            backends: Vec::new(),
            active_clusters: active.iter().map(|s| s.to_string()).collect(),
            reason: reason.into(),
            mode: mode.into(),
            candidates: candidates
                .iter()
                .map(|(cluster, address)| CandidateView {
                    cluster: cluster.to_string(),
                    address: address.to_string(),
                    weight: 1,
                    active: true,
                })
                .collect(),
            skipped: Vec::new(),
        }
    }

    #[test]
    fn one_entry_per_service_with_every_clusters_choice() {
        let local = ServiceView {
            name: "kube/local".into(),
            ..view("local-service", &["c1"], "local service", &[])
        };
        let answers = vec![
            Answer {
                cluster: "c1".into(),
                node: "n1".into(),
                services: Ok(vec![
                    view(
                        "failover",
                        &["c1", "c2"],
                        "failover to remote (0 local < minHealthy 1)",
                        &[("c2", "10.2.0.5:80")],
                    ),
                    local,
                ]),
            },
            Answer {
                cluster: "c2".into(),
                node: "n1".into(),
                services: Ok(vec![view(
                    "local",
                    &["c2"],
                    "local only (1 local >= minHealthy 1)",
                    &[("c2", "10.2.0.5:80")],
                )]),
            },
            Answer {
                cluster: "c3".into(),
                node: "n2".into(),
                services: Err("no agent socket at /x (is clustermesh-agent running?)".into()),
            },
        ];
        let s = merge(&answers);
        assert_eq!(s.services.len(), 1);
        let svc = &s.services[0];
        assert_eq!(
            svc.backends,
            vec![ClusterBackends {
                cluster: "c2".into(),
                addresses: vec!["10.2.0.5:80".into()]
            }]
        );
        let modes: Vec<(&str, &str)> = svc
            .views
            .iter()
            .map(|v| (v.cluster.as_str(), v.mode.as_str()))
            .collect();
        assert_eq!(modes, [("c1", "failover"), ("c2", "local")]);
        assert!(!s.sources[2].ok);
        assert!(
            s.sources[2]
                .error
                .as_deref()
                .unwrap()
                .contains("clustermesh-agent")
        );
    }

    #[test]
    fn a_service_with_no_backend_anywhere_is_served_by_none() {
        let answers = vec![Answer {
            cluster: "c1".into(),
            node: "n1".into(),
            services: Ok(vec![view(
                "failover",
                &[],
                "failover to remote (0 local < minHealthy 1)",
                &[],
            )]),
        }];
        assert_eq!(merge(&answers).services[0].views[0].mode, "none");
    }
}
