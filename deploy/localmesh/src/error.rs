//! How a mesh command failed, so that the CLI picks the right exit code.

/// The request cannot work as given (a directory that is not empty, an
/// unknown cluster, a partition of a cluster with itself). Nothing was
/// changed. The CLI exits with 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Something the command needs does not answer (an agent, an etcd, an
/// apiserver). The CLI exits with 69.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// Returns early with a [`Refused`] error.
macro_rules! refuse {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::error::Refused(format!($($arg)*))))
    };
}
pub(crate) use refuse;
