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

use crate::{CertificateInfo, TlsHandle, reloader::Reloader};

/// Prometheus metrics of every TLS identity it tracks, computed at scrape time
/// from the material in use, so "seconds until expiry" is never stale:
///
/// - `clustermesh_tls_certificate_expiry_seconds{role, kind, file, subject, serial}`:
///   seconds until not-after (negative once expired), for the certificate
///   (`kind="cert"`) and each CA of the bundle (`kind="ca"`).
/// - `clustermesh_tls_reloads_total{role}` and
///   `clustermesh_tls_reload_failures_total{role}`.
///
/// Register it once per registry, then [`TlsMetrics::track`] each identity.
/// Clones share the tracked set. Identities dropped by their owner disappear.
#[derive(Clone, Default)]
pub struct TlsMetrics {
    sources: Arc<Mutex<Vec<Source>>>,
}

struct Source {
    role: String,
    reloader: Weak<Reloader>,
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
        self.sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Source {
                role: role.into(),
                reloader: Arc::downgrade(handle.reloader()),
            });
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
        let live: Vec<(String, Arc<Reloader>)> = {
            let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
            sources.retain(|s| s.reloader.strong_count() > 0);
            sources
                .iter()
                .filter_map(|s| Some((s.role.clone(), s.reloader.upgrade()?)))
                .collect()
        };
        let now = SystemTime::now();

        let mut expiry = encoder.encode_descriptor(
            "clustermesh_tls_certificate_expiry_seconds",
            "Seconds until the certificate's not-after time, negative once expired",
            None,
            MetricType::Gauge,
        )?;
        for (role, reloader) in &live {
            let material = reloader.current();
            let files = material.files();
            let cert_file = files.cert.display().to_string();
            let ca_file = files.ca_bundle.display().to_string();
            let entries = std::iter::once(("cert", &cert_file, material.certificate())).chain(
                material
                    .ca_certificates()
                    .iter()
                    .map(|ca| ("ca", &ca_file, ca)),
            );
            for (kind, file, info) in entries {
                encode_expiry(&mut expiry, role, kind, file, info, now)?;
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
            for (role, reloader) in &live {
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
    file: &str,
    info: &CertificateInfo,
    now: SystemTime,
) -> Result<(), fmt::Error> {
    let labels = [
        ("role", role),
        ("kind", kind),
        ("file", file),
        ("subject", info.subject.as_str()),
        ("serial", info.serial.as_str()),
    ];
    ConstGauge::new(info.seconds_left(now)).encode(family.encode_family(&labels)?)
}
