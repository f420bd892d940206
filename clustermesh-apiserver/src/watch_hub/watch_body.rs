use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures::Stream;
use http_body::{Body, Frame};
use prost::{
    Message,
    bytes::{BufMut, Bytes, BytesMut},
};
use tonic::{Status, codegen::http::HeaderMap};

use super::{
    outbox::OutboxStream,
    watch_message::{WatchMessage, put_watch_id},
};

/// gRPC's message prefix: a compression flag (none) and the length.
const PREFIX_LEN: usize = 5;
/// Bodies of this size or more go out by reference; smaller ones are
/// copied together into chunks, as every chunk of more than a few hundred
/// bytes costs its connection a write of its own.
const BY_REFERENCE: usize = 8 << 10;
/// The most bytes copied into one chunk: below glibc's threshold for
/// giving an allocation pages of its own (128 KiB), so the copies reuse the
/// heap's memory instead of fresh pages.
const COPY_MAX: usize = 64 << 10;

/// The response body of a downstream watch stream: the outbox's messages in
/// gRPC's framing, then the trailers with the stream's status.
///
/// A shared response goes out as chunks that refer to its body, encoded
/// once for every watcher, instead of being copied into a buffer of each
/// watcher's stream (what tonic's encoder does): a client that is behind
/// then holds, in HTTP/2's queue of its stream (up to the window it
/// granted, 1 MiB for many clients), references to bodies that every
/// watcher shares, not copies of them. With thousands of watchers behind,
/// those copies were gigabytes of fresh memory, and zeroing its pages was
/// half of the server's work. The one copy left per watcher is the
/// encryption, when the data is written to its connection.
pub(crate) struct WatchBody {
    stream: OutboxStream,
    /// The rest of the message being sent.
    chunks: VecDeque<Bytes>,
    ended: bool,
}

impl WatchBody {
    pub(crate) fn new(stream: OutboxStream) -> Self {
        Self {
            stream,
            chunks: VecDeque::new(),
            ended: false,
        }
    }
}

impl Body for WatchBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some(chunk) = this.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        let status = match ready!(Pin::new(&mut this.stream).poll_next(cx)) {
            Some(Ok(message)) => match chunks(message, &mut this.chunks) {
                Ok(()) => {
                    let chunk = this.chunks.pop_front().unwrap_or_default();
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Err(status) => status,
            },
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        this.ended = true;
        Poll::Ready(Some(trailers(&status).map(Frame::trailers)))
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.chunks.is_empty()
    }
}

/// The trailers that end a stream with `status` (as tonic writes them).
fn trailers(status: &Status) -> Result<HeaderMap, Status> {
    let mut trailers = HeaderMap::with_capacity(3);
    status.add_header(&mut trailers)?;
    Ok(trailers)
}

/// Appends `message` in gRPC's framing to `out`: a shared or merged one as
/// its prefix and watch ID, then its bodies (large ones as they are, small
/// ones copied together); any other encoded whole.
fn chunks(message: WatchMessage, out: &mut VecDeque<Bytes>) -> Result<(), Status> {
    let (watch_id, bodies) = match message {
        WatchMessage::Shared { watch_id, body, .. } => (watch_id, vec![body]),
        WatchMessage::Merged { watch_id, bodies } => (watch_id, bodies),
        WatchMessage::Owned(response) => {
            let len = response.encoded_len();
            let mut buf = BytesMut::with_capacity(PREFIX_LEN + len);
            put_prefix(len, &mut buf)?;
            response
                .encode(&mut buf)
                .map_err(|e| Status::internal(format!("encode: {e}")))?;
            out.push_back(buf.freeze());
            return Ok(());
        }
        // The outbox's stream turns `Close` into its end and never yields it.
        WatchMessage::Close(status) => return Err(status),
    };
    // Runs of small bodies, the prefix and watch ID first, are copied into
    // one chunk each; large bodies go between them as they are.
    let small: usize = bodies
        .iter()
        .map(Bytes::len)
        .filter(|&n| n < BY_REFERENCE)
        .sum();
    let mut run = BytesMut::with_capacity((PREFIX_LEN + 11 + small).min(COPY_MAX));
    run.put_bytes(0, PREFIX_LEN);
    put_watch_id(watch_id, &mut run);
    let len = run.len() - PREFIX_LEN + bodies.iter().map(Bytes::len).sum::<usize>();
    put_prefix(len, &mut &mut run[..PREFIX_LEN])?;
    for body in bodies {
        let by_reference = body.len() >= BY_REFERENCE;
        if !run.is_empty() && (by_reference || run.len() + body.len() > COPY_MAX) {
            out.push_back(run.split().freeze());
        }
        if by_reference {
            out.push_back(body);
        } else {
            run.extend_from_slice(&body);
        }
    }
    if !run.is_empty() {
        out.push_back(run.freeze());
    }
    Ok(())
}

/// gRPC's prefix of a message of `len` bytes.
fn put_prefix(len: usize, dst: &mut impl BufMut) -> Result<(), Status> {
    let len = u32::try_from(len)
        .map_err(|_| Status::resource_exhausted(format!("a response of {len} bytes")))?;
    dst.put_u8(0);
    dst.put_u32(len);
    Ok(())
}

#[cfg(test)]
mod tests {
    use etcd_client::proto::{PbEvent, PbKeyValue, PbResponseHeader, PbWatchResponse};
    use prost::bytes::Buf;

    use super::*;
    use crate::watch_hub::watch_message::encode_shared;

    fn response(revision: i64, key: &str) -> PbWatchResponse {
        PbWatchResponse {
            header: Some(PbResponseHeader {
                cluster_id: 7,
                member_id: 8,
                revision,
                raft_term: 2,
            }),
            events: vec![PbEvent {
                kv: Some(PbKeyValue {
                    key: key.as_bytes().to_vec(),
                    value: vec![b'v'; 300],
                    mod_revision: revision,
                    ..PbKeyValue::default()
                }),
                ..PbEvent::default()
            }],
            ..PbWatchResponse::default()
        }
    }

    /// The messages a client reads from the chunks.
    fn decode(chunks: VecDeque<Bytes>) -> Vec<PbWatchResponse> {
        let mut wire = BytesMut::new();
        for chunk in chunks {
            wire.put(chunk);
        }
        let mut wire = wire.freeze();
        let mut out = Vec::new();
        while wire.has_remaining() {
            assert_eq!(wire.get_u8(), 0, "not compressed");
            let len = wire.get_u32() as usize;
            out.push(PbWatchResponse::decode(wire.split_to(len)).unwrap());
        }
        out
    }

    #[test]
    fn every_kind_of_message_reads_back_as_its_response() {
        let (first, second) = (response(10, "a"), response(11, "b"));
        let mut out = VecDeque::new();
        for watch_id in [0, 3] {
            chunks(
                WatchMessage::Shared {
                    watch_id,
                    body: encode_shared(&first),
                    events: true,
                },
                &mut out,
            )
            .unwrap();
        }
        chunks(
            WatchMessage::Merged {
                watch_id: -1,
                bodies: vec![encode_shared(&first), encode_shared(&second)],
            },
            &mut out,
        )
        .unwrap();
        let created = PbWatchResponse {
            watch_id: 300,
            created: true,
            ..PbWatchResponse::default()
        };
        chunks(WatchMessage::owned(created.clone()), &mut out).unwrap();
        // Small bodies are copied with the head: one chunk a message.
        assert_eq!(out.len(), 4);
        let messages = decode(out);
        assert_eq!(messages.len(), 4);
        assert_eq!(messages[0], first, "watch ID 0 is protobuf's default");
        assert_eq!(
            messages[1],
            PbWatchResponse {
                watch_id: 3,
                ..first.clone()
            }
        );
        assert_eq!(messages[2].watch_id, -1, "a ten-byte varint");
        assert_eq!(messages[2].header, second.header, "the last header");
        assert_eq!(
            messages[2].events,
            [first.events[0].clone(), second.events[0].clone()]
        );
        assert_eq!(messages[3], created);
    }

    #[test]
    fn large_bodies_go_by_reference_between_copied_runs_of_small_ones() {
        let large = |revision| {
            let mut r = response(revision, "large");
            r.events[0].kv.as_mut().unwrap().value = vec![b'x'; BY_REFERENCE];
            encode_shared(&r)
        };
        let small = |revision| encode_shared(&response(revision, "small"));
        // 300 small bodies (about 100 KB) overflow one copied chunk.
        let mut bodies: Vec<Bytes> = (1..=2).map(small).collect();
        bodies.push(large(3));
        bodies.extend((4..304).map(small));
        bodies.push(large(304));
        let expected: Vec<PbEvent> = bodies
            .iter()
            .flat_map(|b| PbWatchResponse::decode(b.clone()).unwrap().events)
            .collect();
        let mut out = VecDeque::new();
        chunks(
            WatchMessage::Merged {
                watch_id: 9,
                bodies: bodies.clone(),
            },
            &mut out,
        )
        .unwrap();
        // head + 2 small | large | small ×300 in two chunks | large
        assert_eq!(
            out.len(),
            5,
            "{:?}",
            out.iter().map(Bytes::len).collect::<Vec<_>>()
        );
        assert_eq!(
            out[1].as_ptr(),
            bodies[2].as_ptr(),
            "the large body as it is"
        );
        assert_eq!(out[4].as_ptr(), bodies[303].as_ptr());
        assert!(
            out.iter()
                .all(|c| c.len() <= COPY_MAX.max(BY_REFERENCE + 100))
        );
        let messages = decode(out);
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].watch_id, 9);
        assert_eq!(messages[0].events, expected);
    }

    #[test]
    fn the_trailers_carry_the_status() {
        assert_eq!(trailers(&Status::ok("")).unwrap()["grpc-status"], "0");
        let refused = trailers(&Status::resource_exhausted("too many requests")).unwrap();
        assert_eq!(refused["grpc-status"], "8");
        assert_eq!(refused["grpc-message"], "too%20many%20requests");
    }
}
