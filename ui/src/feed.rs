//! Flows from the relays: one `GetFlows` stream (follow) from the first
//! relay that answers, with its `ServerStatus` every few seconds for the
//! node counts. When the stream ends or the relay is unreachable, the next
//! relay is tried (every cluster's relay sees the whole mesh, so any one
//! will do); when none answers, the page is told why and when the next try
//! is. A new stream resumes where the last one ended (`since` the last
//! flow's time), so that a relay restart neither loses nor repeats flows.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use hubble::client::{Address, ClientTls};
use hubble_api::observer::{
    GetFlowsRequest, ServerStatusRequest, get_flows_response::ResponseTypes,
    observer_client::ObserverClient,
};
use prost_types::Timestamp;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use daemon::error_chain;

use crate::hub::{Hub, NodeCounts, RelayEntry, RelayState, now_ms};

/// How often the node counts are asked for.
const STATUS_INTERVAL: Duration = Duration::from_secs(3);
/// Waits between rounds over every relay: doubling from the first to the last.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// A relay to read flows from.
#[derive(Debug, Clone)]
pub struct RelaySpec {
    /// Its cluster's name (for messages).
    pub name: String,
    pub address: Address,
    pub tls: Option<ClientTls>,
}

/// Where to start.
#[derive(Debug, Clone, Copy)]
pub struct FeedOptions {
    /// Flows per node to read at the first connection (Hubble UI's
    /// `GET_FLOWS_LAST`).
    pub last: u64,
}

/// Reads flows into `hub` until `shutdown`.
pub async fn run(
    hub: Arc<Hub>,
    relays: Vec<RelaySpec>,
    options: FeedOptions,
    shutdown: CancellationToken,
) {
    let mut resume: Option<Timestamp> = None;
    let mut retry = RETRY_FIRST;
    loop {
        let mut last_error = String::from("no relay configured");
        for (i, relay) in relays.iter().enumerate() {
            set_relay(&hub, &relays, i, RelayState::Connecting, None, None);
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = stream(&hub, &relays, i, options, &mut resume) => outcome,
            };
            match outcome {
                Outcome::Ended { delivered, error } => {
                    warn!(relay = %relay.name, address = %relay.address, %error, "flow stream ended");
                    last_error = error;
                    if delivered {
                        retry = RETRY_FIRST;
                    }
                }
                Outcome::Unreachable(error) => {
                    warn!(relay = %relay.name, address = %relay.address, %error, "relay unreachable");
                    last_error = error;
                }
            }
            mark(&hub, i, "unreachable", Some(last_error.clone()));
        }
        let failed = relays.len().saturating_sub(1);
        set_relay(
            &hub,
            &relays,
            failed,
            RelayState::Unreachable,
            Some(last_error),
            Some(retry),
        );
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(RETRY_MAX);
    }
}

enum Outcome {
    /// Never connected, or refused the request.
    Unreachable(String),
    /// The stream ran and ended (`delivered`: it brought flows).
    Ended { delivered: bool, error: String },
}

/// One connection to relay `i`: flows until the stream ends.
async fn stream(
    hub: &Hub,
    relays: &[RelaySpec],
    i: usize,
    options: FeedOptions,
    resume: &mut Option<Timestamp>,
) -> Outcome {
    let relay = &relays[i];
    let channel = match hubble::client::connect(&relay.address, relay.tls.clone()).await {
        Ok(c) => c,
        Err(e) => return Outcome::Unreachable(error_chain(&e)),
    };
    let mut client = ObserverClient::new(channel);
    let request = match *resume {
        // Every flow after the last one seen, from every node.
        Some(since) => GetFlowsRequest {
            follow: true,
            since: Some(since),
            ..Default::default()
        },
        None => GetFlowsRequest {
            follow: true,
            number: options.last,
            ..Default::default()
        },
    };
    let skip_until = *resume;
    let mut flows = match client.get_flows(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => return Outcome::Unreachable(status_message(&status)),
    };
    info!(relay = %relay.name, address = %relay.address, "reading flows");
    set_relay(hub, relays, i, RelayState::Connected, None, None);
    let mut status_client = client.clone();
    let mut tick = tokio::time::interval(STATUS_INTERVAL);
    let mut delivered = false;
    loop {
        tokio::select! {
            next = flows.next() => match next {
                Some(Ok(response)) => {
                    let Some(ResponseTypes::Flow(flow)) = response.response_types else { continue };
                    let time = flow.time;
                    // After a reconnection the relay repeats flows of the
                    // last instant: they were counted already.
                    if let (Some(t), Some(s)) = (&time, &skip_until)
                        && (t.seconds, t.nanos) <= (s.seconds, s.nanos)
                    {
                        continue;
                    }
                    hub.ingest([&flow]);
                    delivered = true;
                    if let Some(t) = time
                        && resume.as_ref().is_none_or(|r| (t.seconds, t.nanos) > (r.seconds, r.nanos))
                    {
                        *resume = Some(t);
                    }
                }
                Some(Err(status)) => return Outcome::Ended { delivered, error: status_message(&status) },
                None => return Outcome::Ended { delivered, error: "the relay ended the flow stream".into() },
            },
            _ = tick.tick() => {
                if let Ok(s) = status_client.server_status(ServerStatusRequest {}).await {
                    let s = s.into_inner();
                    let nodes = NodeCounts {
                        connected: s.num_connected_nodes.unwrap_or(0),
                        unavailable: s.num_unavailable_nodes.unwrap_or(0),
                        unavailable_names: s.unavailable_nodes,
                    };
                    hub.update_status(|st| st.nodes = nodes);
                }
            }
        }
    }
}

fn set_relay(
    hub: &Hub,
    relays: &[RelaySpec],
    i: usize,
    state: RelayState,
    error: Option<String>,
    retry: Option<Duration>,
) {
    let Some(relay) = relays.get(i) else { return };
    hub.update_status(|s| {
        if s.relay.state != state || s.relay.name != relay.name || s.relay.error != error {
            s.relay.since_ms = now_ms();
        }
        s.relay.state = state;
        s.relay.name = relay.name.clone();
        s.relay.address = relay.address.to_string();
        s.relay.error = error;
        s.relay.retry_in_ms = retry.map(|r| r.as_millis() as u64);
        for (j, entry) in s.relays.iter_mut().enumerate() {
            if j == i && state == RelayState::Connected {
                set_entry(entry, "connected", None);
            } else if entry.state == "connected" {
                set_entry(entry, "standby", None);
            }
        }
    });
}

fn mark(hub: &Hub, i: usize, state: &'static str, error: Option<String>) {
    hub.update_status(|s| {
        if let Some(entry) = s.relays.get_mut(i) {
            set_entry(entry, state, error);
        }
    });
}

fn set_entry(entry: &mut RelayEntry, state: &'static str, error: Option<String>) {
    entry.state = state;
    entry.error = error;
}

fn status_message(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {}", status.code(), status.message())
    }
}
