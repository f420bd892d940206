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
    /// encryptions as it is written to their connections instead of N
    /// encodings (see [`super::WatchBody`]).
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

/// The codec tonic uses for the downstream Watch service: it decodes
/// `WatchRequest`s. Responses never go through it: [`super::WatchBody`]
/// writes them, with shared bodies sent by reference.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WatchCodec;

/// A response tonic would encode: there is none.
#[derive(Debug)]
pub(crate) enum NoResponse {}

impl Codec for WatchCodec {
    type Encode = NoResponse;
    type Decode = PbWatchRequest;
    type Encoder = NoEncoder;
    type Decoder = ProtoDecoder<PbWatchRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        NoEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        crate::proto_codec::ProtoCodec::<PbWatchResponse, PbWatchRequest>::default().decoder()
    }
}

#[derive(Debug)]
pub(crate) struct NoEncoder;

impl Encoder for NoEncoder {
    type Item = NoResponse;
    type Error = Status;

    fn encode(&mut self, item: NoResponse, _dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {}
    }
}

/// Writes the watch ID field that goes in front of a shared body (nothing
/// for 0, protobuf's default).
pub(super) fn put_watch_id(watch_id: i64, dst: &mut impl BufMut) {
    if watch_id != 0 {
        encode_key(WATCH_ID_FIELD, WireType::Varint, dst);
        // Negative IDs (-1 for progress responses) are ten-byte varints, as
        // protobuf encodes every negative int64.
        encode_varint(watch_id as u64, dst);
    }
}
