//! One page of a list as etcd sent it: the answer's bytes, and where each
//! key and value lie in them.
//!
//! A page of a large list holds up to 100,000 keys in about 8 MiB. Decoded
//! into messages, each key and each value is an allocation of its own, all
//! freed once the page is consumed; read in place, a page costs one index
//! entry a key.

use std::{borrow::Cow, ops::Range};

use prost::{
    DecodeError,
    bytes::{Buf, Bytes},
    encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field},
};

use crate::client::Kv;

/// Why an answer could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PageError {
    #[error(transparent)]
    Wire(#[from] DecodeError),
    #[error("a field runs past the end of the answer")]
    Truncated,
    #[error("an answer of 4 GiB or more")]
    TooLarge,
}

/// A key and its value, borrowed from a [`Page`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvRef<'a> {
    /// The key (a key that is not UTF-8 reads with replacement characters).
    pub key: Cow<'a, str>,
    pub value: &'a [u8],
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

impl KvRef<'_> {
    pub fn to_kv(&self) -> Kv {
        Kv {
            key: self.key.clone().into_owned(),
            value: self.value.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        }
    }
}

/// Where one key-value lies in the page.
#[derive(Debug, Clone)]
struct Entry {
    key: Range<u32>,
    value: Range<u32>,
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    lease: i64,
}

/// A decoded `RangeResponse` that keeps etcd's bytes.
#[derive(Debug, Clone)]
pub struct Page {
    message: Bytes,
    entries: Vec<Entry>,
    pub(crate) revision: i64,
    pub(crate) cluster_id: u64,
    pub(crate) more: bool,
    pub(crate) count: i64,
}

impl Page {
    /// Reads etcd's `RangeResponse` (as `etcdserverpb` defines it: header 1,
    /// kvs 2, more 3, count 4; a key-value's key 1, create revision 2, mod
    /// revision 3, version 4, value 5, lease 6). Unknown fields are
    /// skipped, as protobuf requires.
    pub(crate) fn decode(message: Bytes) -> Result<Self, PageError> {
        if u32::try_from(message.len()).is_err() {
            return Err(PageError::TooLarge);
        }
        let mut page = Self {
            entries: Vec::new(),
            revision: 0,
            cluster_id: 0,
            more: false,
            count: 0,
            message: Bytes::new(),
        };
        let mut buf = &message[..];
        while buf.has_remaining() {
            let (tag, wire_type) = decode_key(&mut buf)?;
            match (tag, wire_type) {
                (1, WireType::LengthDelimited) => {
                    let header = length_delimited(&mut buf)?;
                    (page.cluster_id, page.revision) = decode_header(header)?;
                }
                (2, WireType::LengthDelimited) => {
                    let kv = length_delimited(&mut buf)?;
                    page.entries.push(decode_entry(kv, offset(&message, kv))?);
                }
                (3, WireType::Varint) => page.more = decode_varint(&mut buf)? != 0,
                (4, WireType::Varint) => page.count = decode_varint(&mut buf)? as i64,
                _ => skip_field(wire_type, tag, &mut buf, DecodeContext::default())?,
            }
        }
        page.message = message;
        Ok(page)
    }

    /// Keys in the page.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The page's keys and values, in etcd's order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = KvRef<'_>> {
        self.entries.iter().map(|e| KvRef {
            key: String::from_utf8_lossy(self.slice(&e.key)),
            value: self.slice(&e.value),
            create_revision: e.create_revision,
            mod_revision: e.mod_revision,
            version: e.version,
            lease: e.lease,
        })
    }

    /// The page's keys and values, copied out.
    pub fn to_kvs(&self) -> Vec<Kv> {
        self.iter().map(|kv| kv.to_kv()).collect()
    }

    /// The last key's raw bytes.
    pub(crate) fn last_key(&self) -> Option<&[u8]> {
        self.entries.last().map(|e| self.slice(&e.key))
    }

    /// Bytes of keys and values in the page.
    pub(crate) fn data_bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|e| e.key.len() + e.value.len())
            .sum()
    }

    fn slice(&self, range: &Range<u32>) -> &[u8] {
        &self.message[range.start as usize..range.end as usize]
    }
}

/// Where `rest` (a suffix of `message`) starts in it.
fn offset(message: &[u8], rest: &[u8]) -> u32 {
    // Both are in `message`, which is shorter than 4 GiB.
    (rest.as_ptr() as usize - message.as_ptr() as usize) as u32
}

/// A length-delimited field's bytes; `buf` moves past them.
fn length_delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], PageError> {
    let len = decode_varint(buf)?;
    let len = usize::try_from(len)
        .ok()
        .filter(|len| *len <= buf.len())
        .ok_or(PageError::Truncated)?;
    let (field, rest) = buf.split_at(len);
    *buf = rest;
    Ok(field)
}

/// A `ResponseHeader`'s cluster ID and revision.
fn decode_header(mut buf: &[u8]) -> Result<(u64, i64), PageError> {
    let (mut cluster_id, mut revision) = (0, 0);
    while buf.has_remaining() {
        let (tag, wire_type) = decode_key(&mut buf)?;
        match (tag, wire_type) {
            (1, WireType::Varint) => cluster_id = decode_varint(&mut buf)?,
            (3, WireType::Varint) => revision = decode_varint(&mut buf)? as i64,
            _ => skip_field(wire_type, tag, &mut buf, DecodeContext::default())?,
        }
    }
    Ok((cluster_id, revision))
}

/// A `KeyValue` that starts at `start` in the page.
fn decode_entry(kv: &[u8], start: u32) -> Result<Entry, PageError> {
    let mut entry = Entry {
        key: start..start,
        value: start..start,
        create_revision: 0,
        mod_revision: 0,
        version: 0,
        lease: 0,
    };
    let mut buf = kv;
    while buf.has_remaining() {
        let (tag, wire_type) = decode_key(&mut buf)?;
        match (tag, wire_type) {
            (1 | 5, WireType::LengthDelimited) => {
                let field = length_delimited(&mut buf)?;
                let from = start + offset(kv, field);
                let range = from..from + field.len() as u32;
                if tag == 1 {
                    entry.key = range;
                } else {
                    entry.value = range;
                }
            }
            (2, WireType::Varint) => entry.create_revision = decode_varint(&mut buf)? as i64,
            (3, WireType::Varint) => entry.mod_revision = decode_varint(&mut buf)? as i64,
            (4, WireType::Varint) => entry.version = decode_varint(&mut buf)? as i64,
            (6, WireType::Varint) => entry.lease = decode_varint(&mut buf)? as i64,
            _ => skip_field(wire_type, tag, &mut buf, DecodeContext::default())?,
        }
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use etcd_client::proto::{PbKeyValue, PbRangeResponse, PbResponseHeader};
    use prost::Message;

    use super::*;

    fn kv(key: &[u8], value: &[u8], revision: i64) -> PbKeyValue {
        PbKeyValue {
            key: key.to_vec(),
            create_revision: revision - 1,
            mod_revision: revision,
            version: 2,
            value: value.to_vec(),
            lease: 0x7f,
        }
    }

    fn response(kvs: Vec<PbKeyValue>, more: bool, count: i64) -> PbRangeResponse {
        PbRangeResponse {
            header: Some(PbResponseHeader {
                cluster_id: 0xc1,
                member_id: 9,
                revision: 1234,
                raft_term: 5,
            }),
            kvs,
            more,
            count,
        }
    }

    #[test]
    fn reads_what_prost_encodes() {
        let kvs = vec![
            kv(
                b"cilium/state/ip/v1/default/10.0.0.1",
                b"{\"IP\":\"10.0.0.1\"}",
                10,
            ),
            kv(b"k2", b"", 11),
            kv(b"k3", &vec![7u8; 300], 12),
        ];
        let message = response(kvs.clone(), true, 40).encode_to_vec();
        let page = Page::decode(Bytes::from(message)).unwrap();
        assert_eq!(
            (page.revision, page.cluster_id, page.more, page.count),
            (1234, 0xc1, true, 40)
        );
        assert_eq!(page.len(), 3);
        let got = page.to_kvs();
        for (got, want) in got.iter().zip(&kvs) {
            assert_eq!(got.key.as_bytes(), want.key);
            assert_eq!(got.value, want.value);
            assert_eq!(
                (
                    got.create_revision,
                    got.mod_revision,
                    got.version,
                    got.lease
                ),
                (
                    want.create_revision,
                    want.mod_revision,
                    want.version,
                    want.lease
                )
            );
        }
        assert_eq!(page.last_key(), Some(&b"k3"[..]));
        assert_eq!(page.data_bytes(), 35 + 17 + 2 + 2 + 300);
    }

    #[test]
    fn an_empty_answer_is_an_empty_page() {
        let page = Page::decode(Bytes::new()).unwrap();
        assert!(page.is_empty());
        assert_eq!((page.revision, page.more, page.count), (0, false, 0));
        let page = Page::decode(response(vec![], false, 0).encode_to_vec().into()).unwrap();
        assert_eq!((page.len(), page.revision), (0, 1234));
        assert_eq!(page.last_key(), None);
    }

    #[test]
    fn a_key_that_is_not_utf8_reads_with_replacement_characters() {
        let message = response(vec![kv(b"k\xff", b"v", 3)], false, 1).encode_to_vec();
        let page = Page::decode(message.into()).unwrap();
        let kv = page.iter().next().unwrap();
        assert_eq!(kv.key, "k\u{fffd}");
        assert_eq!(page.last_key(), Some(&b"k\xff"[..]));
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut message = response(vec![kv(b"a", b"1", 3)], false, 1).encode_to_vec();
        // Field 15 (fixed64) and field 16 (length-delimited) at the end.
        message.extend([0x79, 1, 2, 3, 4, 5, 6, 7, 8]);
        message.extend([0x82, 0x01, 2, b'x', b'y']);
        let page = Page::decode(message.into()).unwrap();
        assert_eq!(page.to_kvs()[0].key, "a");
        assert_eq!(page.count, 1);
    }

    #[test]
    fn a_truncated_answer_is_an_error() {
        let message = response(vec![kv(b"key", b"value", 3)], false, 1).encode_to_vec();
        let whole = Page::decode(message.clone().into()).unwrap().to_kvs();
        let mut failed = 0;
        for cut in 1..message.len() {
            // A cut inside a field fails; a cut between fields reads as a
            // shorter answer (protobuf cannot tell them apart), never as
            // a different key or value.
            match Page::decode(Bytes::copy_from_slice(&message[..cut])) {
                Ok(page) => assert!(page.is_empty() || page.to_kvs() == whole, "cut at {cut}"),
                Err(_) => failed += 1,
            }
        }
        assert!(
            failed > message.len() / 2,
            "{failed} of {} cuts failed",
            message.len()
        );
        // A length past the end.
        assert!(Page::decode(Bytes::from_static(&[0x12, 0x40, 0x0a])).is_err());
        // A varint that never ends.
        assert!(Page::decode(Bytes::from_static(&[0x18, 0xff, 0xff])).is_err());
    }
}
