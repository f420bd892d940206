use std::fmt;

/// A value kept under a store prefix: how it is decoded from etcd (and
/// validated against its key), encoded, and which key it lives under.
///
/// Keys are relative to the store's prefix, e.g. `10.244.1.79` for an ipcache
/// entry under `cilium/state/ip/v1/default/`.
pub trait StoreValue: Sized + Send + Sync + 'static {
    /// What the value is, for messages (`ipcache entry`).
    const KIND: &'static str;

    /// Decodes and validates the value stored at `key`.
    fn decode(key: &str, bytes: &[u8]) -> Result<Self, DecodeError>;

    /// The bytes to store.
    fn encode(&self) -> Vec<u8>;

    /// The key relative to the store's prefix.
    fn key(&self) -> String;
}

/// Why a value was refused. The short [`InvalidReason`] is what metrics count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at {key:?} is invalid ({reason}): {detail}")]
pub struct DecodeError {
    pub kind: &'static str,
    pub key: String,
    pub reason: InvalidReason,
    pub detail: String,
}

impl DecodeError {
    pub fn new(
        kind: &'static str,
        key: &str,
        reason: InvalidReason,
        detail: impl fmt::Display,
    ) -> Self {
        Self {
            kind,
            key: key.to_string(),
            reason,
            detail: detail.to_string(),
        }
    }
}

/// The class of an invalid value, used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InvalidReason {
    /// Not valid JSON / not the expected shape.
    Malformed,
    /// The key does not match what the value says (IP, name, cluster).
    KeyMismatch,
    /// A required field is empty.
    MissingField,
    /// An address does not parse (or has an IPv6 zone).
    InvalidAddress,
    /// A cluster name or ID is invalid or out of range.
    InvalidCluster,
    /// An identity number is out of the allowed range.
    IdentityOutOfRange,
    /// Labels do not parse, or the cluster label names another cluster.
    InvalidLabels,
    /// A remote claims a reserved identity (below 256) that only the local
    /// agent defines.
    ReservedIdentity,
    /// A remote claims a prefix it may not (wider than one address, or in
    /// address space that is not its own).
    PrefixNotAllowed,
    /// A name (of a node, a service) that cannot be part of a key.
    InvalidName,
}

impl InvalidReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::KeyMismatch => "key-mismatch",
            Self::MissingField => "missing-field",
            Self::InvalidAddress => "invalid-address",
            Self::InvalidCluster => "invalid-cluster",
            Self::IdentityOutOfRange => "identity-out-of-range",
            Self::InvalidLabels => "invalid-labels",
            Self::ReservedIdentity => "reserved-identity",
            Self::PrefixNotAllowed => "prefix-not-allowed",
            Self::InvalidName => "invalid-name",
        }
    }
}

impl fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decodes JSON, mapping failures to [`InvalidReason::Malformed`].
pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(
    kind: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T, DecodeError> {
    serde_json::from_slice(bytes)
        .map_err(|e| DecodeError::new(kind, key, InvalidReason::Malformed, e))
}

/// Uninterpreted bytes under a key: for mirrors and proxies that pass values on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub key: String,
    pub value: Vec<u8>,
}

impl StoreValue for RawEntry {
    const KIND: &'static str = "value";

    fn decode(key: &str, bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            key: key.to_string(),
            value: bytes.to_vec(),
        })
    }

    fn encode(&self) -> Vec<u8> {
        self.value.clone()
    }

    fn key(&self) -> String {
        self.key.clone()
    }
}
