//! Why a remote's connection ended: a typed end reason for every session,
//! and for failures a kind that `status` and the logs name (shared with
//! kvstoremesh, in [`kvstore::remote`]).

pub(super) use kvstore::remote::{Failure, Resync, SessionEnd};
