//! A remote that never answers holds `/readyz` back only until the
//! per-cluster ready timeout; its status says why.

use std::time::Duration;

use etcd_harness::TestEtcd;
use tokio::net::TcpListener;

use crate::harness::{Mesh, Remote};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_remote_does_not_block_readiness() {
    let local = TestEtcd::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A port that accepts connections and never says a word (TLS hangs).
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    // Certificates that would work, pointing at the silent port.
    let remote = Remote::start("c3", 3).await;
    remote.write_config(dir.path(), "");
    let file = dir.path().join("c3");
    let body = std::fs::read_to_string(&file).unwrap();
    let endpoint = body.lines().nth(1).unwrap().to_owned();
    std::fs::write(
        &file,
        body.replace(
            &endpoint,
            &format!("- https://{}", silent.local_addr().unwrap()),
        ),
    )
    .unwrap();

    let mesh = Mesh::start(&local, dir.path(), |c| {
        c.per_cluster_ready_timeout = Duration::from_secs(1);
    })
    .await;
    mesh.wait_ready().await;
    let view = mesh
        .remote_until("c3", "the silent remote's failure shown", |v| {
            v.failures >= 1
        })
        .await;
    assert!(!view.connected && !view.ready, "{view:?}");
    assert!(view.last_error_kind.is_some(), "{view:?}");
    assert!(mesh.status().await.ready);

    mesh.stop().await;
    remote.stop().await;
    drop(silent);
}
