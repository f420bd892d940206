use std::{collections::HashMap, net::IpAddr};

use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{DNSClass, RData, RecordType},
};

use crate::{
    DnsError, DnsName, DnsQuery, Transport,
    framing::{MAX_MESSAGE_LEN, unframe},
};

/// An address of an answer and how long it may be used (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LearnedIp {
    /// An A or AAAA record's address.
    pub ip: IpAddr,
    /// The record's TTL, lowered to the TTL of each CNAME on the way to it
    /// (Cilium keeps the lowest TTL of the chain).
    pub ttl: u32,
}

/// Bounds on what one answer may teach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseLimits {
    /// The largest message read (at most 65,535 octets).
    pub max_message_len: usize,
    /// The most addresses taken from one answer; the rest are dropped and
    /// the answer says so. Default 256: beyond any real answer, and the
    /// cache keeps at most `max_ips_per_name` (50) of them per endpoint.
    pub max_addresses: usize,
    /// The most CNAMEs followed from the question's name. Default 16.
    pub max_cnames: usize,
}

impl Default for ResponseLimits {
    fn default() -> Self {
        Self {
            max_message_len: MAX_MESSAGE_LEN,
            max_addresses: 256,
            max_cnames: 16,
        }
    }
}

/// Why an answer was read only in part. The answer is still used (what was
/// read is right); the caller counts the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TruncationReason {
    /// More addresses than [`ResponseLimits::max_addresses`].
    TooManyAddresses,
    /// A chain of more CNAMEs than [`ResponseLimits::max_cnames`].
    CnameChainTooLong,
    /// A CNAME back to a name of the chain.
    CnameLoop,
}

impl TruncationReason {
    /// A metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooManyAddresses => "too_many_addresses",
            Self::CnameChainTooLong => "cname_chain_too_long",
            Self::CnameLoop => "cname_loop",
        }
    }
}

/// What was left out of an answer, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Truncation {
    /// The limit hit (too many addresses, when a CNAME limit was hit too).
    pub reason: TruncationReason,
    /// Addresses left out (0 for CNAME limits: what lies past them is not
    /// known).
    pub dropped: usize,
}

/// A DNS server's answer as the proxy reads it before releasing it: the
/// question's name and every address it resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsResponse {
    /// The ID (that of the query it answers).
    pub id: u16,
    /// NOERROR, NXDOMAIN, REFUSED, ...
    pub rcode: ResponseCode,
    /// The question's name, normalized.
    pub name: DnsName,
    /// The question's type.
    pub record_type: RecordType,
    /// Each address once (with the highest TTL it came with), in the order
    /// of the answer: the A and AAAA records of the question's name and of
    /// the names its CNAME chain leads to.
    pub addresses: Vec<LearnedIp>,
    /// The chain's names after the question's, in order.
    pub cnames: Vec<DnsName>,
    /// The server set TC: over UDP, what is here is a part of the answer.
    pub truncated_by_server: bool,
    /// What this reader left out, if anything.
    pub truncation: Option<Truncation>,
    /// Answer records about other names (not on the chain): ignored, as an
    /// answer may only teach about what was asked.
    pub unrelated_records: usize,
}

impl DnsResponse {
    /// Reads an answer as received over `transport`.
    pub fn parse(
        bytes: &[u8],
        transport: Transport,
        limits: &ResponseLimits,
    ) -> Result<Self, DnsError> {
        let message = unframe(bytes, transport, limits.max_message_len)?;
        let message = Message::from_vec(message).map_err(DnsError::decode)?;
        if message.metadata.message_type != MessageType::Response {
            return Err(DnsError::NotAResponse);
        }
        let [question] = &message.queries[..] else {
            return Err(DnsError::QuestionCount {
                count: message.queries.len(),
            });
        };
        let name = DnsName::from_labels(question.name.iter()).map_err(|_| DnsError::NameTooLong)?;

        // Records by owner name; names that are not DNS names own nothing.
        let mut by_owner: HashMap<DnsName, Vec<&hickory_proto::rr::Record>> = HashMap::new();
        for record in &message.answers {
            if record.dns_class != DNSClass::IN {
                continue;
            }
            if let Ok(owner) = DnsName::from_labels(record.name.iter()) {
                by_owner.entry(owner).or_default().push(record);
            }
        }

        let mut addresses: Vec<LearnedIp> = Vec::new();
        let mut index: HashMap<IpAddr, usize> = HashMap::new();
        let mut cnames = Vec::new();
        let mut truncation = None;
        let mut dropped = 0usize;
        let mut related = 0usize;
        let mut current = name.clone();
        let mut cap = u32::MAX;
        loop {
            let records = by_owner
                .get(&current)
                .map(Vec::as_slice)
                .unwrap_or_default();
            related += records.len();
            let mut next = None;
            for record in records {
                let ttl = ttl(record.ttl).min(cap);
                let ip = match &record.data {
                    RData::A(a) => IpAddr::V4(a.0),
                    RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                    RData::CNAME(target) => {
                        if next.is_none() {
                            next = DnsName::from_labels(target.0.iter()).ok().map(|t| (t, ttl));
                        }
                        continue;
                    }
                    _ => continue,
                };
                match index.get(&ip) {
                    Some(&i) => addresses[i].ttl = addresses[i].ttl.max(ttl),
                    None if addresses.len() < limits.max_addresses => {
                        index.insert(ip, addresses.len());
                        addresses.push(LearnedIp { ip, ttl });
                    }
                    None => dropped += 1,
                }
            }
            let Some((target, ttl)) = next else {
                break;
            };
            if target == name || cnames.contains(&target) {
                truncation.get_or_insert(Truncation {
                    reason: TruncationReason::CnameLoop,
                    dropped: 0,
                });
                break;
            }
            if cnames.len() >= limits.max_cnames {
                truncation.get_or_insert(Truncation {
                    reason: TruncationReason::CnameChainTooLong,
                    dropped: 0,
                });
                break;
            }
            cap = ttl;
            cnames.push(target.clone());
            current = target;
        }
        if dropped > 0 {
            truncation = Some(Truncation {
                reason: TruncationReason::TooManyAddresses,
                dropped,
            });
        }
        Ok(Self {
            id: message.metadata.id,
            rcode: message.metadata.response_code,
            name,
            record_type: question.query_type,
            addresses,
            cnames,
            truncated_by_server: message.metadata.truncation,
            truncation,
            unrelated_records: message.answers.len().saturating_sub(related),
        })
    }

    /// Whether this answers `query`: same ID, name and type. An answer that
    /// does not must not teach anything (it may be forged or stale).
    pub fn answers(&self, query: &DnsQuery) -> bool {
        self.id == query.id && self.name == query.name && self.record_type == query.record_type
    }
}

/// RFC 2181 8: a TTL with the top bit set is read as zero.
fn ttl(raw: u32) -> u32 {
    if raw > i32::MAX as u32 { 0 } else { raw }
}

#[cfg(test)]
mod tests;
