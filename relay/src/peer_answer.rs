//! What one peer answered to a fanned-out unary call.

/// The outcome of asking one peer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PeerAnswer<T> {
    /// Not asked: the peer has no usable connection.
    Unavailable,
    /// Asked, and the call failed (why).
    Failed(String),
    Answered(T),
}
