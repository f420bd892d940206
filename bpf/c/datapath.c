/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * clustermesh datapath: two TC programs for each endpoint's host-side veth.
 *
 *   pod eth0 ──veth──> host side   TC ingress of the host side sees what the
 *                                  pod SENDS: cm_from_endpoint (service load
 *                                  balancing, conntrack of outgoing connections)
 *   pod eth0 <──veth── host side   TC egress of the host side sees what is
 *                                  DELIVERED to the pod: cm_to_endpoint
 *                                  (replies + reverse NAT, ingress policy)
 *
 * Both programs find the endpoint through cm_endpoints[skb->ifindex]; an
 * interface without an entry is not managed and passes untouched.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "datapath.h"

char _license[] SEC("license") = "Dual BSD/GPL";

/* max_entries are defaults; the loader overrides them from its config. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(max_entries, 524288);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cm_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
	__uint(max_entries, 4096);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cm_endpoints SEC(".maps");

/* `_v2`: an LPM trie since port ranges; the hash map of earlier versions was
 * pinned as cm_policy, which the loader removes. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cm_policy_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cm_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct service_key);
	__type(value, struct service_value);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cm_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct backend_key);
	__type(value, struct backend_value);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cm_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cm_flows SEC(".maps");

/* Flow events the ring buffer had no room for (per CPU); the agent reports
 * them as lost events. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cm_flows_lost SEC(".maps");

/* Flow events are ring buffer records, which no map definition names; this
 * unused variable in a section of its own (ignored by the loader) keeps
 * the struct in the object's BTF for the layout test. */
struct flow_event cm_btf_flow_event __attribute__((section(".cm_btf"), used));

#define IPPROTO_ICMPV6_ 58
#define IPPROTO_SCTP_ 132
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_DEST 60

#define CT_REFRESH_NS 1000000000ull

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

struct pkt {
	struct ct_key t; /* scope 0 */
	__u32 l3_off;
	__u32 l4_off;
	__u8 control; /* ND, MLD, ICMP errors: pass without policy */
	__u8 has_ports;
	__u8 l4_flags;	/* TCP flags, or the ICMP type (for flow events) */
	__u8 icmp_code;
	__be16 policy_port; /* what policy matches: dport, or ICMP type and code */
};

/* What decided a policy verdict (for flow events). */
struct hit {
	__u32 cookie;
	__u8 match_type;
	__u8 dir;
	__be16 proxy_port; /* the allow entry's (0: no redirect) */
};

/* Returns 0 for a parsed IP packet, 1 for a non-IP packet, -1 if malformed. */
static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	__u8 nexthdr;
	__u32 off;
	int nonfirst_frag = 0;

	p->l3_off = ETH_HLEN;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)))
			return -1;
		if (ip.ihl < 5 || ip.version != 4)
			return -1;
		p->t.family = CM_FAMILY_V4;
		__builtin_memcpy(p->t.saddr, &ip.saddr, 4);
		__builtin_memcpy(p->t.daddr, &ip.daddr, 4);
		nexthdr = ip.protocol;
		off = ETH_HLEN + ip.ihl * 4;
		if (ip.frag_off & bpf_htons(0x1fff))
			nonfirst_frag = 1;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)))
			return -1;
		p->t.family = CM_FAMILY_V6;
		__builtin_memcpy(p->t.saddr, &ip6.saddr, 16);
		__builtin_memcpy(p->t.daddr, &ip6.daddr, 16);
		nexthdr = ip6.nexthdr;
		off = ETH_HLEN + sizeof(ip6);
#pragma unroll
		for (int i = 0; i < 4; i++) {
			__u8 ext[8];

			if (nexthdr != NEXTHDR_HOP && nexthdr != NEXTHDR_ROUTING &&
			    nexthdr != NEXTHDR_DEST && nexthdr != NEXTHDR_FRAGMENT)
				break;
			if (bpf_skb_load_bytes(skb, off, ext, sizeof(ext)))
				return -1;
			if (nexthdr == NEXTHDR_FRAGMENT) {
				if ((ext[2] << 8 | ext[3]) & 0xfff8)
					nonfirst_frag = 1;
				off += 8;
			} else {
				off += (ext[1] + 1) * 8;
			}
			nexthdr = ext[0];
		}
	} else {
		return 1;
	}

	p->t.protocol = nexthdr;
	p->l4_off = off;
	if (nonfirst_frag)
		return 0;

	switch (nexthdr) {
	case IPPROTO_TCP: {
		__u8 tcp[14]; /* ports, sequence and ack numbers, offset, flags */

		if (bpf_skb_load_bytes(skb, off, tcp, sizeof(tcp)))
			return -1;
		__builtin_memcpy(&p->t.sport, &tcp[0], 2);
		__builtin_memcpy(&p->t.dport, &tcp[2], 2);
		p->l4_flags = tcp[13];
		p->has_ports = 1;
		break;
	}
	case IPPROTO_UDP:
	case IPPROTO_SCTP_: {
		__be16 ports[2];

		if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)))
			return -1;
		p->t.sport = ports[0];
		p->t.dport = ports[1];
		p->has_ports = nexthdr != IPPROTO_SCTP_; /* SCTP: policy only, no NAT */
		break;
	}
	case IPPROTO_ICMP: {
		__u8 icmp[8];
		__be16 id;

		if (bpf_skb_load_bytes(skb, off, icmp, sizeof(icmp)))
			return -1;
		p->l4_flags = icmp[0];
		p->icmp_code = icmp[1];
		__builtin_memcpy(&id, &icmp[4], 2);
		if (icmp[0] == 8) /* echo request */
			p->t.sport = id;
		else if (icmp[0] == 0) /* echo reply */
			p->t.dport = id;
		else
			p->control = 1;
		break;
	}
	case IPPROTO_ICMPV6_: {
		__u8 icmp[8];
		__be16 id;

		if (bpf_skb_load_bytes(skb, off, icmp, sizeof(icmp)))
			return -1;
		p->l4_flags = icmp[0];
		p->icmp_code = icmp[1];
		__builtin_memcpy(&id, &icmp[4], 2);
		if (icmp[0] == 128)
			p->t.sport = id;
		else if (icmp[0] == 129)
			p->t.dport = id;
		else
			p->control = 1; /* neighbour discovery, MLD, errors */
		break;
	}
	default:
		break;
	}
	if (nexthdr == IPPROTO_ICMP || nexthdr == IPPROTO_ICMPV6_)
		p->policy_port = bpf_htons((__u16)p->l4_flags << 8 | p->icmp_code);
	else
		p->policy_port = p->t.dport;
	return 0;
}

static __always_inline void ct_reverse(const struct ct_key *in, struct ct_key *out, __u8 scope)
{
	__builtin_memcpy(out->saddr, in->daddr, 16);
	__builtin_memcpy(out->daddr, in->saddr, 16);
	out->sport = in->dport;
	out->dport = in->sport;
	out->protocol = in->protocol;
	out->family = in->family;
	out->scope = scope;
	out->pad = 0;
}

/* A packet of the entry's connection passed; `reply` when it goes the
 * reply way. Records what the entry's lifetime depends on: a reply passed;
 * a TCP FIN or RST passed (closing); a SYN on a closing entry (a client
 * reusing its port) starts over. A change of state refreshes last_seen_ns,
 * so that the closing lifetime counts from the FIN or RST; otherwise it is
 * refreshed at most once per CT_REFRESH_NS. */
static __always_inline void ct_touch(struct ct_value *v, const struct pkt *p, int reply)
{
	__u64 now = bpf_ktime_get_ns();
	__u16 flags = v->flags;

	if (p->t.protocol == IPPROTO_TCP && (flags & CM_CT_F_CLOSING) && !reply &&
	    (p->l4_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN)
		flags &= ~(CM_CT_F_CLOSING | CM_CT_F_SEEN_REPLY);
	if (reply)
		flags |= CM_CT_F_SEEN_REPLY;
	if (p->t.protocol == IPPROTO_TCP && (p->l4_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)))
		flags |= CM_CT_F_CLOSING;
	if (flags != v->flags || now - v->last_seen_ns > CT_REFRESH_NS) {
		v->flags = flags;
		v->last_seen_ns = now;
	}
}

/* A service entry sees the client's packets only: the client acknowledging
 * the handshake (an ACK without SYN) shows that the backend answered. */
static __always_inline int tcp_answered(const struct pkt *p)
{
	return p->t.protocol == IPPROTO_TCP &&
	       (p->l4_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_ACK;
}

static __always_inline int addr_eq(const __u8 *a, const __u8 *b)
{
	__u8 diff = 0;

#pragma unroll
	for (int i = 0; i < 16; i++)
		diff |= a[i] ^ b[i];
	return diff == 0;
}

/* A node-local address of `family` ending in `last`: 169.254.42.<last>,
 * or fd00::a9fe:2a<last> for IPv6. */
static __always_inline void node_local_addr(__u8 family, __u8 last, __u8 *out)
{
	__builtin_memset(out, 0, 16);
	if (family == CM_FAMILY_V4) {
		out[0] = 169;
		out[1] = 254;
		out[2] = 42;
		out[3] = last;
	} else {
		out[0] = 0xfd;
		out[12] = 0xa9;
		out[13] = 0xfe;
		out[14] = 0x2a;
		out[15] = last;
	}
}

/* The hairpin source of `family` (see CM_HAIRPIN_V4). */
static __always_inline void hairpin_addr(__u8 family, __u8 *out)
{
	node_local_addr(family, CM_HAIRPIN_V4 & 0xff, out);
}

/* The address of the agent's proxy (see CM_PROXY_V4). */
static __always_inline void proxy_addr(__u8 family, __u8 *out)
{
	node_local_addr(family, CM_PROXY_V4 & 0xff, out);
}

static __always_inline int ct_create(const struct ct_key *k, __u32 src_identity, __u32 backend_id,
				     const __u8 *rev_addr, __be16 rev_port)
{
	struct ct_value v = {};

	v.created_ns = bpf_ktime_get_ns();
	v.last_seen_ns = v.created_ns;
	v.src_identity = src_identity;
	v.backend_id = backend_id;
	if (rev_addr) {
		__builtin_memcpy(v.rev_nat_addr, rev_addr, 16);
		v.rev_nat_port = rev_port;
		v.flags = CM_CT_F_REVNAT;
	}
	return bpf_map_update_elem(&cm_ct, k, &v, BPF_ANY);
}

/* Marks the egress entry `k` as an endpoint's connection to itself. */
static __always_inline void mark_hairpin(const struct ct_key *k)
{
	struct ct_value *v = bpf_map_lookup_elem(&cm_ct, k);

	if (v)
		v->flags |= CM_CT_F_HAIRPIN;
}

static __always_inline __u32 lookup_identity(const __u8 *addr, __u8 family)
{
	struct ipcache_key k = {};
	struct ipcache_value *v;

	k.family = family;
	k.prefixlen = 32 + (family == CM_FAMILY_V4 ? 32 : 128);
	__builtin_memcpy(k.addr, addr, 16);
	v = bpf_map_lookup_elem(&cm_ipcache, &k);
	return v ? v->sec_identity : CM_ID_WORLD;
}

/* The verdict of the policy `policy_id` for traffic in `dir` with a peer of
 * `identity`: the longest entry for the identity and the longest entry for
 * any identity (LPM lookups: the agent has already made every allow entry
 * that a deny of the same identity covers a deny). A deny in either wins;
 * else an allow in either (the identity's reported first); else the
 * default, deny. */
static __always_inline int policy_check(__u32 policy_id, __u8 dir, __u32 identity, __u8 proto,
					__be16 port, __u8 *reason, struct hit *hit)
{
	struct policy_key k = {};
	struct policy_value *v, *allow = 0;

	k.prefixlen = CM_POLICY_FIXED_BITS + 24;
	k.policy_id = policy_id;
	k.direction = dir;
	k.protocol = proto;
	k.dport = port;
	hit->dir = dir;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		k.sec_identity = i == 0 ? identity : 0;
		v = bpf_map_lookup_elem(&cm_policy_v2, &k);
		if (!v)
			continue;
		if (v->action == CM_POLICY_DENY) {
			*reason = CM_DROP_POLICY_DENY;
			hit->cookie = v->cookie;
			hit->match_type = v->match_type;
			return 0;
		}
		if (v->action == CM_POLICY_ALLOW && !allow)
			allow = v;
	}
	if (!allow) {
		*reason = CM_DROP_POLICY;
		return 0;
	}
	hit->cookie = allow->cookie;
	hit->match_type = allow->match_type;
	hit->proxy_port = allow->proxy_port;
	return 1;
}

static __always_inline void emit(const struct pkt *p, __u32 ifindex, __u8 verdict, __u8 reason,
				 __u32 src_id, __u32 dst_id, __u8 direction, __u8 reply,
				 const struct hit *hit)
{
	struct flow_event *e = bpf_ringbuf_reserve(&cm_flows, sizeof(*e), 0);

	if (!e) {
		__u32 zero = 0;
		__u64 *lost = bpf_map_lookup_elem(&cm_flows_lost, &zero);

		if (lost)
			*lost += 1;
		return;
	}
	e->timestamp_ns = bpf_ktime_get_ns();
	__builtin_memcpy(e->saddr, p->t.saddr, 16);
	__builtin_memcpy(e->daddr, p->t.daddr, 16);
	e->sport = p->t.sport;
	e->dport = p->t.dport;
	e->protocol = p->t.protocol;
	e->family = p->t.family;
	e->verdict = verdict;
	e->drop_reason = reason;
	e->src_identity = src_id;
	e->dst_identity = dst_id;
	e->ifindex = ifindex;
	e->direction = direction;
	e->reply = reply;
	e->l4_flags = p->l4_flags;
	e->icmp_code = p->icmp_code;
	e->policy_cookie = hit ? hit->cookie : 0;
	e->match_type = hit ? hit->match_type : CM_MATCH_NONE;
	e->policy_dir = hit ? hit->dir : 0;
	e->pad[0] = 0;
	e->pad[1] = 0;
	bpf_ringbuf_submit(e, 0);
}

/* Rewrites the destination (dst = 1) or the source (dst = 0) address and
 * port of a TCP or UDP packet, with checksum updates. */
static __always_inline int rewrite(struct __sk_buff *skb, struct pkt *p, int dst, const __u8 *addr,
				   __be16 port)
{
	__u8 new_addr[16];
	__u8 old_addr[16];
	__be16 old_port = dst ? p->t.dport : p->t.sport;
	__u32 csum_off, port_off = p->l4_off + (dst ? 2 : 0);
	__u64 l4flags;

	__builtin_memcpy(new_addr, addr, 16);
	__builtin_memcpy(old_addr, dst ? p->t.daddr : p->t.saddr, 16);
	if (p->t.protocol == IPPROTO_TCP) {
		csum_off = p->l4_off + 16;
		l4flags = 0;
	} else if (p->t.protocol == IPPROTO_UDP) {
		csum_off = p->l4_off + 6;
		l4flags = BPF_F_MARK_MANGLED_0;
	} else {
		return -1;
	}

	if (p->t.family == CM_FAMILY_V4) {
		__be32 o, n;
		__u32 addr_off = p->l3_off + (dst ? 16 : 12);

		__builtin_memcpy(&o, old_addr, 4);
		__builtin_memcpy(&n, new_addr, 4);
		if (o != n) {
			if (bpf_l4_csum_replace(skb, csum_off, o, n, l4flags | BPF_F_PSEUDO_HDR | 4))
				return -1;
			if (bpf_l3_csum_replace(skb, p->l3_off + 10, o, n, 4))
				return -1;
			if (bpf_skb_store_bytes(skb, addr_off, &n, 4, 0))
				return -1;
		}
	} else {
		__u32 addr_off = p->l3_off + (dst ? 24 : 8);
		__s64 diff = bpf_csum_diff((__be32 *)old_addr, 16, (__be32 *)new_addr, 16, 0);

		if (diff < 0)
			return -1;
		if (bpf_l4_csum_replace(skb, csum_off, 0, diff, l4flags | BPF_F_PSEUDO_HDR))
			return -1;
		if (bpf_skb_store_bytes(skb, addr_off, new_addr, 16, 0))
			return -1;
	}
	if (old_port != port) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, port, l4flags | 2))
			return -1;
		if (bpf_skb_store_bytes(skb, port_off, &port, 2, 0))
			return -1;
	}
	if (dst) {
		__builtin_memcpy(p->t.daddr, new_addr, 16);
		p->t.dport = port;
	} else {
		__builtin_memcpy(p->t.saddr, new_addr, 16);
		p->t.sport = port;
	}
	return 0;
}

/* Whether an ICMP(v6) message is an error that quotes the packet it is
 * about (destination unreachable, fragmentation needed / packet too big,
 * time exceeded, parameter problem). */
static __always_inline int icmp_is_error(const struct pkt *p)
{
	__u8 t = p->l4_flags;

	if (p->t.protocol == IPPROTO_ICMP)
		return t == 3 || t == 11 || t == 12;
	if (p->t.protocol == IPPROTO_ICMPV6_)
		return t >= 1 && t <= 4;
	return 0;
}

/* An ICMP error about a connection the endpoint opened to a service quotes
 * the backend (the translated destination), and comes from the backend when
 * the backend's host answered: the endpoint knows only the frontend, and its
 * kernel would ignore the error (port unreachable, fragmentation needed).
 * Rewrites the quoted destination address and port, and the outer source
 * when it is the backend, to the frontend, with every checksum involved
 * (the inner IPv4 header's, the ICMP one, the outer IPv4 header's; the
 * quoted L4 checksum is left alone, as kernels do not check it). */
static __always_inline void icmp_error_revnat(struct __sk_buff *skb, struct pkt *p)
{
	__u32 inner = p->l4_off + 8, ports_off, csum_off = p->l4_off + 2;
	__u8 old_addr[16] = {}, new_addr[16] = {};
	struct ct_value *ct;
	struct ct_key k = {};
	__be16 ports[2], new_port;
	__u8 proto;

	if (p->t.family == CM_FAMILY_V4) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, inner, &ip, sizeof(ip)) || ip.ihl < 5)
			return;
		proto = ip.protocol;
		__builtin_memcpy(k.saddr, &ip.saddr, 4);
		__builtin_memcpy(k.daddr, &ip.daddr, 4);
		ports_off = inner + ip.ihl * 4;
	} else {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, inner, &ip6, sizeof(ip6)))
			return;
		proto = ip6.nexthdr;
		__builtin_memcpy(k.saddr, &ip6.saddr, 16);
		__builtin_memcpy(k.daddr, &ip6.daddr, 16);
		ports_off = inner + sizeof(ip6);
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return;
	if (bpf_skb_load_bytes(skb, ports_off, ports, sizeof(ports)))
		return;
	/* The quoted packet is what the endpoint sent: its egress entry. */
	k.sport = ports[0];
	k.dport = ports[1];
	k.protocol = proto;
	k.family = p->t.family;
	k.scope = CM_CT_EGRESS;
	ct = bpf_map_lookup_elem(&cm_ct, &k);
	if (!ct || !(ct->flags & CM_CT_F_REVNAT))
		return;
	__builtin_memcpy(old_addr, k.daddr, 16);
	__builtin_memcpy(new_addr, ct->rev_nat_addr, 16);
	new_port = ct->rev_nat_port;

	if (p->t.family == CM_FAMILY_V4) {
		__be32 o, n;
		__u16 old_csum, new_csum;

		__builtin_memcpy(&o, old_addr, 4);
		__builtin_memcpy(&n, new_addr, 4);
		if (bpf_skb_load_bytes(skb, inner + 10, &old_csum, 2))
			return;
		if (bpf_l3_csum_replace(skb, inner + 10, o, n, 4))
			return;
		if (bpf_skb_store_bytes(skb, inner + 16, &n, 4, 0))
			return;
		if (bpf_skb_load_bytes(skb, inner + 10, &new_csum, 2))
			return;
		/* The ICMP checksum covers the quoted bytes (no pseudo header). */
		bpf_l4_csum_replace(skb, csum_off, o, n, 4);
		bpf_l4_csum_replace(skb, csum_off, old_csum, new_csum, 2);
		bpf_l4_csum_replace(skb, csum_off, ports[1], new_port, 2);
		bpf_skb_store_bytes(skb, ports_off + 2, &new_port, 2, 0);
		if (addr_eq(p->t.saddr, old_addr)) {
			bpf_l3_csum_replace(skb, p->l3_off + 10, o, n, 4);
			bpf_skb_store_bytes(skb, p->l3_off + 12, &n, 4, 0);
			__builtin_memcpy(p->t.saddr, new_addr, 16);
		}
	} else {
		__s64 diff = bpf_csum_diff((__be32 *)old_addr, 16, (__be32 *)new_addr, 16, 0);

		if (diff < 0)
			return;
		if (bpf_skb_store_bytes(skb, inner + 24, new_addr, 16, 0))
			return;
		/* ICMPv6 covers the quoted bytes and a pseudo header of the outer
		 * addresses. */
		bpf_l4_csum_replace(skb, csum_off, 0, diff, 0);
		bpf_l4_csum_replace(skb, csum_off, ports[1], new_port, 2);
		bpf_skb_store_bytes(skb, ports_off + 2, &new_port, 2, 0);
		if (addr_eq(p->t.saddr, old_addr)) {
			bpf_l4_csum_replace(skb, csum_off, 0, diff, BPF_F_PSEUDO_HDR);
			bpf_skb_store_bytes(skb, p->l3_off + 8, new_addr, 16, 0);
			__builtin_memcpy(p->t.saddr, new_addr, 16);
		}
	}
}

/* FNV-1a over the 5-tuple: picks a service slot for a new connection. */
static __always_inline __u32 tuple_hash(const struct ct_key *t)
{
	const __u8 *b = (const __u8 *)t;
	__u32 h = 2166136261u;

#pragma unroll
	for (int i = 0; i < 37; i++) {
		h ^= b[i];
		h *= 16777619u;
	}
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	return h;
}

/* A connection that the endpoint's egress policy sends through the agent's
 * proxy (DNS rules): its destination becomes the proxy on this node. The
 * egress entry of the tuple to the proxy reverse-translates the proxy's
 * replies to what the endpoint dialled (`front` when a service was
 * translated, else the destination); the proxy entry of the same tuple
 * tells the proxy where the endpoint was going. Every packet of the
 * connection comes here (its original tuple has no egress entry). */
static __always_inline int to_proxy(struct __sk_buff *skb, struct pkt *p,
				    const struct endpoint_info *ep, __u32 dst_id,
				    const struct hit *hit, const __u8 *front, __be16 front_port)
{
	/* what the endpoint dialled, and where it was going */
	const __u8 *reply_addr = front ? front : p->t.daddr;
	__be16 reply_port = front ? front_port : p->t.dport;
	struct ct_value *ct;
	struct ct_key k;

	if (p->t.protocol != IPPROTO_TCP && p->t.protocol != IPPROTO_UDP) {
		p->t.scope = 0;
		emit(p, skb->ifindex, CM_VERDICT_DROPPED, CM_DROP_PROXY, ep->sec_identity, dst_id,
		     CM_FLOW_FROM_ENDPOINT, CM_REPLY_NO, hit);
		return TC_ACT_SHOT;
	}
	k = p->t;
	proxy_addr(p->t.family, k.daddr);
	k.dport = hit->proxy_port;
	k.scope = CM_CT_EGRESS;
	ct = bpf_map_lookup_elem(&cm_ct, &k);
	if (ct && (ct->flags & CM_CT_F_PROXY) && ct->rev_nat_port == reply_port &&
	    addr_eq(ct->rev_nat_addr, reply_addr)) {
		ct_touch(ct, p, 0);
	} else {
		if (ct_create(&k, ep->sec_identity, 0, reply_addr, reply_port))
			goto ct_full;
		ct = bpf_map_lookup_elem(&cm_ct, &k);
		if (ct)
			ct->flags |= CM_CT_F_PROXY;
		p->t.scope = 0;
		emit(p, skb->ifindex, CM_VERDICT_FORWARDED, CM_DROP_NONE, ep->sec_identity, dst_id,
		     CM_FLOW_FROM_ENDPOINT, CM_REPLY_NO, hit);
	}
	k.scope = CM_CT_PROXY;
	ct = bpf_map_lookup_elem(&cm_ct, &k);
	if (ct && ct->rev_nat_port == p->t.dport && addr_eq(ct->rev_nat_addr, p->t.daddr))
		ct_touch(ct, p, 0);
	else if (ct_create(&k, ep->sec_identity, 0, p->t.daddr, p->t.dport))
		goto ct_full;
	p->t.scope = 0;
	if (rewrite(skb, p, 1, k.daddr, k.dport)) {
		emit(p, skb->ifindex, CM_VERDICT_DROPPED, CM_DROP_NAT, ep->sec_identity, dst_id,
		     CM_FLOW_FROM_ENDPOINT, CM_REPLY_NO, 0);
		return TC_ACT_SHOT;
	}
	return TC_ACT_OK;

ct_full:
	p->t.scope = 0;
	emit(p, skb->ifindex, CM_VERDICT_DROPPED, CM_DROP_CT_FULL, ep->sec_identity, dst_id,
	     CM_FLOW_FROM_ENDPOINT, CM_REPLY_NO, 0);
	return TC_ACT_SHOT;
}

/* Traffic delivered to the endpoint (TC egress of the host-side veth):
 * replies of the endpoint's own connections pass (with reverse NAT of
 * service connections); established inbound connections pass; a new
 * inbound connection is checked against the endpoint's ingress policy
 * with the source identity from the ipcache (unknown source = world). */
SEC("classifier")
int cm_to_endpoint(struct __sk_buff *skb)
{
	struct endpoint_key ek = { .ifindex = skb->ifindex };
	struct endpoint_info *ep;
	struct ct_value *ct;
	struct ct_key k;
	struct pkt p = {};
	struct hit hit = {};
	__u32 src_id;
	__u8 reason = CM_DROP_NONE;
	int ret;

	ep = bpf_map_lookup_elem(&cm_endpoints, &ek);
	if (!ep)
		return TC_ACT_OK;
	ret = parse(skb, &p);
	if (ret > 0)
		return TC_ACT_OK;
	if (ret < 0) {
		emit(&p, skb->ifindex, CM_VERDICT_DROPPED, CM_DROP_MALFORMED, 0, ep->sec_identity,
		     CM_FLOW_TO_ENDPOINT, CM_REPLY_UNKNOWN, 0);
		return TC_ACT_SHOT;
	}
	if (p.control) {
		if (icmp_is_error(&p))
			icmp_error_revnat(skb, &p);
		return TC_ACT_OK;
	}

	/* 1. a reply to a connection the endpoint opened */
	ct_reverse(&p.t, &k, CM_CT_EGRESS);
	ct = bpf_map_lookup_elem(&cm_ct, &k);
	if (ct) {
		ct_touch(ct, &p, 1);
		if (ct->flags & CM_CT_F_REVNAT) {
			__u8 addr[16], self[16];
			__be16 port = ct->rev_nat_port;
			int hairpin = ct->flags & CM_CT_F_HAIRPIN;

			/* a hairpin reply comes from the endpoint itself */
			__builtin_memcpy(self, p.t.saddr, 16);
			__builtin_memcpy(addr, ct->rev_nat_addr, 16);
			if (rewrite(skb, &p, 0, addr, port) ||
			    (hairpin && rewrite(skb, &p, 1, self, p.t.dport))) {
				emit(&p, skb->ifindex, CM_VERDICT_DROPPED, CM_DROP_NAT, 0,
				     ep->sec_identity, CM_FLOW_TO_ENDPOINT, CM_REPLY_YES, 0);
				return TC_ACT_SHOT;
			}
		}
		return TC_ACT_OK;
	}

	/* 2. an inbound connection that policy already allowed */
	p.t.scope = CM_CT_INGRESS;
	ct = bpf_map_lookup_elem(&cm_ct, &p.t);
	if (ct) {
		ct_touch(ct, &p, 0);
		return TC_ACT_OK;
	}

	/* 3. a new inbound connection (from the endpoint itself through a
	 * service: its own identity, no policy) */
	{
		__u8 hp[16];

		hairpin_addr(p.t.family, hp);
		if (addr_eq(p.t.saddr, hp)) {
			src_id = ep->sec_identity;
			if (ct_create(&p.t, src_id, 0, 0, 0))
				return TC_ACT_SHOT;
			return TC_ACT_OK;
		}
	}
	src_id = lookup_identity(p.t.saddr, p.t.family);
	if ((ep->flags & CM_EP_POLICY_INGRESS) &&
	    !policy_check(ep->policy_id, CM_DIR_INGRESS, src_id, p.t.protocol, p.policy_port,
			  &reason, &hit)) {
		emit(&p, skb->ifindex, CM_VERDICT_DROPPED, reason, src_id, ep->sec_identity,
		     CM_FLOW_TO_ENDPOINT, CM_REPLY_NO, &hit);
		return TC_ACT_SHOT;
	}
	if (ct_create(&p.t, src_id, 0, 0, 0)) {
		emit(&p, skb->ifindex, CM_VERDICT_DROPPED, CM_DROP_CT_FULL, src_id,
		     ep->sec_identity, CM_FLOW_TO_ENDPOINT, CM_REPLY_NO, 0);
		return TC_ACT_SHOT;
	}
	emit(&p, skb->ifindex, CM_VERDICT_FORWARDED, CM_DROP_NONE, src_id, ep->sec_identity,
	     CM_FLOW_TO_ENDPOINT, CM_REPLY_NO, &hit);
	return TC_ACT_OK;
}

/* Traffic sent by the endpoint (TC ingress of the host-side veth): replies
 * of accepted connections pass; a connection to a service frontend is
 * translated to a backend (chosen once per connection, sticky through the
 * service conntrack entry); new connections get an egress conntrack entry
 * so that their replies pass the peer's and our own ingress policy. */
SEC("classifier")
int cm_from_endpoint(struct __sk_buff *skb)
{
	struct endpoint_key ek = { .ifindex = skb->ifindex };
	struct endpoint_info *ep;
	struct ct_value *ct;
	struct ct_key k;
	struct pkt p = {};
	struct service_key sk = {};
	struct service_value *svc;
	struct hit hit = {};
	__u8 front_addr[16];
	__be16 front_port = 0;
	__u8 reason = CM_DROP_NONE;
	int translated = 0, hairpin = 0;
	int ret;

	ep = bpf_map_lookup_elem(&cm_endpoints, &ek);
	if (!ep)
		return TC_ACT_OK;
	ret = parse(skb, &p);
	if (ret > 0)
		return TC_ACT_OK;
	if (ret < 0) {
		emit(&p, skb->ifindex, CM_VERDICT_DROPPED, CM_DROP_MALFORMED, ep->sec_identity, 0,
		     CM_FLOW_FROM_ENDPOINT, CM_REPLY_UNKNOWN, 0);
		return TC_ACT_SHOT;
	}
	if (p.control)
		return TC_ACT_OK;

	/* 1. a reply of a connection the endpoint accepted; to itself through
	 * a service (hairpin), back into the endpoint, where the reverse
	 * translation happens */
	ct_reverse(&p.t, &k, CM_CT_INGRESS);
	ct = bpf_map_lookup_elem(&cm_ct, &k);
	if (ct) {
		__u8 hp[16];

		ct_touch(ct, &p, 1);
		hairpin_addr(p.t.family, hp);
		if (addr_eq(p.t.daddr, hp)) {
			__u8 macs[12], swapped[12];

			if (bpf_skb_load_bytes(skb, 0, macs, 12))
				return TC_ACT_SHOT;
			__builtin_memcpy(swapped, macs + 6, 6);
			__builtin_memcpy(swapped + 6, macs, 6);
			if (bpf_skb_store_bytes(skb, 0, swapped, 12, 0))
				return TC_ACT_SHOT;
			return bpf_redirect(skb->ifindex, 0);
		}
		return TC_ACT_OK;
	}

	/* 2. service load balancing */
	if (p.has_ports) {
		__builtin_memcpy(sk.addr, p.t.daddr, 16);
		sk.dport = p.t.dport;
		sk.protocol = p.t.protocol;
		sk.family = p.t.family;
		svc = bpf_map_lookup_elem(&cm_services, &sk);
		if (svc) {
			struct backend_value *be = 0;
			struct ct_value *sct;
			__u32 backend_id = 0;
			__u8 baddr[16];
			__be16 bport;

			p.t.scope = CM_CT_SERVICE;
			sct = bpf_map_lookup_elem(&cm_ct, &p.t);
			if (sct) {
				ct_touch(sct, &p, tcp_answered(&p));
				backend_id = sct->backend_id;
				be = bpf_map_lookup_elem(&cm_backends, &backend_id);
			}
			if (!be) {
				struct service_value *slot;
				__u16 count = svc->count;

				if (count == 0)
					goto no_backend;
				sk.slot = (tuple_hash(&p.t) % count) + 1;
				slot = bpf_map_lookup_elem(&cm_services, &sk);
				if (!slot)
					goto no_backend;
				backend_id = slot->backend_id;
				be = bpf_map_lookup_elem(&cm_backends, &backend_id);
				if (!be || be->family != p.t.family)
					goto no_backend;
				if (ct_create(&p.t, ep->sec_identity, backend_id, 0, 0)) {
					p.t.scope = 0;
					emit(&p, skb->ifindex, CM_VERDICT_DROPPED, CM_DROP_CT_FULL,
					     ep->sec_identity, 0, CM_FLOW_FROM_ENDPOINT, CM_REPLY_NO, 0);
					return TC_ACT_SHOT;
				}
				translated = 1;
			} else if (be->family != p.t.family) {
				goto no_backend;
			}
			p.t.scope = 0;
			__builtin_memcpy(baddr, be->addr, 16);
			bport = be->port;
			__builtin_memcpy(front_addr, p.t.daddr, 16);
			front_port = p.t.dport;
			if (rewrite(skb, &p, 1, baddr, bport)) {
				emit(&p, skb->ifindex, CM_VERDICT_DROPPED, CM_DROP_NAT,
				     ep->sec_identity, 0, CM_FLOW_FROM_ENDPOINT, CM_REPLY_NO, 0);
				return TC_ACT_SHOT;
			}
			/* to itself: a source its kernel accepts */
			if (addr_eq(p.t.saddr, p.t.daddr)) {
				__u8 hp[16];

				hairpin_addr(p.t.family, hp);
				if (rewrite(skb, &p, 0, hp, p.t.sport)) {
					emit(&p, skb->ifindex, CM_VERDICT_DROPPED, CM_DROP_NAT,
					     ep->sec_identity, 0, CM_FLOW_FROM_ENDPOINT,
					     CM_REPLY_NO, 0);
					return TC_ACT_SHOT;
				}
				hairpin = 1;
			}
			if (translated)
				emit(&p, skb->ifindex, CM_VERDICT_TRANSLATED, CM_DROP_NONE,
				     ep->sec_identity, lookup_identity(p.t.daddr, p.t.family),
				     CM_FLOW_FROM_ENDPOINT, CM_REPLY_NO, 0);
			translated = 1;
		}
	}

	/* 3. the endpoint's own connection (after translation) */
	p.t.scope = CM_CT_EGRESS;
	ct = bpf_map_lookup_elem(&cm_ct, &p.t);
	if (ct) {
		ct_touch(ct, &p, 0);
		/* The entry may be left by an earlier connection on the same
		 * (translated) tuple: the client reused its port for another
		 * frontend, or to reach the backend directly. The replies must be
		 * rewritten to what this connection dialled, or to nothing. */
		if (translated && (!(ct->flags & CM_CT_F_REVNAT) || ct->rev_nat_port != front_port ||
				   !addr_eq(ct->rev_nat_addr, front_addr))) {
			ct_create(&p.t, ep->sec_identity, 0, front_addr, front_port);
			if (hairpin)
				mark_hairpin(&p.t);
		}
		else if (!translated && (ct->flags & CM_CT_F_REVNAT))
			ct_create(&p.t, ep->sec_identity, 0, 0, 0);
		return TC_ACT_OK;
	}
	/* 4. a new outbound connection: the endpoint's egress policy, for the
	 * destination after translation (unknown destination = world) */
	if ((ep->flags & CM_EP_POLICY_EGRESS) && !hairpin) {
		__u32 dst_id = lookup_identity(p.t.daddr, p.t.family);

		if (translated)
			p.policy_port = p.t.dport;
		if (!policy_check(ep->policy_id, CM_DIR_EGRESS, dst_id, p.t.protocol,
				  p.policy_port, &reason, &hit)) {
			p.t.scope = 0;
			emit(&p, skb->ifindex, CM_VERDICT_DROPPED, reason, ep->sec_identity, dst_id,
			     CM_FLOW_FROM_ENDPOINT, CM_REPLY_NO, &hit);
			return TC_ACT_SHOT;
		}
		if (hit.proxy_port)
			return to_proxy(skb, &p, ep, dst_id, &hit, translated ? front_addr : 0,
					front_port);
		if (!translated) {
			p.t.scope = 0;
			emit(&p, skb->ifindex, CM_VERDICT_FORWARDED, CM_DROP_NONE, ep->sec_identity,
			     dst_id, CM_FLOW_FROM_ENDPOINT, CM_REPLY_NO, &hit);
			p.t.scope = CM_CT_EGRESS;
		}
	}
	if (ct_create(&p.t, ep->sec_identity, 0, translated ? front_addr : 0, front_port)) {
		p.t.scope = 0;
		emit(&p, skb->ifindex, CM_VERDICT_DROPPED, CM_DROP_CT_FULL, ep->sec_identity, 0,
		     CM_FLOW_FROM_ENDPOINT, CM_REPLY_NO, 0);
		return TC_ACT_SHOT;
	}
	if (hairpin)
		mark_hairpin(&p.t);
	return TC_ACT_OK;

no_backend:
	p.t.scope = 0;
	emit(&p, skb->ifindex, CM_VERDICT_DROPPED, CM_DROP_NO_BACKEND, ep->sec_identity, 0,
	     CM_FLOW_FROM_ENDPOINT, CM_REPLY_NO, 0);
	return TC_ACT_SHOT;
}
