//! A watcher that does not read is disconnected with etcd's error once its
//! queue is full; the others get every event, on time.

use etcd_client::WatchOptions;
use etcd_harness::TestEtcd;
use tonic::Code;

use crate::support::{DEADLINE, TestApiserver, direct_client, eventually};

const PREFIX: &str = "cilium/state/services/v1/";
const WRITES: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_is_disconnected_while_others_continue() {
    let etcd = TestEtcd::start().await.unwrap();
    let api = TestApiserver::start_with(&etcd, |c| c.watch.outbox_capacity = 16).await;
    // Separate connections: HTTP/2 flow control is per connection too.
    let mut fast_client = api.etcd_client("remote-c2").await;
    let mut slow_client = api.etcd_client("remote-c3").await;
    let options = || Some(WatchOptions::new().with_prefix());
    let mut fast = fast_client.watch(PREFIX, options()).await.unwrap();
    let mut slow = slow_client.watch(PREFIX, options()).await.unwrap();
    for stream in [&mut fast, &mut slow] {
        assert!(stream.message().await.unwrap().unwrap().created());
    }

    // 150 values of 64 KiB: far more than HTTP/2 windows and buffers hold
    // for a client that does not read.
    let value = "x".repeat(64 << 10);
    let writer = tokio::spawn({
        let mut writer = direct_client(&etcd).await;
        async move {
            for i in 0..WRITES {
                writer
                    .put(format!("{PREFIX}c1/ns/svc{i}"), value.as_str(), None)
                    .await
                    .unwrap();
            }
        }
    });
    let mut received = 0;
    while received < WRITES {
        let response = tokio::time::timeout(DEADLINE, fast.message())
            .await
            .expect("the fast watcher keeps receiving")
            .expect("the fast watcher's stream stays up")
            .expect("open");
        received += response.events().len();
    }
    assert_eq!(received, WRITES);
    writer.await.unwrap();
    eventually("the slow watcher to be disconnected", || async {
        (api.metric("clustermesh_apiserver_slow_watcher_disconnects_total", "")
            .await
            == 1.0)
            .then_some(())
    })
    .await;

    // The slow client finds what was in flight, then etcd's error.
    let status = tokio::time::timeout(DEADLINE, async {
        loop {
            match slow.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream must end with an error"),
                Err(etcd_client::Error::GRpcStatus(status)) => return status,
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    })
    .await
    .expect("the slow stream ends");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), "etcdserver: too many requests");
    eventually("the slow watcher to be unregistered", || async {
        (api.hub.stats().subscribers == 1).then_some(())
    })
    .await;
}
