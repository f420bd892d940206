//! A real relay over real Hubble servers, all on loopback with mutual TLS:
//! merged flows, node status events, node death, GetNodes, ServerStatus,
//! health, metrics, and the real Hubble CLI.

mod binary;
mod cli;
mod flows;
mod nodes;
mod support;
