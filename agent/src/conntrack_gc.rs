//! The conntrack garbage collector: every interval, one pass over the
//! pinned conntrack map ([`bpf::ConntrackMap::gc`]) on a blocking thread,
//! apart from the control loop, deleting the entries idle longer than
//! their connection's state allows; then the metrics and the status.
//!
//! Not for: flushing conntrack on a policy change (entries of a connection
//! that policy now denies stay until they expire, as in Cilium).

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use bpf::{CONNTRACK_MAP, ConntrackMap, CtGcStats, CtLifetimes, monotonic_now_ns};
use tokio::{sync::watch, time::MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{metrics::AgentMetrics, views::ConntrackView};

/// When and how the collector runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackGcConfig {
    /// Time between passes; zero turns the collector off (default 30 s;
    /// Cilium adapts its interval between 10 s and 12 h, we keep one).
    pub interval: Duration,
    /// How long entries may stay idle (default: Cilium's lifetimes).
    pub lifetimes: CtLifetimes,
}

impl Default for ConntrackGcConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            lifetimes: CtLifetimes::default(),
        }
    }
}

/// The collector of one node's conntrack map.
pub(crate) struct ConntrackGc {
    bpffs_dir: PathBuf,
    config: ConntrackGcConfig,
    metrics: Arc<AgentMetrics>,
    last_pass: watch::Sender<Option<ConntrackView>>,
}

impl ConntrackGc {
    /// The collector of the map pinned in `bpffs_dir`, and a receiver of
    /// what its last pass found (`None` before the first).
    pub(crate) fn new(
        bpffs_dir: PathBuf,
        config: ConntrackGcConfig,
        metrics: Arc<AgentMetrics>,
    ) -> (Self, watch::Receiver<Option<ConntrackView>>) {
        let (last_pass, rx) = watch::channel(None);
        (
            Self {
                bpffs_dir,
                config,
                metrics,
                last_pass,
            },
            rx,
        )
    }

    /// Runs a pass at once and then every interval, until `shutdown`. A
    /// failed pass is logged and counted (`errors{component="conntrack-gc"}`)
    /// and the next one tried at its time.
    pub(crate) async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if self.config.interval.is_zero() {
            info!("conntrack garbage collection is off");
            shutdown.cancelled().await;
            return Ok(());
        }
        let map = Arc::new(
            ConntrackMap::open_pinned(&self.bpffs_dir, CONNTRACK_MAP)
                .context("opening the conntrack map for garbage collection")?,
        );
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let (map, lifetimes) = (map.clone(), self.config.lifetimes);
            let started = Instant::now();
            // A pass over a large map takes a while of syscalls: off the
            // runtime's threads.
            let result =
                tokio::task::spawn_blocking(move || map.gc(&lifetimes, monotonic_now_ns()))
                    .await
                    .context("a conntrack garbage collection pass panicked")?;
            match result {
                Ok(stats) => self.record(&stats, started.elapsed()),
                Err(e) => {
                    warn!(error = %e, "conntrack garbage collection failed; trying again at the next interval");
                    self.metrics.count_error("conntrack-gc");
                }
            }
        }
    }

    fn record(&self, stats: &CtGcStats, took: Duration) {
        self.metrics.record_conntrack_gc(stats, took);
        let view = ConntrackView {
            entries: stats.remaining_total(),
            last_gc_deleted: stats.deleted_total(),
            last_gc_ms: took.as_millis() as u64,
        };
        if view.last_gc_deleted > 0 {
            debug!(
                deleted = view.last_gc_deleted,
                entries = view.entries,
                "conntrack entries expired"
            );
        }
        self.last_pass.send_replace(Some(view));
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use bpf::{CtKey, CtScope, CtValue, Datapath, DatapathConfig, Protocol};

    use super::*;

    /// Removes the test's pin directory, also on panic.
    struct Pins(PathBuf);

    impl Drop for Pins {
        fn drop(&mut self) {
            let _ = Datapath::remove_pins(&self.0);
        }
    }

    fn metric(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    }

    /// The task on a real pinned map: idle UDP and closing TCP entries go,
    /// established TCP stays; the metrics and the status follow.
    #[tokio::test]
    async fn the_task_deletes_expired_entries_and_reports_them() -> anyhow::Result<()> {
        netns::skip_unless_root!(Ok(()));
        let pins = Pins(PathBuf::from("/sys/fs/bpf").join(netns::unique_name("cmgc-")));
        let dp = Datapath::open(DatapathConfig {
            bpffs_dir: pins.0.clone(),
            conntrack_max_entries: 4096,
            ipcache_max_entries: 1024,
            ..DatapathConfig::default()
        })?;
        let now = monotonic_now_ns();
        let two_minutes_ago = now - 120_000_000_000;
        let entry = |protocol, port: u16, value: CtValue| {
            let src: SocketAddr = format!("10.1.0.1:{port}").parse().unwrap();
            let dst: SocketAddr = "10.2.0.1:80".parse().unwrap();
            (CtKey::new(protocol, src, dst, CtScope::Egress), value)
        };
        let mut entries = Vec::new();
        for port in 1000..1003 {
            // idle two minutes: past the 60 s of non-TCP entries
            entries.push(entry(Protocol::Udp, port, CtValue::new(two_minutes_ago, 7)));
            // closing: past the 10 s of closing TCP
            let closing = CtValue::new(two_minutes_ago, 7)
                .with_reply_seen()
                .with_closing();
            entries.push(entry(Protocol::Tcp, port, closing));
        }
        for port in 2000..2004 {
            // established two minutes ago: 6 h to go
            let established = CtValue::new(two_minutes_ago, 7).with_reply_seen();
            entries.push(entry(Protocol::Tcp, port, established));
        }
        let v6 = CtKey::new(
            Protocol::Tcp,
            "[fd00::1]:3000".parse()?,
            "[fd00::2]:80".parse()?,
            CtScope::Ingress,
        );
        entries.push((v6, CtValue::new(now, 7)));
        dp.conntrack().batch_upsert(&entries)?;

        let metrics = Arc::new(AgentMetrics::new());
        let (gc, mut last_pass) = ConntrackGc::new(
            pins.0.clone(),
            ConntrackGcConfig {
                interval: Duration::from_secs(3600),
                lifetimes: CtLifetimes::default(),
            },
            metrics.clone(),
        );
        let token = CancellationToken::new();
        let task = tokio::spawn(gc.run(token.clone()));
        // the first pass runs at once
        let view =
            tokio::time::timeout(Duration::from_secs(30), last_pass.wait_for(Option::is_some))
                .await
                .context("no GC pass reported")??
                .clone()
                .expect("a pass");
        token.cancel();
        task.await??;

        assert_eq!((view.entries, view.last_gc_deleted), (5, 6));
        let remaining = dp.conntrack().dump()?;
        assert_eq!(remaining.len(), 5);
        assert!(remaining.values().all(|v| !v.closing()));
        let text = metrics.encode();
        for (name, want) in [
            (
                r#"clustermesh_agent_conntrack_gc_deleted_total{protocol="udp"}"#,
                3.0,
            ),
            (
                r#"clustermesh_agent_conntrack_gc_deleted_total{protocol="tcp"}"#,
                3.0,
            ),
            (r#"clustermesh_agent_conntrack_entries{family="ipv4"}"#, 4.0),
            (r#"clustermesh_agent_conntrack_entries{family="ipv6"}"#, 1.0),
        ] {
            assert_eq!(metric(&text, name), Some(want), "{name} in\n{text}");
        }
        assert!(
            metric(&text, "clustermesh_agent_conntrack_gc_seconds").is_some(),
            "{text}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn an_interval_of_zero_turns_it_off() {
        let metrics = Arc::new(AgentMetrics::new());
        let (gc, last_pass) = ConntrackGc::new(
            PathBuf::from("/nonexistent"),
            ConntrackGcConfig {
                interval: Duration::ZERO,
                ..ConntrackGcConfig::default()
            },
            metrics,
        );
        let token = CancellationToken::new();
        token.cancel();
        // no map is opened (the path does not exist) and no pass runs
        gc.run(token).await.expect("off");
        assert!(last_pass.borrow().is_none());
    }
}
