//! The peer pool's state machine, without I/O: what the Peer service
//! announced, what each connection is doing, and what to dial when.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use hubble_api::peer::{ChangeNotification, ChangeNotificationType};

use crate::{
    Connection, ConnectionStatus, Peer, PeerAddress, PoolState, Security, backoff::Backoff,
};

/// What the owner of a [`PeerTable`] must do.
#[derive(Debug)]
pub(crate) enum Action {
    /// Dial `address`; report the result with `generation`.
    Dial {
        name: String,
        generation: u64,
        address: PeerAddress,
        security: Security,
    },
    /// Tear down a connection that is no longer wanted.
    Close(Connection),
}

#[derive(Debug)]
struct Entry {
    peer: Peer,
    /// `Err(reason)` when the announced address cannot be dialled.
    address: Result<PeerAddress, String>,
    /// Bumped on every change of address or TLS, so that the result of a
    /// dial started before is recognised as stale.
    generation: u64,
    backoff: Backoff,
    next_attempt: Option<Instant>,
}

/// Peers by name (Cilium's pool manager, `pkg/hubble/relay/pool`):
///
/// - `PEER_ADDED`/`PEER_UPDATED` ([`PeerTable::upsert`]): a new peer, or one
///   whose address or TLS changed, is dialled at once, and its old
///   connection closed; the same announcement again changes nothing;
/// - `PEER_DELETED` ([`PeerTable::remove`]): the peer and its connection go;
/// - a failed dial or a broken connection ([`PeerTable::dialed`],
///   [`PeerTable::gone`]) schedules the next attempt with exponential
///   backoff per peer, reset by a success; [`PeerTable::due`] returns the
///   attempts whose time has come and [`PeerTable::next_deadline`] when the
///   next one is.
#[derive(Debug)]
pub(crate) struct PeerTable {
    entries: BTreeMap<String, Entry>,
    generations: u64,
    backoff_min: Duration,
    backoff_max: Duration,
}

impl PeerTable {
    pub(crate) fn new(backoff_min: Duration, backoff_max: Duration) -> Self {
        Self {
            entries: BTreeMap::new(),
            generations: 0,
            backoff_min,
            backoff_max,
        }
    }

    /// Applies a Peer service notification.
    pub(crate) fn apply(&mut self, notification: ChangeNotification) -> Vec<Action> {
        match ChangeNotificationType::try_from(notification.r#type) {
            Ok(ChangeNotificationType::PeerAdded | ChangeNotificationType::PeerUpdated) => {
                self.upsert(notification)
            }
            Ok(ChangeNotificationType::PeerDeleted) => self.remove(&notification.name),
            Ok(ChangeNotificationType::Unknown) | Err(_) => Vec::new(),
        }
    }

    pub(crate) fn upsert(&mut self, notification: ChangeNotification) -> Vec<Action> {
        let ChangeNotification {
            name, address, tls, ..
        } = notification;
        let security = Security::from_server_name(tls.as_ref().map(|t| t.server_name.as_str()));
        let mut actions = Vec::new();
        if let Some(old) = self.entries.get(&name) {
            if old.peer.address == address && old.peer.security == security {
                return actions;
            }
            actions.extend(old.peer.connection.clone().map(Action::Close));
        }
        self.generations += 1;
        let generation = self.generations;
        let parsed = if address.is_empty() {
            Err("the Peer service announced no address".to_owned())
        } else {
            address.parse::<PeerAddress>().map_err(|e| e.to_string())
        };
        let (status, last_error) = match &parsed {
            Ok(addr) => {
                actions.push(Action::Dial {
                    name: name.clone(),
                    generation,
                    address: addr.clone(),
                    security: security.clone(),
                });
                (ConnectionStatus::Connecting, None)
            }
            Err(e) => (ConnectionStatus::NilConnection, Some(e.clone())),
        };
        let entry = Entry {
            peer: Peer {
                name: name.clone(),
                address,
                security,
                status,
                connection: None,
                last_error,
            },
            address: parsed,
            generation,
            backoff: Backoff::new(self.backoff_min, self.backoff_max),
            next_attempt: None,
        };
        self.entries.insert(name, entry);
        actions
    }

    pub(crate) fn remove(&mut self, name: &str) -> Vec<Action> {
        self.entries
            .remove(name)
            .and_then(|e| e.peer.connection)
            .map(Action::Close)
            .into_iter()
            .collect()
    }

    /// The result of a dial started with `generation`. A stale result (the
    /// peer changed or went meanwhile) is closed.
    pub(crate) fn dialed(
        &mut self,
        name: &str,
        generation: u64,
        result: Result<Connection, String>,
        now: Instant,
    ) -> Vec<Action> {
        let Some(entry) = self
            .entries
            .get_mut(name)
            .filter(|e| e.generation == generation)
        else {
            return result.ok().map(Action::Close).into_iter().collect();
        };
        match result {
            Ok(connection) => {
                entry.backoff.reset();
                entry.next_attempt = None;
                entry.peer.status = ConnectionStatus::Ready;
                entry.peer.connection = Some(connection);
                entry.peer.last_error = None;
            }
            Err(error) => {
                entry.peer.status = ConnectionStatus::TransientFailure;
                entry.peer.connection = None;
                entry.peer.last_error = Some(error);
                entry.next_attempt = Some(now + entry.backoff.next_delay());
            }
        }
        Vec::new()
    }

    /// The connection made with `generation` is gone: try again after the
    /// backoff.
    pub(crate) fn gone(&mut self, name: &str, generation: u64, now: Instant) {
        let Some(entry) = self
            .entries
            .get_mut(name)
            .filter(|e| e.generation == generation && e.peer.status == ConnectionStatus::Ready)
        else {
            return;
        };
        entry.peer.status = ConnectionStatus::TransientFailure;
        entry.peer.connection = None;
        entry.peer.last_error = Some("connection lost".to_owned());
        entry.next_attempt = Some(now + entry.backoff.next_delay());
    }

    /// The dials whose time has come.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        for (name, entry) in &mut self.entries {
            if entry.next_attempt.is_none_or(|t| t > now) {
                continue;
            }
            let Ok(address) = &entry.address else {
                continue;
            };
            self.generations += 1;
            entry.generation = self.generations;
            entry.next_attempt = None;
            entry.peer.status = ConnectionStatus::Connecting;
            actions.push(Action::Dial {
                name: name.clone(),
                generation: entry.generation,
                address: address.clone(),
                security: entry.peer.security.clone(),
            });
        }
        actions
    }

    /// When [`PeerTable::due`] next has something to do.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.entries.values().filter_map(|e| e.next_attempt).min()
    }

    /// Every connection, marking the peers shut down (the relay stops).
    pub(crate) fn shutdown(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        for entry in self.entries.values_mut() {
            actions.extend(entry.peer.connection.take().map(Action::Close));
            entry.peer.status = ConnectionStatus::Shutdown;
            entry.next_attempt = None;
        }
        actions
    }

    pub(crate) fn snapshot(&self, peer_service_connected: bool) -> PoolState {
        PoolState {
            peers: self
                .entries
                .iter()
                .map(|(name, e)| (name.clone(), e.peer.clone()))
                .collect(),
            peer_service_connected,
        }
    }
}

#[cfg(test)]
mod tests {
    use hubble_api::peer::Tls;

    use super::*;

    fn added(name: &str, address: &str, server_name: Option<&str>) -> ChangeNotification {
        ChangeNotification {
            name: name.into(),
            address: address.into(),
            r#type: ChangeNotificationType::PeerAdded as i32,
            tls: server_name.map(|s| Tls {
                server_name: s.into(),
            }),
        }
    }

    fn with_type(mut n: ChangeNotification, t: ChangeNotificationType) -> ChangeNotification {
        n.r#type = t as i32;
        n
    }

    /// The dials among `actions`, as `name@address generation`, and how many
    /// closes.
    fn dials(actions: &[Action]) -> (Vec<String>, usize) {
        let mut dials = Vec::new();
        let mut closes = 0;
        for a in actions {
            match a {
                Action::Dial {
                    name,
                    generation,
                    address,
                    ..
                } => dials.push(format!("{name}@{address} {generation}")),
                Action::Close(_) => closes += 1,
            }
        }
        (dials, closes)
    }

    fn table() -> PeerTable {
        PeerTable::new(Duration::from_secs(1), Duration::from_secs(4))
    }

    fn status(t: &PeerTable, name: &str) -> ConnectionStatus {
        t.snapshot(true).peers[name].status
    }

    #[test]
    fn added_peers_are_dialled_at_once_with_their_security() {
        let mut t = table();
        let a = t.apply(added(
            "c1/n1",
            "10.0.0.1",
            Some("n1.c1.hubble-grpc.cilium.io"),
        ));
        assert_eq!(dials(&a), (vec!["c1/n1@10.0.0.1:4244 1".into()], 0));
        match &a[0] {
            Action::Dial { security, .. } => assert_eq!(
                security,
                &Security::Tls {
                    server_name: "n1.c1.hubble-grpc.cilium.io".into()
                }
            ),
            other => panic!("{other:?}"),
        }
        let a = t.apply(added("n2", "unix:///run/h.sock", None));
        assert_eq!(dials(&a).0, ["n2@/run/h.sock 2"]);
        assert_eq!(status(&t, "n2"), ConnectionStatus::Connecting);
        // The same announcement again (a Notify reconnect) changes nothing.
        assert!(t.apply(added("n2", "unix:///run/h.sock", None)).is_empty());
    }

    #[test]
    fn an_invalid_address_is_a_nil_connection_never_dialled() {
        let mut t = table();
        assert!(t.apply(added("n1", "10.0.0.1:99999", None)).is_empty());
        let peer = &t.snapshot(true).peers["n1"];
        assert_eq!(peer.status, ConnectionStatus::NilConnection);
        assert!(
            peer.last_error.as_ref().unwrap().contains("port"),
            "{peer:?}"
        );
        assert!(t.due(Instant::now() + Duration::from_secs(60)).is_empty());
        // Fixed by an update.
        let fixed = with_type(
            added("n1", "10.0.0.1", None),
            ChangeNotificationType::PeerUpdated,
        );
        assert_eq!(dials(&t.apply(fixed)).0, ["n1@10.0.0.1:4244 2"]);
    }

    #[test]
    fn failures_back_off_per_peer_and_stale_results_are_ignored() {
        let mut t = table();
        let t0 = Instant::now();
        t.apply(added("n1", "10.0.0.1", None));
        t.apply(added("n2", "10.0.0.2", None));
        t.dialed("n1", 1, Err("refused".into()), t0);
        assert_eq!(status(&t, "n1"), ConnectionStatus::TransientFailure);
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert!(t.due(t0).is_empty());
        let a = t.due(t0 + Duration::from_secs(1));
        assert_eq!(dials(&a).0, ["n1@10.0.0.1:4244 3"]);
        assert_eq!(t.next_deadline(), None);
        // The old generation's late answer does not count.
        t.dialed("n1", 1, Err("late".into()), t0);
        assert_eq!(status(&t, "n1"), ConnectionStatus::Connecting);
        t.dialed("n1", 3, Err("refused".into()), t0 + Duration::from_secs(1));
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(3)));
        // n2's own schedule is untouched by n1's failures.
        t.dialed("n2", 2, Err("refused".into()), t0);
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn updates_and_deletes() {
        let mut t = table();
        t.apply(added("n1", "10.0.0.1", None));
        // The address changes before the dial answered: dial the new one.
        let a = t.apply(with_type(
            added("n1", "10.0.0.9", None),
            ChangeNotificationType::PeerUpdated,
        ));
        assert_eq!(dials(&a), (vec!["n1@10.0.0.9:4244 2".into()], 0));
        // TLS appearing is a change too.
        let a = t.apply(added(
            "n1",
            "10.0.0.9",
            Some("n1.default.hubble-grpc.cilium.io"),
        ));
        assert_eq!(dials(&a).0, ["n1@10.0.0.9:4244 3"]);
        let a = t.apply(with_type(
            added("n1", "", None),
            ChangeNotificationType::PeerDeleted,
        ));
        assert!(a.is_empty());
        assert!(t.snapshot(true).peers.is_empty());
        assert!(
            t.apply(with_type(
                added("n9", "x", None),
                ChangeNotificationType::Unknown
            ))
            .is_empty()
        );
    }
}
