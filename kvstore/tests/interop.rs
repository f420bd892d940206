//! Every interop vector (real keys and values as Cilium writes them) decodes
//! into our types, and our encoding decodes back to the same JSON.

use std::path::Path;

use kvstore::{
    ClusterName, IdentityRange, Labels, MaxConnectedClusters, NumericIdentity, StoreValue, keys,
    values::{ClusterConfig, ClusterService, IdentityEntry, IpIdentityPair, Node, Timestamp},
};
use serde_json::Value;

fn vectors(file: &str) -> Vec<(String, Value)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(file);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let list: Vec<Value> = serde_json::from_str(&text).unwrap();
    list.into_iter()
        .map(|v| (v["key"].as_str().unwrap().to_string(), v["value"].clone()))
        .collect()
}

/// The bytes Cilium stores: JSON text for objects, the string itself otherwise.
fn stored_bytes(value: &Value) -> Vec<u8> {
    match value {
        Value::String(s) => s.as_bytes().to_vec(),
        other => serde_json::to_vec(other).unwrap(),
    }
}

/// Go omits a nil `Mask` in some versions and writes `null` in others; both
/// mean "host entry". Everything else must match exactly.
fn without_nulls(mut v: Value) -> Value {
    if let Value::Object(map) = &mut v {
        map.retain(|_, v| !v.is_null());
    }
    v
}

fn round_trip<V: StoreValue>(prefix: &kvstore::KeyPrefix, key: &str, value: &Value) -> V {
    let suffix = prefix
        .strip(key)
        .unwrap_or_else(|| panic!("{key} is not under {prefix}"));
    let decoded =
        V::decode(suffix, &stored_bytes(value)).unwrap_or_else(|e| panic!("decode {key}: {e}"));
    assert_eq!(decoded.key(), suffix, "the value names its own key");
    decoded
}

#[test]
fn ipcache_vectors() {
    let prefix = keys::ipcache();
    let all = vectors("ipcache.json");
    assert_eq!(all.len(), 4);
    for (key, value) in &all {
        let pair: IpIdentityPair = round_trip(&prefix, key, value);
        let again: Value = serde_json::from_slice(&pair.encode()).unwrap();
        assert_eq!(
            without_nulls(again),
            without_nulls(value.clone()),
            "{key} re-encodes to the same JSON"
        );
    }
    let first: IpIdentityPair = round_trip(&prefix, &all[0].0, &all[0].1);
    assert_eq!(first.id, NumericIdentity::new(199472));
    assert_eq!(first.host_ip, Some("172.18.0.3".parse().unwrap()));
    assert_eq!(first.k8s_pod_name, "cep-001");
    let second: IpIdentityPair = round_trip(&prefix, &all[1].0, &all[1].1);
    assert_eq!(second.key, 5);
    assert_eq!(second.named_ports.len(), 2);
    assert_eq!(second.named_ports[1].protocol, "UDP");
    let v6: IpIdentityPair = round_trip(&prefix, &all[2].0, &all[2].1);
    assert!(v6.ip.is_ipv6());
    assert_eq!(v6.prefix().prefix_len(), 128);
}

#[test]
fn node_vectors() {
    let prefix = keys::nodes();
    for (key, value) in vectors("nodes.json") {
        let node: Node = round_trip(&prefix, &key, &value);
        let again: Value = serde_json::from_slice(&node.encode()).unwrap();
        assert_eq!(again, value, "{key} re-encodes to exactly the same JSON");
        assert_eq!(node.cluster, "cluster3");
        assert_eq!(node.cluster_id, 3);
        assert_eq!(node.pod_cidrs().len(), 2);
        assert!(node.internal_ip().is_some());
    }
    let (key, value) = &vectors("nodes.json")[0];
    let node: Node = round_trip(&prefix, key, value);
    assert_eq!(
        node.ipv4_alloc_cidr
            .as_ref()
            .unwrap()
            .to_net()
            .unwrap()
            .to_string(),
        "10.244.0.0/24"
    );
    assert_eq!(
        node.ipv6_alloc_cidr
            .as_ref()
            .unwrap()
            .to_net()
            .unwrap()
            .to_string(),
        "fd00:10:244::/64"
    );
    assert_eq!(node.internal_ip(), Some("172.18.0.2".parse().unwrap()));
}

#[test]
fn service_vectors() {
    let prefix = keys::services();
    for (key, value) in vectors("services.json") {
        let svc: ClusterService = round_trip(&prefix, &key, &value);
        let again: Value = serde_json::from_slice(&svc.encode()).unwrap();
        assert_eq!(again, value, "{key} re-encodes to exactly the same JSON");
        assert_eq!(svc.cluster_id, 3);
        assert!(svc.shared && svc.include_external);
        assert_eq!(svc.backends.values().next().unwrap()["http"].port, 8080);
    }
}

#[test]
fn identity_vectors() {
    let all = vectors("identities.json");
    let masters = keys::identity_masters();
    let c3 = ClusterName::new("cluster3").unwrap();
    let block = IdentityRange::block(
        kvstore::ClusterId::new(3, MaxConnectedClusters::C255).unwrap(),
        MaxConnectedClusters::C255,
    );
    for (key, value) in all.iter().filter(|(k, _)| k.starts_with(masters.as_str())) {
        let entry: IdentityEntry = round_trip(&masters, key, value);
        assert_eq!(
            String::from_utf8(entry.encode()).unwrap(),
            value.as_str().unwrap()
        );
        assert_eq!(entry.labels.cluster(), Some(c3.as_str()));
        assert!(block.contains(entry.id));
    }
    // The slave key: value/<labels>/<node-ip> → ID.
    let (key, value) = all
        .iter()
        .find(|(k, _)| k.starts_with(keys::identity_slaves().as_str()))
        .unwrap();
    let rest = keys::identity_slaves().strip(key).unwrap();
    let (labels, node_ip) = keys::parse_identity_slave(rest).unwrap();
    assert_eq!(node_ip, "172.18.0.2");
    let labels = Labels::parse_canonical(labels).unwrap();
    assert_eq!(
        keys::identity_slaves_of(&labels.canonical()).key(node_ip),
        *key
    );
    assert_eq!(value.as_str().unwrap().parse::<u32>().unwrap(), 199472);
}

#[test]
fn cluster_config_vectors() {
    for (key, value) in vectors("cluster-config.json") {
        let cluster = keys::parse_cluster_config(&key).unwrap();
        assert_eq!(keys::cluster_config(&cluster), key);
        let name = cluster.as_str();
        let config = ClusterConfig::decode(name, &stored_bytes(&value)).unwrap();
        assert_eq!(config.id, 3);
        assert!(config.capabilities.synced_canaries);
        assert_eq!(config.mode().unwrap(), MaxConnectedClusters::C255);
        assert_eq!(config.capabilities.service_exports_enabled, Some(false));
        let again: Value = serde_json::from_slice(&config.encode()).unwrap();
        assert_eq!(again, value);
    }
}

#[test]
fn canary_vectors() {
    let c3 = ClusterName::new("cluster3").unwrap();
    let stores = [
        keys::IPCACHE_STORE,
        keys::NODES_STORE,
        keys::SERVICES_STORE,
        keys::IDENTITIES_STORE,
    ];
    let all = vectors("canaries.json");
    assert_eq!(all.len(), 4);
    for (key, value) in all {
        assert!(
            stores.iter().any(|s| keys::canary(&c3, s) == key),
            "{key} is one of our canaries"
        );
        let t = Timestamp::decode(&key, value.as_str().unwrap().as_bytes()).unwrap();
        assert_eq!(t.to_rfc3339(), value.as_str().unwrap());
    }
}
