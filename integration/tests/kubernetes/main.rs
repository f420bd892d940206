//! The Kubernetes mode against real kube-apiservers (v1.20, built from
//! Debian's source by `scripts/kube-test-server.sh`): the manifests, and
//! meshes whose clusters each run their own API server.
//!
//! Run alone with `cargo nextest run -p integration --test kubernetes`.

mod manifests;
mod mesh;

/// Whether the Kubernetes tests can run here: the API server binaries are
/// built. Skipped with the reason otherwise, a failure under `CI=true`.
pub(crate) fn kube_available(what: &str) -> bool {
    match k8s::testing::available() {
        Ok(_) => true,
        Err(why) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{what}: {why}"
            );
            eprintln!("skipped {what}: {why}");
            false
        }
    }
}
