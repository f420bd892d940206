use std::{fmt, sync::Arc};

use rustls::{
    ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::{
        ResolvesClientCert,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::{
    Config, LoadError, TlsFiles, TlsHandle, WatchError, crypto_provider,
    reloader::{self, Reloader},
};

/// The client side of mutual TLS with hot reload: presents the certificate in
/// `files.cert` and accepts only servers whose certificate chains to a CA in
/// `files.ca_bundle` and names the dialled host (DNS or IP subject alternative
/// name).
///
/// Like [`ServerTls`](crate::ServerTls), the configuration is built once and
/// reads the current material on every handshake; [`ClientTls::run`] reloads.
/// For clients that take PEM bytes instead (`etcd-client`), use
/// [`TlsMaterial::load`](crate::TlsMaterial::load).
pub struct ClientTls {
    reloader: Arc<Reloader>,
    rustls: Arc<ClientConfig>,
    config: Config,
}

impl ClientTls {
    /// Loads and validates the files and builds the rustls configuration.
    pub fn load(files: TlsFiles, config: Config) -> Result<Self, LoadError> {
        let reloader = Reloader::load(files)?;
        let mut rustls = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CurrentServerVerifier(reloader.clone())))
            .with_client_cert_resolver(Arc::new(CurrentClientCert(reloader.clone())));
        rustls.alpn_protocols = config.alpn_protocols.clone();
        Ok(Self {
            reloader,
            rustls: Arc::new(rustls),
            config,
        })
    }

    /// The rustls configuration (shared; it follows reloads by itself).
    pub fn rustls_config(&self) -> Arc<ClientConfig> {
        self.rustls.clone()
    }

    /// A tokio connector over [`ClientTls::rustls_config`].
    pub fn connector(&self) -> TlsConnector {
        TlsConnector::from(self.rustls.clone())
    }

    /// Current material and reload counts; usable after `run` took `self`.
    pub fn handle(&self) -> TlsHandle {
        TlsHandle::new(self.reloader.clone())
    }

    /// Watches the files and reloads them until `shutdown` is cancelled; see
    /// [`ServerTls::run`](crate::ServerTls::run).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WatchError> {
        reloader::watch(self.reloader, &self.config, shutdown).await
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("files", self.reloader.files())
            .finish_non_exhaustive()
    }
}

struct CurrentClientCert(Arc<Reloader>);

impl ResolvesClientCert for CurrentClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified_key().clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl fmt::Debug for CurrentClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CurrentClientCert")
    }
}

/// Verifies server certificates against the current CA bundle with the standard
/// WebPKI rules (chain, validity, name).
struct CurrentServerVerifier(Arc<Reloader>);

impl ServerCertVerifier for CurrentServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.current().server_verifier().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .server_verifier()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .server_verifier()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0
            .current()
            .server_verifier()
            .supported_verify_schemes()
    }
}

impl fmt::Debug for CurrentServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CurrentServerVerifier")
    }
}
