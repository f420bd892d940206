//! Mutual TLS over loopback with certificates issued by `certs`: who is
//! accepted and who is refused, rotation while a server runs, interop with the
//! `openssl` binary, and the metrics.

mod handshake;
mod issuance;
mod metrics;
mod openssl;
mod rotation;
mod support;
