//! One `NODE_ERROR` event for many nodes failing the same way.

use std::time::{Duration, Instant};

use hubble_api::observer::{GetFlowsResponse, get_flows_response::ResponseTypes};

use crate::node_status::node_error;

/// Merges `NODE_ERROR` events with the same message within a window, so
/// that a cut cluster shows as one error naming all its nodes rather than
/// one per node (Cilium's relay `aggregateErrors`).
///
/// Every other response passes through at once. The first error opens the
/// window and is held; errors with the same message add their node names
/// to it; an error with another message releases the held one and is held
/// in turn. When the window ends ([`ErrorAggregator::deadline`]) or the
/// input does ([`ErrorAggregator::finish`]), the held error is released.
/// Its `time` stays that of the first error, so the sort places it where
/// the failures began.
#[derive(Debug)]
pub(crate) struct ErrorAggregator {
    window: Duration,
    pending: Option<(GetFlowsResponse, Instant)>,
}

impl ErrorAggregator {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            pending: None,
        }
    }

    /// Takes in `response` at `now`; returns what leaves now, in order.
    pub(crate) fn push(
        &mut self,
        response: GetFlowsResponse,
        now: Instant,
    ) -> Vec<GetFlowsResponse> {
        let Some(error) = node_error(&response) else {
            return vec![response];
        };
        if let Some((pending, _)) = &mut self.pending
            && let Some(ResponseTypes::NodeStatus(held)) = &mut pending.response_types
            && held.message == error.message
        {
            for name in &error.node_names {
                if !held.node_names.contains(name) {
                    held.node_names.push(name.clone());
                }
            }
            return Vec::new();
        }
        if self.window.is_zero() {
            return vec![response];
        }
        let released = self.pending.take().map(|(r, _)| r);
        self.pending = Some((response, now + self.window));
        released.into_iter().collect()
    }

    /// When the held error is due, if one is held.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.pending.as_ref().map(|(_, due)| *due)
    }

    /// The held error, if it is due at `now`.
    pub(crate) fn release_due(&mut self, now: Instant) -> Option<GetFlowsResponse> {
        if self.deadline().is_some_and(|due| due <= now) {
            self.finish()
        } else {
            None
        }
    }

    /// The held error, whatever the time (the input ended).
    pub(crate) fn finish(&mut self) -> Option<GetFlowsResponse> {
        self.pending.take().map(|(r, _)| r)
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use hubble_api::{flow::Flow, relay::NodeState};

    use super::*;
    use crate::node_status::node_status_response;

    fn error(node: &str, message: &str) -> GetFlowsResponse {
        node_status_response(
            "relay",
            NodeState::NodeError,
            vec![node.into()],
            message.into(),
            SystemTime::UNIX_EPOCH,
        )
    }

    fn flow() -> GetFlowsResponse {
        GetFlowsResponse {
            response_types: Some(ResponseTypes::Flow(Flow::default())),
            ..Default::default()
        }
    }

    fn summary(responses: &[GetFlowsResponse]) -> Vec<String> {
        responses
            .iter()
            .map(|r| match node_error(r) {
                Some(e) => format!("{}: {}", e.message, e.node_names.join(",")),
                None => "flow".into(),
            })
            .collect()
    }

    #[test]
    fn same_message_within_the_window_is_one_event() {
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        let mut agg = ErrorAggregator::new(window);
        assert!(agg.push(error("a", "EOF"), t0).is_empty());
        assert_eq!(agg.deadline(), Some(t0 + window));
        assert_eq!(summary(&agg.push(flow(), t0)), ["flow"]);
        assert!(
            agg.push(error("b", "EOF"), t0 + Duration::from_secs(1))
                .is_empty()
        );
        assert!(
            agg.push(error("a", "EOF"), t0 + Duration::from_secs(2))
                .is_empty()
        );
        assert!(agg.release_due(t0 + Duration::from_secs(9)).is_none());
        let released = agg.release_due(t0 + window).unwrap();
        assert_eq!(summary(&[released]), ["EOF: a,b"]);
        assert_eq!(agg.deadline(), None);
    }

    #[test]
    fn another_message_releases_the_held_one() {
        let t0 = Instant::now();
        let mut agg = ErrorAggregator::new(Duration::from_secs(10));
        assert!(agg.push(error("a", "EOF"), t0).is_empty());
        let out = agg.push(error("b", "refused"), t0 + Duration::from_secs(1));
        assert_eq!(summary(&out), ["EOF: a"]);
        assert_eq!(agg.deadline(), Some(t0 + Duration::from_secs(11)));
        assert_eq!(summary(&[agg.finish().unwrap()]), ["refused: b"]);
        assert!(agg.finish().is_none());
    }

    #[test]
    fn a_zero_window_passes_errors_through() {
        let mut agg = ErrorAggregator::new(Duration::ZERO);
        let out = agg.push(error("a", "EOF"), Instant::now());
        assert_eq!(summary(&out), ["EOF: a"]);
        assert_eq!(agg.deadline(), None);
    }
}
