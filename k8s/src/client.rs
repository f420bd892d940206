//! Reaching the API server: a kubeconfig file or the in-cluster service
//! account.

use std::{path::PathBuf, time::Duration};

use kube::config::{KubeConfigOptions, Kubeconfig};

/// How a component reaches the Kubernetes API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeAccess {
    /// `--k8s-kubeconfig FILE`: its current context.
    Kubeconfig(PathBuf),
    /// `--k8s-in-cluster`: `KUBERNETES_SERVICE_HOST`/`_PORT` and the
    /// service account's token and CA under
    /// `/var/run/secrets/kubernetes.io/serviceaccount/`.
    InCluster,
}

impl std::fmt::Display for KubeAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kubeconfig(p) => write!(f, "kubeconfig {}", p.display()),
            Self::InCluster => f.write_str("in-cluster service account"),
        }
    }
}

/// Why no client could be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading the kubeconfig {path}")]
    ReadKubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("using the kubeconfig {path}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("the in-cluster configuration (is this running in a Pod with a service account?)")]
    InCluster(#[source] kube::config::InClusterError),
    #[error("building the Kubernetes client")]
    Build(#[source] kube::Error),
}

/// A client for `access`. Nothing is sent yet: a server that is down is
/// found by the first request (and watchers retry).
pub async fn client(access: &KubeAccess) -> Result<kube::Client, ClientError> {
    let mut config = match access {
        KubeAccess::Kubeconfig(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|source| ClientError::ReadKubeconfig {
                    path: path.clone(),
                    source,
                })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|source| ClientError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
        }
        KubeAccess::InCluster => kube::Config::incluster().map_err(ClientError::InCluster)?,
    };
    // A stopped API server is noticed in seconds, not after the default
    // 295 s of a watch's read timeout.
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(330));
    kube::Client::try_from(config).map_err(ClientError::Build)
}
