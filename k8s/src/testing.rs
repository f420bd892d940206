//! A real Kubernetes API server per test: its own etcd, kube-apiserver and
//! kube-controller-manager on free 127.0.0.1 ports, files in a temp dir,
//! everything killed on drop (and with the test process, through
//! `PR_SET_PDEATHSIG`). Nothing runs Pods (no scheduler, no kubelet): tests
//! create Pod objects and play the kubelet's part where they need it
//! (the Pod's status).

use std::{
    fs::{File, OpenOptions},
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use etcd_harness::{TestEtcd, free_port};
use tempfile::TempDir;

use crate::local_server::{self, APISERVER, CONTROLLER_MANAGER, KubeServerFiles};

/// How long the API server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts with a fresh port when another process took ours.
const START_ATTEMPTS: usize = 4;

/// Whether the binaries are there; `Err` says how to get them. Tests skip
/// with that reason outside CI and fail under `CI=true`.
pub fn available() -> Result<PathBuf, String> {
    local_server::bin_dir().map_err(|e| e.to_string())
}

/// A running API server (see the module documentation).
#[derive(Debug)]
pub struct KubeServer {
    etcd: TestEtcd,
    files: KubeServerFiles,
    bin: PathBuf,
    apiserver: Option<Child>,
    controller_manager: Option<Child>,
    // Last: removed after the processes are gone.
    dir: TempDir,
}

impl KubeServer {
    /// Starts etcd, the API server and the controller manager, and returns
    /// once the server is ready and the `default` namespace has its
    /// service account (so Pods are admitted).
    pub async fn start() -> Result<Self> {
        let bin = local_server::bin_dir()?;
        let etcd = TestEtcd::start().await?;
        let dir = tempfile::Builder::new()
            .prefix("kube-server.")
            .tempdir()
            .context("a temp dir for the API server")?;
        let files = |dir: &Path| -> Result<KubeServerFiles> {
            let addr = format!("127.0.0.1:{}", free_port()).parse()?;
            Ok(KubeServerFiles::write(dir, addr)?)
        };
        let mut server = Self {
            etcd,
            files: files(dir.path())?,
            bin,
            apiserver: None,
            controller_manager: None,
            dir,
        };
        let mut attempt = 1;
        loop {
            match server.start_apiserver().await {
                Ok(()) => break,
                Err(_)
                    if attempt < START_ATTEMPTS
                        && server.log(APISERVER).contains("address already in use") =>
                {
                    attempt += 1;
                    server.files = files(server.dir.path())?;
                }
                Err(e) => return Err(e),
            }
        }
        server.controller_manager =
            Some(server.spawn(CONTROLLER_MANAGER, server.files.controller_manager_args())?);
        server.wait_for_default_service_account().await?;
        Ok(server)
    }

    /// The admin's kubeconfig (token auth, the server's CA).
    pub fn kubeconfig(&self) -> &Path {
        &self.files.admin_kubeconfig
    }

    pub fn files(&self) -> &KubeServerFiles {
        &self.files
    }

    /// A client as the admin.
    pub async fn client(&self) -> Result<kube::Client> {
        crate::client(&crate::KubeAccess::Kubeconfig(
            self.kubeconfig().to_path_buf(),
        ))
        .await
        .map_err(Into::into)
    }

    /// `kubectl --kubeconfig <admin>` (Debian's `kubernetes-client`).
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(self.kubeconfig());
        cmd
    }

    /// Stops the API server (SIGKILL): clients see connection errors.
    pub fn stop_apiserver(&mut self) {
        if let Some(mut c) = self.apiserver.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the API server again (same port, same data) and waits until
    /// it is ready.
    pub async fn start_apiserver(&mut self) -> Result<()> {
        let child = self.spawn(APISERVER, self.files.apiserver_args(&self.etcd.endpoint()))?;
        self.apiserver = Some(child);
        self.wait_ready().await
    }

    /// The last lines of a component's log.
    pub fn log(&self, component: &str) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(self.log_path(component)) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn log_path(&self, component: &str) -> PathBuf {
        self.dir.path().join(format!("{component}.log"))
    }

    fn spawn(&self, component: &str, args: Vec<String>) -> Result<Child> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(component))
            .with_context(|| format!("open the {component} log"))?;
        let mut cmd = Command::new(self.bin.join(component));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        etcd_harness::die_with_parent(&mut cmd);
        cmd.spawn()
            .with_context(|| format!("run {}", self.bin.join(component).display()))
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let client = self.client().await?;
        loop {
            if let Some(status) = self
                .apiserver
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.apiserver = None;
                bail!(
                    "kube-apiserver exited with {status} before it was ready; log:\n{}",
                    self.log(APISERVER)
                );
            }
            let req = http_get("/readyz");
            if let Ok(body) = client.request_text(req).await
                && body.trim() == "ok"
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "kube-apiserver was not ready within {READY_TIMEOUT:?}; log:\n{}",
                    self.log(APISERVER)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_for_default_service_account(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let client = self.client().await?;
        loop {
            if local_server::pods_admitted(&client, "default").await {
                return Ok(());
            }
            if let Some(status) = self
                .controller_manager
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "kube-controller-manager exited with {status}; log:\n{}",
                    self.log(CONTROLLER_MANAGER)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "no default service account within {READY_TIMEOUT:?}; controller manager log:\n{}",
                    self.log(CONTROLLER_MANAGER)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn http_get(path: &str) -> http::Request<Vec<u8>> {
    http::Request::get(path)
        .body(Vec::new())
        .expect("a valid request")
}

impl Drop for KubeServer {
    fn drop(&mut self) {
        for c in [self.controller_manager.take(), self.apiserver.take()]
            .into_iter()
            .flatten()
        {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
