//! certs (work in progress)
