//! The apiserver against a real etcd, with real TLS and real clients
//! (`etcdctl`, `etcd-client`, the kvstore crate's watch store).

mod admin;
mod agent;
mod authorization;
mod binary;
mod cluster_config;
mod etcd_cluster;
mod etcd_tls;
mod etcdctl;
mod fan_out;
mod reload;
mod slow_watcher;
mod support;
mod tls;
mod watch_consistency;
