/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Map layouts shared between the eBPF programs and the Rust side
 * (the Rust modules under bpf/src mirror every struct with #[repr(C)]; the test
 * tests/layout.rs compares sizes and field offsets against the BTF of the
 * compiled object). Every padding byte is an explicit field so that keys
 * hash and compare the same in the kernel and in user space.
 *
 * Addresses are 16 bytes for both families: an IPv4 address occupies the
 * first 4 bytes and the other 12 are zero; `family` is 4 or 6.
 */
#ifndef CLUSTERMESH_DATAPATH_H
#define CLUSTERMESH_DATAPATH_H

#include <linux/types.h>

#define CM_FAMILY_V4 4
#define CM_FAMILY_V6 6

/* Reserved identities (DESIGN §4). */
#define CM_ID_UNKNOWN 0
#define CM_ID_HOST 1
#define CM_ID_WORLD 2
#define CM_ID_REMOTE_NODE 6

/* ipcache: LPM trie. `prefixlen` counts the bits AFTER itself, so the
 * cluster_id/pad/family bytes are always part of the match:
 * prefixlen = 32 + prefix bits of the address. */
struct ipcache_key {
	__u32 prefixlen;
	__u16 cluster_id;
	__u8 pad;
	__u8 family;
	__u8 addr[16];
};

struct ipcache_value {
	__u32 sec_identity;
	__u8 tunnel_endpoint[16];
	__u8 tunnel_family;
	__u8 key;
	__u8 flags;
	__u8 pad;
};

/* endpoints: host-side ifindex -> endpoint configuration. */
#define CM_EP_POLICY_INGRESS 1u /* ingress policy enforced (default deny) */
#define CM_EP_POLICY_EGRESS 2u	/* egress policy enforced (default deny) */

struct endpoint_key {
	__u32 ifindex;
};

struct endpoint_info {
	__u32 endpoint_id;
	__u32 sec_identity;
	__u32 flags;
	__u32 policy_id; /* keys its entries in cm_policy (shared by endpoints
			  * whose rules resolve the same) */
};

/* policy: one LPM trie shared by all endpoints. `prefixlen` counts the bits
 * after itself: policy_id, sec_identity and direction always match
 * (72 bits); then 8 bits of protocol and 16 of port, so that an entry may
 * stop at the protocol (every port) or cover an aligned block of ports
 * (ranges are split into such blocks by the agent). ICMP types are the high
 * byte of the port (and the code the low byte). sec_identity 0 = any
 * identity; it is a separate lookup, not a prefix. */
#define CM_DIR_INGRESS 0
#define CM_DIR_EGRESS 1
#define CM_POLICY_FIXED_BITS 72

struct policy_key {
	__u32 prefixlen;
	__u32 policy_id;
	__u32 sec_identity;
	__u8 direction;
	__u8 protocol;
	__be16 dport;
};

#define CM_POLICY_ALLOW 1
#define CM_POLICY_DENY 2

/* Hubble's policy_match_type (what kind of entry decided). */
#define CM_MATCH_NONE 0
#define CM_MATCH_L3_ONLY 1
#define CM_MATCH_L3_L4 2
#define CM_MATCH_L4_ONLY 3
#define CM_MATCH_ALL 4
#define CM_MATCH_L3_PROTO 5
#define CM_MATCH_PROTO_ONLY 6

struct policy_value {
	__u8 action;
	__u8 match_type;   /* CM_MATCH_* of the entry's key */
	__be16 proxy_port; /* allow entries: non-zero sends new connections
			    * through the agent's proxy on this port (DNS
			    * rules) instead of straight to the peer */
	__u32 cookie;	   /* which rule made the entry (the agent's table) */
};

/* conntrack: LRU hash for both families. The scope separates the three
 * views of one 5-tuple: a connection opened by an endpoint (egress), a
 * connection accepted by an endpoint after policy (ingress) and the
 * frontend tuple of a service connection (service -> backend_id). */
#define CM_CT_EGRESS 0
#define CM_CT_INGRESS 1
#define CM_CT_SERVICE 2
/* A connection redirected to the agent's proxy, keyed by its tuple to the
 * proxy (as the proxy's socket sees it): rev_nat_* is where the endpoint
 * was going after service translation, which the proxy forwards to. The
 * egress entry of the same tuple reverse-translates the proxy's replies to
 * what the endpoint dialled. */
#define CM_CT_PROXY 3

/* The agent's proxy listens on these node-local addresses (on `lo`). */
#define CM_PROXY_V4 0xa9fe2a02u /* 169.254.42.2 */

struct ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 protocol;
	__u8 family;
	__u8 scope;
	__u8 pad;
};

/* ct_value.flags. The agent's conntrack GC picks an entry's lifetime from
 * its protocol and these bits, and counts it from last_seen_ns. */
#define CM_CT_F_REVNAT 1u     /* replies get their source rewritten to rev_nat_* */
#define CM_CT_F_SEEN_REPLY 2u /* a reply passed (service entries, which see one
			       * direction: the client acknowledged the handshake) */
#define CM_CT_F_CLOSING 4u    /* TCP: a FIN or RST passed, in either direction */
#define CM_CT_F_HAIRPIN 8u    /* an endpoint reaching itself through a service:
			       * its source became the hairpin address, which
			       * replies get back as their destination */
#define CM_CT_F_PROXY 16u     /* egress entries: redirected to the agent's proxy */

/* The source of an endpoint's connection to itself through a service (its
 * own address as source would be a martian to its kernel). */
#define CM_HAIRPIN_V4 0xa9fe2a01u /* 169.254.42.1 */

struct ct_value {
	__u64 created_ns;
	__u64 last_seen_ns;
	__u8 rev_nat_addr[16];
	__be16 rev_nat_port;
	__u16 flags; /* CM_CT_F_* */
	__u32 backend_id;
	__u32 src_identity;
	__u32 pad;
};

/* services: (frontend, slot) -> backend. Slot 0 is the master entry that
 * holds the number of slots; slots 1..=count hold backend ids. */
struct service_key {
	__u8 addr[16];
	__be16 dport;
	__u16 slot;
	__u8 protocol;
	__u8 family;
	__u8 pad[2];
};

struct service_value {
	__u32 backend_id;
	__u16 count;
	__u16 flags;
};

/* backends: id -> address. */
struct backend_key {
	__u32 backend_id;
};

struct backend_value {
	__u8 addr[16];
	__be16 port;
	__u8 protocol;
	__u8 family;
	__u16 cluster_id;
	__u16 flags;
};

/* flow events (ring buffer records). */
#define CM_VERDICT_FORWARDED 1
#define CM_VERDICT_DROPPED 2
#define CM_VERDICT_TRANSLATED 3

#define CM_DROP_NONE 0
#define CM_DROP_POLICY 1      /* no rule allows it (default deny) */
#define CM_DROP_POLICY_DENY 2 /* a deny rule matched */
#define CM_DROP_NO_BACKEND 3  /* service without backends */
#define CM_DROP_CT_FULL 4     /* conntrack entry could not be created */
#define CM_DROP_MALFORMED 5   /* headers could not be parsed */
#define CM_DROP_NAT 6         /* rewriting the packet failed */
#define CM_DROP_PROXY 7       /* redirecting to the proxy failed (not TCP or UDP) */

#define CM_FLOW_TO_ENDPOINT 0
#define CM_FLOW_FROM_ENDPOINT 1

/* Whether the packet belongs to the reply direction of its connection. */
#define CM_REPLY_UNKNOWN 0
#define CM_REPLY_NO 1
#define CM_REPLY_YES 2

struct flow_event {
	__u64 timestamp_ns;
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 protocol;
	__u8 family;
	__u8 verdict;
	__u8 drop_reason;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 ifindex;
	__u8 direction;
	__u8 reply;	/* CM_REPLY_* */
	__u8 l4_flags;	/* TCP flags, or the ICMP type */
	__u8 icmp_code;
	__u32 policy_cookie; /* the entry that decided (0: none) */
	__u8 match_type;     /* CM_MATCH_* */
	__u8 policy_dir;     /* CM_DIR_* of the policy that decided */
	__u8 pad[2];
};

_Static_assert(sizeof(struct ipcache_key) == 24, "ipcache_key");
_Static_assert(sizeof(struct ipcache_value) == 24, "ipcache_value");
_Static_assert(sizeof(struct endpoint_info) == 16, "endpoint_info");
_Static_assert(sizeof(struct policy_key) == 16, "policy_key");
_Static_assert(sizeof(struct policy_value) == 8, "policy_value");
_Static_assert(sizeof(struct ct_key) == 40, "ct_key");
_Static_assert(sizeof(struct ct_value) == 48, "ct_value");
_Static_assert(sizeof(struct service_key) == 24, "service_key");
_Static_assert(sizeof(struct service_value) == 8, "service_value");
_Static_assert(sizeof(struct backend_value) == 24, "backend_value");
_Static_assert(sizeof(struct flow_event) == 72, "flow_event");

#endif
