use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::RecordType,
};

use crate::{
    DnsError, DnsName, Transport,
    framing::{MAX_MESSAGE_LEN, frame, unframe},
};

/// A DNS query an endpoint sent, as the proxy reads it: what it asks, and
/// what a refusal must echo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsQuery {
    /// The message ID, which the answer repeats.
    pub id: u16,
    /// The name asked for, normalized (the one selectors match).
    pub name: DnsName,
    /// The type asked for (A, AAAA, ...).
    pub record_type: RecordType,
    /// The question as sent, echoed byte for byte in a refusal (resolvers
    /// that randomize the case of names check it).
    question: Query,
    op_code: OpCode,
    recursion_desired: bool,
    checking_disabled: bool,
}

impl DnsQuery {
    /// Reads one query as received over `transport` (over TCP, exactly one
    /// length-prefixed message). Exactly one question, as resolvers send.
    pub fn parse(bytes: &[u8], transport: Transport) -> Result<Self, DnsError> {
        let message = unframe(bytes, transport, MAX_MESSAGE_LEN)?;
        let message = Message::from_vec(message).map_err(DnsError::decode)?;
        if message.metadata.message_type != MessageType::Query {
            return Err(DnsError::NotAQuery);
        }
        let [question] = &message.queries[..] else {
            return Err(DnsError::QuestionCount {
                count: message.queries.len(),
            });
        };
        let name = DnsName::from_labels(question.name.iter()).map_err(|_| DnsError::NameTooLong)?;
        Ok(Self {
            id: message.metadata.id,
            name,
            record_type: question.query_type,
            question: question.clone(),
            op_code: message.metadata.op_code,
            recursion_desired: message.metadata.recursion_desired,
            checking_disabled: message.metadata.checking_disabled,
        })
    }

    /// The REFUSED answer to this query, framed for `transport`, as
    /// Cilium's proxy writes it for a denied lookup (`SetRcode(request,
    /// RcodeRefused)`): same ID and opcode, QR set, the question echoed,
    /// RD and CD copied for a standard query, RA, AA and TC clear, no
    /// records.
    pub fn refused(&self, transport: Transport) -> Result<Vec<u8>, DnsError> {
        self.reply(ResponseCode::Refused, transport)
    }

    /// An answer with `rcode` and no records (REFUSED, or SERVFAIL when the
    /// upstream server cannot be reached), framed for `transport`.
    pub fn reply(&self, rcode: ResponseCode, transport: Transport) -> Result<Vec<u8>, DnsError> {
        let mut reply = Message::new(self.id, MessageType::Response, self.op_code);
        if self.op_code == OpCode::Query {
            reply.metadata.recursion_desired = self.recursion_desired;
            reply.metadata.checking_disabled = self.checking_disabled;
        }
        reply.metadata.response_code = rcode;
        reply.add_query(self.question.clone());
        let bytes = reply.to_vec().map_err(DnsError::Encode)?;
        frame(&bytes, transport)
    }
}
