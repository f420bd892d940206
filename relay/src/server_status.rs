//! `ServerStatus` of a relay: the sum of its peers'.

use hubble_api::observer::ServerStatusResponse;

use crate::peer_answer::PeerAnswer;

/// At most this many names in `unavailable_nodes` (Cilium's
/// `numUnavailableNodesReportMax`); `num_unavailable_nodes` counts them all.
pub(crate) const UNAVAILABLE_NODES_REPORT_MAX: usize = 10;

/// Aggregates the peers' answers as Cilium's relay does: flow counts and
/// rates are summed, `uptime_ns` is the longest, `version` is the relay's;
/// a peer that is unavailable or whose call failed counts as unavailable,
/// the others as connected. `unavailable_nodes` lists the first
/// [`UNAVAILABLE_NODES_REPORT_MAX`] unavailable names in name order.
pub(crate) fn aggregate_status(
    version: &str,
    answers: &[(String, PeerAnswer<ServerStatusResponse>)],
) -> ServerStatusResponse {
    let mut status = ServerStatusResponse {
        version: version.to_owned(),
        ..Default::default()
    };
    let mut unavailable: Vec<&str> = Vec::new();
    for (name, answer) in answers {
        match answer {
            PeerAnswer::Answered(s) => {
                status.num_flows += s.num_flows;
                status.max_flows += s.max_flows;
                status.seen_flows += s.seen_flows;
                status.flows_rate += s.flows_rate;
                status.uptime_ns = status.uptime_ns.max(s.uptime_ns);
            }
            PeerAnswer::Unavailable | PeerAnswer::Failed(_) => unavailable.push(name),
        }
    }
    unavailable.sort_unstable();
    let count = |n: usize| Some(u32::try_from(n).unwrap_or(u32::MAX));
    status.num_connected_nodes = count(answers.len() - unavailable.len());
    status.num_unavailable_nodes = count(unavailable.len());
    status.unavailable_nodes = unavailable
        .into_iter()
        .take(UNAVAILABLE_NODES_REPORT_MAX)
        .map(str::to_owned)
        .collect();
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(
        num: u64,
        max: u64,
        seen: u64,
        uptime: u64,
        rate: f64,
    ) -> PeerAnswer<ServerStatusResponse> {
        PeerAnswer::Answered(ServerStatusResponse {
            num_flows: num,
            max_flows: max,
            seen_flows: seen,
            uptime_ns: uptime,
            flows_rate: rate,
            version: "node-version".into(),
            ..Default::default()
        })
    }

    #[test]
    fn sums_max_uptime_and_node_counts() {
        let answers = vec![
            ("c1/n1".to_owned(), answered(10, 4095, 100, 5, 1.5)),
            ("c1/n2".to_owned(), answered(20, 4095, 200, 9, 2.0)),
            ("c1/n3".to_owned(), PeerAnswer::Failed("deadline".into())),
            ("c1/n0".to_owned(), PeerAnswer::Unavailable),
        ];
        let s = aggregate_status("relay-version", &answers);
        assert_eq!(
            (s.num_flows, s.max_flows, s.seen_flows, s.uptime_ns),
            (30, 8190, 300, 9)
        );
        assert_eq!(s.flows_rate, 3.5);
        assert_eq!(s.version, "relay-version");
        assert_eq!(s.num_connected_nodes, Some(2));
        assert_eq!(s.num_unavailable_nodes, Some(2));
        assert_eq!(s.unavailable_nodes, ["c1/n0", "c1/n3"]);
    }

    #[test]
    fn no_peers_is_zero_nodes_not_unset() {
        let s = aggregate_status("v", &[]);
        assert_eq!(s.num_connected_nodes, Some(0));
        assert_eq!(s.num_unavailable_nodes, Some(0));
    }

    #[test]
    fn at_most_ten_unavailable_names() {
        let answers: Vec<_> = (0..15)
            .map(|i| (format!("n{i:02}"), PeerAnswer::Unavailable))
            .collect();
        let s = aggregate_status("v", &answers);
        assert_eq!(s.num_unavailable_nodes, Some(15));
        assert_eq!(s.num_connected_nodes, Some(0));
        assert_eq!(s.unavailable_nodes.len(), 10);
        assert_eq!(s.unavailable_nodes[9], "n09");
    }
}
