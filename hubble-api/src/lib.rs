//! The Hubble gRPC API as clustermesh serves it: the `Observer` service
//! (`GetFlows`, `GetNodes`, `GetNamespaces`, `ServerStatus`), the `Peer`
//! service (`Notify`) and the flow messages they carry, generated from this
//! crate's own `proto/` files, which are wire-compatible with Cilium's Hubble
//! API v1.19 so that Cilium's `hubble` CLI and relay can talk to our servers
//! and ours to theirs (`tests/wire_compat.rs` checks the protos against the
//! reference copy in `../shared/reference/hubble/api/v1`).
//!
//! It holds types, clients and servers only. It is not the place for flow
//! parsing, filtering, buffering or any server logic (those belong to the
//! agent's Hubble server and the relay), and not a full copy of Cilium's API:
//! L7 records and agent/debug events are left out (see the proto headers).

/// Package `flow`: `Flow`, `FlowFilter`, `LostEvent` and what they reference.
pub mod flow {
    tonic::include_proto!("flow");
}

/// Package `relay`: node status events a relay interleaves with flows.
pub mod relay {
    tonic::include_proto!("relay");
}

/// Package `observer`: the `Observer` service, its client and server.
pub mod observer {
    tonic::include_proto!("observer");
}

/// Package `peer`: the `Peer` service, its client and server.
pub mod peer {
    tonic::include_proto!("peer");
}

/// The encoded `FileDescriptorSet` of this crate's protos (with their
/// `google/protobuf` imports), for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("hubble_api");

#[cfg(feature = "json")]
pub mod json;
