//! bpf (work in progress)
