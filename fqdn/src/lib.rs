//! DNS-aware egress policy (`toFQDNs`) as pure logic: what the agent's DNS
//! proxy decides and remembers, with no socket, no map and no clock of its
//! own. The agent owns the I/O (the redirected UDP/TCP port 53 traffic, the
//! upstream forward, the ipcache and policy map writes, the state
//! directory); this crate tells it what to do.
//!
//! Semantics follow Cilium's (`pkg/fqdn`, `pkg/policy/api/fqdn.go`):
//! names are lowercase and fully qualified ([`DnsName`]); selectors are
//! `matchName` / `matchPattern` with Cilium's wildcards ([`FqdnSelector`]);
//! a denied lookup is answered REFUSED as Cilium's proxy does
//! ([`DnsQuery::refused`]); addresses expire with their TTL, raised to a
//! minimum, at most 50 per name and endpoint, and are kept while a
//! connection uses them ([`NameCache`]). DNS messages are read and written
//! with hickory-proto, never by hand.
//!
//! Not for: resolving names (there is no resolver here), nor the policy
//! document itself (`kvstore::values::FqdnSelector` reads and checks
//! `toFQDNs` and `rules.dns`; this crate compiles what it accepted, and a
//! test checks that both accept the same texts).
//!
//! # How the agent uses it
//!
//! Per endpoint with DNS rules, compile them once (every
//! `PeerRule::dns_rules()` of the rules selecting it) into a
//! [`SelectorSet`]; per `toFQDNs` selector of any policy, keep the compiled
//! [`FqdnSelector`].
//!
//! 1. **A query arrives** from endpoint `ep` (the datapath redirected it;
//!    the original destination is kept by the caller):
//!    [`DnsQuery::parse`]. On error, count [`DnsError::reason`] and drop it.
//!    If the endpoint's [`SelectorSet::matches`]`(&query.name)` is false,
//!    send [`DnsQuery::refused`] back (and a DROPPED flow with the name);
//!    otherwise forward the packet unchanged to the original destination.
//! 2. **The answer arrives**: [`DnsResponse::parse`] with
//!    [`ResponseLimits`]; drop it unless [`DnsResponse::answers`] the query
//!    (count [`DnsResponse::truncation`] when set). Then
//!    [`NameCache::learn`]`(ep, &response.name, &response.addresses, now)`.
//! 3. **Before releasing the answer**, write the returned diff: for each
//!    `(name, ip)` of [`CacheDiff::added`], give `ip` its FQDN (or CIDR)
//!    identity in the ipcache and allow it in the policy maps of every
//!    endpoint whose `toFQDNs` selectors match `name`. Only when those
//!    writes are done, send the answer (the original bytes) to the
//!    endpoint: its first connection then never races the map write.
//! 4. **On a timer** at [`NameCache::next_expiry`]: [`NameCache::expire`]
//!    and withdraw [`CacheDiff::removed`]. After each conntrack walk,
//!    [`NameCache::set_in_use`] per endpoint (or [`NameCache::mark_in_use`]
//!    / [`NameCache::release`] per connection), and withdraw what it
//!    returns. When an endpoint goes, [`NameCache::remove_endpoint`].
//! 5. **When a policy's `toFQDNs` changes**, [`NameCache::select`] gives
//!    the names and addresses a new selector allows at once.
//! 6. **State**: save [`NameCache::snapshot`] (serde) in the state
//!    directory after changes; at start, [`NameCache::restore`] it, write
//!    the whole diff, walk conntrack, then start expiring (see
//!    [`NameCache::restore`] for why that order).
//!
//! ```
//! use std::time::Instant;
//!
//! use fqdn::{
//!     CacheConfig, DnsQuery, DnsResponse, FqdnSelector, NameCache, ResponseLimits,
//!     SelectorSet, Transport,
//! };
//!
//! # fn packets() -> (Vec<u8>, Vec<u8>) {
//! #     use hickory_proto::{op::*, rr::{rdata::A, *}};
//! #     let name = Name::from_ascii("api.example.com.").unwrap();
//! #     let mut q = Message::new(7, MessageType::Query, OpCode::Query);
//! #     q.add_query(Query::query(name.clone(), RecordType::A));
//! #     let mut r = Message::new(7, MessageType::Response, OpCode::Query);
//! #     r.add_query(Query::query(name.clone(), RecordType::A));
//! #     r.add_answer(Record::from_rdata(name, 60, RData::A(A([192, 0, 2, 1].into()))));
//! #     (q.to_vec().unwrap(), r.to_vec().unwrap())
//! # }
//! let (query_packet, answer_packet) = packets();
//! let dns_rules: SelectorSet = [FqdnSelector::match_pattern("*.example.com")?]
//!     .into_iter()
//!     .collect();
//! let mut cache = NameCache::<u32>::new(CacheConfig::default());
//! let endpoint = 12;
//!
//! let query = DnsQuery::parse(&query_packet, Transport::Udp)?;
//! if !dns_rules.matches(&query.name) {
//!     let _reply = query.refused(Transport::Udp)?; // send it back
//!     return Ok(());
//! }
//! // ... forward query_packet, receive answer_packet ...
//! let answer = DnsResponse::parse(&answer_packet, Transport::Udp, &ResponseLimits::default())?;
//! assert!(answer.answers(&query));
//! let learned = cache.learn(endpoint, &answer.name, &answer.addresses, Instant::now());
//! for (name, ip) in learned.diff.added() {
//!     // write ipcache and policy maps for (name, ip) here, then release the answer
//!     assert_eq!((name.as_str(), ip.to_string().as_str()), ("api.example.com.", "192.0.2.1"));
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cache;
mod error;
mod framing;
mod name;
mod query;
mod response;
mod selector;
mod snapshot;

pub use hickory_proto::{op::ResponseCode, rr::RecordType};

pub use self::{
    cache::{CacheConfig, CacheDiff, CacheEntry, Learned, NameCache, NameChange},
    error::{DnsError, DnsErrorReason},
    framing::{MAX_MESSAGE_LEN, Transport, frame, split_tcp_message},
    name::{DnsName, MAX_LABEL_LENGTH, MAX_NAME_LENGTH, NameError},
    query::DnsQuery,
    response::{DnsResponse, LearnedIp, ResponseLimits, Truncation, TruncationReason},
    selector::{FqdnSelector, MAX_SELECTOR_LENGTH, Pattern, SelectorError, SelectorSet},
    snapshot::{CacheSnapshot, RestoreReport, SNAPSHOT_VERSION, SnapshotEntry},
};
