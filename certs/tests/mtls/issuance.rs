//! Issuing, writing and loading certificates, and the errors for bad files.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    time::{Duration, SystemTime},
};

use certs::{Ca, CaError, CertName, CertificateInfo, LoadError, TlsFiles, TlsMaterial, Validity};

use crate::support::{Pki, expired, replace};

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn name(s: &str) -> CertName {
    CertName::new(s).unwrap()
}

#[test]
fn ca_round_trips_through_its_directory_with_a_private_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("pki");
    let ca = Ca::generate("c1-ca", Validity::days(10).unwrap()).unwrap();
    assert!(!Ca::exists_in(&ca_dir));
    ca.write(&ca_dir).unwrap();

    assert!(Ca::exists_in(&ca_dir));
    assert_eq!(mode(&ca_dir.join("ca.key")), 0o600);
    assert_eq!(mode(&ca_dir.join("ca.crt")), 0o644);
    let loaded = Ca::load(&ca_dir).unwrap();
    assert_eq!(loaded.info(), ca.info());
    assert!(loaded.info().is_ca);
    assert_eq!(loaded.info().common_name.as_deref(), Some("c1-ca"));

    // The loaded CA issues certificates that chain to the original.
    let leaf = loaded
        .issue_client(&name("admin-c1"), Validity::days(1).unwrap())
        .unwrap();
    let files = leaf.write(&ca_dir).unwrap();
    assert_eq!(mode(&files.key), 0o600);
    assert_eq!(files, TlsFiles::in_dir(&ca_dir, &name("admin-c1")));
    let material = TlsMaterial::load(&files).unwrap();
    assert_eq!(material.certificate().issuer, ca.info().subject);
}

#[test]
fn server_certificate_carries_its_names_and_server_usage() {
    let pki = Pki::new("mesh-ca");
    let cert = pki
        .ca
        .issue_server(
            &name("apiserver"),
            &["apiserver.c1.mesh".into(), "*.c1.mesh".into()],
            &["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            Validity::days(3).unwrap(),
        )
        .unwrap();
    let info = cert.info().unwrap();

    assert_eq!(info.common_name.as_deref(), Some("apiserver"));
    assert_eq!(info.dns_names, ["apiserver.c1.mesh", "*.c1.mesh"]);
    assert_eq!(
        info.ip_addresses,
        [
            "127.0.0.1".parse::<std::net::IpAddr>().unwrap(),
            "::1".parse().unwrap()
        ]
    );
    assert!(info.server_auth && !info.client_auth && !info.is_ca);
    assert_eq!(info.issuer, pki.ca.info().subject);
    assert_eq!(info.days_left(SystemTime::now()), 2);
}

#[test]
fn client_certificate_carries_its_name_as_common_name_and_client_usage() {
    let pki = Pki::new("mesh-ca");
    let info = CertificateInfo::from_pem_file(&pki.client("remote-c2").cert).unwrap();

    assert_eq!(info.len(), 1);
    assert_eq!(info[0].common_name.as_deref(), Some("remote-c2"));
    assert!(
        info[0].subject.contains("CN=remote-c2"),
        "{}",
        info[0].subject
    );
    assert!(info[0].client_auth && !info[0].server_auth && !info[0].is_ca);
    assert!(info[0].dns_names.is_empty());
}

#[test]
fn serials_are_unique() {
    let pki = Pki::new("mesh-ca");
    let serials: std::collections::BTreeSet<String> = (0..20)
        .map(|_| {
            pki.ca
                .issue_client(&name("remote-c2"), Validity::days(1).unwrap())
                .unwrap()
                .info()
                .unwrap()
                .serial
        })
        .collect();
    assert_eq!(serials.len(), 20);
}

#[test]
fn issuance_refuses_what_would_not_work() {
    let pki = Pki::new("mesh-ca");
    let one_day = Validity::days(1).unwrap();

    let err = pki
        .ca
        .issue_server(&name("apiserver"), &[], &[], one_day)
        .unwrap_err();
    assert!(matches!(err, CaError::NoSubjectAltName { .. }), "{err}");

    for bad in [
        "bad name",
        "-x.example",
        "127.0.0.1",
        "ex\u{e4}mple.com",
        "",
    ] {
        let err = pki
            .ca
            .issue_server(&name("apiserver"), &[bad.to_owned()], &[], one_day)
            .unwrap_err();
        assert!(
            matches!(err, CaError::InvalidDnsName { .. }),
            "{bad:?}: {err}"
        );
    }

    let err = pki
        .ca
        .issue_client(&name("remote-c2"), Validity::days(31).unwrap())
        .unwrap_err();
    assert!(matches!(err, CaError::OutlivesCa { .. }), "{err}");
    assert!(err.to_string().contains("remote-c2"), "{err}");

    assert!(matches!(
        Ca::generate("", one_day),
        Err(CaError::InvalidCommonName { .. })
    ));
}

#[test]
fn ca_load_checks_files_and_names_them() {
    let pki = Pki::new("mesh-ca");
    let other = Pki::new("other-ca");
    let missing = tempfile::tempdir().unwrap();

    let err = Ca::load(missing.path()).unwrap_err();
    assert!(matches!(err, CaError::Read { .. }), "{err}");
    assert!(err.to_string().contains("ca.crt"), "{err}");

    let err = Ca::load_files(&pki.path("ca.crt"), &other.path("ca.key")).unwrap_err();
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");

    let leaf = pki.client("remote-c2");
    let err = Ca::load_files(&leaf.cert, &leaf.key).unwrap_err();
    assert!(matches!(err, CaError::NotCa { .. }), "{err}");

    fs::write(pki.path("ca.key"), "garbage").unwrap();
    let err = Ca::load(pki.dir.path()).unwrap_err();
    assert!(matches!(err, CaError::ParseKey { .. }), "{err}");
    assert!(err.to_string().contains("ca.key"), "{err}");
}

#[test]
fn material_load_validates_and_names_the_bad_file() {
    let pki = Pki::new("mesh-ca");
    let good = pki.client("remote-c2");
    let material = TlsMaterial::load(&good).unwrap();
    // PEM bytes for stacks that take PEM (etcd-client).
    assert_eq!(material.cert_pem(), fs::read(&good.cert).unwrap());
    assert_eq!(material.key_pem(), fs::read(&good.key).unwrap());
    assert_eq!(material.ca_pem(), fs::read(&good.ca_bundle).unwrap());

    let with = |change: &dyn Fn(&TlsFiles)| {
        let files = pki.client("probe");
        change(&files);
        (TlsMaterial::load(&files).unwrap_err(), files)
    };

    let (err, files) = with(&|f| fs::remove_file(&f.key).unwrap());
    assert!(matches!(err, LoadError::Read { .. }), "{err}");
    assert!(
        err.to_string().contains(files.key.to_str().unwrap()),
        "{err}"
    );

    let (err, _) = with(&|f| replace(&f.cert, b"hello"));
    assert!(matches!(err, LoadError::NoCertificate { .. }), "{err}");

    let (err, _) = with(&|f| replace(&f.key, fs::read(&good.key).unwrap().as_slice()));
    assert!(matches!(err, LoadError::KeyMismatch { .. }), "{err}");

    let (err, _) = with(&|f| {
        replace(
            &f.key,
            b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        )
    });
    assert!(matches!(err, LoadError::ParseKey { .. }), "{err}");

    let (err, _) = with(&|f| replace(&f.ca_bundle, b""));
    assert!(matches!(err, LoadError::EmptyCaBundle { .. }), "{err}");

    let (err, files) = with(&|f| {
        pki.ca
            .issue_client(&name("probe"), expired())
            .unwrap()
            .write_to(&f.cert, &f.key)
            .unwrap()
    });
    assert!(matches!(err, LoadError::Expired { .. }), "{err}");
    assert!(
        err.to_string().contains(files.cert.to_str().unwrap()),
        "{err}"
    );

    let (err, _) = with(&|f| {
        let now = SystemTime::now();
        let later = Validity::between(
            now + Duration::from_secs(3600),
            now + Duration::from_secs(7200),
        )
        .unwrap();
        pki.ca
            .issue_client(&name("probe"), later)
            .unwrap()
            .write_to(&f.cert, &f.key)
            .unwrap()
    });
    assert!(matches!(err, LoadError::NotYetValid { .. }), "{err}");

    let expired_ca = {
        let now = SystemTime::now();
        Ca::generate(
            "old",
            Validity::between(
                now - Duration::from_secs(7200),
                now - Duration::from_secs(3600),
            )
            .unwrap(),
        )
        .unwrap()
    };
    let (err, _) = with(&|f| replace(&f.ca_bundle, expired_ca.cert_pem().as_bytes()));
    assert!(matches!(err, LoadError::CaBundleExpired { .. }), "{err}");
}
