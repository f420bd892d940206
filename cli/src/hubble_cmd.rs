//! `clustermesh hubble status | nodes`: a Hubble server's or relay's health
//! and flow counts, and a relay's nodes, printed as Hubble's CLI prints them.

use std::{io::Write, time::Duration};

use anyhow::anyhow;
use clap::{Args, Subcommand, ValueEnum};
use hubble_api::observer::{
    GetNodesRequest, Node, ServerStatusRequest, ServerStatusResponse,
    observer_client::ObserverClient,
};
use hubble_api::relay::NodeState;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    command_error::CommandError,
    flow_time::go_duration_seconds,
    hubble_client::{self, Server},
    hubble_server::ServerArgs,
    observe_cmd::{REQUEST_TIMEOUT, runtime, status_error},
    tab_writer::TabWriter,
};

/// The gRPC health service name of Hubble's Observer.
const OBSERVER_HEALTH_SERVICE: &str = "hubble.server.Observer";

#[derive(Debug, Args)]
pub(crate) struct HubbleArgs {
    #[command(subcommand)]
    command: HubbleCommand,
}

#[derive(Debug, Subcommand)]
enum HubbleCommand {
    /// Health, flow counts and connected nodes of a Hubble server or relay.
    Status(QueryArgs),
    /// The nodes a relay knows: state, age, flow rate and buffer use.
    Nodes(QueryArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum QueryOutput {
    /// Human-readable lines (status) or a table (nodes).
    Compact,
    /// Protobuf JSON with proto field names, as Hubble prints it.
    Json,
}

#[derive(Debug, Args)]
struct QueryArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "compact")]
    output: QueryOutput,
    /// With --dir: the cluster whose relay (or node, with --node) to ask.
    #[arg(long, requires = "dir")]
    cluster: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

pub(crate) fn run(args: HubbleArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    let (query, is_status) = match args.command {
        HubbleCommand::Status(q) => (q, true),
        HubbleCommand::Nodes(q) => (q, false),
    };
    let server = query
        .server
        .resolve(query.cluster.as_deref())
        .map_err(CommandError::usage)?;
    let rt = runtime()?;
    if is_status {
        rt.block_on(status(&server, query.output, out))
    } else {
        rt.block_on(nodes(&server, query.output, out))
    }
}

async fn unary<T>(
    server: &Server,
    call: &str,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CommandError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(Ok(res)) => Ok(res.into_inner()),
        Ok(Err(status)) => Err(status_error(server, call, status)),
        Err(_) => Err(status_error(server, call, timeout_status())),
    }
}

fn timeout_status() -> tonic::Status {
    tonic::Status::deadline_exceeded(format!("no answer within {REQUEST_TIMEOUT:?}"))
}

async fn status(
    server: &Server,
    output: QueryOutput,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    let channel = hubble_client::connect(server)
        .await
        .map_err(|e| CommandError::unavailable(anyhow!(e)))?;
    let health = unary(
        server,
        "Health.Check",
        HealthClient::new(channel.clone()).check(HealthCheckRequest {
            service: OBSERVER_HEALTH_SERVICE.into(),
        }),
    )
    .await?;
    let serving = health.status() == ServingStatus::Serving;
    if output == QueryOutput::Compact {
        let state = if serving {
            "Ok".to_owned()
        } else {
            format!("Unavailable: {}", health.status().as_str_name())
        };
        writeln!(out, "Healthcheck (via {}): {state}", server.address)?;
    }
    if !serving {
        return Err(CommandError::unavailable(anyhow!(
            "{server} is not healthy ({})",
            health.status().as_str_name()
        )));
    }
    let status = unary(
        server,
        "ServerStatus",
        ObserverClient::new(channel).server_status(ServerStatusRequest {}),
    )
    .await?;
    match output {
        QueryOutput::Json => {
            let json = hubble_api::json::to_json(&status).map_err(CommandError::failed)?;
            writeln!(out, "{json}")?;
        }
        QueryOutput::Compact => out.write_all(status_text(&status).as_bytes())?,
    }
    Ok(())
}

/// One line on the relay of `cluster` in the mesh at `dir`, for
/// `clustermesh status`: whether it serves, how many nodes it reaches and
/// how many flows they hold; or why it cannot say.
pub(crate) fn relay_summary(dir: &std::path::Path, cluster: &str) -> Result<String, String> {
    let server = ServerArgs::mesh(dir)
        .resolve(Some(cluster))
        .map_err(|e| format!("{e:#}"))?;
    let rt = runtime().map_err(|e| e.message())?;
    rt.block_on(async {
        let channel = hubble_client::connect(&server)
            .await
            .map_err(|e| e.to_string())?;
        let health = unary(
            &server,
            "Health.Check",
            HealthClient::new(channel.clone()).check(HealthCheckRequest {
                service: OBSERVER_HEALTH_SERVICE.into(),
            }),
        )
        .await
        .map_err(|e| e.message())?;
        let status = unary(
            &server,
            "ServerStatus",
            ObserverClient::new(channel).server_status(ServerStatusRequest {}),
        )
        .await
        .map_err(|e| e.message())?;
        let connected = status.num_connected_nodes.unwrap_or(0);
        let unavailable = status.num_unavailable_nodes.unwrap_or(0);
        let mut line = format!(
            "{}, {connected}/{} nodes connected, {}/{} flows",
            if health.status() == ServingStatus::Serving {
                "serving"
            } else {
                "NOT SERVING"
            },
            connected + unavailable,
            grouped(status.num_flows),
            grouped(status.max_flows),
        );
        if !status.unavailable_nodes.is_empty() {
            line.push_str(&format!(
                "; unavailable: {}",
                status.unavailable_nodes.join(", ")
            ));
        }
        Ok(line)
    })
}

/// `16,380`: digits grouped by thousands, as Hubble prints flow counts.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The compact status lines.
fn status_text(s: &ServerStatusResponse) -> String {
    let mut text = String::new();
    let ratio = if s.max_flows > 0 {
        format!(" ({:.2}%)", s.num_flows as f64 / s.max_flows as f64 * 100.0)
    } else {
        String::new()
    };
    text.push_str(&format!(
        "Current/Max Flows: {}/{}{ratio}\n",
        grouped(s.num_flows),
        grouped(s.max_flows)
    ));
    let uptime = Duration::from_nanos(s.uptime_ns).as_secs_f64();
    let rate = if s.flows_rate > 0.0 {
        format!("{:.2}", s.flows_rate)
    } else if uptime > 0.0 {
        format!("{:.2}", s.seen_flows as f64 / uptime)
    } else {
        "N/A".to_owned()
    };
    text.push_str(&format!("Flows/s: {rate}\n"));
    match (s.num_connected_nodes, s.num_unavailable_nodes) {
        (Some(c), Some(u)) => text.push_str(&format!("Connected Nodes: {c}/{}\n", c + u)),
        (Some(c), None) => text.push_str(&format!("Connected Nodes: {c}\n")),
        // A single node's server does not count nodes.
        (None, _) => text.push_str("Connected Nodes: N/A\n"),
    }
    if let Some(u) = s.num_unavailable_nodes.filter(|u| *u > 0) {
        if s.unavailable_nodes.is_empty() {
            text.push_str(&format!("Unavailable Nodes: {u}\n"));
        } else {
            let mut names = s.unavailable_nodes.clone();
            names.sort();
            if u as usize > names.len() {
                names.push(format!("and {} more...", u as usize - names.len()));
            }
            text.push_str(&format!(
                "Unavailable Nodes: {u}\n  - {}\n",
                names.join("\n  - ")
            ));
        }
    }
    text
}

async fn nodes(
    server: &Server,
    output: QueryOutput,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    let channel = hubble_client::connect(server)
        .await
        .map_err(|e| CommandError::unavailable(anyhow!(e)))?;
    let mut client = ObserverClient::new(channel);
    let call = client.get_nodes(GetNodesRequest {});
    let res = match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
        Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
            return Err(CommandError::usage(anyhow!(
                "{server} does not list nodes (Unimplemented): only a relay does, a node's own \
                 server does not"
            )));
        }
        answer => {
            unary(server, "GetNodes", async {
                answer.unwrap_or_else(|_| Err(timeout_status()))
            })
            .await?
        }
    };
    let mut nodes = res.nodes;
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    match output {
        QueryOutput::Json => {
            let json =
                hubble_api::json::to_json_pretty_list(&nodes).map_err(CommandError::failed)?;
            writeln!(out, "{json}")?;
        }
        QueryOutput::Compact => nodes_table(&nodes).flush(out)?,
    }
    Ok(())
}

fn nodes_table(nodes: &[Node]) -> TabWriter {
    let mut tw = TabWriter::default();
    tw.row(
        ["NAME", "STATUS", "AGE", "FLOWS/S", "CURRENT/MAX-FLOWS"]
            .map(str::to_owned)
            .to_vec(),
    );
    for n in nodes {
        // Rounded to whole seconds, as Hubble does.
        let uptime = Duration::from_secs((n.uptime_ns + 500_000_000) / 1_000_000_000);
        let (age, rate) = if uptime.is_zero() {
            ("N/A".to_owned(), "N/A".to_owned())
        } else {
            (
                go_duration_seconds(uptime),
                format!("{:.2}", n.seen_flows as f64 / uptime.as_secs_f64()),
            )
        };
        let flows = if n.max_flows > 0 {
            format!(
                "{}/{} ({:6.2}%)",
                n.num_flows,
                n.max_flows,
                n.num_flows as f64 / n.max_flows as f64 * 100.0
            )
        } else {
            "N/A".to_owned()
        };
        let state = match NodeState::try_from(n.state) {
            Ok(NodeState::NodeConnected) => "Connected",
            Ok(NodeState::NodeUnavailable) => "Unavailable",
            Ok(NodeState::NodeGone) => "Gone",
            Ok(NodeState::NodeError) => "Error",
            _ => "Unknown",
        };
        tw.row(vec![n.name.clone(), state.to_owned(), age, rate, flows]);
    }
    tw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_status_lines() {
        let s = ServerStatusResponse {
            num_flows: 16_380,
            max_flows: 32_760,
            seen_flows: 100_000,
            uptime_ns: 60_000_000_000,
            flows_rate: 47.345,
            num_connected_nodes: Some(3),
            num_unavailable_nodes: Some(12),
            unavailable_nodes: vec!["c2/n1".into(), "c1/n2".into()],
            ..Default::default()
        };
        assert_eq!(
            status_text(&s),
            "Current/Max Flows: 16,380/32,760 (50.00%)\nFlows/s: 47.34\nConnected Nodes: 3/15\n\
             Unavailable Nodes: 12\n  - c1/n2\n  - c2/n1\n  - and 10 more...\n"
        );
    }

    #[test]
    fn node_status_lines() {
        let s = ServerStatusResponse {
            num_flows: 5,
            max_flows: 4095,
            seen_flows: 120,
            uptime_ns: 60_000_000_000,
            ..Default::default()
        };
        assert_eq!(
            status_text(&s),
            "Current/Max Flows: 5/4,095 (0.12%)\nFlows/s: 2.00\nConnected Nodes: N/A\n"
        );
    }

    #[test]
    fn nodes_table_sorted_rows() {
        let nodes = [
            Node {
                name: "c1/n1".into(),
                state: NodeState::NodeConnected.into(),
                uptime_ns: 3_723_400_000_000,
                seen_flows: 7446,
                num_flows: 2048,
                max_flows: 4095,
                ..Default::default()
            },
            Node {
                name: "c2/n1".into(),
                state: NodeState::NodeUnavailable.into(),
                ..Default::default()
            },
        ];
        let mut out = Vec::new();
        nodes_table(&nodes).flush(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "NAME    STATUS        AGE      FLOWS/S   CURRENT/MAX-FLOWS\n\
             c1/n1   Connected     1h2m3s   2.00      2048/4095 ( 50.01%)\n\
             c2/n1   Unavailable   N/A      N/A       N/A\n"
        );
    }

    #[test]
    fn digits_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }
}
