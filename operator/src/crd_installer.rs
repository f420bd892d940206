use std::time::Duration;

use kvstore::Backoff;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error_chain;

/// How long one installation waits for the server to establish the CRDs.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// Installs or upgrades the `cilium.io/v2` policy CRDs at start
/// ([`k8s::crd::install`]), retrying with backoff (up to 10 s apart) while
/// the API server is unreachable or refuses; the first failure is logged,
/// then each different one. Every instance does it, leader or not: the
/// apply is idempotent, and an upgraded operator brings its CRDs along.
/// Publishes `true` once they are served.
pub struct CrdInstaller {
    client: kube::Client,
    installed: watch::Sender<bool>,
}

impl std::fmt::Debug for CrdInstaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrdInstaller")
            .field("installed", &*self.installed.borrow())
            .finish_non_exhaustive()
    }
}

impl CrdInstaller {
    /// The receiver turns `true` once the CRDs are installed.
    pub fn new(client: kube::Client) -> (Self, watch::Receiver<bool>) {
        let (installed, rx) = watch::channel(false);
        (Self { client, installed }, rx)
    }

    /// Installs, retrying until it worked or `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut last_error: Option<String> = None;
        loop {
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = k8s::crd::install(&self.client, ESTABLISH_TIMEOUT) => r,
            };
            match result {
                Ok(()) => {
                    info!(
                        crds = ?k8s::crd::MANIFESTS.map(|(name, _)| name),
                        "policy CRDs installed"
                    );
                    self.installed.send_replace(true);
                    return;
                }
                Err(e) => {
                    let error = error_chain(&e);
                    if last_error.as_deref() != Some(error.as_str()) {
                        warn!(%error, "cannot install the policy CRDs; retrying with backoff");
                        last_error = Some(error);
                    }
                }
            }
            if !backoff.wait(&shutdown).await {
                return;
            }
        }
    }
}
