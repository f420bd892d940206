//! What a real kube-apiserver and kube-controller-manager need to run on
//! one machine: certificates, a service-account key, a token file,
//! kubeconfigs and their flags. Used by the tests' [`crate::testing`]
//! server and by the local mesh's Kubernetes mode; the binaries come from
//! `scripts/kube-test-server.sh` (built once from Debian's source package).
//!
//! Not for production: one static admin token, everything on one host.

use std::{
    fmt::Write as _,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use base64::Engine as _;
use certs::{Ca, CertName, Validity};

/// The two binaries the script builds.
pub const APISERVER: &str = "kube-apiserver";
pub const CONTROLLER_MANAGER: &str = "kube-controller-manager";
/// The Kubernetes version the script builds.
pub const VERSION: &str = "v1.20.2";

/// Where the binaries are, or why not.
#[derive(Debug, thiserror::Error)]
pub enum KubeBinError {
    #[error(
        "no {APISERVER}/{CONTROLLER_MANAGER} in {dir}: run `scripts/kube-test-server.sh` \
         (builds Kubernetes {VERSION} from Debian's source package, about 4 minutes, once), \
         or point CLUSTERMESH_KUBE_BIN_DIR at a directory that has both"
    )]
    Missing { dir: PathBuf },
}

/// `$CLUSTERMESH_KUBE_BIN_DIR`, else the script's cache
/// (`$CLUSTERMESH_KUBE_CACHE`, else `${XDG_CACHE_HOME:-$HOME/.cache}/clustermesh/kube`,
/// then `v1.20.2/bin`).
pub fn bin_dir() -> Result<PathBuf, KubeBinError> {
    let dir = match std::env::var_os("CLUSTERMESH_KUBE_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let cache = std::env::var_os("CLUSTERMESH_KUBE_CACHE")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("XDG_CACHE_HOME")
                        .map(|d| PathBuf::from(d).join("clustermesh/kube"))
                })
                .or_else(|| {
                    std::env::var_os("HOME")
                        .map(|h| PathBuf::from(h).join(".cache/clustermesh/kube"))
                })
                .unwrap_or_else(|| PathBuf::from("/root/.cache/clustermesh/kube"));
            cache.join(VERSION).join("bin")
        }
    };
    if [APISERVER, CONTROLLER_MANAGER]
        .iter()
        .all(|b| dir.join(b).is_file())
    {
        Ok(dir)
    } else {
        Err(KubeBinError::Missing { dir })
    }
}

/// Why writing the files failed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("creating certificates")]
    Certs(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("writing or reading {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The files of one API server, in one directory.
#[derive(Debug, Clone)]
pub struct KubeServerFiles {
    pub dir: PathBuf,
    /// Where clients reach the server.
    pub addr: SocketAddr,
    /// The cluster CA (serving certificate, service-account root CA).
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    /// Signs service-account tokens (ECDSA P-256, PKCS#8) and its public half.
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
    /// `--token-auth-file`: `TOKEN,admin,1,"system:masters"`.
    pub tokens: PathBuf,
    /// A kubeconfig for the admin (token auth), also used by the
    /// controller manager.
    pub admin_kubeconfig: PathBuf,
    /// The admin's bearer token.
    pub admin_token: String,
}

impl KubeServerFiles {
    /// Creates the files in `dir` for a server on `addr` (its IP goes into
    /// the serving certificate, with the usual in-cluster DNS names).
    pub fn write(dir: &Path, addr: SocketAddr) -> Result<Self, FilesError> {
        fs::create_dir_all(dir).map_err(|source| FilesError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let certs_err = |e: &dyn std::fmt::Display| FilesError::Certs(e.to_string().into());
        let ca = Ca::generate(
            "kubernetes-ca",
            Validity::days(3650).map_err(|e| certs_err(&e))?,
        )
        .map_err(|e| certs_err(&e))?;
        let validity = Validity::days(365).map_err(|e| certs_err(&e))?;
        let name = CertName::new("kube-apiserver").map_err(|e| certs_err(&e))?;
        let dns: Vec<String> = [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .map(String::from)
        .to_vec();
        let serving = ca
            .issue_server(&name, &dns, &[addr.ip()], validity)
            .map_err(|e| certs_err(&e))?;
        let sa = rcgen::KeyPair::generate().map_err(|e| certs_err(&e))?;
        let admin_token = random_token();

        let files = Self::in_dir(dir, addr, admin_token);
        let write = |path: &Path, text: &str, mode: u32| -> Result<(), FilesError> {
            use std::os::unix::fs::OpenOptionsExt as _;
            let err = |source| FilesError::Write {
                path: path.to_path_buf(),
                source,
            };
            let mut f = fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(mode)
                .open(path)
                .map_err(err)?;
            std::io::Write::write_all(&mut f, text.as_bytes()).map_err(err)
        };
        write(&files.ca_cert, ca.cert_pem(), 0o644)?;
        write(&files.serving_cert, serving.cert_pem(), 0o644)?;
        write(&files.serving_key, serving.key_pem(), 0o600)?;
        write(&files.sa_key, &sa.serialize_pem(), 0o600)?;
        write(&files.sa_pub, &sa.public_key_pem(), 0o644)?;
        write(
            &files.tokens,
            &format!("{},admin,1,\"system:masters\"\n", files.admin_token),
            0o600,
        )?;
        write(
            &files.admin_kubeconfig,
            &kubeconfig(
                &files.server_url(),
                ca.cert_pem(),
                "admin",
                &files.admin_token,
            ),
            0o600,
        )?;
        Ok(files)
    }

    /// The files [`KubeServerFiles::write`] made in `dir` before (a
    /// restarted server keeps its certificates and token).
    pub fn read(dir: &Path, addr: SocketAddr) -> Result<Self, FilesError> {
        let tokens = dir.join("tokens.csv");
        let text = fs::read_to_string(&tokens).map_err(|source| FilesError::Write {
            path: tokens.clone(),
            source,
        })?;
        let admin_token = text
            .split(',')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        Ok(Self::in_dir(dir, addr, admin_token))
    }

    /// The file names in `dir`.
    fn in_dir(dir: &Path, addr: SocketAddr, admin_token: String) -> Self {
        Self {
            dir: dir.to_path_buf(),
            addr,
            ca_cert: dir.join("ca.crt"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
            tokens: dir.join("tokens.csv"),
            admin_kubeconfig: dir.join("admin.kubeconfig"),
            admin_token,
        }
    }

    /// `https://IP:PORT`.
    pub fn server_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The API server's flags, with its data in the etcd at `etcd_url`
    /// (plain HTTP).
    pub fn apiserver_args(&self, etcd_url: &str) -> Vec<String> {
        let p = |p: &Path| p.display().to_string();
        vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--bind-address={}", self.addr.ip()),
            format!("--advertise-address={}", self.addr.ip()),
            format!("--secure-port={}", self.addr.port()),
            format!("--tls-cert-file={}", p(&self.serving_cert)),
            format!("--tls-private-key-file={}", p(&self.serving_key)),
            format!("--client-ca-file={}", p(&self.ca_cert)),
            format!("--token-auth-file={}", p(&self.tokens)),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", p(&self.sa_pub)),
            format!("--service-account-signing-key-file={}", p(&self.sa_key)),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            "--allow-privileged=true".into(),
            // No kubelets: nothing to proxy to, no insecure port.
            "--insecure-port=0".into(),
            "--profiling=false".into(),
            "--logtostderr=true".into(),
            "--v=1".into(),
        ]
    }

    /// The controller manager's flags: the controllers that make Pods
    /// admissible (service accounts), finish namespace deletion, and
    /// maintain Endpoints and EndpointSlices; not those that need kubelets
    /// or a cloud.
    pub fn controller_manager_args(&self) -> Vec<String> {
        let p = |p: &Path| p.display().to_string();
        vec![
            format!("--kubeconfig={}", p(&self.admin_kubeconfig)),
            format!("--bind-address={}", self.addr.ip()),
            "--secure-port=0".into(),
            "--port=0".into(),
            format!("--service-account-private-key-file={}", p(&self.sa_key)),
            format!("--root-ca-file={}", p(&self.ca_cert)),
            "--leader-elect=false".into(),
            "--controllers=*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-route,-service,\
             -attachdetach,-persistentvolume-binder,-persistentvolume-expander"
                .into(),
            "--logtostderr=true".into(),
            "--v=1".into(),
        ]
    }
}

/// Whether namespace `ns` admits Pods: its `default` service account exists
/// and has its token (the controller manager adds both shortly after the
/// namespace appears; a Pod created before is refused).
pub async fn pods_admitted(client: &kube::Client, ns: &str) -> bool {
    let api: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
        kube::Api::namespaced(client.clone(), ns);
    matches!(api.get_opt("default").await, Ok(Some(sa)) if sa.secrets.as_ref().is_some_and(|s| !s.is_empty()))
}

/// A kubeconfig with one cluster, one token user and one context.
pub fn kubeconfig(server: &str, ca_pem: &str, user: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\n\
         contexts:\n- name: {user}@local\n  context:\n    cluster: local\n    user: {user}\n\
         current-context: {user}@local\n"
    )
}

/// 32 random hex characters from the kernel.
fn random_token() -> String {
    let mut bytes = [0u8; 16];
    getrandom(&mut bytes);
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn getrandom(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled rest of `buf`.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = "127.0.0.1:6443".parse().unwrap();
        let f = KubeServerFiles::write(dir.path(), addr).unwrap();
        let cfg = fs::read_to_string(&f.admin_kubeconfig).unwrap();
        assert!(cfg.contains("server: https://127.0.0.1:6443"), "{cfg}");
        assert!(cfg.contains(&format!("token: {}", f.admin_token)));
        assert_eq!(f.admin_token.len(), 32);
        assert!(
            fs::read_to_string(&f.sa_pub)
                .unwrap()
                .starts_with("-----BEGIN PUBLIC KEY-----\n")
        );
        let args = f.apiserver_args("http://127.0.0.1:2379");
        assert!(args.contains(&"--secure-port=6443".to_string()));
        assert!(args.contains(&"--etcd-servers=http://127.0.0.1:2379".to_string()));
        assert!(
            f.controller_manager_args()
                .iter()
                .any(|a| a.starts_with("--kubeconfig="))
        );
    }
}
