use hickory_proto::{ProtoError, serialize::binary::DecodeError};

/// Why a DNS message was not read or written. Never a panic: the proxy
/// drops the message (or, for a query it cannot read, answers nothing) and
/// counts [`DnsError::reason`].
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// Over the size limit (65,535 octets, or the caller's).
    #[error("dns message of {len} octets is over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    /// A TCP message whose 2-octet length prefix does not match the octets
    /// that follow it.
    #[error("dns tcp frame declares {declared} octets and carries {actual}")]
    Frame { declared: usize, actual: usize },
    /// Not a DNS message (hickory-proto's reason).
    #[error("malformed dns message")]
    Malformed(#[source] DecodeError),
    /// A name longer than 253 octets, or with a label over 63.
    #[error("dns name is too long")]
    NameTooLong,
    /// A query must ask exactly one question (as every resolver does); a
    /// response must echo it.
    #[error("dns message has {count} questions; one is expected")]
    QuestionCount { count: usize },
    /// A response where a query was expected.
    #[error("dns message is a response where a query was expected")]
    NotAQuery,
    /// A query where a response was expected.
    #[error("dns message is a query where a response was expected")]
    NotAResponse,
    /// hickory-proto could not write a message.
    #[error("encoding a dns message failed")]
    Encode(#[source] ProtoError),
}

/// [`DnsError`] without its details, as a label for a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DnsErrorReason {
    /// [`DnsError::TooLarge`].
    TooLarge,
    /// [`DnsError::Frame`].
    Frame,
    /// [`DnsError::Malformed`].
    Malformed,
    /// [`DnsError::NameTooLong`].
    NameTooLong,
    /// [`DnsError::QuestionCount`].
    QuestionCount,
    /// [`DnsError::NotAQuery`].
    NotAQuery,
    /// [`DnsError::NotAResponse`].
    NotAResponse,
    /// [`DnsError::Encode`].
    Encode,
}

impl DnsErrorReason {
    /// A metric label: `too_large`, `malformed`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Frame => "frame",
            Self::Malformed => "malformed",
            Self::NameTooLong => "name_too_long",
            Self::QuestionCount => "question_count",
            Self::NotAQuery => "not_a_query",
            Self::NotAResponse => "not_a_response",
            Self::Encode => "encode",
        }
    }
}

impl DnsError {
    /// The reason, for counting.
    pub fn reason(&self) -> DnsErrorReason {
        match self {
            Self::TooLarge { .. } => DnsErrorReason::TooLarge,
            Self::Frame { .. } => DnsErrorReason::Frame,
            Self::Malformed(_) => DnsErrorReason::Malformed,
            Self::NameTooLong => DnsErrorReason::NameTooLong,
            Self::QuestionCount { .. } => DnsErrorReason::QuestionCount,
            Self::NotAQuery => DnsErrorReason::NotAQuery,
            Self::NotAResponse => DnsErrorReason::NotAResponse,
            Self::Encode(_) => DnsErrorReason::Encode,
        }
    }

    pub(crate) fn decode(error: DecodeError) -> Self {
        match error {
            DecodeError::DomainNameTooLong(_) | DecodeError::LabelBytesTooLong(_) => {
                Self::NameTooLong
            }
            e => Self::Malformed(e),
        }
    }
}
