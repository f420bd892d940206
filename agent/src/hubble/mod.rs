//! The agent's Hubble server: flows from the datapath's events, with both
//! ends described from the agent's tables, in a ring buffer served by the
//! `Observer` and `Peer` services of the `hubble` crate.
//!
//! - [`directory`]: identities and pods as flows show them, written by
//!   the control loop (through its tables), read by the flow reader;
//! - [`ingest`]: the one reader of the datapath's flow ring buffer;
//! - [`record`]: a buffered flow and its translation into Hubble's `Flow`;
//! - [`metrics`]: `hubble_*` metrics;
//! - [`peers`]: the nodes the agent knows, as Hubble peers.

mod directory;
mod ingest;
mod metrics;
mod peers;
mod record;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context;
use hubble::{
    FlowBuffer, LocalObserver,
    names::node_fullname,
    peer::{PeerService, Peers},
    ring::Capacity,
    server::{HubbleServer, Listen, TcpListen},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub(crate) use self::{
    directory::FlowDirectory,
    peers::{PeerPort, peers},
    record::DnsRecord,
};
use self::{
    ingest::Ingest,
    record::{AgentFlow, NodeContext},
};
use crate::metrics::AgentMetrics;

/// Puts L7 flows (the DNS proxy's lookups) into the Hubble ring.
#[derive(Clone)]
pub(crate) struct L7Sink {
    buffer: Arc<FlowBuffer<AgentFlow>>,
    node: Arc<NodeContext>,
}

impl L7Sink {
    /// A DNS flow between `event`'s ends, with `event`'s verdict.
    pub(crate) fn dns(&self, event: bpf::FlowEvent, record: DnsRecord) {
        let flow = {
            let entries = self.node.directory.read();
            AgentFlow::dns(
                event,
                std::time::SystemTime::now(),
                &entries,
                &self.node,
                record,
            )
        };
        self.buffer
            .push_batch(std::iter::once(hubble::Event::Flow(flow)));
    }
}

/// The Hubble server's settings.
#[derive(Debug, Clone)]
pub struct HubbleConfig {
    /// The unix socket (always served).
    pub socket: PathBuf,
    /// TCP with mutual TLS: where, and the certificate, key and client CA.
    pub tcp: Option<(SocketAddr, certs::TlsFiles)>,
    /// Flows kept.
    pub capacity: Capacity,
}

/// What the agent's other parts hold of its Hubble server.
pub(crate) struct Hubble {
    pub directory: Arc<FlowDirectory>,
    pub peers: watch::Sender<Peers>,
    pub peer_port: PeerPort,
    pub buffer: Arc<FlowBuffer<AgentFlow>>,
    pub node: Arc<NodeContext>,
    pub metrics: metrics::HubbleMetrics,
    config: HubbleConfig,
}

impl Hubble {
    pub(crate) fn new(
        config: HubbleConfig,
        cluster: &str,
        node: &str,
        agent_metrics: &AgentMetrics,
    ) -> Self {
        let peer_port = PeerPort {
            port: config
                .tcp
                .as_ref()
                .map_or(hubble::names::SERVER_PORT, |(addr, _)| addr.port()),
            tls: config.tcp.is_some(),
        };
        let directory = FlowDirectory::new();
        Self {
            directory: directory.clone(),
            peers: watch::Sender::new(Peers::new()),
            peer_port,
            buffer: Arc::new(FlowBuffer::new(config.capacity)),
            node: Arc::new(NodeContext {
                fullname: node_fullname(cluster, node),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                directory,
            }),
            metrics: metrics::HubbleMetrics::register(agent_metrics),
            config,
        }
    }

    /// Where the DNS proxy puts its L7 flows.
    pub(crate) fn l7_sink(&self) -> L7Sink {
        L7Sink {
            buffer: self.buffer.clone(),
            node: self.node.clone(),
        }
    }

    /// Binds the listeners (a taken port or a bad certificate is an error
    /// at start) and returns the server to run.
    pub(crate) async fn bind(
        &self,
        agent_metrics: &Arc<AgentMetrics>,
    ) -> anyhow::Result<(HubbleServer<AgentFlow>, Option<certs::ServerTls>)> {
        let observer = Arc::new(LocalObserver::new(
            self.buffer.clone(),
            self.node.fullname.clone(),
            self.node.version.clone(),
        ));
        let (tcp, tls) = match &self.config.tcp {
            None => (None, None),
            Some((addr, files)) => {
                let tls = certs::ServerTls::load(
                    files.clone(),
                    certs::Config {
                        alpn_protocols: vec![b"h2".to_vec()],
                        ..Default::default()
                    },
                )
                .with_context(|| {
                    format!(
                        "loading the Hubble server's TLS files ({})",
                        files.cert.display()
                    )
                })?;
                let metrics = agent_metrics.clone();
                let listen = TcpListen {
                    addr: *addr,
                    acceptor: tls.acceptor(),
                    on_handshake_failure: Arc::new(move |reason| {
                        metrics.count_error(&format!("hubble-tls-{reason}"));
                    }),
                };
                (Some(listen), Some(tls))
            }
        };
        let server = HubbleServer::bind(
            Listen {
                unix_socket: self.config.socket.clone(),
                tcp,
            },
            observer,
            PeerService::new(self.peers.subscribe()),
        )
        .await
        .context("starting the Hubble server")?;
        Ok((server, tls))
    }

    /// The flow reader.
    pub(crate) fn ingest(&self, bpffs_dir: PathBuf, metrics: Arc<AgentMetrics>) -> Ingest {
        Ingest {
            bpffs_dir,
            buffer: self.buffer.clone(),
            directory: self.directory.clone(),
            node: self.node.clone(),
            metrics,
            hubble_metrics: self.metrics.clone(),
        }
    }
}

/// The flow reader alone, without the rest of the agent (for benchmarks):
/// it turns what is in a datapath's flow ring buffer into buffered flows
/// exactly as the agent does.
pub struct FlowIngestor {
    ingest: Ingest,
    batch: ingest::Batch,
}

impl FlowIngestor {
    /// A reader whose flows go into a buffer of `capacity`, describing
    /// flows of node `node` in cluster `cluster` (no identities known).
    pub fn new(capacity: Capacity, cluster: &str, node: &str) -> Self {
        let metrics = Arc::new(AgentMetrics::new());
        let hubble = Hubble::new(
            HubbleConfig {
                socket: PathBuf::new(),
                tcp: None,
                capacity,
            },
            cluster,
            node,
            &metrics,
        );
        Self {
            ingest: hubble.ingest(PathBuf::new(), metrics),
            batch: ingest::Batch::new(0),
        }
    }

    /// Turns every event now in `reader`'s ring into flows; returns how many.
    pub fn drain(&mut self, reader: &mut bpf::FlowReader) -> usize {
        self.ingest.drain(reader, &mut self.batch)
    }

    /// One turn of the agent's reading loop: waits up to 200 ms for an
    /// event, turns it and up to a batch of those behind it into flows,
    /// and checks for lost events when due; returns how many were read.
    /// Calling it in a loop reads as the agent does.
    pub fn poll(&mut self, reader: &mut bpf::FlowReader) -> Result<usize, bpf::FlowReaderError> {
        self.ingest.poll(reader, &mut self.batch)
    }

    /// Makes flows of identity `id` show `labels` (and the namespace and
    /// cluster they name), as the agent does for every identity it learns.
    pub fn describe_identity(&self, id: u32, labels: &kvstore::Labels) {
        self.ingest
            .directory
            .set_identity(kvstore::NumericIdentity::new(id), labels);
    }

    /// Makes flows from or to `ip` show pod `namespace/name`, as the agent
    /// does for every ipcache entry that names a pod.
    pub fn describe_pod(&self, ip: std::net::IpAddr, namespace: &str, name: &str) {
        self.ingest.directory.set_pod(ip, namespace, name);
    }

    /// Reads the datapath's count of events it had no room for, and
    /// records any new loss as a lost event (as the agent does twice a
    /// second).
    pub fn check_lost(&mut self, reader: &bpf::FlowReader) {
        self.ingest.check_lost(reader, &mut self.batch);
    }

    /// Events reported lost before the buffer.
    pub fn lost_events(&self) -> u64 {
        self.ingest.buffer.lost_events()
    }

    /// Flows written to the buffer so far.
    pub fn seen_flows(&self) -> u64 {
        self.ingest.buffer.seen_flows()
    }

    /// The newest buffered flow (not a lost event), as Hubble serves it.
    pub fn newest_flow(&self) -> Option<hubble_api::flow::Flow> {
        let ring = self.ingest.buffer.ring();
        let mut out = Vec::new();
        ring.read_back(ring.next_seq(), ring.capacity(), &mut out);
        out.iter().rev().find_map(|e| match e {
            hubble::Event::Flow(f) => Some(hubble::FlowRecord::to_flow(f)),
            hubble::Event::Lost { .. } => None,
        })
    }
}

/// Runs a bound server (and the reloader of its certificates) until
/// `shutdown`.
pub(crate) async fn serve(
    server: HubbleServer<AgentFlow>,
    tls: Option<certs::ServerTls>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Some(tls) = tls {
        let token = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = tls.run(token).await {
                tracing::error!(error = %e, "watching the Hubble TLS files failed; certificates will not be reloaded");
            }
        });
    }
    server
        .run(shutdown)
        .await
        .context("the Hubble server failed")
}
