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
    Shared { watch_id: i64, body: Bytes },
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
            WatchMessage::Shared { watch_id, body } => {
                put_shared(watch_id, body, dst);
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

/// Writes a [`WatchMessage::Shared`]: the watch ID field, then the body.
fn put_shared(watch_id: i64, body: Bytes, dst: &mut impl BufMut) {
    if watch_id != 0 {
        encode_key(WATCH_ID_FIELD, WireType::Varint, dst);
        // Negative IDs (-1 for progress responses) are ten-byte varints, as
        // protobuf encodes every negative int64.
        encode_varint(watch_id as u64, dst);
    }
    dst.put(body);
}

#[cfg(test)]
mod tests {
    use etcd_client::proto::{PbEvent, PbKeyValue, PbResponseHeader};

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
                r#type: 0,
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
            put_shared(watch_id, body.clone(), &mut out);
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
}
