use etcd_client::{EventType, WatchOptions};
use kvstore::{Backoff, Client, DecodeError, StoreValue, keys, values::IpamAssignment};
use tracing::{debug, warn};

/// Why an assignment could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AssignmentError {
    #[error("node name {0:?} is not usable in a key (empty or contains '/')")]
    InvalidNode(String),
    #[error("read the pod CIDR assignment of node {node:?}")]
    Read {
        node: String,
        #[source]
        source: kvstore::Error,
    },
    #[error("the pod CIDR assignment of node {node:?} is invalid")]
    Invalid {
        node: String,
        #[source]
        source: DecodeError,
    },
}

/// The pod CIDRs the operator assigned to `node`, if any (one read of
/// `cilium/ipam/v1/nodes/<node>`).
pub async fn get_assignment(
    client: &Client,
    node: &str,
) -> Result<Option<IpamAssignment>, AssignmentError> {
    Ok(read(client, node).await?.0)
}

/// Waits until the operator has assigned pod CIDRs to `node` and returns
/// them: what an agent calls after registering its node key
/// (`cilium/state/nodes/v1/<cluster>/<node>`), before it writes
/// `IPv4AllocCIDR`/`IPv6AllocCIDR` into its node entry.
///
/// Returns at once when the assignment exists (assignments have no lease:
/// they survive agent and operator restarts). Otherwise watches the key.
/// etcd failures are retried with backoff for as long as the future lives;
/// bound the wait with `tokio::time::timeout` or by dropping the future.
/// An assignment that does not decode is an error, not something to wait
/// out.
pub async fn wait_for_assignment(
    client: &Client,
    node: &str,
) -> Result<IpamAssignment, AssignmentError> {
    let key = assignment_key(node)?;
    let mut backoff = Backoff::for_etcd();
    loop {
        let revision = match read(client, node).await {
            Ok((Some(assignment), _)) => return Ok(assignment),
            Ok((None, revision)) => revision,
            Err(AssignmentError::Read { source, .. }) => {
                warn!(node, error = %source.full_message(), "cannot read the pod CIDR assignment; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let opts = WatchOptions::new().with_start_revision(revision + 1);
        let mut stream = match client
            .raw()
            .watch_client()
            .watch(key.as_str(), Some(opts))
            .await
        {
            Ok(s) => s,
            Err(e) => {
                warn!(node, error = %e, "cannot watch the pod CIDR assignment; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        backoff.reset();
        debug!(node, "waiting for the operator to assign pod CIDRs");
        loop {
            match stream.message().await {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        break;
                    }
                    let put = resp
                        .events()
                        .iter()
                        .filter(|e| e.event_type() == EventType::Put)
                        .filter_map(|e| e.kv())
                        .next_back();
                    if let Some(kv) = put {
                        return IpamAssignment::decode(node, kv.value()).map_err(|source| {
                            AssignmentError::Invalid {
                                node: node.to_string(),
                                source,
                            }
                        });
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    debug!(node, error = %e, "assignment watch broke; reading again");
                    tokio::time::sleep(backoff.next_delay()).await;
                    break;
                }
            }
        }
    }
}

fn assignment_key(node: &str) -> Result<String, AssignmentError> {
    if node.is_empty() || node.contains('/') {
        return Err(AssignmentError::InvalidNode(node.to_string()));
    }
    Ok(keys::ipam_nodes().key(node))
}

/// The assignment, if any, and the revision of the read.
async fn read(
    client: &Client,
    node: &str,
) -> Result<(Option<IpamAssignment>, i64), AssignmentError> {
    let key = assignment_key(node)?;
    let (kv, revision) = client
        .get_at(&key)
        .await
        .map_err(|source| AssignmentError::Read {
            node: node.to_string(),
            source,
        })?;
    let assignment = kv
        .map(|kv| IpamAssignment::decode(node, &kv.value))
        .transpose()
        .map_err(|source| AssignmentError::Invalid {
            node: node.to_string(),
            source,
        })?;
    Ok((assignment, revision))
}
