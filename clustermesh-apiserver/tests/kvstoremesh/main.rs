//! kvstoremesh against real etcds: a remote cluster's etcd behind a real
//! apiserver (mutual TLS, the remote's cluster config published by its
//! ClusterConfigPublisher), and a local etcd the mirror is written into.

#[allow(dead_code, unreachable_pub)]
#[path = "../apiserver/support.rs"]
mod support;

mod binary;
mod conflict;
mod harness;
mod mirror;
mod outage;
mod readiness;
mod removal;
mod restart;
mod wipe;
