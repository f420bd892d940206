//! kvstore (work in progress)
