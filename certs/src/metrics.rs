use std::{
    fmt,
    sync::{Arc, Mutex, PoisonError, Weak},
    time::SystemTime,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::{CertificateInfo, TlsHandle, TlsMaterial, reloader::Reloader};

/// Prometheus metrics of every TLS identity it tracks, computed at scrape time
/// from the material in use, so "seconds until expiry" is never stale:
///
/// - `clustermesh_tls_certificate_expiry_seconds{role, kind, subject, serial}`:
///   (no file paths: a scrape says what expires, not where it is stored)
///   seconds until not-after (negative once expired), for the certificate
///   (`kind="cert"`) and each CA of the bundle (`kind="ca"`).
/// - `clustermesh_tls_reloads_total{role}` and
///   `clustermesh_tls_reload_failures_total{role}`.
///
/// Register it once per registry, then [`TlsMetrics::track`] each watched
/// identity (or [`TlsMetrics::track_material`] material loaded once). Clones
/// share the tracked set. Identities dropped by their owner disappear.
#[derive(Clone, Default)]
pub struct TlsMetrics {
    sources: Arc<Mutex<Vec<Source>>>,
}

struct Source {
    role: String,
    target: Target,
}

/// What a source exports; weak, so that tracking never keeps an identity alive.
enum Target {
    /// A watched identity: expiry of its current material and reload counts.
    Reloader(Weak<Reloader>),
    /// Material loaded once (e.g. PEM handed to `etcd-client`): expiry only.
    Material(Weak<TlsMaterial>),
}

/// A live source at scrape time.
enum Live {
    Reloader(Arc<Reloader>),
    Material(Arc<TlsMaterial>),
}

impl Target {
    fn upgrade(&self) -> Option<Live> {
        match self {
            Self::Reloader(weak) => weak.upgrade().map(Live::Reloader),
            Self::Material(weak) => weak.upgrade().map(Live::Material),
        }
    }
}

impl Live {
    fn material(&self) -> Arc<TlsMaterial> {
        match self {
            Self::Reloader(reloader) => reloader.current(),
            Self::Material(material) => material.clone(),
        }
    }
}

impl TlsMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the metrics to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(TlsCollector {
            sources: self.sources.clone(),
        }));
    }

    /// Exports the identity behind `handle` under the label `role`, e.g.
    /// `apiserver-server` or `remote-c2`.
    pub fn track(&self, role: impl Into<String>, handle: &TlsHandle) {
        self.add(
            role.into(),
            Target::Reloader(Arc::downgrade(handle.reloader())),
        );
    }

    /// Exports the expiry of material loaded without a watcher, such as the PEM
    /// an agent hands to `etcd-client` for one remote cluster. The series go
    /// away when the last `Arc` of `material` is dropped.
    pub fn track_material(&self, role: impl Into<String>, material: &Arc<TlsMaterial>) {
        self.add(role.into(), Target::Material(Arc::downgrade(material)));
    }

    fn add(&self, role: String, target: Target) {
        self.sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Source { role, target });
    }
}

impl fmt::Debug for TlsMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("TlsMetrics")
            .field(
                "roles",
                &sources.iter().map(|s| &s.role).collect::<Vec<_>>(),
            )
            .finish()
    }
}

struct TlsCollector {
    sources: Arc<Mutex<Vec<Source>>>,
}

impl fmt::Debug for TlsCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsCollector")
    }
}

impl Collector for TlsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let live: Vec<(String, Live)> = {
            let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
            let mut live = Vec::with_capacity(sources.len());
            sources.retain(|s| match s.target.upgrade() {
                Some(target) => {
                    live.push((s.role.clone(), target));
                    true
                }
                None => false,
            });
            live
        };
        let now = SystemTime::now();

        let mut expiry = encoder.encode_descriptor(
            "clustermesh_tls_certificate_expiry_seconds",
            "Seconds until the certificate's not-after time, negative once expired",
            None,
            MetricType::Gauge,
        )?;
        for (role, source) in &live {
            let material = source.material();
            let entries = std::iter::once(("cert", material.certificate()))
                .chain(material.ca_certificates().iter().map(|ca| ("ca", ca)));
            for (kind, info) in entries {
                encode_expiry(&mut expiry, role, kind, info, now)?;
            }
        }

        for (name, help, count) in [
            (
                "clustermesh_tls_reloads",
                "Changed TLS files taken into use",
                (|s: crate::ReloadStats| s.reloads) as fn(_) -> u64,
            ),
            (
                "clustermesh_tls_reload_failures",
                "Changed TLS files rejected; the previous material stayed in use",
                |s: crate::ReloadStats| s.failures,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (role, source) in &live {
                let Live::Reloader(reloader) = source else {
                    continue;
                };
                let value = count(*reloader.stats().borrow());
                let labels = [("role", role.as_str())];
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

fn encode_expiry(
    family: &mut prometheus_client::encoding::MetricEncoder<'_>,
    role: &str,
    kind: &str,
    info: &CertificateInfo,
    now: SystemTime,
) -> Result<(), fmt::Error> {
    let labels = [
        ("role", role),
        ("kind", kind),
        ("subject", info.subject.as_str()),
        ("serial", info.serial.as_str()),
    ];
    ConstGauge::new(info.seconds_left(now)).encode(family.encode_family(&labels)?)
}
