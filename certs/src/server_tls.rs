use std::{fmt, sync::Arc};

use rustls::{
    DigitallySignedStruct, DistinguishedName, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    server::{
        ClientHello, NoServerSessionStorage, ResolvesServerCert, ServerConfig,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{
    Config, LoadError, TlsFiles, TlsHandle, WatchError, crypto_provider,
    reloader::{self, Reloader},
};

/// The server side of mutual TLS with hot reload: serves the certificate in
/// `files.cert` and accepts only clients whose certificate chains to a CA in
/// `files.ca_bundle`.
///
/// [`ServerTls::rustls_config`] is built once; its certificate resolver and
/// client verifier read the current material on every handshake, so after a
/// reload new handshakes use the new files without rebuilding the acceptor,
/// and established connections continue. [`ServerTls::run`] does the watching.
///
/// ```no_run
/// # async fn serve(files: certs::TlsFiles) -> Result<(), Box<dyn std::error::Error>> {
/// let tls = certs::ServerTls::load(files, certs::Config::default())?;
/// let acceptor = tls.acceptor();
/// let shutdown = tokio_util::sync::CancellationToken::new();
/// let watcher = tokio::spawn(tls.run(shutdown.clone()));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let (tcp, _) = listener.accept().await?;
/// let stream = acceptor.accept(tcp).await?;
/// let client = certs::peer_common_name(stream.get_ref().1.peer_certificates().unwrap_or(&[]));
/// # shutdown.cancel(); watcher.await??; Ok(()) }
/// ```
pub struct ServerTls {
    reloader: Arc<Reloader>,
    rustls: Arc<ServerConfig>,
    config: Config,
}

impl ServerTls {
    /// Loads and validates the files and builds the rustls configuration.
    pub fn load(files: TlsFiles, config: Config) -> Result<Self, LoadError> {
        let reloader = Reloader::load(files)?;
        let mut rustls = ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .with_client_cert_verifier(Arc::new(CurrentClientVerifier(reloader.clone())))
            .with_cert_resolver(Arc::new(CurrentServerCert(reloader.clone())));
        rustls.alpn_protocols = config.alpn_protocols.clone();
        // A resumed session skips client certificate verification, so a client
        // whose CA was removed from the bundle could come back on an old ticket.
        // Connections here are few and long-lived: full handshakes cost nothing.
        rustls.session_storage = Arc::new(NoServerSessionStorage {});
        rustls.send_tls13_tickets = 0;
        Ok(Self {
            reloader,
            rustls: Arc::new(rustls),
            config,
        })
    }

    /// The rustls configuration (shared; it follows reloads by itself).
    pub fn rustls_config(&self) -> Arc<ServerConfig> {
        self.rustls.clone()
    }

    /// A tokio acceptor over [`ServerTls::rustls_config`].
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.rustls.clone())
    }

    /// Current material and reload counts; usable after `run` took `self`.
    pub fn handle(&self) -> TlsHandle {
        TlsHandle::new(self.reloader.clone())
    }

    /// Watches the files and reloads them until `shutdown` is cancelled. A
    /// changed file that fails to load is logged with `tracing::error!`,
    /// counted, and the previous material stays in use.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WatchError> {
        reloader::watch(self.reloader, &self.config, shutdown).await
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", self.reloader.files())
            .finish_non_exhaustive()
    }
}

/// Serves the current certificate, whatever name the client asked for: the
/// server has one identity, and the client checks the name.
struct CurrentServerCert(Arc<Reloader>);

impl ResolvesServerCert for CurrentServerCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified_key().clone())
    }
}

impl fmt::Debug for CurrentServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CurrentServerCert")
    }
}

/// Verifies client certificates against the current CA bundle.
struct CurrentClientVerifier(Arc<Reloader>);

impl ClientCertVerifier for CurrentClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No hints: rustls asks for them by reference, which cannot outlive a
    /// reload, and an empty list tells clients to send whatever certificate
    /// they have (RFC 8446 4.2.4), which is what a mesh client does anyway.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .current()
            .client_verifier()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .client_verifier()
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
            .client_verifier()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0
            .current()
            .client_verifier()
            .supported_verify_schemes()
    }
}

impl fmt::Debug for CurrentClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CurrentClientVerifier")
    }
}
