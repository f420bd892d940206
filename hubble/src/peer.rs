//! The `Peer` service: every Hubble server the agent knows of (its own
//! cluster's nodes and every connected remote cluster's), first all of
//! them as `PEER_ADDED`, then changes as they happen (Cilium's
//! `pkg/hubble/peer/handler.go` rules: a new address is `PEER_UPDATED`, a
//! renamed node is a delete and an add, nothing is sent for no change).

use std::{collections::BTreeMap, pin::Pin};

use futures::Stream;
use hubble_api::peer::{
    ChangeNotification, ChangeNotificationType, NotifyRequest, Tls, peer_server::Peer,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// How many notifications may wait for a slow client; more ends its stream
/// (Cilium's limit and behaviour).
const MAX_BUFFERED: usize = 65_536;

/// One Hubble server as the Peer service announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// `cluster/node` (or `node` in the `default` cluster).
    pub name: String,
    /// `ip:port` of its Hubble server.
    pub address: String,
    /// The name its certificate carries, when it serves TLS.
    pub tls_server_name: Option<String>,
}

/// Every known peer by name; the agent replaces the map as nodes come and go.
pub type Peers = BTreeMap<String, PeerInfo>;

/// See the module documentation.
#[derive(Debug)]
pub struct PeerService {
    peers: watch::Receiver<Peers>,
}

impl PeerService {
    pub fn new(peers: watch::Receiver<Peers>) -> Self {
        Self { peers }
    }
}

fn notification(peer: &PeerInfo, kind: ChangeNotificationType) -> ChangeNotification {
    ChangeNotification {
        name: peer.name.clone(),
        address: peer.address.clone(),
        r#type: kind.into(),
        tls: peer.tls_server_name.as_ref().map(|server_name| Tls {
            server_name: server_name.clone(),
        }),
    }
}

/// The notifications that turn `old` into `new`.
pub fn changes(old: &Peers, new: &Peers) -> Vec<ChangeNotification> {
    let mut out = Vec::new();
    for (name, peer) in old {
        if !new.contains_key(name) {
            out.push(notification(peer, ChangeNotificationType::PeerDeleted));
        }
    }
    for (name, peer) in new {
        match old.get(name) {
            None => out.push(notification(peer, ChangeNotificationType::PeerAdded)),
            Some(before) if before != peer => {
                out.push(notification(peer, ChangeNotificationType::PeerUpdated));
            }
            Some(_) => {}
        }
    }
    out
}

type NotifyStream = Pin<Box<dyn Stream<Item = Result<ChangeNotification, Status>> + Send>>;

#[tonic::async_trait]
impl Peer for PeerService {
    type NotifyStream = NotifyStream;

    async fn notify(
        &self,
        _request: Request<NotifyRequest>,
    ) -> Result<Response<Self::NotifyStream>, Status> {
        let mut peers = self.peers.clone();
        let (tx, rx) = mpsc::channel(MAX_BUFFERED);
        tokio::spawn(async move {
            let mut known = Peers::new();
            loop {
                let current = peers.borrow_and_update().clone();
                for change in changes(&known, &current) {
                    if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(Ok(change)) {
                        let _ = tx
                            .send(Err(Status::resource_exhausted(
                                "peer notifications are not being read; stream ended",
                            )))
                            .await;
                        return;
                    }
                }
                known = current;
                tokio::select! {
                    changed = peers.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, address: &str) -> PeerInfo {
        PeerInfo {
            name: name.into(),
            address: address.into(),
            tls_server_name: Some(format!("{name}.tls")),
        }
    }

    fn map(peers: &[PeerInfo]) -> Peers {
        peers.iter().map(|p| (p.name.clone(), p.clone())).collect()
    }

    #[test]
    fn added_updated_deleted_and_nothing_for_no_change() {
        let old = map(&[peer("c1/a", "10.0.0.1:4244"), peer("c1/b", "10.0.0.2:4244")]);
        let new = map(&[peer("c1/a", "10.0.0.9:4244"), peer("c2/c", "10.1.0.1:4244")]);
        let kinds: Vec<_> = changes(&old, &new)
            .into_iter()
            .map(|n| (n.name, n.r#type))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (
                    "c1/b".to_string(),
                    ChangeNotificationType::PeerDeleted as i32
                ),
                (
                    "c1/a".to_string(),
                    ChangeNotificationType::PeerUpdated as i32
                ),
                ("c2/c".to_string(), ChangeNotificationType::PeerAdded as i32),
            ]
        );
        assert!(changes(&new, &new).is_empty());
    }
}
