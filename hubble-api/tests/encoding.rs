//! Spot checks of the generated code that need no reference protos: a few
//! field numbers a Hubble client depends on, seen in the encoded bytes.

use hubble_api::{flow, observer};
use prost::Message;

#[test]
fn get_flows_response_carries_node_name_as_field_1000() {
    let response = observer::GetFlowsResponse {
        node_name: "c1/n1".to_owned(),
        ..Default::default()
    };
    // Tag = 1000 << 3 | 2 (length-delimited), as a varint: 0xc2 0x3e.
    assert_eq!(response.encode_to_vec(), b"\xc2\x3e\x05c1/n1");
}

#[test]
fn dropped_policy_denied_flow_round_trips() {
    let flow = flow::Flow {
        verdict: flow::Verdict::Dropped.into(),
        drop_reason_desc: flow::DropReason::PolicyDenied.into(),
        is_reply: Some(false),
        l4: Some(flow::Layer4 {
            protocol: Some(flow::layer4::Protocol::Tcp(flow::Tcp {
                source_port: 40000,
                destination_port: 80,
                flags: Some(flow::TcpFlags {
                    syn: true,
                    ..Default::default()
                }),
            })),
        }),
        ..Default::default()
    };
    let bytes = flow.encode_to_vec();
    // verdict = 2 (DROPPED) comes first: tag 2 << 3 | 0, value 2.
    assert_eq!(&bytes[..2], b"\x10\x02");
    assert_eq!(flow::Flow::decode(bytes.as_slice()).unwrap(), flow);
}
