//! DNS-aware policy (`toFQDNs`) with real parts: an agent with eBPF in a
//! node namespace, a pod added through the CNI binary, and a real DNS
//! server (Debian's dnsmasq) on a host outside the mesh that serves names
//! whose addresses are servers on that host.
//!
//! The pod's lookups go through the agent's DNS proxy (its policy has DNS
//! rules): an allowed name resolves and connects; a lookup no DNS rule
//! allows gets REFUSED; a name the lookups allow but no `toFQDNs` selects
//! resolves and stays unreachable even when dialled directly; wildcards;
//! TCP DNS; a name whose address changes is followed after its TTL; an
//! agent restart keeps what was learned.

mod support;

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use agent::FqdnView;
use anyhow::Result;
use etcd_harness::TestEtcd;
use futures::StreamExt as _;
use hickory_proto::op::ResponseCode;
use hubble::client::Address;
use hubble_api::{
    flow::{Dns, Flow, FlowFilter, Verdict, layer7},
    observer::{
        GetFlowsRequest, get_flows_response::ResponseTypes, observer_client::ObserverClient,
    },
};
use kvstore::{Client, ClientConfig, StoreValue, keys, values::PolicyDocument};
use support::{
    Fabric, Node, Pod, denied,
    dns::{
        API, API_MOVED, Answer, DNS, DNSMASQ, ExternalHost, NODE_IP, OTHER, POD_CIDR, POLICY, PORT,
        WILD, dns_node, lookup_from,
    },
    request, wait_for,
};

const MANY: usize = 2_000;

/// The DNS flows in the agent's Hubble server, with their records.
async fn dns_flows(node: &Node) -> Result<Vec<(Flow, Dns)>> {
    let socket = node.dir.path().join("agent.hubble.sock");
    let channel = hubble::client::connect(&Address::Unix(socket), None).await?;
    let mut stream = ObserverClient::new(channel)
        .get_flows(GetFlowsRequest {
            number: 1000,
            whitelist: vec![FlowFilter {
                protocol: vec!["dns".into()],
                ..Default::default()
            }],
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        if let Some(ResponseTypes::Flow(f)) = item?.response_types {
            let Some(layer7::Record::Dns(d)) = f.l7.as_ref().and_then(|l| l.record.clone()) else {
                anyhow::bail!("a flow the dns filter passed has no DNS record: {f:?}");
            };
            out.push((f, d));
        }
    }
    Ok(out)
}

/// Whether `message` sent to the DNS server from `pod` gets no answer
/// within a second (the proxy dropped it).
fn no_answer(pod: &Pod, message: &[u8]) -> bool {
    let socket = pod
        .ns
        .enter(|| std::net::UdpSocket::bind("0.0.0.0:0"))
        .expect("enter the pod")
        .expect("a socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    socket
        .send_to(message, SocketAddr::from((DNS, 53)))
        .unwrap();
    let mut buf = [0u8; 512];
    socket.recv_from(&mut buf).is_err()
}

/// A query for a name of 5 labels of 63 octets (past 253 octets).
fn long_name_query() -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for _ in 0..5 {
        q.push(63);
        q.extend(std::iter::repeat_n(b'a', 63));
    }
    q.extend([0, 0, 1, 0, 1]);
    q
}

fn lookup(pod: &Pod, name: &str, tcp: bool) -> Result<Answer> {
    lookup_from(&pod.ns, name, tcp)
}

fn reaches(pod: &Pod, ip: Ipv4Addr) -> bool {
    request(pod, SocketAddr::from((ip, PORT)), Duration::from_secs(2))
        .is_ok_and(|(line, _)| line == ip.to_string())
}

fn blocked(pod: &Pod, ip: Ipv4Addr) -> bool {
    denied(pod, SocketAddr::from((ip, PORT)))
}

fn fqdn_entries(node: &Node) -> Vec<FqdnView> {
    node.api().get("/v1/fqdn").expect("debug fqdn answers")
}

#[test]
fn to_fqdns_through_the_dns_proxy() -> Result<()> {
    if !netns::root_or_skip("to_fqdns_through_the_dns_proxy") {
        return Ok(());
    }
    if !Path::new(DNSMASQ).exists() {
        assert!(
            !netns::in_ci(),
            "dnsmasq is missing (scripts/install-deps.sh installs dnsmasq-base)"
        );
        eprintln!("skipping to_fqdns_through_the_dns_proxy: dnsmasq is not installed");
        return Ok(());
    }
    let rt = tokio::runtime::Runtime::new()?;
    let etcd = rt.block_on(TestEtcd::start())?;
    let kv = rt.block_on(Client::connect(&ClientConfig::new([etcd.endpoint()])))?;

    let mut fabric = Fabric::new()?;
    let mut node = dns_node(etcd.endpoint(), &mut fabric)?;
    // A name with more addresses than anything keeps.
    let many: String = (0..MANY)
        .map(|k| format!("10.98.{}.{} many.wild.example.test\n", k / 250, k % 250 + 1))
        .collect();
    let ext = ExternalHost::start(&mut fabric, POD_CIDR, NODE_IP, &many)?;
    node.start_agent()?;
    let client = node.add_pod("client", &[("app", "client")])?;

    // Controls without policy: the pod resolves directly and reaches every
    // server.
    let direct = lookup(&client, "api.example.test", false)?;
    assert_eq!(direct.addresses, vec![API], "{direct:?}");
    for ip in [API, OTHER, WILD, API_MOVED] {
        assert!(reaches(&client, ip), "control: the pod reaches {ip}");
    }

    let doc = PolicyDocument::parse(POLICY)?;
    rt.block_on(kv.put(&keys::policies().key(&doc.key()), doc.encode()))?;
    wait_for("the policy to deny what no rule allows", || {
        blocked(&client, OTHER)
    });
    // Nothing is learned yet: toFQDNs selects nothing.
    assert!(blocked(&client, API), "api before any lookup");

    // An allowed lookup of a selected name: the answer comes from the
    // server the pod asked, and the address is allowed at once.
    let a = lookup(&client, "api.example.test", false)?;
    assert_eq!(a.rcode, ResponseCode::NoError);
    assert_eq!(a.addresses, vec![API]);
    assert_eq!(
        a.from,
        SocketAddr::from((DNS, 53)),
        "the proxy is invisible"
    );
    assert!(reaches(&client, API), "api after its lookup");

    // Allowed lookup, name no toFQDNs selects: resolves, stays unreachable.
    let o = lookup(&client, "other.example.test", false)?;
    assert_eq!(o.addresses, vec![OTHER]);
    assert!(blocked(&client, OTHER), "other is not selected by toFQDNs");

    // A lookup no DNS rule allows: REFUSED by the proxy, and its address
    // stays unreachable when dialled directly.
    let s = lookup(&client, "secret.other.test", false)?;
    assert_eq!(s.rcode, ResponseCode::Refused, "{s:?}");
    assert!(s.addresses.is_empty());
    assert!(blocked(&client, OTHER));

    // A wildcard pattern, over TCP DNS.
    assert!(blocked(&client, WILD), "wild before its lookup");
    let w = lookup(&client, "x.wild.example.test", true)?;
    assert_eq!(w.addresses, vec![WILD], "{w:?}");
    assert!(reaches(&client, WILD), "wild after its TCP lookup");

    // `debug fqdn` shows what was learned, with the selectors using it.
    let entries = fqdn_entries(&node);
    let wild = entries
        .iter()
        .find(|e| e.name == "x.wild.example.test.")
        .expect("the wildcard name is listed");
    assert_eq!(wild.ip, WILD.to_string());
    assert_eq!(wild.selectors, vec!["*.wild.example.test.".to_string()]);
    assert!(wild.identity.is_some());
    assert!(
        !entries.iter().any(|e| e.name == "other.example.test."),
        "a name no toFQDNs selects is not learned: {entries:?}"
    );

    // Bad input: garbage, and a name past 253 octets, are dropped (no
    // answer) and the proxy goes on; an answer with 2,000 addresses is
    // released whole but at most 50 are kept for the name.
    assert!(no_answer(&client, b"not a DNS message at all"));
    assert!(no_answer(&client, &long_name_query()));
    let m = lookup(&client, "many.wild.example.test", true)?;
    assert_eq!(m.addresses.len(), MANY, "the answer is released whole");
    let kept = fqdn_entries(&node)
        .iter()
        .filter(|e| e.name == "many.wild.example.test.")
        .count();
    assert_eq!(kept, 50, "--tofqdns-endpoint-max-ip-per-hostname");
    assert_eq!(
        lookup(&client, "x.wild.example.test", false)?.addresses,
        vec![WILD],
        "the proxy still answers"
    );

    // The lookups are L7 flows in the agent's Hubble server: the refused
    // one dropped with its name and REFUSED, the allowed ones answered
    // with their addresses.
    let flows = rt.block_on(dns_flows(&node))?;
    let refused = flows
        .iter()
        .find(|(_, d)| d.query == "secret.other.test.")
        .expect("a flow of the refused lookup");
    assert_eq!(refused.0.verdict, Verdict::Dropped as i32);
    assert_eq!(refused.1.rcode, 5);
    let answered = flows
        .iter()
        .find(|(f, d)| d.query == "api.example.test." && f.is_reply == Some(true))
        .expect("a flow of api's answer");
    assert_eq!(answered.0.verdict, Verdict::Forwarded as i32);
    assert_eq!(answered.1.ips, vec![API.to_string()]);
    assert_eq!(
        answered.0.destination.as_ref().map(|d| d.pod_name.as_str()),
        Some("client")
    );

    // The name moves: after the TTL the old address goes and the new one
    // comes with the next lookup.
    ext.move_api(API_MOVED)?;
    wait_for("api.example.test to resolve to its new address", || {
        lookup(&client, "api.example.test", false).is_ok_and(|a| a.addresses == vec![API_MOVED])
    });
    assert!(
        reaches(&client, API_MOVED),
        "the new address after its lookup"
    );
    wait_for("the old address to expire after its TTL", || {
        blocked(&client, API)
    });

    // An agent restart keeps the learned names (x.wild has a long TTL): the
    // address stays allowed without a new lookup, and lookups still work.
    node.kill_agent();
    node.start_agent()?;
    assert!(
        fqdn_entries(&node)
            .iter()
            .any(|e| e.name == "x.wild.example.test." && e.identity.is_some()),
        "restored after the restart"
    );
    assert!(
        reaches(&client, WILD),
        "wild after the restart, no new lookup"
    );
    let again = lookup(&client, "x.wild.example.test", false)?;
    assert_eq!(again.addresses, vec![WILD]);
    let refused = lookup(&client, "secret.other.test", false)?;
    assert_eq!(refused.rcode, ResponseCode::Refused);

    drop(client);
    drop(ext);
    Ok(())
}
