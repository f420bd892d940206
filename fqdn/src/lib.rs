//! DNS-aware egress policy (`toFQDNs`) as pure logic: names and
//! selectors with Cilium's semantics, and the DNS messages of the agent's
//! proxy (read and written with hickory-proto). The cache of learned names
//! follows.

mod error;
mod framing;
mod name;
mod query;
mod response;
mod selector;

pub use hickory_proto::{op::ResponseCode, rr::RecordType};

pub use self::{
    error::{DnsError, DnsErrorReason},
    framing::{MAX_MESSAGE_LEN, Transport, frame, split_tcp_message},
    name::{DnsName, MAX_LABEL_LENGTH, MAX_NAME_LENGTH, NameError},
    query::DnsQuery,
    response::{DnsResponse, LearnedIp, ResponseLimits, Truncation, TruncationReason},
    selector::{FqdnSelector, MAX_SELECTOR_LENGTH, Pattern, SelectorError, SelectorSet},
};
