//! Checks every shared `#[repr(C)]` type against the BTF of the compiled
//! object: same size, same field names at the same offsets.

use std::{collections::BTreeMap, mem::offset_of, process::Command};

use crate::{
    backend::{BackendKey, BackendValue},
    conntrack::{CtKey, CtValue},
    datapath::datapath_object,
    endpoint::{EndpointInfo, EndpointKey},
    flow_event::FlowEventRecord,
    ipcache::{IpCacheKey, IpCacheValue},
    policy::{PolicyKey, PolicyValue},
    service::{ServiceKey, ServiceValue},
};

/// name -> (size, [(field, byte offset)]) from `bpftool -j btf dump file`.
type BtfStructs = BTreeMap<String, (usize, Vec<(String, usize)>)>;

fn btf_structs() -> BtfStructs {
    let path = std::env::temp_dir().join(format!("cm-datapath-{}.o", std::process::id()));
    std::fs::write(&path, datapath_object()).expect("write object");
    let out = Command::new("bpftool")
        .args(["-j", "btf", "dump", "file"])
        .arg(&path)
        .output();
    let _ = std::fs::remove_file(&path);
    let out = out.expect("bpftool is installed (make test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    let mut structs = BtfStructs::new();
    for t in json["types"].as_array().expect("types") {
        if t["kind"] != "STRUCT" {
            continue;
        }
        let members = t["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| {
                let bits = m["bits_offset"].as_u64().expect("offset") as usize;
                (m["name"].as_str().expect("name").to_owned(), bits / 8)
            })
            .collect();
        let size = t["size"].as_u64().expect("size") as usize;
        structs.insert(
            t["name"].as_str().unwrap_or_default().to_owned(),
            (size, members),
        );
    }
    structs
}

macro_rules! check {
    ($btf:expr, $c_name:literal, $ty:ty, [$($field:ident),* $(,)?]) => {{
        let (size, members) = $btf
            .get($c_name)
            .unwrap_or_else(|| panic!("struct {} not in the object's BTF", $c_name));
        assert_eq!(*size, size_of::<$ty>(), "size of {}", $c_name);
        let rust: Vec<(String, usize)> =
            vec![$((stringify!($field).to_owned(), offset_of!($ty, $field))),*];
        assert_eq!(members, &rust, "fields of {}", $c_name);
    }};
}

#[test]
fn rust_records_match_the_object_btf() {
    let btf = btf_structs();
    check!(
        btf,
        "ipcache_key",
        IpCacheKey,
        [prefixlen, cluster_id, pad, family, addr]
    );
    check!(
        btf,
        "ipcache_value",
        IpCacheValue,
        [
            sec_identity,
            tunnel_endpoint,
            tunnel_family,
            key,
            flags,
            pad
        ]
    );
    check!(btf, "endpoint_key", EndpointKey, [ifindex]);
    check!(
        btf,
        "endpoint_info",
        EndpointInfo,
        [endpoint_id, sec_identity, flags, policy_id]
    );
    check!(
        btf,
        "policy_key",
        PolicyKey,
        [
            prefixlen,
            policy_id,
            sec_identity,
            direction,
            protocol,
            dport
        ]
    );
    check!(
        btf,
        "policy_value",
        PolicyValue,
        [action, match_type, proxy_port, cookie]
    );
    check!(
        btf,
        "ct_key",
        CtKey,
        [saddr, daddr, sport, dport, protocol, family, scope, pad]
    );
    check!(
        btf,
        "ct_value",
        CtValue,
        [
            created_ns,
            last_seen_ns,
            rev_nat_addr,
            rev_nat_port,
            flags,
            backend_id,
            src_identity,
            pad
        ]
    );
    check!(
        btf,
        "service_key",
        ServiceKey,
        [addr, dport, slot, protocol, family, pad]
    );
    check!(
        btf,
        "service_value",
        ServiceValue,
        [backend_id, count, flags]
    );
    check!(btf, "backend_key", BackendKey, [backend_id]);
    check!(
        btf,
        "backend_value",
        BackendValue,
        [addr, port, protocol, family, cluster_id, flags]
    );
    check!(
        btf,
        "flow_event",
        FlowEventRecord,
        [
            timestamp_ns,
            saddr,
            daddr,
            sport,
            dport,
            protocol,
            family,
            verdict,
            drop_reason,
            src_identity,
            dst_identity,
            ifindex,
            direction,
            reply,
            l4_flags,
            icmp_code,
            policy_cookie,
            match_type,
            policy_dir,
            pad
        ]
    );
}
