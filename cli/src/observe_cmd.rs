//! `clustermesh observe`: flows from a Hubble server or relay, with Hubble's
//! selectors, filters and output formats.

use std::{
    io::{BufRead, Write},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context, anyhow};
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use hubble_api::observer::{GetFlowsRequest, GetFlowsResponse, observer_client::ObserverClient};

use crate::{
    command_error::CommandError,
    flow_filter::{self, FilterFlag, FlowFilters},
    flow_printer::{FlowPrinter, Output, PrinterOptions},
    flow_time::{self, TimeFormat},
    hubble_client::{self, Server},
    hubble_server::ServerArgs,
};

/// Flows printed when no selector is given (Hubble's `FlowPrintCount`).
const DEFAULT_LAST: u64 = 20;

#[derive(Debug, Args)]
pub(crate) struct ObserveArgs {
    /// Get all flows stored in the buffers (best with filters).
    #[arg(long, help_heading = "Selectors")]
    all: bool,
    /// Get the first N flows stored in the buffers (through a relay: N per
    /// node).
    #[arg(long, value_name = "N", help_heading = "Selectors")]
    first: Option<u64>,
    /// Follow flows as they come.
    #[arg(short = 'f', long, help_heading = "Selectors")]
    follow: bool,
    /// Get the last N flows stored in the buffers (through a relay: N per
    /// node) [default: 20 when no other selector is given]
    #[arg(long, value_name = "N", help_heading = "Selectors")]
    last: Option<u64>,
    /// Flows since a time: a duration before now (3s, 4m, 1h43m) or a
    /// timestamp (2006-01-02, 2006-01-02T15:04:05Z07:00, RFC 3339, RFC 1123Z).
    #[arg(long, value_name = "TIME", help_heading = "Selectors")]
    since: Option<String>,
    /// Flows until a time, as --since (ignored with --follow).
    #[arg(long, value_name = "TIME", help_heading = "Selectors")]
    until: Option<String>,
    #[command(flatten)]
    filters: FilterArgs,
    /// Output format: compact, dict (KEY: VALUE blocks), json/jsonpb (one
    /// GetFlowsResponse per line) or table (tab-aligned, printed at the end).
    #[arg(
        short = 'o',
        long,
        value_enum,
        default_value = "compact",
        help_heading = "Formatting"
    )]
    output: Output,
    /// Print the node name of each flow.
    #[arg(long, help_heading = "Formatting")]
    print_node_name: bool,
    /// Time format (not for json).
    #[arg(
        long,
        value_enum,
        default_value = "StampMilli",
        help_heading = "Formatting"
    )]
    time_format: TimeFormat,
    /// Print every relay node status event (connected nodes too).
    #[arg(short = 'D', long, help_heading = "Formatting")]
    debug: bool,
    /// Print the allow and deny lists of FlowFilters and exit without asking
    /// a server.
    #[arg(long)]
    print_raw_filters: bool,
    /// Print flows read from this file of JSON GetFlowsResponses (one per
    /// line, `-` for stdin) instead of asking a server; no filtering.
    #[arg(long, value_name = "FILE")]
    input_file: Option<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
}

/// The filter flags in the order given (`--not` applies to the next one).
#[derive(Debug, Clone, Default)]
pub(crate) struct FilterArgs {
    flags: Vec<(FilterFlag, String)>,
}

fn filter_help(flag: FilterFlag) -> (&'static str, &'static str) {
    use FilterFlag as F;
    match flag {
        F::Not => (
            "",
            "Move the next filter to the deny list: --not --from-ip 2.2.2.2",
        ),
        F::Uuid => ("UUID", "Flows with this UUID"),
        F::Pod => (
            "[NS/]POD",
            "Flows from or to pods with this name prefix (namespace `default` when none is given)",
        ),
        F::FromPod => ("[NS/]POD", "Flows from pods with this name prefix"),
        F::ToPod => ("[NS/]POD", "Flows to pods with this name prefix"),
        F::Namespace => ("NS", "Flows from or to this namespace"),
        F::FromNamespace => ("NS", "Flows from this namespace"),
        F::ToNamespace => ("NS", "Flows to this namespace"),
        F::Ip => ("IP|CIDR", "Flows from or to this IP address or CIDR range"),
        F::FromIp => ("IP|CIDR", "Flows from this IP address or CIDR range"),
        F::ToIp => ("IP|CIDR", "Flows to this IP address or CIDR range"),
        F::Identity => (
            "ID",
            "Flows from or to this security identity (numeric, or world, host, …)",
        ),
        F::FromIdentity => ("ID", "Flows from this security identity"),
        F::ToIdentity => ("ID", "Flows to this security identity"),
        F::Label => (
            "SELECTOR",
            "Flows from or to endpoints with these labels (key=value, reserved:world)",
        ),
        F::FromLabel => ("SELECTOR", "Flows from endpoints with these labels"),
        F::ToLabel => ("SELECTOR", "Flows to endpoints with these labels"),
        F::Cluster => (
            "CLUSTER",
            "Flows from or to endpoints of this cluster; with --dir also the cluster whose \
             relay is asked",
        ),
        F::FromCluster => ("CLUSTER", "Flows from endpoints of this cluster"),
        F::ToCluster => ("CLUSTER", "Flows to endpoints of this cluster"),
        F::Verdict => (
            "VERDICT",
            "Flows with this verdict: FORWARDED, DROPPED, AUDIT, REDIRECTED, ERROR, TRACED, TRANSLATED",
        ),
        F::DropReasonDesc => (
            "REASON",
            "Dropped flows with this reason (e.g. POLICY_DENIED)",
        ),
        F::Protocol => ("PROTO", "Flows of this L4/L7 protocol (tcp, udp, icmp, …)"),
        F::Port => ("PORT", "Flows with this source or destination port"),
        F::FromPort => ("PORT", "Flows with this source port"),
        F::ToPort => ("PORT", "Flows with this destination port"),
        F::NodeName => ("NODE", "Flows observed on these nodes (globs: c1/*, c1/)"),
        F::TrafficDirection => ("DIR", "Flows in this direction: ingress or egress"),
        F::Type => (
            "TYPE[:SUB]",
            "Events of this type: drop, trace[:to-endpoint|from-endpoint|…], policy-verdict, capture, l7, trace-sock",
        ),
        F::TcpFlags => ("FLAGS", "TCP flows with these flags set (syn,ack,fin,…)"),
        F::IpVersion => ("VERSION", "Flows of this IP version: v4, v6 or none"),
    }
}

fn short(flag: FilterFlag) -> Option<char> {
    match flag {
        FilterFlag::Namespace => Some('n'),
        FilterFlag::Label => Some('l'),
        FilterFlag::Type => Some('t'),
        _ => None,
    }
}

impl Args for FilterArgs {
    fn augment_args(mut cmd: Command) -> Command {
        for &flag in FilterFlag::ALL {
            let (value_name, help) = filter_help(flag);
            let mut arg = Arg::new(flag.name())
                .long(flag.name())
                .action(ArgAction::Append)
                .help(help)
                .help_heading("Filters");
            arg = if flag == FilterFlag::Not {
                arg.num_args(0).default_missing_value("true")
            } else {
                arg.value_name(value_name)
            };
            if let Some(c) = short(flag) {
                arg = arg.short(c);
            }
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for FilterArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut given = Vec::new();
        for &flag in FilterFlag::ALL {
            let (Some(indices), Some(values)) =
                (m.indices_of(flag.name()), m.get_many::<String>(flag.name()))
            else {
                continue;
            };
            for (index, value) in indices.zip(values) {
                given.push((index, flag, value.clone()));
            }
        }
        given.sort_by_key(|(index, _, _)| *index);
        Ok(Self {
            flags: given.into_iter().map(|(_, f, v)| (f, v)).collect(),
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl FilterArgs {
    fn build(&self) -> Result<FlowFilters, flow_filter::FilterError> {
        flow_filter::build(self.flags.iter().map(|(f, v)| (*f, v.as_str())))
    }

    /// The first `--cluster` value (not negated): the cluster whose relay a
    /// local mesh asks.
    fn cluster(&self) -> Option<&str> {
        let mut negated = false;
        for (flag, value) in &self.flags {
            match flag {
                FilterFlag::Not => negated = true,
                FilterFlag::Cluster if !negated => return Some(value),
                _ => negated = false,
            }
        }
        None
    }
}

/// The request for the selectors, as Hubble's CLI forms it.
fn request(args: &ObserveArgs, filters: FlowFilters) -> anyhow::Result<GetFlowsRequest> {
    let first = args.first.is_some_and(|n| n > 0);
    let last = args.last.is_some_and(|n| n > 0);
    let refuse = |a: &str, b: &str| Err(anyhow!("cannot set both --{a} and --{b}"));
    if first && last {
        return refuse("first", "last");
    }
    if first && args.all {
        return refuse("first", "all");
    }
    if first && args.follow {
        return refuse("first", "follow");
    }
    if last && args.all {
        return refuse("last", "all");
    }
    let now = flow_time::now();
    let since = args
        .since
        .as_deref()
        .map(|s| flow_time::parse_time(s, now))
        .transpose()
        .context("invalid --since")?;
    // With --since and no --until the server reads until now.
    let until = match (&args.until, args.follow) {
        (Some(u), false) => Some(flow_time::parse_time(u, now).context("invalid --until")?),
        _ => None,
    };
    let mut number = args.last.unwrap_or(0);
    if since.is_none() && until.is_none() && !first {
        if args.all {
            number = u64::MAX;
        } else if number == 0 && !args.follow {
            number = DEFAULT_LAST;
        }
    }
    if first {
        number = args.first.unwrap_or(0);
    }
    Ok(GetFlowsRequest {
        number,
        first,
        follow: args.follow,
        whitelist: filters.allow,
        blacklist: filters.deny,
        since,
        until,
        ..Default::default()
    })
}

/// `--print-raw-filters`: the lists as Hubble prints them (YAML of JSON).
fn print_raw_filters(filters: &FlowFilters, out: &mut dyn Write) -> anyhow::Result<()> {
    for (name, list) in [("allowlist", &filters.allow), ("denylist", &filters.deny)] {
        if list.is_empty() {
            continue;
        }
        writeln!(out, "{name}:")?;
        for f in list {
            let json = hubble_api::json::to_json(f)?;
            writeln!(out, "    - '{}'", json.replace('\'', "''"))?;
        }
    }
    Ok(())
}

pub(crate) fn run(args: ObserveArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    let filters = args
        .filters
        .build()
        .map_err(|e| CommandError::usage(anyhow!(e)))?;
    // Selectors are checked before the filters are printed, as in Hubble.
    let req = request(&args, filters.clone()).map_err(CommandError::usage)?;
    if args.print_raw_filters {
        return print_raw_filters(&filters, out).map_err(CommandError::failed);
    }
    let opts = PrinterOptions {
        output: args.output,
        time_format: args.time_format,
        node_name: args.print_node_name,
        debug: args.debug,
    };
    let err = &mut std::io::stderr().lock();
    let mut printer = FlowPrinter::new(opts, out, err);
    if let Some(path) = &args.input_file {
        return print_file(path, &mut printer);
    }
    let server = args
        .server
        .resolve(args.filters.cluster())
        .map_err(CommandError::usage)?;
    let runtime = runtime()?;
    let result = runtime.block_on(stream_flows(&server, req, &mut printer));
    // The table is printed even when the stream broke.
    let finished = printer.finish();
    result?;
    finished.map_err(CommandError::from)
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CommandError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(CommandError::failed)
}

async fn stream_flows(
    server: &Server,
    req: GetFlowsRequest,
    printer: &mut FlowPrinter<'_>,
) -> Result<(), CommandError> {
    let channel = hubble_client::connect(server)
        .await
        .map_err(|e| CommandError::unavailable(anyhow!(e)))?;
    let mut client = ObserverClient::new(channel);
    let mut stream = client
        .get_flows(req)
        .await
        .map_err(|s| status_error(server, "GetFlows", s))?
        .into_inner();
    while let Some(res) = stream
        .message()
        .await
        .map_err(|s| status_error(server, "GetFlows", s))?
    {
        printer.write(&res)?;
    }
    Ok(())
}

/// A gRPC error from `server` with the exit code it maps to: 64 when the
/// request was refused as given, 69 when the server is not there, else 1.
pub(crate) fn status_error(server: &Server, call: &str, status: tonic::Status) -> CommandError {
    let message = if status.message().is_empty() {
        format!("{call} on {server} failed: {:?}", status.code())
    } else {
        format!(
            "{call} on {server} failed: {:?}: {}",
            status.code(),
            status.message()
        )
    };
    match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => {
            CommandError::usage(anyhow!(message))
        }
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
            CommandError::unavailable(anyhow!(message))
        }
        _ => CommandError::failed(anyhow!(message)),
    }
}

/// `--input-file`: prints the responses of a file of JSON lines.
fn print_file(path: &PathBuf, printer: &mut FlowPrinter<'_>) -> Result<(), CommandError> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))
                .map_err(CommandError::usage)?,
        ))
    };
    for (i, line) in reader.lines().enumerate() {
        let line = line
            .with_context(|| format!("cannot read {}", path.display()))
            .map_err(CommandError::failed)?;
        if line.trim().is_empty() {
            continue;
        }
        let res: GetFlowsResponse = hubble_api::json::from_json(&line)
            .with_context(|| format!("{}:{}", path.display(), i + 1))
            .map_err(CommandError::usage)?;
        printer.write(&res)?;
    }
    printer.finish().map_err(CommandError::from)
}

/// Hubble's unary request timeout (`--request-timeout`).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(12);

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        observe: ObserveArgs,
    }

    fn parse(args: &[&str]) -> ObserveArgs {
        let mut argv = vec!["observe"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().observe
    }

    fn req(args: &[&str]) -> anyhow::Result<GetFlowsRequest> {
        let a = parse(args);
        let filters = a.filters.build()?;
        request(&a, filters)
    }

    #[test]
    fn flags_keep_their_order_across_kinds() {
        let a = parse(&[
            "--pod",
            "x",
            "--not",
            "--verdict",
            "DROPPED",
            "-n",
            "ns",
            "--not",
            "-l",
            "a=b",
        ]);
        assert_eq!(
            a.filters.flags,
            [
                (FilterFlag::Pod, "x".to_owned()),
                (FilterFlag::Not, "true".to_owned()),
                (FilterFlag::Verdict, "DROPPED".to_owned()),
                (FilterFlag::Namespace, "ns".to_owned()),
                (FilterFlag::Not, "true".to_owned()),
                (FilterFlag::Label, "a=b".to_owned()),
            ]
        );
        let f = a.filters.build().unwrap();
        assert_eq!(f.deny.len(), 2, "{f:?}");
        assert_eq!(f.deny[0].verdict, [2]);
        assert_eq!(f.deny[0].source_label, ["a=b"]);
    }

    #[test]
    fn the_relay_cluster_is_the_first_plain_cluster_filter() {
        assert_eq!(
            parse(&["--cluster", "c2", "--cluster", "c1"])
                .filters
                .cluster(),
            Some("c2")
        );
        assert_eq!(
            parse(&["--not", "--cluster", "c2", "--cluster", "c1"])
                .filters
                .cluster(),
            Some("c1")
        );
        assert_eq!(parse(&["--from-cluster", "c2"]).filters.cluster(), None);
    }

    #[test]
    fn selectors_as_hubble_sets_them() {
        let r = req(&[]).unwrap();
        assert_eq!((r.number, r.first, r.follow), (20, false, false));
        let r = req(&["-f"]).unwrap();
        assert_eq!((r.number, r.first, r.follow), (0, false, true));
        let r = req(&["--last", "5", "-f"]).unwrap();
        assert_eq!((r.number, r.follow), (5, true));
        let r = req(&["--first", "7"]).unwrap();
        assert_eq!((r.number, r.first), (7, true));
        let r = req(&["--all"]).unwrap();
        assert_eq!(r.number, u64::MAX);
        let r = req(&["--since", "2024-05-01", "--until", "2024-05-02"]).unwrap();
        assert_eq!(r.number, 0);
        assert_eq!(r.since.unwrap().seconds, 1_714_521_600);
        assert_eq!(r.until.unwrap().seconds, 1_714_521_600 + 86_400);
        // --until is ignored with --follow.
        let r = req(&["--since", "1m", "--until", "2024-05-02", "-f"]).unwrap();
        assert!(r.since.is_some() && r.until.is_none());
    }

    #[test]
    fn selector_refusals() {
        for (args, msg) in [
            (
                &["--first", "1", "--follow"][..],
                "cannot set both --first and --follow",
            ),
            (
                &["--first", "1", "--last", "2"][..],
                "cannot set both --first and --last",
            ),
            (
                &["--first", "1", "--all"][..],
                "cannot set both --first and --all",
            ),
            (
                &["--last", "1", "--all"][..],
                "cannot set both --last and --all",
            ),
        ] {
            assert_eq!(req(args).unwrap_err().to_string(), msg);
        }
        assert!(req(&["--since", "soon"]).is_err());
    }

    #[test]
    fn raw_filters_print_like_hubble() {
        let a = parse(&["--pod", "foo", "--not", "--protocol", "it's"]);
        let mut out = Vec::new();
        print_raw_filters(&a.filters.build().unwrap(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "allowlist:\n    - '{\"source_pod\":[\"foo\"]}'\n    - '{\"destination_pod\":[\"foo\"]}'\n\
             denylist:\n    - '{\"protocol\":[\"it''s\"]}'\n"
        );
    }
}
