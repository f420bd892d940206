use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::{
    op::{OpCode, Query},
    rr::{
        Name, Record,
        rdata::{A, AAAA, CNAME},
    },
};
use proptest::prelude::*;

use super::*;
use crate::{DnsErrorReason, frame, split_tcp_message};

fn hname(text: &str) -> Name {
    Name::from_ascii(text).unwrap()
}

fn query_message(id: u16, name: &str, record_type: RecordType) -> Message {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(hname(name), record_type));
    m
}

fn query_bytes(id: u16, name: &str) -> Vec<u8> {
    query_message(id, name, RecordType::A).to_vec().unwrap()
}

fn response(id: u16, name: &str, answers: Vec<Record>) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Response, OpCode::Query);
    m.metadata.recursion_available = true;
    m.add_query(Query::query(hname(name), RecordType::A));
    m.add_answers(answers);
    m.to_vec().unwrap()
}

fn a(name: &str, ttl: u32, ip: [u8; 4]) -> Record {
    Record::from_rdata(hname(name), ttl, RData::A(A(Ipv4Addr::from(ip))))
}

fn cname(name: &str, ttl: u32, target: &str) -> Record {
    Record::from_rdata(hname(name), ttl, RData::CNAME(CNAME(hname(target))))
}

fn parse(bytes: &[u8]) -> Result<DnsResponse, DnsError> {
    DnsResponse::parse(bytes, Transport::Udp, &ResponseLimits::default())
}

#[test]
fn queries_are_read_over_udp_and_tcp() {
    let bytes = query_bytes(0x1234, "API.Example.com.");
    let udp = DnsQuery::parse(&bytes, Transport::Udp).unwrap();
    assert_eq!(udp.id, 0x1234);
    assert_eq!(udp.name.as_str(), "api.example.com.");
    assert_eq!(udp.record_type, RecordType::A);
    let framed = frame(&bytes, Transport::Tcp).unwrap();
    assert_eq!(&framed[..2], &(bytes.len() as u16).to_be_bytes());
    assert_eq!(DnsQuery::parse(&framed, Transport::Tcp).unwrap(), udp);
}

#[test]
fn refusals_echo_the_query_as_ciliums_proxy_does() {
    let mut m = query_message(77, "WwW.Example.com.", RecordType::AAAA);
    m.metadata.checking_disabled = true;
    let query = DnsQuery::parse(&m.to_vec().unwrap(), Transport::Udp).unwrap();
    for transport in [Transport::Udp, Transport::Tcp] {
        let bytes = query.refused(transport).unwrap();
        let body = match transport {
            Transport::Udp => &bytes[..],
            Transport::Tcp => split_tcp_message(&bytes).unwrap().0,
        };
        let refused = Message::from_vec(body).unwrap();
        let h = &refused.metadata;
        assert_eq!(h.id, 77);
        assert_eq!(h.message_type, MessageType::Response);
        assert_eq!(h.op_code, OpCode::Query);
        assert_eq!(h.response_code, ResponseCode::Refused);
        assert!(
            h.recursion_desired && h.checking_disabled,
            "RD and CD copied"
        );
        assert!(!h.recursion_available && !h.authoritative && !h.truncation);
        assert!(refused.answers.is_empty() && refused.additionals.is_empty());
        // The question as sent, case included (0x20 randomization).
        assert_eq!(refused.queries.len(), 1);
        assert_eq!(refused.queries[0].name.to_ascii(), "WwW.Example.com.");
        assert_eq!(refused.queries[0].query_type, RecordType::AAAA);
    }
    let servfail = query.reply(ResponseCode::ServFail, Transport::Udp).unwrap();
    assert_eq!(
        Message::from_vec(&servfail).unwrap().metadata.response_code,
        ResponseCode::ServFail
    );
}

#[test]
fn bad_queries_are_refused_with_a_reason() {
    let reason = |bytes: &[u8], transport| DnsQuery::parse(bytes, transport).unwrap_err().reason();
    assert_eq!(reason(b"", Transport::Udp), DnsErrorReason::Malformed);
    assert_eq!(
        reason(&[0xff; 7], Transport::Udp),
        DnsErrorReason::Malformed
    );
    assert_eq!(
        reason(&response(1, "a.example.", vec![]), Transport::Udp),
        DnsErrorReason::NotAQuery
    );
    let none = Message::new(1, MessageType::Query, OpCode::Query)
        .to_vec()
        .unwrap();
    assert_eq!(reason(&none, Transport::Udp), DnsErrorReason::QuestionCount);
    let mut two = query_message(1, "a.example.", RecordType::A);
    two.add_query(Query::query(hname("b.example."), RecordType::A));
    assert_eq!(
        reason(&two.to_vec().unwrap(), Transport::Udp),
        DnsErrorReason::QuestionCount
    );
    // TCP: the prefix must say what follows.
    let bytes = query_bytes(1, "a.example.");
    let mut framed = frame(&bytes, Transport::Tcp).unwrap();
    framed.push(0);
    assert!(matches!(
        DnsQuery::parse(&framed, Transport::Tcp),
        Err(DnsError::Frame { declared, actual }) if actual == declared + 1
    ));
    assert_eq!(reason(&[0], Transport::Tcp), DnsErrorReason::Frame);
    assert_eq!(
        reason(&vec![0; 70_000], Transport::Udp),
        DnsErrorReason::TooLarge
    );
    assert!(frame(&vec![0; 70_000], Transport::Tcp).is_err());
}

/// A query whose name is 4 labels of 63 octets: 257 octets on the wire.
#[test]
fn names_over_253_octets_are_refused() {
    let mut bytes = vec![0, 1, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for _ in 0..4 {
        bytes.push(63);
        bytes.extend([b'a'; 63]);
    }
    bytes.extend([0, 0, 1, 0, 1]);
    let e = DnsQuery::parse(&bytes, Transport::Udp).unwrap_err();
    assert_eq!(e.reason(), DnsErrorReason::NameTooLong, "{e}");
    assert_eq!(e.reason().as_str(), "name_too_long");
}

#[test]
fn answers_give_every_address_of_the_name_through_cnames() {
    let bytes = response(
        9,
        "WWW.example.com.",
        vec![
            cname("www.example.com.", 30, "edge.cdn.net."),
            cname("edge.cdn.net.", 600, "e1.cdn.net."),
            a("e1.cdn.net.", 300, [192, 0, 2, 1]),
            a("e1.cdn.net.", 10, [192, 0, 2, 2]),
            Record::from_rdata(
                hname("e1.cdn.net."),
                300,
                RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)),
            ),
            a("e1.cdn.net.", 5, [192, 0, 2, 1]),
            a("elsewhere.example.", 300, [203, 0, 113, 9]),
        ],
    );
    let r = parse(&bytes).unwrap();
    assert_eq!(r.id, 9);
    assert_eq!(r.rcode, ResponseCode::NoError);
    assert_eq!(r.name.as_str(), "www.example.com.");
    assert_eq!(
        r.cnames,
        [
            DnsName::new("edge.cdn.net").unwrap(),
            DnsName::new("e1.cdn.net").unwrap()
        ]
    );
    assert_eq!(
        r.addresses,
        [
            LearnedIp {
                ip: "192.0.2.1".parse().unwrap(),
                ttl: 30
            },
            LearnedIp {
                ip: "192.0.2.2".parse().unwrap(),
                ttl: 10
            },
            LearnedIp {
                ip: "::1".parse().unwrap(),
                ttl: 30
            },
        ]
    );
    assert_eq!(
        r.unrelated_records, 1,
        "an address of another name is not learned"
    );
    assert_eq!(r.truncation, None);
    assert!(!r.truncated_by_server);
    let query = DnsQuery::parse(&query_bytes(9, "www.example.com."), Transport::Udp).unwrap();
    assert!(r.answers(&query));
    let other = DnsQuery::parse(&query_bytes(10, "www.example.com."), Transport::Udp).unwrap();
    assert!(!r.answers(&other));
}

#[test]
fn error_answers_and_odd_ttls() {
    let mut m = Message::new(3, MessageType::Response, OpCode::Query);
    m.metadata.response_code = ResponseCode::NXDomain;
    m.metadata.truncation = true;
    m.add_query(Query::query(hname("nope.example."), RecordType::A));
    let r = parse(&m.to_vec().unwrap()).unwrap();
    assert_eq!(r.rcode, ResponseCode::NXDomain);
    assert!(r.addresses.is_empty() && r.truncated_by_server);
    // RFC 2181: a TTL with the top bit set is 0.
    let r = parse(&response(
        1,
        "a.example.",
        vec![a("a.example.", 0x8000_0000, [10, 0, 0, 1])],
    ))
    .unwrap();
    assert_eq!(r.addresses[0].ttl, 0);
    assert_eq!(
        parse(&query_bytes(1, "a.example.")).unwrap_err().reason(),
        DnsErrorReason::NotAResponse
    );
}

#[test]
fn thousands_of_addresses_are_truncated_with_a_reason() {
    let answers = (0..3000u32)
        .map(|i| a("many.example.", 60, (0x0a00_0000 + i).to_be_bytes()))
        .collect();
    let bytes = response(1, "many.example.", answers);
    // As many as fit in 64 KiB (the encoder stops there).
    let sent = Message::from_vec(&bytes).unwrap().answers.len();
    assert!(sent > 2000, "{sent}");
    let r = parse(&bytes).unwrap();
    assert_eq!(r.addresses.len(), 256);
    assert_eq!(
        r.truncation,
        Some(Truncation {
            reason: TruncationReason::TooManyAddresses,
            dropped: sent - 256
        })
    );
    assert_eq!(r.truncation.unwrap().reason.as_str(), "too_many_addresses");
    // The size limit applies before anything is read.
    let small = ResponseLimits {
        max_message_len: 512,
        ..ResponseLimits::default()
    };
    let e = DnsResponse::parse(&bytes, Transport::Udp, &small).unwrap_err();
    assert!(matches!(e, DnsError::TooLarge { max: 512, .. }), "{e}");
}

#[test]
fn cname_loops_and_long_chains_stop() {
    let looping = response(
        1,
        "a.example.",
        vec![
            cname("a.example.", 60, "b.example."),
            a("b.example.", 60, [10, 0, 0, 1]),
            cname("b.example.", 60, "a.example."),
        ],
    );
    let r = parse(&looping).unwrap();
    assert_eq!(r.truncation.unwrap().reason, TruncationReason::CnameLoop);
    assert_eq!(r.addresses.len(), 1);
    let chain: Vec<Record> = (0..20)
        .map(|i| {
            cname(
                &format!("c{i}.example."),
                60,
                &format!("c{}.example.", i + 1),
            )
        })
        .chain([a("c20.example.", 60, [10, 0, 0, 2])])
        .collect();
    let r = parse(&response(1, "c0.example.", chain)).unwrap();
    assert_eq!(
        r.truncation.unwrap().reason,
        TruncationReason::CnameChainTooLong
    );
    assert_eq!(r.cnames.len(), 16);
    assert!(r.addresses.is_empty());
}

#[test]
fn tcp_streams_split_into_messages() {
    let one = query_bytes(1, "a.example.");
    let two = query_bytes(2, "b.example.");
    let mut stream = frame(&one, Transport::Tcp).unwrap();
    stream.extend(frame(&two, Transport::Tcp).unwrap());
    let (first, used) = split_tcp_message(&stream).unwrap();
    assert_eq!(first, &one[..]);
    let (second, rest) = split_tcp_message(&stream[used..]).unwrap();
    assert_eq!(second, &two[..]);
    assert_eq!(used + rest, stream.len());
    assert_eq!(split_tcp_message(&stream[..used - 1]), None);
    assert_eq!(split_tcp_message(&[0]), None);
}

proptest! {
    /// Random octets never panic, whatever the reader.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        for transport in [Transport::Udp, Transport::Tcp] {
            if let Ok(q) = DnsQuery::parse(&bytes, transport) {
                let _ = q.refused(transport);
            }
            let _ = DnsResponse::parse(&bytes, transport, &ResponseLimits::default());
        }
        let _ = split_tcp_message(&bytes);
    }

    /// Nor do real messages with some octets changed.
    #[test]
    fn mutated_messages_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let mut bytes = response(
            5,
            "www.example.com.",
            vec![
                cname("www.example.com.", 30, "e.cdn.net."),
                a("e.cdn.net.", 60, [192, 0, 2, 1]),
                a("e.cdn.net.", 60, [192, 0, 2, 2]),
            ],
        );
        for (at, value) in edits {
            let i = at % bytes.len();
            bytes[i] = value;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        if let Ok(r) = parse(&bytes) {
            prop_assert!(r.addresses.len() <= 2);
        }
        if let Ok(q) = DnsQuery::parse(&bytes, Transport::Udp) {
            prop_assert!(q.refused(Transport::Udp).is_ok());
        }
    }
}
