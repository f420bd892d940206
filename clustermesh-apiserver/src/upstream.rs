use std::time::Duration;

use etcd_client::proto::{
    PbRangeRequest, PbRangeResponse, PbResponseHeader, PbStatusRequest, PbStatusResponse,
};
use futures::Stream;
use prost::{Message, bytes::Bytes};
use tonic::{
    Request, Status, Streaming,
    client::Grpc,
    codec::Codec,
    codegen::http::uri::PathAndQuery,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use crate::{
    etcd_error::EtcdError,
    proto_codec::{ProtoCodec, RawCodec},
};

/// gRPC paths of the etcd RPCs the apiserver forwards.
pub(crate) mod path {
    pub(crate) const KV_RANGE: &str = "/etcdserverpb.KV/Range";
    pub(crate) const KV_PUT: &str = "/etcdserverpb.KV/Put";
    pub(crate) const KV_DELETE_RANGE: &str = "/etcdserverpb.KV/DeleteRange";
    pub(crate) const KV_TXN: &str = "/etcdserverpb.KV/Txn";
    pub(crate) const KV_COMPACT: &str = "/etcdserverpb.KV/Compact";
    pub(crate) const WATCH: &str = "/etcdserverpb.Watch/Watch";
    pub(crate) const LEASE_GRANT: &str = "/etcdserverpb.Lease/LeaseGrant";
    pub(crate) const LEASE_REVOKE: &str = "/etcdserverpb.Lease/LeaseRevoke";
    pub(crate) const LEASE_KEEP_ALIVE: &str = "/etcdserverpb.Lease/LeaseKeepAlive";
    pub(crate) const LEASE_TIME_TO_LIVE: &str = "/etcdserverpb.Lease/LeaseTimeToLive";
    pub(crate) const LEASE_LEASES: &str = "/etcdserverpb.Lease/LeaseLeases";
    pub(crate) const MAINTENANCE_STATUS: &str = "/etcdserverpb.Maintenance/Status";
    pub(crate) const LOCK_LOCK: &str = "/v3lockpb.Lock/Lock";
    pub(crate) const LOCK_UNLOCK: &str = "/v3lockpb.Lock/Unlock";

    /// Whether a call changes nothing, so that it may be sent again to
    /// another member after any failure of the one it was on.
    pub(crate) fn is_read(path: &str) -> bool {
        matches!(
            path,
            KV_RANGE | MAINTENANCE_STATUS | LEASE_TIME_TO_LIVE | LEASE_LEASES
        )
    }
}

/// Largest message accepted from etcd: a big range response (a whole prefix
/// without pagination) or a watch catch-up batch can exceed tonic's 4 MiB.
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// What timed out, in the "etcd unreachable" message of a unary call and of
/// a stream's opening.
const NO_ANSWER: &str = "no answer";
const NOT_OPENED: &str = "stream not opened";

/// Why the upstream channel could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no etcd endpoints given")]
    NoEndpoints,
    #[error("invalid etcd endpoint {endpoint:?}")]
    InvalidEndpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("etcd endpoint {endpoint:?} uses https but no CA bundle was given (--etcd-ca)")]
    MissingCa { endpoint: String },
}

/// The apiserver's own connection to the cluster's etcd: raw gRPC calls that
/// forward requests as they are (same fields, same errors), over one
/// balanced HTTP/2 channel. Cheap to clone.
///
/// With several etcd members, a unary call that fails on one of them is
/// sent again (the channel picks a member afresh) when that is safe: always
/// when it never left (the member refused the connection), and for reads
/// also after the member or its connection failed under it
/// ([`kvstore::may_send_again`]).
#[derive(Debug, Clone)]
pub struct Upstream {
    channel: Channel,
    endpoints: String,
    /// Attempts of a call that fails on one member: 1 with a single
    /// endpoint, else three per member (see [`Upstream::call`]).
    max_attempts: u32,
    request_timeout: Duration,
}

impl Upstream {
    /// Builds the channel; connections are made on first use (so the
    /// apiserver can start while etcd is down). Must run inside a tokio
    /// runtime.
    pub fn new(config: &kvstore::ClientConfig) -> Result<Self, UpstreamError> {
        if config.endpoints.is_empty() {
            return Err(UpstreamError::NoEndpoints);
        }
        let mut endpoints = Vec::with_capacity(config.endpoints.len());
        for url in &config.endpoints {
            let invalid = |source| UpstreamError::InvalidEndpoint {
                endpoint: url.clone(),
                source,
            };
            let mut endpoint = Endpoint::from_shared(url.clone())
                .map_err(invalid)?
                .connect_timeout(config.connect_timeout)
                .http2_keep_alive_interval(config.keepalive_interval)
                .keep_alive_timeout(config.keepalive_timeout)
                .keep_alive_while_idle(true)
                .tcp_nodelay(true);
            if url.starts_with("https://") {
                let Some(tls) = &config.tls else {
                    return Err(UpstreamError::MissingCa {
                        endpoint: url.clone(),
                    });
                };
                let mut tls_config =
                    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
                if let Some((cert, key)) = &tls.identity_pem {
                    tls_config = tls_config.identity(Identity::from_pem(cert, key));
                }
                if let Some(name) = &tls.server_name {
                    tls_config = tls_config.domain_name(name.clone());
                }
                endpoint = endpoint.tls_config(tls_config).map_err(invalid)?;
            }
            endpoints.push(endpoint);
        }
        let channel = if endpoints.len() == 1 {
            endpoints.remove(0).connect_lazy()
        } else {
            Channel::balance_list(endpoints.into_iter())
        };
        Ok(Self {
            channel,
            endpoints: config.endpoints.join(","),
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

    /// A gRPC client on the channel once it is ready (connected).
    async fn ready_grpc(&self) -> Result<Grpc<Channel>, Status> {
        let mut grpc = Grpc::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
        grpc.ready().await.map_err(|e| unreachable(&e))?;
        Ok(grpc)
    }

    /// One unary call with the request timeout. etcd's own errors are
    /// returned unchanged, so clients see exactly what etcd said.
    pub(crate) async fn unary<Req, Resp>(
        &self,
        path: &'static str,
        req: Req,
    ) -> Result<Resp, Status>
    where
        Req: Message + Clone + Send + Sync + 'static,
        Resp: Message + Default + Send + Sync + 'static,
    {
        self.unary_with::<ProtoCodec<Req, Resp>>(path, req).await
    }

    /// One unary call whose messages are passed through as bytes.
    pub(crate) async fn unary_raw(&self, path: &'static str, req: Bytes) -> Result<Bytes, Status> {
        self.unary_with::<RawCodec>(path, req).await
    }

    async fn unary_with<C>(&self, path: &'static str, req: C::Encode) -> Result<C::Decode, Status>
    where
        C: Codec + Default,
        C::Encode: Clone + Send + Sync + 'static,
        C::Decode: Send + Sync + 'static,
    {
        let call = |mut grpc: Grpc<Channel>| {
            let req = req.clone();
            async move {
                grpc.unary(
                    Request::new(req),
                    PathAndQuery::from_static(path),
                    C::default(),
                )
                .await
            }
        };
        let resend = if path::is_read(path) {
            Resend::Read
        } else {
            Resend::Write
        };
        self.call(NO_ANSWER, resend, call)
            .await?
            .map_err(transport_failure)
    }

    /// A bidirectional stream (watch, lease keep-alive). No deadline: the
    /// channel's HTTP/2 keep-alive notices a dead etcd.
    pub(crate) async fn streaming<Req, Resp, S>(
        &self,
        path: &'static str,
        requests: S,
    ) -> Result<Streaming<Resp>, Status>
    where
        S: Stream<Item = Req> + Send + 'static,
        Req: Message + Send + Sync + 'static,
        Resp: Message + Default + Send + Sync + 'static,
    {
        self.streaming_with_metadata(path, requests, &[]).await
    }

    /// [`Upstream::streaming`] with gRPC metadata (e.g. etcd's
    /// `hasleader`). Opened once: the requests cannot be sent again.
    pub(crate) async fn streaming_with_metadata<Req, Resp, S>(
        &self,
        path: &'static str,
        requests: S,
        metadata: &[(&'static str, &'static str)],
    ) -> Result<Streaming<Resp>, Status>
    where
        S: Stream<Item = Req> + Send + 'static,
        Req: Message + Send + Sync + 'static,
        Resp: Message + Default + Send + Sync + 'static,
    {
        let mut requests = Some(requests);
        let open = |mut grpc: Grpc<Channel>| {
            let requests = requests.take();
            async move {
                // Resend::Never: called once.
                let Some(requests) = requests else {
                    return Err(Status::internal("a stream's requests are sent once"));
                };
                let mut request = Request::new(requests);
                for (key, value) in metadata {
                    request
                        .metadata_mut()
                        .insert(*key, tonic::metadata::MetadataValue::from_static(value));
                }
                let codec = ProtoCodec::<Req, Resp>::default();
                grpc.streaming(request, PathAndQuery::from_static(path), codec)
                    .await
            }
        };
        self.call(NOT_OPENED, Resend::Never, open).await?
    }

    /// Runs `call` on a ready client, within the request timeout, and again
    /// (after a short backoff) while it fails on one member in a way that
    /// allows it ([`kvstore::may_send_again`], as `resend` says). The
    /// outer error is the channel's failure or the timeout (etcd counts as
    /// unavailable); the inner result is the call's own.
    async fn call<T, Fut>(
        &self,
        what: &str,
        resend: Resend,
        mut call: impl FnMut(Grpc<Channel>) -> Fut,
    ) -> Result<Result<T, Status>, Status>
    where
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let call = async {
            let mut backoff = kvstore::Backoff::for_failover();
            let mut attempts = 0;
            loop {
                attempts += 1;
                let outcome = match self.ready_grpc().await {
                    Ok(grpc) => Ok(call(grpc).await.map(tonic::Response::into_inner)),
                    Err(status) => Err(status),
                };
                let failed = match &outcome {
                    Ok(Err(status)) | Err(status) => status,
                    Ok(Ok(_)) => return outcome,
                };
                let again = match resend {
                    Resend::Never => false,
                    Resend::Write => kvstore::may_send_again(failed, false),
                    Resend::Read => kvstore::may_send_again(failed, true),
                };
                if !again || attempts >= self.max_attempts {
                    return outcome;
                }
                let delay = backoff.next_delay();
                if tokio::time::Instant::now() + delay >= deadline {
                    return outcome;
                }
                tracing::debug!(endpoints = %self.endpoints, error = %failed, "an etcd call failed on one member; sending it again");
                tokio::time::sleep(delay).await;
            }
        };
        match tokio::time::timeout(self.request_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(EtcdError::Unavailable(format!(
                "{what} within {:?}",
                self.request_timeout
            ))
            .into()),
        }
    }

    /// etcd's status (version, revision, leader).
    pub async fn status(&self) -> Result<PbStatusResponse, Status> {
        self.unary(path::MAINTENANCE_STATUS, PbStatusRequest::default())
            .await
    }

    /// The header of a linearizable read: etcd's current revision and its
    /// cluster and member IDs.
    pub(crate) async fn current_header(&self, key: &[u8]) -> Result<PbResponseHeader, Status> {
        let request = PbRangeRequest {
            key: key.to_vec(),
            count_only: true,
            ..PbRangeRequest::default()
        };
        let response: PbRangeResponse = self.unary(path::KV_RANGE, request).await?;
        Ok(response.header.unwrap_or_default())
    }
}

/// Whether a call that failed on one member is sent again.
#[derive(Debug, Clone, Copy)]
enum Resend {
    /// Never (a stream: its requests are consumed by the first attempt).
    Never,
    /// Only when it never left.
    Write,
    /// Also after the member or its connection failed under it.
    Read,
}

fn unreachable(e: &tonic::transport::Error) -> Status {
    EtcdError::Unavailable(e.to_string()).into()
}

/// The channel's own failures (etcd down) reach clients worded as etcd's
/// unavailability, so that a remote cluster can tell "your apiserver
/// answers but its etcd does not" from "your apiserver is unreachable".
/// etcd's own answers pass unchanged.
fn transport_failure(status: Status) -> Status {
    if status.code() == tonic::Code::Unavailable && !status.message().starts_with("etcdserver:") {
        EtcdError::Unavailable(status.message().to_string()).into()
    } else {
        status
    }
}
