//! For the UI's browser tests and benchmark (feature `testing`): a real
//! Hubble server (on a unix socket) to feed the UI made-up flows, the UI
//! itself in-process, and a headless Chromium on its page.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::{
    Ui,
    feed::{FeedOptions, RelaySpec},
    flags::Config,
    model::Limits,
};
use anyhow::Context;
use browser::{Browser, LaunchOptions, Page};
use hubble::{
    Event, FlowBuffer, LocalObserver,
    client::Address,
    peer::{PeerService, Peers},
    ring::Capacity,
    server::{HubbleServer, Listen},
    time::timestamp,
};
use hubble_api::flow::{DropReason, Endpoint, Flow, Layer4, Tcp, TcpFlags, Verdict, layer4};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Every wait of these tests ends by then.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A Hubble server whose flows the test writes. It runs on a thread and
/// runtime of its own, so that stopping it closes every connection at once,
/// as a relay that dies does.
pub struct FlowSource {
    pub buffer: Arc<FlowBuffer<Flow>>,
    pub socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FlowSource {
    /// Serves on `socket` an empty buffer of `capacity` (2^n-1) flows.
    pub async fn start(socket: &Path, capacity: usize) -> anyhow::Result<Self> {
        let buffer = Arc::new(FlowBuffer::new(Capacity::new(capacity)?));
        Self::serve(socket, buffer).await
    }

    /// Serves `buffer` (kept across a restart) on `socket`; returns once
    /// the socket is bound.
    pub async fn serve(socket: &Path, buffer: Arc<FlowBuffer<Flow>>) -> anyhow::Result<Self> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound, is_bound) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
        let (path, served) = (socket.to_path_buf(), buffer.clone());
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = bound.send(Err(e.into()));
                    return;
                }
            };
            rt.block_on(async move {
                let observer = Arc::new(LocalObserver::new(served, "c1/n1".into(), "test".into()));
                let (_tx, peers) = tokio::sync::watch::channel(Peers::default());
                let listen = Listen {
                    unix_socket: path,
                    tcp: None,
                };
                let server =
                    match HubbleServer::bind(listen, observer, PeerService::new(peers)).await {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = bound.send(Err(e.into()));
                            return;
                        }
                    };
                let _ = bound.send(Ok(()));
                let forever = CancellationToken::new();
                tokio::select! {
                    _ = server.run(forever) => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime drops every connection task with it.
            drop(rt);
        });
        is_bound.await.context("the flow source's thread")??;
        Ok(Self {
            buffer,
            socket: socket.to_path_buf(),
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn push(&self, flows: impl IntoIterator<Item = Flow>) {
        self.buffer.push_batch(flows.into_iter().map(Event::Flow));
    }

    /// Stops serving (every connection closes), keeping the buffer.
    pub async fn stop(mut self) -> Arc<FlowBuffer<Flow>> {
        self.halt().await;
        self.buffer.clone()
    }

    async fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for FlowSource {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A pod of `app` in `cluster`/`ns`.
pub fn pod(cluster: &str, ns: &str, app: &str, identity: u32) -> Endpoint {
    Endpoint {
        identity,
        cluster_name: cluster.into(),
        namespace: ns.into(),
        labels: vec![
            format!("k8s:app={app}"),
            format!("k8s:io.cilium.k8s.policy.cluster={cluster}"),
            format!("k8s:io.kubernetes.pod.namespace={ns}"),
        ],
        pod_name: format!("{app}-{cluster}"),
        ..Default::default()
    }
}

/// A TCP SYN from `src` to `dst`:`port`, now.
pub fn syn(src: Endpoint, dst: Endpoint, port: u32, verdict: Verdict) -> Flow {
    let node = format!("{}/n1", dst.cluster_name);
    Flow {
        time: Some(timestamp(SystemTime::now())),
        verdict: verdict as i32,
        drop_reason_desc: if verdict == Verdict::Dropped {
            DropReason::PolicyDenied as i32
        } else {
            0
        },
        node_name: node,
        source: Some(src),
        destination: Some(dst),
        is_reply: Some(false),
        traffic_direction: 1,
        l4: Some(Layer4 {
            protocol: Some(layer4::Protocol::Tcp(Tcp {
                source_port: 41000,
                destination_port: port,
                flags: Some(TcpFlags {
                    syn: true,
                    ..Default::default()
                }),
            })),
        }),
        ..Default::default()
    }
}

/// The UI, in-process on a free port of 127.0.0.1, reading `relays`.
pub struct RunningUi {
    pub url: String,
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningUi {
    pub async fn start(relays: &[(&str, &Path)]) -> anyhow::Result<Self> {
        let config = Config {
            listen: "127.0.0.1:0".parse()?,
            relays: relays
                .iter()
                .map(|(name, socket)| RelaySpec {
                    name: name.to_string(),
                    address: Address::Unix(socket.to_path_buf()),
                    tls: None,
                })
                .collect(),
            agents: Vec::new(),
            feed: FeedOptions { last: 10_000 },
            limits: Limits::default(),
            services_interval: Duration::from_millis(500),
        };
        let ui = Ui::bind(config).await?;
        let addr = ui.local_addr()?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(ui.run(shutdown.clone()));
        Ok(Self {
            url: format!("http://{addr}/"),
            addr,
            shutdown,
            task,
        })
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.context("the UI task")?
    }
}

/// A browser on the UI's page, connected to its stream.
pub async fn open(chromium: PathBuf, url: &str) -> anyhow::Result<(Browser, Page)> {
    let browser = Browser::launch(LaunchOptions {
        chromium,
        width: 1600,
        height: 1000,
    })
    .await?;
    let page = browser.new_page().await?;
    page.goto(url).await?;
    page.wait_for(
        "the page to connect to the UI's stream",
        "!!(window.cmui && window.cmui.connected)",
        DEADLINE,
    )
    .await?;
    Ok((browser, page))
}

/// Saves a screenshot `name` of `page` into `dir`, and says where.
pub async fn screenshot(page: &Page, dir: &Path, name: &str) -> anyhow::Result<()> {
    let path = dir.join(format!("{name}.png"));
    page.screenshot(&path).await?;
    eprintln!("screenshot: {}", path.display());
    Ok(())
}
