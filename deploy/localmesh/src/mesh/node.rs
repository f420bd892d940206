//! A cluster's nodes: a network namespace each, plugged into the fabric,
//! running an agent; and what the agents report about themselves.

use std::time::{Duration, Instant};

use agent::{ApiClient, StatusView};
use anyhow::{Result, bail};

use super::{Mesh, STARTUP_TIMEOUT, plan};
use crate::{
    process::{self, refuse_running, spawn_daemon, wait_until},
    state::NodeInfo,
    topology,
};

/// How long a call to an agent's API may take.
const AGENT_API_TIMEOUT: Duration = Duration::from_secs(5);
/// How often [`Mesh::wait_ready`] asks the agents again.
const READY_POLL: Duration = Duration::from_millis(200);
/// The agents' log filter in the local mesh (`CLUSTERMESH_LOG`).
const AGENT_LOG_FILTER: &str = "info";

impl Mesh {
    /// Creates a node's namespace, plugs it into the fabric and starts its
    /// agent.
    pub(super) fn start_node(&mut self, cluster: &str, node: &str) -> Result<()> {
        let c = self.state.cluster(cluster)?;
        let n = self.state.node(cluster, node)?;
        topology::create_netns(&n.netns)?;
        topology::plug(
            &self.state.fabric_netns,
            Some(&n.netns),
            "fab0",
            &plan::fabric_port(&self.state, c.id, Some(node)),
            n.ip,
        )?;
        if let Some(v6) = n.ipv6 {
            topology::add_ipv6(&n.netns, "fab0", v6, plan::FABRIC_V6_PREFIX_LEN)?;
        }
        std::fs::create_dir_all(&n.clustermesh_dir)?;
        if c.kube.is_some() {
            let ip = n.ip;
            self.kube_register_node(cluster, node, ip)?;
        }
        self.start_agent(cluster, node)
    }

    /// Starts (or restarts) a node's agent; returns once its API answers.
    pub fn start_agent(&mut self, cluster: &str, node: &str) -> Result<()> {
        let c = self.state.cluster(cluster)?;
        let n = self.state.node(cluster, node)?;
        refuse_running(&format!("agent {node}"), cluster, n.agent.as_ref())?;
        if let Some(dir) = n.api_socket.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let agent = spawn_daemon(
            Some(&n.netns),
            &self.bin("clustermesh-agent")?,
            &plan::agent_args(c, n),
            &[(agent::env::LOG, AGENT_LOG_FILTER)],
            &self.log_path(cluster, &format!("agent-{node}")),
        )?;
        self.state.node_mut(cluster, node)?.agent = Some(agent.clone());
        self.state.save()?;
        let info = self.node(cluster, node)?.clone();
        wait_until(
            &format!("agent {cluster}/{node} API"),
            STARTUP_TIMEOUT,
            Some(&agent),
            || agent_status(&info).is_ok(),
        )
    }

    /// Kills a node's agent as a crash would. The datapath keeps working.
    pub fn kill_agent(&mut self, cluster: &str, node: &str) -> Result<()> {
        if let Some(p) = self.state.node_mut(cluster, node)?.agent.take() {
            process::kill(&p);
        }
        self.state.save()
    }

    pub fn node(&self, cluster: &str, node: &str) -> Result<&NodeInfo> {
        self.state.node(cluster, node)
    }

    /// The agent API of a node.
    pub fn agent_api(&self, cluster: &str, node: &str) -> Result<ApiClient> {
        Ok(ApiClient::new(&self.node(cluster, node)?.api_socket))
    }

    /// Status of every agent (or why it does not answer).
    pub fn agent_statuses(&self) -> Vec<(String, String, Result<StatusView, String>)> {
        self.state
            .clusters
            .iter()
            .flat_map(|c| {
                c.nodes
                    .iter()
                    .map(move |n| (c.name.clone(), n.name.clone(), agent_status(n)))
            })
            .collect()
    }

    /// Waits until every agent is synced and every configured remote is ready.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let missing = self.not_ready();
            if missing.is_empty() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "still waiting after {timeout:?} for: {}",
                    missing.join("; ")
                );
            }
            std::thread::sleep(READY_POLL);
        }
    }

    /// What is not ready yet, in words.
    pub fn not_ready(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for c in &self.state.clusters {
            if let Ok(Some(why)) = self.kvstoremesh_not_ready(&c.name) {
                missing.push(format!("{} kvstoremesh: {why}", c.name));
            }
            for n in &c.nodes {
                match agent_status(n) {
                    Err(e) => missing.push(format!("{}/{}: {e}", c.name, n.name)),
                    Ok(s) if !s.synced => {
                        missing.push(format!("{}/{}: not synced", c.name, n.name))
                    }
                    Ok(s) => {
                        for remote in &c.remotes {
                            match s.remotes.iter().find(|r| &r.name == remote) {
                                Some(r) if r.ready => {}
                                Some(r) => missing.push(format!(
                                    "{}/{} -> {remote}: {}",
                                    c.name,
                                    n.name,
                                    r.last_error.clone().unwrap_or_else(|| "not ready".into())
                                )),
                                None => missing.push(format!(
                                    "{}/{} -> {remote}: not configured yet",
                                    c.name, n.name
                                )),
                            }
                        }
                        // A disconnected remote the agent still has is not the
                        // configured state yet (`status --wait` after `disconnect`).
                        for r in s.remotes.iter().filter(|r| !c.remotes.contains(&r.name)) {
                            missing.push(format!(
                                "{}/{} -> {}: still connected after disconnect",
                                c.name, n.name, r.name
                            ));
                        }
                    }
                }
            }
        }
        missing
    }
}

/// What a node's agent says about itself.
pub(super) fn agent_status(n: &NodeInfo) -> Result<StatusView, String> {
    let mut client = ApiClient::new(&n.api_socket);
    client.set_timeout(AGENT_API_TIMEOUT);
    client.get("/v1/status").map_err(|e| e.to_string())
}
