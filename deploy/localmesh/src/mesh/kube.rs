//! Kubernetes mode: each cluster runs its own real Kubernetes API server
//! (etcd, kube-apiserver, kube-controller-manager, built by
//! `scripts/kube-test-server.sh`) in its control-plane namespace; the
//! operator and the agents read it; pods are Pod objects on their node,
//! added through CNI with the kubelet's `K8S_POD_*` arguments; the mesh
//! writes a Pod's status (its IP, ready) as a kubelet would, so the
//! controller manager keeps the Services' Endpoints.

use std::{future::Future, net::Ipv4Addr, path::Path, time::Duration};

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};

use super::{Mesh, STARTUP_TIMEOUT, STOP_GRACE, plan};
use crate::{
    process::{self, refuse_running, spawn_daemon, wait_until},
    state::KubeInfo,
};

/// How long one readiness probe of the API server may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Mesh {
    /// Starts `cluster`'s Kubernetes API server (its etcd, kube-apiserver
    /// and kube-controller-manager) and waits until Pods are admitted.
    pub fn start_kube(&mut self, cluster: &str) -> Result<()> {
        let c = self.state.cluster(cluster)?.clone();
        let Some(k) = c.kube.clone() else {
            return Ok(());
        };
        let bin = k8s::local_server::bin_dir()?;
        let addr = (c.cp_ip, plan::KUBE_APISERVER_PORT).into();
        let files = if k.kubeconfig.exists() {
            k8s::local_server::KubeServerFiles::read(&k.dir, addr)?
        } else {
            k8s::local_server::KubeServerFiles::write(&k.dir, addr)?
        };
        refuse_running("kube-apiserver", cluster, k.apiserver.as_ref())?;
        let etcd = spawn_daemon(
            Some(&c.cp_netns),
            Path::new("/usr/bin/etcd"),
            &plan::kube_etcd_args(&k),
            &[],
            &self.log_path(cluster, "kube-etcd"),
        )?;
        self.kube_mut(cluster, |k| k.etcd = Some(etcd))?;
        self.run_kube_apiserver(cluster, &files)?;
        let cm = spawn_daemon(
            Some(&c.cp_netns),
            &bin.join(k8s::local_server::CONTROLLER_MANAGER),
            &files.controller_manager_args(),
            &[],
            &self.log_path(cluster, "kube-controller-manager"),
        )?;
        self.kube_mut(cluster, |k| k.controller_manager = Some(cm.clone()))?;
        // Without the default service account no Pod is admitted.
        wait_until(
            &format!("{cluster} kube-controller-manager"),
            STARTUP_TIMEOUT,
            Some(&cm),
            || {
                self.kube_call(cluster, |client| async move {
                    Ok(k8s::local_server::pods_admitted(&client, "default").await)
                })
                .unwrap_or(false)
            },
        )
    }

    /// Stops `cluster`'s kube-apiserver only (its etcd and controller
    /// manager keep running): clients see connection errors.
    pub fn stop_kube_apiserver(&mut self, cluster: &str) -> Result<()> {
        let mut p = None;
        self.kube_mut(cluster, |k| p = k.apiserver.take())?;
        if let Some(p) = p {
            process::stop(&p, STOP_GRACE);
        }
        Ok(())
    }

    /// Starts `cluster`'s kube-apiserver again (same data) and waits until
    /// it is ready.
    pub fn start_kube_apiserver(&mut self, cluster: &str) -> Result<()> {
        let c = self.state.cluster(cluster)?.clone();
        let k = c.kube.clone().context("not a Kubernetes cluster")?;
        refuse_running("kube-apiserver", cluster, k.apiserver.as_ref())?;
        let addr = (c.cp_ip, plan::KUBE_APISERVER_PORT).into();
        let files = k8s::local_server::KubeServerFiles::read(&k.dir, addr)?;
        self.run_kube_apiserver(cluster, &files)
    }

    /// Spawns `cluster`'s kube-apiserver with `files`, tracks it, and waits
    /// until it is ready.
    fn run_kube_apiserver(
        &mut self,
        cluster: &str,
        files: &k8s::local_server::KubeServerFiles,
    ) -> Result<()> {
        let netns = self.state.cluster(cluster)?.cp_netns.clone();
        let bin = k8s::local_server::bin_dir()?;
        let apiserver = spawn_daemon(
            Some(&netns),
            &bin.join(k8s::local_server::APISERVER),
            &files.apiserver_args(plan::kube_etcd_url()),
            &[],
            &self.log_path(cluster, "kube-apiserver"),
        )?;
        self.kube_mut(cluster, |k| k.apiserver = Some(apiserver.clone()))?;
        wait_until(
            &format!("{cluster} kube-apiserver"),
            STARTUP_TIMEOUT,
            Some(&apiserver),
            || {
                self.kube_call(cluster, |client| async move {
                    let req = http::Request::get("/readyz").body(Vec::new())?;
                    let body =
                        tokio::time::timeout(PROBE_TIMEOUT, client.request_text(req)).await??;
                    anyhow::ensure!(body.trim() == "ok", "not ready: {body}");
                    Ok(())
                })
                .is_ok()
            },
        )
    }

    /// Runs `f` with a client of `cluster`'s API server (as its admin), on
    /// a thread of its own so that it works from async callers too.
    pub fn kube_call<T, F, Fut>(&self, cluster: &str, f: F) -> Result<T>
    where
        T: Send,
        F: FnOnce(kube::Client) -> Fut + Send,
        Fut: Future<Output = Result<T>>,
    {
        let k = self
            .state
            .cluster(cluster)?
            .kube
            .clone()
            .with_context(|| format!("{cluster} does not run Kubernetes"))?;
        std::thread::scope(|s| {
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let client =
                        k8s::client(&k8s::KubeAccess::Kubeconfig(k.kubeconfig.clone())).await?;
                    f(client).await
                })
            })
            .join()
            .map_err(|_| anyhow!("the Kubernetes call panicked"))?
        })
    }

    /// Creates namespace `ns` if it does not exist.
    pub(super) fn kube_namespace(&self, cluster: &str, ns: &str) -> Result<()> {
        let ns = ns.to_string();
        self.kube_call(cluster, |client| async move {
            let api: Api<Namespace> = Api::all(client.clone());
            if api.get_opt(&ns).await?.is_none() {
                let obj: Namespace = serde_json::from_value(serde_json::json!({
                    "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns},
                }))?;
                api.create(&PostParams::default(), &obj).await?;
            }
            // A Pod is refused until the namespace's service account has
            // its token.
            let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
            while !k8s::local_server::pods_admitted(&client, &ns).await {
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "namespace {ns}: no service account token within {STARTUP_TIMEOUT:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(())
        })
    }

    /// Registers a node as its kubelet would (the controller manager
    /// deletes the Pods of nodes that do not exist).
    pub(super) fn kube_register_node(&self, cluster: &str, node: &str, ip: Ipv4Addr) -> Result<()> {
        let obj: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}},
            "status": {"addresses": [{"type": "InternalIP", "address": ip.to_string()}]},
        }))?;
        let node = node.to_string();
        self.kube_call(cluster, |client| async move {
            let api: Api<Node> = Api::all(client);
            if api.get_opt(&node).await?.is_none() {
                api.create(&PostParams::default(), &obj)
                    .await
                    .context("registering the Node")?;
            }
            Ok(())
        })
    }

    /// Creates the Pod object of a workload on `node` (nothing runs it;
    /// the CNI call that follows is the container runtime).
    pub(super) fn kube_create_pod(
        &self,
        cluster: &str,
        node: &str,
        namespace: &str,
        name: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "nodeName": node,
                "containers": [{"name": "main", "image": "clustermesh.invalid/workload:1"}],
            },
        }))?;
        let namespace = namespace.to_string();
        self.kube_call(cluster, |client| async move {
            Api::<Pod>::namespaced(client, &namespace)
                .create(&PostParams::default(), &pod)
                .await
                .context("creating the Pod")?;
            Ok(())
        })
    }

    /// Writes a Pod's status as its kubelet would: running on `ip`, ready
    /// (or not).
    pub fn kube_set_pod_ready(
        &self,
        cluster: &str,
        namespace: &str,
        name: &str,
        ip: Ipv4Addr,
        ready: bool,
    ) -> Result<()> {
        let status = serde_json::json!({"status": {
            "phase": "Running",
            "podIP": ip.to_string(),
            "podIPs": [{"ip": ip.to_string()}],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
        }});
        let (namespace, name) = (namespace.to_string(), name.to_string());
        self.kube_call(cluster, |client| async move {
            Api::<Pod>::namespaced(client, &namespace)
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await
                .context("writing the Pod's status")?;
            Ok(())
        })
    }

    /// Deletes a Pod object (at once: nothing runs it).
    pub(super) fn kube_delete_pod(&self, cluster: &str, namespace: &str, name: &str) -> Result<()> {
        let (namespace, name) = (namespace.to_string(), name.to_string());
        self.kube_call(cluster, |client| async move {
            let api = Api::<Pod>::namespaced(client, &namespace);
            match api
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await
            {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Creates or replaces a Service (server-side apply as the mesh).
    pub fn kube_apply_service(&self, cluster: &str, svc: serde_json::Value) -> Result<()> {
        let svc: Service = serde_json::from_value(svc)?;
        self.kube_call(cluster, |client| async move {
            let ns = svc
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            let name = svc.metadata.name.clone().context("a Service name")?;
            Api::<Service>::namespaced(client, &ns)
                .patch(
                    &name,
                    &PatchParams::apply("clustermesh-localmesh").force(),
                    &Patch::Apply(&svc),
                )
                .await
                .context("applying the Service")?;
            Ok(())
        })
    }

    fn kube_mut(&mut self, cluster: &str, f: impl FnOnce(&mut KubeInfo)) -> Result<()> {
        let c = self.state.cluster_mut(cluster)?;
        f(c.kube.as_mut().context("not a Kubernetes cluster")?);
        self.state.save()
    }
}
