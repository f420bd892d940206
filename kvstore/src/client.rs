use std::{fmt, future::Future, path::Path, time::Duration};

use etcd_client::{
    Certificate, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity,
    LockOptions, PutOptions, TlsOptions, Txn, TxnOp, TxnResponse, proto::PbRangeRequest,
};
use prost::{
    Message,
    bytes::{Buf, Bytes},
};
use tonic::{
    client::Grpc,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::{Uri, uri::PathAndQuery},
    transport::{Endpoint, channel::Change},
};

use crate::{backoff::Backoff, error::Error, page::Page, prefix::KeyPrefix};

/// Largest response the client accepts: pages of a list and watch batches can
/// be large (tonic's default is 4 MiB).
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// Default [`ClientConfig::connect_timeout`]: a TCP and TLS handshake takes
/// milliseconds even across regions; longer means nothing is there.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default [`ClientConfig::request_timeout`]: a request on a healthy etcd
/// takes milliseconds; this rides out a leader election and a slow disk
/// (etcd's own request timeout is about 5 s) before the caller retries.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Default [`ClientConfig::keepalive_interval`] and
/// [`ClientConfig::keepalive_timeout`]: a dead peer is noticed within 10 s,
/// before a request's deadline and well before a session lease's TTL.
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(5);

/// Whether a request that failed on one member may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// A read (or a write whose repetition changes nothing, e.g. a revoke):
    /// again after any failure of the member or the connection.
    Always,
    /// A write: again only when it certainly did not reach etcd (the
    /// connection could not be made), since a write whose answer was lost
    /// may have been applied (a transaction's second run would see its own
    /// first).
    IfNotSent,
}

/// Whether `error` is the failure of one member or connection, after which
/// the request may go to another (see [`Retry`]).
fn may_retry(error: &etcd_client::Error, retry: Retry) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => may_send_again(status, retry == Retry::Always),
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

/// Whether a request that failed with `status` on one etcd member (or
/// connection) may be sent again, to another member: always when it was
/// never sent (no connection could be made), and when it is `idempotent`
/// (a read) also after etcd's own unavailability ("leader changed", "no
/// leader") or a connection that broke under it. A write whose answer was
/// lost is not repeated: it may have been applied.
pub fn may_send_again(status: &tonic::Status, idempotent: bool) -> bool {
    let message = status.message();
    // tonic's words for a connection that could not be made.
    let not_sent = message.contains("connect error") || message.contains("error trying to connect");
    match status.code() {
        tonic::Code::Unavailable => not_sent || idempotent,
        tonic::Code::Unknown => {
            idempotent
                && (message.contains("transport")
                    || message.contains("connection")
                    || message.contains("h2 protocol error"))
        }
        _ => false,
    }
}

/// TLS to etcd (or to a `clustermesh-apiserver`, which speaks etcd's API).
#[derive(Clone, Default)]
pub struct TlsConfig {
    /// PEM CA bundle that signs the server's certificate.
    pub ca_pem: Vec<u8>,
    /// PEM client certificate and key, for mutual TLS.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// Name to verify the server certificate against, when it differs from
    /// the endpoint's host.
    pub server_name: Option<String>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("client_identity", &self.identity_pem.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl TlsConfig {
    /// Reads the CA bundle and, when given, the client certificate and key.
    pub fn from_files(ca: &Path, cert_and_key: Option<(&Path, &Path)>) -> Result<Self, Error> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| Error::ReadFile {
                path: p.to_path_buf(),
                source,
            })
        };
        Ok(Self {
            ca_pem: read(ca)?,
            identity_pem: match cert_and_key {
                Some((cert, key)) => Some((read(cert)?, read(key)?)),
                None => None,
            },
            server_name: None,
        })
    }

    /// [`TlsConfig::from_files`] for paths as flags and configuration files
    /// give them: the client certificate and its key come both or neither.
    pub fn from_optional_files(
        ca: &Path,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Self, Error> {
        let cert_and_key = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(Error::Config(
                    "a client certificate needs both a cert file and a key file".into(),
                ));
            }
        };
        Self::from_files(ca, cert_and_key)
    }
}

/// How to reach an etcd cluster.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `http://host:port` or `https://host:port`; requests are balanced.
    pub endpoints: Vec<String>,
    /// Required for `https` endpoints.
    pub tls: Option<TlsConfig>,
    /// Time to establish a connection. Default 5 s.
    pub connect_timeout: Duration,
    /// Time a single unary request may take. Default 15 s. (Watches are
    /// streams and have no deadline; HTTP/2 keep-alive detects dead peers.)
    pub request_timeout: Duration,
    /// HTTP/2 PING interval on idle and busy connections, so a dead peer is
    /// noticed within `keepalive_interval + keepalive_timeout`. Default 5 s.
    pub keepalive_interval: Duration,
    /// Default 5 s.
    pub keepalive_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            tls: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            keepalive_interval: DEFAULT_KEEPALIVE,
            keepalive_timeout: DEFAULT_KEEPALIVE,
        }
    }
}

impl ClientConfig {
    /// Plain endpoints with default timeouts.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    fn validate(&self) -> Result<(), Error> {
        if self.endpoints.is_empty() {
            return Err(Error::Config("no endpoints given".into()));
        }
        for e in &self.endpoints {
            let https = e.starts_with("https://");
            if !https && !e.starts_with("http://") {
                return Err(Error::Config(format!(
                    "endpoint {e:?} must start with http:// or https://"
                )));
            }
            if https && self.tls.is_none() {
                return Err(Error::Config(format!(
                    "endpoint {e:?} uses https but no TLS configuration (CA bundle) was given"
                )));
            }
            if !https && self.tls.is_some() {
                return Err(Error::Config(format!(
                    "endpoint {e:?} uses http but TLS was configured; use https://"
                )));
            }
        }
        Ok(())
    }
}

/// A key and its value with etcd's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

impl Kv {
    /// A copy of one key-value of etcd's answer (a key that is not UTF-8
    /// reads with replacement characters).
    pub(crate) fn from_etcd(kv: &etcd_client::KeyValue) -> Self {
        Self {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
            lease: kv.lease(),
        }
    }
}

/// The header etcd-client adds with `with_require_leader`: a member without
/// a leader refuses the request instead of answering from a stale state.
const REQUIRE_LEADER_HEADER: &str = "hasleader";

/// Builds the balanced channel etcd-client sends on, as etcd-client does,
/// and keeps a handle on it for the calls [`Client`] makes itself.
struct KeepChannel<'a>(&'a mut Option<tonic::transport::Channel>);

impl etcd_client::BalancedChannelBuilder for KeepChannel<'_> {
    type Error = tonic::transport::Error;

    fn balanced_channel(
        self,
        buffer_size: usize,
    ) -> Result<
        (
            etcd_client::Channel,
            tokio::sync::mpsc::Sender<Change<Uri, Endpoint>>,
        ),
        Self::Error,
    > {
        let (channel, updates) = tonic::transport::Channel::balance_channel(buffer_size);
        *self.0 = Some(channel.clone());
        Ok((etcd_client::Channel::Tonic(channel), updates))
    }
}

/// Encodes a `RangeRequest`; hands the answer over as bytes, for [`Page`].
#[derive(Debug, Clone, Copy)]
struct RangeCodec;

impl Codec for RangeCodec {
    type Encode = PbRangeRequest;
    type Decode = Bytes;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        *self
    }

    fn decoder(&mut self) -> Self {
        *self
    }
}

impl Encoder for RangeCodec {
    type Item = PbRangeRequest;
    type Error = tonic::Status;

    fn encode(&mut self, item: PbRangeRequest, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(dst)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl Decoder for RangeCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// An etcd lease ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseId(pub i64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// What `Maintenance.Status` and response headers say about the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStatus {
    pub version: String,
    /// The etcd cluster's ID: changes when a different etcd answers.
    pub cluster_id: u64,
    pub member_id: u64,
    pub leader: u64,
    pub revision: i64,
    pub db_size: i64,
}

/// A held distributed lock; release it with [`Client::unlock`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockGuard {
    pub name: String,
    /// The key etcd created for the lock (ownership is tied to its lease).
    pub key: Vec<u8>,
}

/// An etcd v3 client: the operations clustermesh needs, with clear errors and
/// a deadline on every unary request. Cheap to clone (clones share the
/// connection).
#[derive(Clone)]
pub struct Client {
    inner: etcd_client::Client,
    /// The channel `inner` sends on, for the calls made here directly.
    channel: tonic::transport::Channel,
    endpoints: String,
    /// Attempts of a request that fails on one member: 1 with a single
    /// endpoint (nowhere else to go: a refusal is the answer), else three
    /// per member, so that the balancer finds a live one, yet a cluster
    /// that is down entirely fails a request within about 2 s.
    max_attempts: u32,
    request_timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl Client {
    /// Connects and checks that the server answers (one `Status` call), so a
    /// wrong address, an untrusted certificate or a refused client certificate
    /// fails here with the reason rather than at the first request.
    pub async fn connect(config: &ClientConfig) -> Result<Self, Error> {
        let client = Self::connect_lazy(config).await?;
        let endpoints = client.endpoints.clone();
        let timeout = config.connect_timeout * 2;
        // Any member that answers will do: a dead one among several is
        // failed over like in any request.
        let status = client.attempts(Retry::Always, timeout, || {
            let mut maintenance = client.inner.maintenance_client();
            async move { maintenance.status().await }
        });
        match tokio::time::timeout(timeout, status).await {
            Ok(Ok(_)) => Ok(client),
            Ok(Err(source)) => Err(Error::Connect { endpoints, source }),
            Err(_) => Err(Error::ConnectTimeout { endpoints, timeout }),
        }
    }

    /// Builds the client without contacting the server; connections are made
    /// on first use (for components that must start while etcd is down).
    pub async fn connect_lazy(config: &ClientConfig) -> Result<Self, Error> {
        config.validate()?;
        let endpoints = config.endpoints.join(",");
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(config.keepalive_interval, config.keepalive_timeout)
            .with_keep_alive_while_idle(true)
            // A member cut off from the others cancels the client's watches
            // (and refuses its requests) once it has no leader, instead of
            // serving a history that no longer grows; the client then goes
            // to another member.
            .with_require_leader(true);
        if let Some(tls) = &config.tls {
            let mut t = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
            if let Some((cert, key)) = &tls.identity_pem {
                t = t.identity(Identity::from_pem(cert, key));
            }
            if let Some(name) = &tls.server_name {
                t = t.domain_name(name.clone());
            }
            options = options.with_tls(t);
        }
        // `connect` only builds the balanced channel; it does no I/O while no
        // user/password is configured, so it finishes immediately.
        let mut channel = None;
        let inner = etcd_client::Client::connect_with_balanced_channel(
            &config.endpoints,
            Some(options),
            KeepChannel(&mut channel),
        )
        .await
        .map_err(|source| Error::Connect {
            endpoints: endpoints.clone(),
            source,
        })?;
        Ok(Self {
            inner,
            channel: channel.ok_or_else(|| {
                Error::Config("etcd-client connected without building its channel".into())
            })?,
            endpoints,
            max_attempts: match config.endpoints.len() {
                0 | 1 => 1,
                n => 3 * n as u32,
            },
            request_timeout: config.request_timeout,
        })
    }

    /// The endpoints, comma-separated (for messages).
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// The underlying etcd-client, for streams this type does not wrap.
    pub fn raw(&self) -> etcd_client::Client {
        self.inner.clone()
    }

    /// Runs a request with the request timeout: `attempt` sends it, and is
    /// called again (with a short backoff) while it fails on one member in a
    /// way `retry` allows; the channel sends each attempt to a member
    /// chosen afresh, and one that refuses connections is passed over.
    async fn call<T, F, Fut>(
        &self,
        op: &'static str,
        key: &str,
        retry: Retry,
        attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let attempts = self.attempts(retry, self.request_timeout, attempt);
        match tokio::time::timeout(self.request_timeout, attempts).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(Error::Request {
                op,
                key: key.to_string(),
                source,
            }),
            Err(_) => Err(Error::RequestTimeout {
                op,
                key: key.to_string(),
                timeout: self.request_timeout,
            }),
        }
    }

    /// Calls `attempt` until it succeeds, fails in a way `retry` does not
    /// allow to repeat, was made `max_attempts` times, or the next attempt
    /// would start after `within`; returns the last outcome.
    async fn attempts<T, F, Fut>(
        &self,
        retry: Retry,
        within: Duration,
        mut attempt: F,
    ) -> Result<T, etcd_client::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + within;
        let mut backoff = Backoff::for_failover();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match attempt().await {
                Err(e) if attempts < self.max_attempts && may_retry(&e, retry) => {
                    let delay = backoff.next_delay();
                    if tokio::time::Instant::now() + delay >= deadline {
                        return Err(e);
                    }
                    tracing::debug!(endpoints = %self.endpoints, error = %e, "an etcd request failed on one member; sending it again");
                    tokio::time::sleep(delay).await;
                }
                outcome => return outcome,
            }
        }
    }

    pub(crate) fn watch_client(&self) -> etcd_client::WatchClient {
        self.inner
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// One `Range`, its answer read in place rather than decoded into a
    /// message per key (see [`Page`]). On the channel `inner` uses, with the
    /// header its requests carry.
    async fn range_page(&self, request: &PbRangeRequest) -> Result<Page, etcd_client::Error> {
        let mut grpc = Grpc::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
        // As tonic's generated clients (etcd-client's) report it, so that
        // errors read and retry the same on either path.
        grpc.ready().await.map_err(|e| {
            etcd_client::Error::GRpcStatus(tonic::Status::unknown(format!(
                "Service was not ready: {e}"
            )))
        })?;
        let mut request = tonic::Request::new(request.clone());
        request.metadata_mut().insert(
            REQUIRE_LEADER_HEADER,
            tonic::metadata::MetadataValue::from_static("true"),
        );
        let message = grpc
            .unary(
                request,
                PathAndQuery::from_static("/etcdserverpb.KV/Range"),
                RangeCodec,
            )
            .await
            .map_err(etcd_client::Error::GRpcStatus)?
            .into_inner();
        Page::decode(message).map_err(|e| {
            etcd_client::Error::GRpcStatus(tonic::Status::internal(format!(
                "decode the range's answer: {e}"
            )))
        })
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.inner
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Server status: version, etcd cluster ID, revision.
    pub async fn status(&self) -> Result<ServerStatus, Error> {
        let s = self
            .call("status", "", Retry::Always, || {
                let mut m = self.inner.maintenance_client();
                async move { m.status().await }
            })
            .await?;
        let header = s.header();
        Ok(ServerStatus {
            version: s.version().to_string(),
            cluster_id: header.map(|h| h.cluster_id()).unwrap_or_default(),
            member_id: header.map(|h| h.member_id()).unwrap_or_default(),
            leader: s.leader(),
            revision: header.map(|h| h.revision()).unwrap_or_default(),
            db_size: s.db_size(),
        })
    }

    /// One key, if it exists.
    pub async fn get(&self, key: &str) -> Result<Option<Kv>, Error> {
        Ok(self.get_at(key).await?.0)
    }

    /// One key, if it exists, and the revision of the read.
    pub async fn get_at(&self, key: &str) -> Result<(Option<Kv>, i64), Error> {
        let resp = self
            .call("get", key, Retry::Always, || {
                let mut kv = self.kv();
                async move { kv.get(key, None).await }
            })
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        Ok((resp.kvs().first().map(Kv::from_etcd), revision))
    }

    /// Every key under `prefix` at one revision, fetched in pages of
    /// `page_size` keys. Returns the keys and the revision they were read at.
    pub async fn list(
        &self,
        prefix: &KeyPrefix,
        page_size: usize,
    ) -> Result<(Vec<Kv>, i64), Error> {
        let mut pager = self.pager(prefix, page_size);
        let mut all = Vec::new();
        while let Some(page) = pager.next_page().await? {
            all.extend(page.iter().map(|kv| kv.to_kv()));
        }
        Ok((all, pager.revision()))
    }

    /// A paginated list of `prefix` at one revision, its first page
    /// `page_size` keys; see [`Pager`].
    pub fn pager(&self, prefix: &KeyPrefix, page_size: usize) -> Pager {
        let first = page_size.max(1) as i64;
        Pager {
            client: self.clone(),
            prefix: prefix.clone(),
            next_key: Some(prefix.as_str().as_bytes().to_vec()),
            range_end: prefix.range_end(),
            page_size: first,
            min_page_size: first,
            grow: true,
            revision: 0,
            cluster_id: 0,
            count: 0,
            bytes_per_key: 0,
        }
    }

    /// Number of keys under `prefix`.
    pub async fn count(&self, prefix: &KeyPrefix) -> Result<i64, Error> {
        let opts = GetOptions::new()
            .with_range(prefix.range_end())
            .with_count_only();
        let resp = self
            .call("count", prefix.as_str(), Retry::Always, || {
                let mut kv = self.kv();
                let opts = opts.clone();
                async move { kv.get(prefix.as_str(), Some(opts)).await }
            })
            .await?;
        Ok(resp.count())
    }

    /// Writes a key without a lease. Returns the new revision.
    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<i64, Error> {
        self.put_with(key, value.into(), None).await
    }

    /// Writes a key attached to `lease`: it disappears when the lease expires.
    pub async fn put_leased(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        lease: LeaseId,
    ) -> Result<i64, Error> {
        self.put_with(key, value.into(), Some(lease)).await
    }

    async fn put_with(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<i64, Error> {
        let opts = lease.map(|l| PutOptions::new().with_lease(l.0));
        let resp = self
            .call("put", key, Retry::IfNotSent, || {
                let mut kv = self.kv();
                let (value, opts) = (value.clone(), opts.clone());
                async move { kv.put(key, value, opts).await }
            })
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// Creates `key` only if it does not exist (`create_revision == 0`).
    /// Returns whether it was created.
    pub async fn create(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        lease: Option<LeaseId>,
    ) -> Result<bool, Error> {
        let opts = lease.map(|l| PutOptions::new().with_lease(l.0));
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, opts)]);
        Ok(self.txn("create", key, txn).await?.succeeded())
    }

    /// Writes `key` only if its `mod_revision` is still `expected` (0 = the
    /// key must not exist). Returns whether it was written.
    pub async fn update_if(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        expected: i64,
        lease: Option<LeaseId>,
    ) -> Result<bool, Error> {
        let opts = lease.map(|l| PutOptions::new().with_lease(l.0));
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::put(key, value, opts)]);
        Ok(self.txn("update", key, txn).await?.succeeded())
    }

    /// Runs a transaction of several keys (the single-key conditional
    /// writes above cover the common cases) with the request timeout; `op`
    /// and `key` name it in errors.
    pub async fn txn(&self, op: &'static str, key: &str, txn: Txn) -> Result<TxnResponse, Error> {
        self.call(op, key, Retry::IfNotSent, || {
            let mut kv = self.kv();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await
    }

    /// Writes several keys at once, in one transaction: all or none.
    pub async fn put_all(&self, entries: Vec<(String, Vec<u8>)>) -> Result<(), Error> {
        let Some(first) = entries.first().map(|(k, _)| k.clone()) else {
            return Ok(());
        };
        let ops: Vec<TxnOp> = entries
            .into_iter()
            .map(|(k, v)| TxnOp::put(k, v, None))
            .collect();
        self.txn("put", &first, Txn::new().and_then(ops)).await?;
        Ok(())
    }

    /// Writes (`Some` value, attached to `lease` if any) and deletes
    /// (`None`) several keys in one transaction: all or none, one commit in
    /// etcd. The keys must be distinct, and at most etcd's `--max-txn-ops`
    /// (128 by default).
    pub async fn write_batch(
        &self,
        writes: Vec<(String, Option<Vec<u8>>)>,
        lease: Option<LeaseId>,
    ) -> Result<(), Error> {
        let Some(first) = writes.first().map(|(k, _)| k.clone()) else {
            return Ok(());
        };
        let ops: Vec<TxnOp> = writes
            .into_iter()
            .map(|(key, value)| match value {
                Some(value) => {
                    TxnOp::put(key, value, lease.map(|l| PutOptions::new().with_lease(l.0)))
                }
                None => TxnOp::delete(key, None),
            })
            .collect();
        self.txn("write", &first, Txn::new().and_then(ops)).await?;
        Ok(())
    }

    /// Deletes a key. Returns whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, Error> {
        Ok(self
            .call("delete", key, Retry::IfNotSent, || {
                let mut kv = self.kv();
                async move { kv.delete(key, None).await }
            })
            .await?
            .deleted()
            > 0)
    }

    /// Deletes `key` only if its `mod_revision` is still `expected`.
    pub async fn delete_if(&self, key: &str, expected: i64) -> Result<bool, Error> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::delete(key, None)]);
        Ok(self.txn("delete", key, txn).await?.succeeded())
    }

    /// Deletes every key under `prefix`. Returns how many were deleted.
    pub async fn delete_prefix(&self, prefix: &KeyPrefix) -> Result<i64, Error> {
        let opts = DeleteOptions::new().with_range(prefix.range_end());
        Ok(self
            .call("delete prefix", prefix.as_str(), Retry::IfNotSent, || {
                let mut kv = self.kv();
                let opts = opts.clone();
                async move { kv.delete(prefix.as_str(), Some(opts)).await }
            })
            .await?
            .deleted())
    }

    /// Compacts the history up to `revision` (tests and maintenance).
    pub async fn compact(&self, revision: i64) -> Result<(), Error> {
        self.call("compact", "", Retry::Always, || {
            let mut kv = self.kv();
            async move { kv.compact(revision, None).await }
        })
        .await?;
        Ok(())
    }

    /// Grants a lease of `ttl` (rounded up to whole seconds, at least 1 s).
    pub async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, Error> {
        let secs = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let resp = self
            .call("grant lease", "", Retry::IfNotSent, || {
                let mut lease = self.inner.lease_client();
                async move { lease.grant(secs, None).await }
            })
            .await?;
        Ok(LeaseId(resp.id()))
    }

    /// Revokes a lease: every key attached to it is deleted.
    pub async fn revoke_lease(&self, id: LeaseId) -> Result<(), Error> {
        self.call("revoke lease", "", Retry::Always, || {
            let mut lease = self.inner.lease_client();
            async move { lease.revoke(id.0).await }
        })
        .await?;
        Ok(())
    }

    /// Remaining TTL of a lease in seconds, `None` if it has expired.
    pub async fn lease_ttl(&self, id: LeaseId) -> Result<Option<i64>, Error> {
        let resp = self
            .call("lease ttl", "", Retry::Always, || {
                let mut lease = self.inner.lease_client();
                async move { lease.time_to_live(id.0, None).await }
            })
            .await?;
        Ok((resp.ttl() > 0).then_some(resp.ttl()))
    }

    /// Acquires the distributed lock `name`, owned by `lease` (the lock is
    /// released when the lease ends). Waits at most `timeout`.
    pub async fn lock(
        &self,
        name: &str,
        lease: LeaseId,
        timeout: Duration,
    ) -> Result<LockGuard, Error> {
        let fut = self.attempts(Retry::IfNotSent, timeout, || {
            let mut lock = self.inner.lock_client();
            async move {
                lock.lock(name, Some(LockOptions::new().with_lease(lease.0)))
                    .await
            }
        });
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(resp)) => Ok(LockGuard {
                name: name.to_string(),
                key: resp.key().to_vec(),
            }),
            Ok(Err(source)) => Err(Error::Request {
                op: "lock",
                key: name.to_string(),
                source,
            }),
            Err(_) => Err(Error::LockTimeout {
                name: name.to_string(),
                timeout,
            }),
        }
    }

    /// Releases a lock.
    pub async fn unlock(&self, guard: LockGuard) -> Result<(), Error> {
        self.call("unlock", &guard.name, Retry::Always, || {
            let mut lock = self.inner.lock_client();
            let key = guard.key.clone();
            async move { lock.unlock(key).await }
        })
        .await?;
        Ok(())
    }
}

/// A paginated list of a prefix at one revision: the first page fixes the
/// revision, later pages read at it, so the result is one consistent snapshot.
///
/// Pages after the first hold about 8 MiB (at most 100,000
/// keys, at least as many as the first): etcd 3.4 walks its index over the
/// whole rest of the range for every page, whatever its limit, so a list
/// costs the square of the keys over the page size. At 1M ipcache entries,
/// 5,000-key pages took 15.4 s and 50,000-key pages 3.6 s.
#[derive(Debug)]
pub struct Pager {
    client: Client,
    prefix: KeyPrefix,
    next_key: Option<Vec<u8>>,
    range_end: Vec<u8>,
    page_size: i64,
    min_page_size: i64,
    grow: bool,
    revision: i64,
    cluster_id: u64,
    count: i64,
    /// Bytes of keys and values per key in the last page.
    bytes_per_key: usize,
}

/// What a page after the first aims to hold: a few times what one etcd
/// response carries comfortably, small beside the agent's own tables.
const PAGE_BYTES: usize = 8 << 20;
/// The most keys a page asks for.
const MAX_PAGE: i64 = 100_000;

/// Keys for the next page after one of `keys` keys and `bytes` bytes.
fn next_page_size(keys: usize, bytes: usize, min: i64) -> i64 {
    let per_key = (bytes / keys.max(1)).max(1);
    ((PAGE_BYTES / per_key) as i64).clamp(min.min(MAX_PAGE), MAX_PAGE)
}

impl Pager {
    /// Every page the first one's size (the plain paginated list, for
    /// comparison).
    pub fn with_fixed_page_size(mut self) -> Self {
        self.grow = false;
        self
    }

    /// The next page, `None` when the list is complete.
    pub async fn next_page(&mut self) -> Result<Option<Page>, Error> {
        let Some(key) = self.next_key.take() else {
            return Ok(None);
        };
        let request = PbRangeRequest {
            key,
            range_end: self.range_end.clone(),
            limit: self.page_size,
            // 0 (the first page): the current revision.
            revision: self.revision,
            ..PbRangeRequest::default()
        };
        let page = self
            .client
            .call("list", self.prefix.as_str(), Retry::Always, || {
                self.client.range_page(&request)
            })
            .await?;
        if self.revision == 0 {
            self.revision = page.revision;
            self.cluster_id = page.cluster_id;
            self.count = page.count;
        }
        // From the raw key: a key that is not UTF-8 reads differently.
        let next = page.last_key().filter(|_| page.more).map(|last| {
            let mut next = last.to_vec();
            next.push(0);
            next
        });
        if let Some(next) = next {
            self.next_key = Some(next);
            let bytes = page.data_bytes();
            self.bytes_per_key = bytes.div_ceil(page.len().max(1));
            if self.grow {
                self.page_size = next_page_size(page.len(), bytes, self.min_page_size);
            }
        }
        Ok(Some(page))
    }

    /// The revision the list is read at (known after the first page).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The etcd cluster ID that answered (known after the first page).
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The keys in the range, as the first page's answer counted them (0
    /// before it, or if the server did not say).
    pub fn count(&self) -> i64 {
        self.count
    }

    /// The bytes of keys and values the next page should hold, from the
    /// last page's; 0 when the list is complete (and before the first
    /// page).
    pub fn next_page_bytes(&self) -> usize {
        if self.next_key.is_none() {
            return 0;
        }
        usize::try_from(self.page_size)
            .unwrap_or(0)
            .saturating_mul(self.bytes_per_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_grow_to_the_byte_budget_within_bounds() {
        // 200-byte entries: 8 MiB holds 41,943 of them.
        assert_eq!(next_page_size(5_000, 5_000 * 200, 5_000), 41_943);
        // Tiny entries stop at the most keys a page asks for.
        assert_eq!(next_page_size(5_000, 5_000 * 4, 5_000), MAX_PAGE);
        // Huge values never shrink a page below the first one's size.
        assert_eq!(next_page_size(1_000, 1_000 << 20, 1_000), 1_000);
        assert_eq!(next_page_size(0, 0, 7), MAX_PAGE);
        assert_eq!(next_page_size(10, 10, 500_000), MAX_PAGE);
    }
}
