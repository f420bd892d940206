//! The local admin (`admin-c1`) has etcd's full API: writes, transactions,
//! leases with keep-alive, locks.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, LockOptions, PutOptions, Txn, TxnOp};
use etcd_harness::TestEtcd;
use tonic::Code;

use crate::support::{TestApiserver, direct_client, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_can_write_lease_and_lock() {
    let etcd = TestEtcd::start().await.unwrap();
    let api = TestApiserver::start(&etcd).await;

    let (ok, _, err) = run({
        let mut c = api.etcdctl("admin-c1");
        c.args(["put", "cilium/policies/v1/allow-web", "{}"]);
        c
    })
    .await;
    assert!(ok, "{err}");
    let mut direct = direct_client(&etcd).await;
    let got = direct
        .get("cilium/policies/v1/allow-web", None)
        .await
        .unwrap();
    assert_eq!(got.kvs()[0].value(), b"{}");

    let mut admin = api.etcd_client("admin-c1").await;
    // Transactions.
    let txn = Txn::new()
        .when([Compare::create_revision(
            "cilium/state/x",
            CompareOp::Equal,
            0,
        )])
        .and_then([TxnOp::put("cilium/state/x", "1", None)]);
    assert!(admin.txn(txn).await.unwrap().succeeded());
    // Leases: grant, keep alive, attach, revoke.
    let lease = admin.lease_grant(30, None).await.unwrap().id();
    let (mut keeper, mut responses) = admin.lease_keep_alive(lease).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let alive = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(alive.id(), lease);
    assert!(alive.ttl() > 0);
    admin
        .put(
            "cilium/state/leased",
            "v",
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .unwrap();
    admin.lease_revoke(lease).await.unwrap();
    assert_eq!(
        direct
            .get(
                "cilium/state/leased",
                Some(GetOptions::new().with_count_only())
            )
            .await
            .unwrap()
            .count(),
        0
    );
    // Locks (the v3lockpb service).
    let lease = admin.lease_grant(30, None).await.unwrap().id();
    let lock = admin
        .lock(
            "cilium/state/identities/v1/locks/x",
            Some(LockOptions::new().with_lease(lease)),
        )
        .await
        .unwrap();
    assert!(
        lock.key()
            .starts_with(b"cilium/state/identities/v1/locks/x/")
    );
    admin.unlock(lock.key()).await.unwrap();
    // Deletes and compaction.
    admin.delete("cilium/state/x", None).await.unwrap();
    let revision = admin.status().await.unwrap().header().unwrap().revision();
    admin.compact(revision, None).await.unwrap();

    // RPCs the apiserver does not serve answer as a gRPC server answers an
    // unknown method or service.
    for (result, message) in [
        (
            admin
                .alarm(
                    etcd_client::AlarmAction::Get,
                    etcd_client::AlarmType::None,
                    None,
                )
                .await
                .map(|_| ()),
            Some("unknown method Alarm for service etcdserverpb.Maintenance"),
        ),
        (
            admin.defragment().await.map(|_| ()),
            Some("unknown method Defragment for service etcdserverpb.Maintenance"),
        ),
        (admin.member_list().await.map(|_| ()), None),
        (admin.user_list().await.map(|_| ()), None),
    ] {
        match result {
            Err(etcd_client::Error::GRpcStatus(s)) => {
                assert_eq!(s.code(), Code::Unimplemented, "{s:?}");
                if let Some(message) = message {
                    assert_eq!(s.message(), message);
                }
            }
            other => panic!("expected Unimplemented, got {other:?}"),
        }
    }

    // A remote may not do any of it.
    let mut remote = api.etcd_client("remote-c2").await;
    for result in [
        remote.lease_grant(30, None).await.map(|_| ()),
        remote.lock("cilium/state/l", None).await.map(|_| ()),
        remote
            .txn(Txn::new().and_then([TxnOp::get("cilium/state/x", None)]))
            .await
            .map(|_| ()),
        remote.compact(revision, None).await.map(|_| ()),
    ] {
        match result {
            Err(etcd_client::Error::GRpcStatus(s)) => {
                assert_eq!(s.code(), Code::PermissionDenied);
                assert_eq!(s.message(), "etcdserver: permission denied");
            }
            other => panic!("a remote must be refused, got {other:?}"),
        }
    }
}
