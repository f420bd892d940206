use etcd_client::proto::{PbWatchRequest, PbWatchResponse};
use prost::{
    Message,
    bytes::{BufMut, Bytes, BytesMut},
    encoding::{WireType, encode_key, encode_varint},
};
use tonic::{
    Status,
    codec::{Codec, EncodeBuf, Encoder},
};

use crate::proto_codec::ProtoDecoder;

/// Field number of `WatchResponse.watch_id` in etcd's `rpc.proto`.
const WATCH_ID_FIELD: u32 = 2;

/// One response on a downstream watch stream.
#[derive(Debug)]
pub(crate) enum WatchMessage {
    /// A response that many watchers receive: `body` is the response encoded
    /// once, without a watch ID; the ID of each watcher is written in front
    /// of it as it goes out. Protobuf fields may come in any order, so the
    /// result is an ordinary `WatchResponse` to the client, and fanning an
    /// upstream response out to N watchers costs N reference counts and N
    /// copies into the socket buffer instead of N encodings.
    ///
    /// `events` says whether the body carries events (and not only a
    /// progress header); consecutive event bodies of one watcher may be
    /// merged, see [`WatchMessage::Merged`].
    Shared {
        watch_id: i64,
        body: Bytes,
        events: bool,
    },
    /// Several event bodies of one watcher, queued while the client was
    /// behind, sent as one response. Concatenated protobuf messages are one
    /// message whose repeated fields are appended and whose singular fields
    /// take the last value: one `WatchResponse` with every event, in order,
    /// and the last header, as etcd itself sends to a watcher that is
    /// catching up.
    Merged { watch_id: i64, bodies: Vec<Bytes> },
    /// A response for one watcher (created, canceled, filtered, catch-up).
    Owned(Box<PbWatchResponse>),
    /// Ends the stream with this error.
    Close(Status),
}

impl WatchMessage {
    pub(crate) fn owned(response: PbWatchResponse) -> Self {
        Self::Owned(Box::new(response))
    }
}

/// Encodes `response` for [`WatchMessage::Shared`]; its `watch_id` must be 0.
pub(crate) fn encode_shared(response: &PbWatchResponse) -> Bytes {
    debug_assert_eq!(response.watch_id, 0);
    let mut buf = BytesMut::with_capacity(response.encoded_len());
    response
        .encode(&mut buf)
        .expect("a BytesMut with the encoded length has room");
    buf.freeze()
}

/// The codec of the downstream Watch service: decodes `WatchRequest`s,
/// encodes [`WatchMessage`]s.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WatchCodec;

impl Codec for WatchCodec {
    type Encode = WatchMessage;
    type Decode = PbWatchRequest;
    type Encoder = WatchEncoder;
    type Decoder = ProtoDecoder<PbWatchRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        WatchEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        crate::proto_codec::ProtoCodec::<PbWatchResponse, PbWatchRequest>::default().decoder()
    }
}

#[derive(Debug)]
pub(crate) struct WatchEncoder;

impl Encoder for WatchEncoder {
    type Item = WatchMessage;
    type Error = Status;

    fn encode(&mut self, item: WatchMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            WatchMessage::Shared { watch_id, body, .. } => {
                put_shared(watch_id, [body], dst);
                Ok(())
            }
            WatchMessage::Merged { watch_id, bodies } => {
                put_shared(watch_id, bodies, dst);
                Ok(())
            }
            WatchMessage::Owned(response) => response
                .encode(dst)
                .map_err(|e| Status::internal(format!("encode: {e}"))),
            // The response stream turns `Close` into the end of the stream
            // and never hands it to the encoder.
            WatchMessage::Close(status) => Err(status),
        }
    }
}

/// Writes a [`WatchMessage::Shared`] or [`WatchMessage::Merged`]: the watch
/// ID field, then the bodies.
fn put_shared(watch_id: i64, bodies: impl IntoIterator<Item = Bytes>, dst: &mut impl BufMut) {
    if watch_id != 0 {
        encode_key(WATCH_ID_FIELD, WireType::Varint, dst);
        // Negative IDs (-1 for progress responses) are ten-byte varints, as
        // protobuf encodes every negative int64.
        encode_varint(watch_id as u64, dst);
    }
    for body in bodies {
        dst.put(body);
    }
}

#[cfg(test)]
mod tests {
    use etcd_client::{
        EventType,
        proto::{PbEvent, PbKeyValue, PbResponseHeader},
    };

    use super::*;

    #[test]
    fn shared_body_plus_watch_id_is_a_plain_response() {
        let response = PbWatchResponse {
            header: Some(PbResponseHeader {
                cluster_id: 7,
                member_id: 8,
                revision: 42,
                raft_term: 2,
            }),
            events: vec![PbEvent {
                r#type: EventType::Put as i32,
                kv: Some(PbKeyValue {
                    key: b"cilium/state/x".to_vec(),
                    value: b"v".to_vec(),
                    create_revision: 40,
                    mod_revision: 42,
                    version: 3,
                    lease: 0,
                }),
                prev_kv: None,
            }],
            ..PbWatchResponse::default()
        };
        let body = encode_shared(&response);
        for watch_id in [0, 1, 300, -1] {
            let mut out = BytesMut::new();
            put_shared(watch_id, [body.clone()], &mut out);
            let decoded = PbWatchResponse::decode(&out[..]).unwrap();
            assert_eq!(
                decoded,
                PbWatchResponse {
                    watch_id,
                    ..response.clone()
                }
            );
        }
    }

    #[test]
    fn merged_bodies_are_one_response_with_all_events_and_the_last_header() {
        let response = |revision: i64, key: &str| PbWatchResponse {
            header: Some(PbResponseHeader {
                cluster_id: 7,
                member_id: 8,
                revision,
                raft_term: 2,
            }),
            events: vec![PbEvent {
                r#type: EventType::Delete as i32,
                kv: Some(PbKeyValue {
                    key: key.as_bytes().to_vec(),
                    mod_revision: revision,
                    ..PbKeyValue::default()
                }),
                prev_kv: None,
            }],
            ..PbWatchResponse::default()
        };
        let (first, second) = (response(10, "a"), response(11, "b"));
        let mut out = BytesMut::new();
        put_shared(5, [encode_shared(&first), encode_shared(&second)], &mut out);
        let decoded = PbWatchResponse::decode(&out[..]).unwrap();
        assert_eq!(decoded.watch_id, 5);
        assert_eq!(decoded.header, second.header);
        assert_eq!(
            decoded.events,
            [first.events[0].clone(), second.events[0].clone()]
        );
    }
}
