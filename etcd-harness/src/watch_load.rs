//! A watch load for benchmarks: lightweight etcd `Watch` clients that time
//! every event they receive, and a writer that puts values carrying their
//! send time.
//!
//! The writer and the watchers must run in the same process: a value's first
//! 20 bytes are the nanoseconds since [`now_ns`]'s epoch when it was sent, and
//! each watcher subtracts that from its own clock when the event arrives.
//! Responses are read straight from the wire (decoding hundreds of thousands
//! of events a second into structs would make the load generator the
//! bottleneck). Used by the apiserver's fan-out bench and the scale bench's
//! fan-out curve.

use std::{
    sync::{
        Arc, LazyLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use etcd_client::proto::{PbWatchRequest, PbWatchRequestUnion};
use futures::StreamExt;
use prost::bytes::{Buf, Bytes};
use tokio_util::sync::CancellationToken;
use tonic::{
    Request, Status,
    client::Grpc,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::{Channel, ClientTlsConfig, Endpoint},
};

/// The clock shared by the writer and the watchers (same process).
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Nanoseconds since the process's watch-load epoch.
pub fn now_ns() -> u64 {
    EPOCH.elapsed().as_nanos() as u64
}

/// Where the watchers connect.
#[derive(Clone)]
pub enum Target {
    Plain(String),
    Tls { url: String, tls: ClientTlsConfig },
}

/// A new HTTP/2 connection to `target` (each call is a connection of its
/// own; its watch streams share it).
pub async fn connect(target: &Target) -> Result<Channel> {
    let endpoint = |url: &str| -> Result<Endpoint> {
        Ok(Endpoint::from_shared(url.to_owned())?
            .tcp_nodelay(true)
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(16 << 20))
    };
    let endpoint = match target {
        Target::Plain(url) => endpoint(url)?,
        Target::Tls { url, tls } => endpoint(url)?.tls_config(tls.clone())?,
    };
    Ok(endpoint.connect().await?)
}

/// What the watchers of one run share: how many watches were created, and
/// the events each watcher (by index) received.
pub struct Tally {
    pub created: AtomicUsize,
    pub received: Vec<AtomicU64>,
}

impl Tally {
    pub fn new(watchers: usize) -> Arc<Self> {
        Arc::new(Self {
            created: AtomicUsize::new(0),
            received: (0..watchers).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    pub fn created(&self) -> usize {
        self.created.load(Ordering::Relaxed)
    }

    /// Events received by all watchers.
    pub fn total(&self) -> u64 {
        self.received
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }

    /// Watchers that received fewer than `expected` events.
    pub fn short_of(&self, expected: u64) -> usize {
        self.received
            .iter()
            .filter(|a| a.load(Ordering::Relaxed) < expected)
            .count()
    }
}

/// How one watch stream ended.
pub struct WatcherEnd {
    /// Delivery latencies in microseconds.
    pub latencies: Vec<u32>,
    /// The server ended the stream (a proxy dropping a watcher it found too
    /// slow) before `stop`.
    pub disconnected: bool,
}

/// One watch stream on `prefix`: creates the watch, then records the
/// delivery latency of every event until `stop` or until the server ends
/// the stream. `capacity`: the events expected (room reserved up front).
pub async fn watcher(
    channel: Channel,
    prefix: String,
    tally: Arc<Tally>,
    index: usize,
    stop: CancellationToken,
    capacity: usize,
) -> Result<WatcherEnd> {
    let mut grpc = Grpc::new(channel);
    grpc.ready().await?;
    let mut create = PbWatchRequestUnion::CreateRequest(Default::default());
    if let PbWatchRequestUnion::CreateRequest(c) = &mut create {
        c.range_end = prefix_end(&prefix);
        c.key = prefix.into_bytes();
    }
    let request = PbWatchRequest {
        request_union: Some(create),
    };
    // Keep the request side open until `stop`: a half-closed stream ends
    // the watch on grpc-proxy. At `stop` it ends, and with it the stream:
    // a request side left open for ever kept the stream, and the
    // connection, open after the watcher was gone, with the server still
    // sending to it.
    let ended = stop.clone().cancelled_owned();
    let requests = futures::stream::iter([request])
        .chain(futures::stream::once(ended).filter_map(|()| async { None::<PbWatchRequest> }));
    let mut stream = grpc
        .streaming(
            Request::new(requests),
            PathAndQuery::from_static("/etcdserverpb.Watch/Watch"),
            RequestCodec::<PbWatchRequest>::new(),
        )
        .await?
        .into_inner();
    let mut latencies = Vec::with_capacity(capacity);
    let mut disconnected = false;
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => break,
            message = stream.message() => message,
        };
        let Ok(Some(bytes)) = message else {
            disconnected = true;
            break;
        };
        let now = now_ns();
        let response = parse_response(&bytes);
        if response.created {
            tally.created.fetch_add(1, Ordering::Relaxed);
        }
        if response.canceled {
            anyhow::bail!("watch canceled");
        }
        for sent in &response.sent {
            latencies.push(((now.saturating_sub(*sent)) / 1_000).min(u64::from(u32::MAX)) as u32);
        }
        if !response.sent.is_empty() {
            tally.received[index].fetch_add(response.sent.len() as u64, Ordering::Relaxed);
        }
    }
    Ok(WatcherEnd {
        latencies,
        disconnected,
    })
}

/// Puts `puts` values at `per_second`, the `i`-th under `key(i)`, each
/// `value_bytes` long and carrying its send time. Returns the puts done.
pub async fn write(
    client: &etcd_client::Client,
    puts: u64,
    per_second: u64,
    value_bytes: usize,
    key: impl Fn(u64) -> String,
) -> Result<u64> {
    let mut interval = tokio::time::interval(Duration::from_nanos(1_000_000_000 / per_second));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let padding = "x".repeat(value_bytes.saturating_sub(21));
    let mut written = 0;
    for i in 0..puts {
        interval.tick().await;
        while in_flight.len() >= 64 {
            if let Some(result) = in_flight.next().await {
                let _: () = result?;
                written += 1;
            }
        }
        let mut kv = client.kv_client();
        let key = key(i);
        let value = format!("{:020} {padding}", now_ns());
        in_flight.push(async move {
            kv.put(key, value, None)
                .await
                .map(|_| ())
                .map_err(anyhow::Error::from)
        });
        // Drive completions without waiting.
        while let Some(Some(result)) = futures::FutureExt::now_or_never(in_flight.next()) {
            result?;
            written += 1;
        }
    }
    while let Some(result) = in_flight.next().await {
        result?;
        written += 1;
    }
    Ok(written)
}

/// Waits for every watcher of `watchers` (after their `stop`): all their
/// latencies, sorted, and how many streams the server ended.
pub async fn gather(
    watchers: &mut tokio::task::JoinSet<Result<WatcherEnd>>,
    expected: usize,
) -> Result<(Vec<u32>, usize)> {
    let mut latencies = Vec::with_capacity(expected);
    let mut disconnected = 0;
    while let Some(result) = watchers.join_next().await {
        let end = result??;
        latencies.extend(end.latencies);
        disconnected += usize::from(end.disconnected);
    }
    latencies.sort_unstable();
    Ok((latencies, disconnected))
}

/// The `p` percentile (0..1) of sorted latencies in microseconds, in
/// milliseconds (NaN when there is none).
pub fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    sorted_us
        .get(((sorted_us.len() as f64 * p) as usize).min(sorted_us.len().saturating_sub(1)))
        .map_or(f64::NAN, |us| f64::from(*us) / 1000.0)
}

/// The parts of a `WatchResponse` the benchmarks need.
struct ParsedResponse {
    created: bool,
    canceled: bool,
    /// Send timestamps found in the events' values.
    sent: Vec<u64>,
}

fn parse_response(bytes: &[u8]) -> ParsedResponse {
    let mut response = ParsedResponse {
        created: false,
        canceled: false,
        sent: Vec::new(),
    };
    for (field, value) in Fields::new(bytes) {
        match (field, value) {
            (3, Value::Varint(v)) => response.created = v != 0,
            (4, Value::Varint(v)) => response.canceled = v != 0,
            (11, Value::Bytes(event)) => {
                let kv = Fields::new(event).find_map(|(f, v)| match (f, v) {
                    (2, Value::Bytes(kv)) => Some(kv),
                    _ => None,
                });
                let value = kv.and_then(|kv| {
                    Fields::new(kv).find_map(|(f, v)| match (f, v) {
                        (5, Value::Bytes(value)) => Some(value),
                        _ => None,
                    })
                });
                if let Some(sent) = value
                    .and_then(|v| v.get(..20))
                    .and_then(|digits| std::str::from_utf8(digits).ok()?.parse().ok())
                {
                    response.sent.push(sent);
                }
            }
            _ => {}
        }
    }
    response
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of one protobuf message.
struct Fields<'a> {
    buf: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.buf.split_first()?;
            self.buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(value);
            }
        }
        None
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (u32, Value<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let key = self.varint()?;
        let field = (key >> 3) as u32;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.buf = self.buf.get(8..)?;
                Value::Fixed
            }
            2 => {
                let len = self.varint()? as usize;
                let (bytes, rest) = (self.buf.get(..len)?, self.buf.get(len..)?);
                self.buf = rest;
                Value::Bytes(bytes)
            }
            5 => {
                self.buf = self.buf.get(4..)?;
                Value::Fixed
            }
            _ => return None,
        };
        Some((field, value))
    }
}

/// Encodes requests of type `T` with prost, hands responses over as bytes
/// (the watchers' codec, and any probe's that ignores the answer).
pub struct RequestCodec<T>(std::marker::PhantomData<fn(T)>);

impl<T> RequestCodec<T> {
    pub const fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T> Default for RequestCodec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for RequestCodec<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for RequestCodec<T> {}

impl<T: prost::Message + Send + 'static> Codec for RequestCodec<T> {
    type Encode = T;
    type Decode = Bytes;
    type Encoder = Self;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

impl<T: prost::Message + Send + 'static> Encoder for RequestCodec<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// Hands a response message over as its bytes.
#[derive(Clone, Copy)]
pub struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The end of the key range of `prefix` (its last byte plus one).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    end
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn reads_created_and_send_times() {
        let value = format!("{:020} xx", 1_234_567u64);
        let kv = etcd_client::proto::PbKeyValue {
            key: b"k".to_vec(),
            value: value.into_bytes(),
            ..Default::default()
        };
        let response = etcd_client::proto::PbWatchResponse {
            created: true,
            events: vec![etcd_client::proto::PbEvent {
                kv: Some(kv),
                ..Default::default()
            }],
            ..Default::default()
        };
        let parsed = parse_response(&response.encode_to_vec());
        assert!(parsed.created);
        assert!(!parsed.canceled);
        assert_eq!(parsed.sent, vec![1_234_567]);
    }
}
