//! Generates the Rust types, clients and servers from `proto/`, and a
//! descriptor set of the same files (`hubble_api.bin`) for gRPC reflection and
//! for the wire-compatibility test.

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "proto/flow/flow.proto",
    "proto/relay/relay.proto",
    "proto/observer/observer.proto",
    "proto/peer/peer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(out_dir.join("hubble_api.bin"))
        .compile_protos(PROTOS, &["proto"])?;
    Ok(())
}
