//! The `NodeStatusEvent` responses a relay puts among the flows.

use std::time::SystemTime;

use hubble_api::{
    observer::{GetFlowsResponse, get_flows_response::ResponseTypes},
    relay::{NodeState, NodeStatusEvent},
};

/// A `GetFlowsResponse` carrying `NodeStatusEvent{state, node_names,
/// message}`, sent by the relay itself: `node_name` is the relay's node and
/// `time` is `now`.
pub(crate) fn node_status_response(
    relay_node: &str,
    state: NodeState,
    node_names: Vec<String>,
    message: String,
    now: SystemTime,
) -> GetFlowsResponse {
    GetFlowsResponse {
        node_name: relay_node.to_owned(),
        time: Some(prost_types::Timestamp::from(now)),
        response_types: Some(ResponseTypes::NodeStatus(NodeStatusEvent {
            state_change: state as i32,
            node_names,
            message,
        })),
    }
}

/// The event of a `NODE_ERROR` response, if it is one.
pub(crate) fn node_error(response: &GetFlowsResponse) -> Option<&NodeStatusEvent> {
    match &response.response_types {
        Some(ResponseTypes::NodeStatus(e)) if e.state_change == NodeState::NodeError as i32 => {
            Some(e)
        }
        _ => None,
    }
}
