//! The Prometheus view of loaded certificates.

use std::sync::Arc;

use certs::{ServerTls, TlsMaterial, TlsMetrics};
use prometheus_client::{encoding::text::encode, registry::Registry};

use crate::support::{Pki, fast_config};

/// The value of the one sample whose line starts with `name{` and contains
/// every label of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    let matching: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .collect();
    assert_eq!(matching.len(), 1, "{name} {labels:?} in:\n{text}");
    matching[0].rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn exports_seconds_until_expiry_and_reload_counts_per_role() {
    let pki = Pki::new("mesh-ca");
    let files = pki.server("apiserver");
    let tls = ServerTls::load(files.clone(), fast_config()).unwrap();
    let metrics = TlsMetrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    metrics.track("apiserver-server", &tls.handle());

    let mut text = String::new();
    encode(&mut text, &registry).unwrap();

    assert!(!text.contains("file="), "no file paths in metrics:\n{text}");
    let leaf = sample(
        &text,
        "clustermesh_tls_certificate_expiry_seconds",
        &[
            "role=\"apiserver-server\"",
            "kind=\"cert\"",
            "subject=\"CN=apiserver, O=clustermesh\"",
        ],
    );
    // Issued for one day.
    assert!((86_000.0..=86_400.0).contains(&leaf), "{leaf}");
    let ca = sample(
        &text,
        "clustermesh_tls_certificate_expiry_seconds",
        &["kind=\"ca\"", "subject=\"CN=mesh-ca, O=clustermesh\""],
    );
    // The CA was made for 30 days.
    assert!(
        (30.0 * 86_400.0 - 400.0..=30.0 * 86_400.0).contains(&ca),
        "{ca}"
    );
    assert_eq!(
        sample(
            &text,
            "clustermesh_tls_reloads_total",
            &["role=\"apiserver-server\""]
        ),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            "clustermesh_tls_reload_failures_total",
            &["role=\"apiserver-server\""]
        ),
        0.0
    );
    assert!(
        text.contains("# TYPE clustermesh_tls_certificate_expiry_seconds gauge"),
        "{text}"
    );

    // An identity its owner dropped is no longer exported.
    drop(tls);
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    assert!(!text.contains("apiserver-server"), "{text}");
}

#[test]
fn exports_expiry_of_material_loaded_without_a_watcher() {
    let pki = Pki::new("mesh-ca");
    let material = Arc::new(TlsMaterial::load(&pki.client("remote-c2")).unwrap());
    let metrics = TlsMetrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    metrics.track_material("remote-c2", &material);

    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    let leaf = sample(
        &text,
        "clustermesh_tls_certificate_expiry_seconds",
        &[
            "role=\"remote-c2\"",
            "kind=\"cert\"",
            "subject=\"CN=remote-c2, O=clustermesh\"",
        ],
    );
    assert!((86_000.0..=86_400.0).contains(&leaf), "{leaf}");
    // No watcher, so no reload counters.
    assert!(!text.contains("clustermesh_tls_reloads_total{"), "{text}");

    drop(material);
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    assert!(!text.contains("remote-c2"), "{text}");
}
