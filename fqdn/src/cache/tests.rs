use std::time::SystemTime;

use super::*;
use crate::{CacheSnapshot, RestoreReport, SNAPSHOT_VERSION};

const EP1: u32 = 1;
const EP2: u32 = 2;

fn name(text: &str) -> DnsName {
    DnsName::new(text).unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn answer(ips: &[(&str, u32)]) -> Vec<LearnedIp> {
    ips.iter()
        .map(|(a, ttl)| LearnedIp {
            ip: ip(a),
            ttl: *ttl,
        })
        .collect()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn added(diff: &CacheDiff) -> Vec<(String, IpAddr)> {
    diff.added().map(|(n, ip)| (n.to_string(), ip)).collect()
}

fn removed(diff: &CacheDiff) -> Vec<(String, IpAddr)> {
    diff.removed().map(|(n, ip)| (n.to_string(), ip)).collect()
}

#[test]
fn learning_adds_addresses_once_for_all_endpoints() {
    let t0 = Instant::now();
    let mut cache = NameCache::new(CacheConfig::default());
    let api = name("api.example.com");
    let first = cache.learn(
        EP1,
        &api,
        &answer(&[("192.0.2.1", 60), ("2001:db8::1", 60)]),
        t0,
    );
    assert_eq!(
        added(&first.diff),
        [
            ("api.example.com.".into(), ip("192.0.2.1")),
            ("api.example.com.".into(), ip("2001:db8::1"))
        ]
    );
    assert_eq!(first.over_ip_limit, 0);
    // Another endpoint learning the same: nothing new for the maps.
    let second = cache.learn(EP2, &api, &answer(&[("192.0.2.1", 30)]), t0);
    assert!(second.diff.is_empty());
    assert_eq!(
        cache.lookup_name(&api),
        [ip("192.0.2.1"), ip("2001:db8::1")]
    );
    assert_eq!(cache.lookup_ip(ip("192.0.2.1")), std::slice::from_ref(&api));
    assert_eq!(cache.len(), 3);
    // EP2's entry expires at 30 s: the name keeps the address (EP1 holds it to 60 s).
    assert!(cache.expire(t0 + secs(30)).is_empty());
    assert_eq!(cache.endpoint_entries(EP2), []);
    let gone = cache.expire(t0 + secs(60));
    assert_eq!(
        removed(&gone),
        [
            ("api.example.com.".into(), ip("192.0.2.1")),
            ("api.example.com.".into(), ip("2001:db8::1"))
        ]
    );
    assert!(cache.is_empty() && cache.lookup_name(&api).is_empty());
    assert!(cache.lookup_ip(ip("192.0.2.1")).is_empty());
}

#[test]
fn entries_live_until_their_ttl_and_relearning_extends_them() {
    let t0 = Instant::now();
    let mut cache = NameCache::new(CacheConfig::default());
    let n = name("db.example.com");
    cache.learn(EP1, &n, &answer(&[("10.0.0.1", 10)]), t0);
    assert_eq!(cache.next_expiry(), Some(t0 + secs(10)));
    assert!(
        cache.expire(t0 + secs(9)).is_empty(),
        "valid while now < expiry"
    );
    // A later answer with the same address extends it; a shorter one does not shorten it.
    cache.learn(EP1, &n, &answer(&[("10.0.0.1", 20)]), t0 + secs(5));
    cache.learn(EP1, &n, &answer(&[("10.0.0.1", 1)]), t0 + secs(6));
    assert!(cache.expire(t0 + secs(10)).is_empty());
    assert_eq!(cache.endpoint_entries(EP1)[0].expires, t0 + secs(25));
    // The name moves to a new address: the old one stays until its TTL.
    let moved = cache.learn(EP1, &n, &answer(&[("10.0.0.2", 20)]), t0 + secs(20));
    assert_eq!(
        added(&moved.diff),
        [("db.example.com.".into(), ip("10.0.0.2"))]
    );
    assert_eq!(cache.lookup_name(&n), [ip("10.0.0.1"), ip("10.0.0.2")]);
    assert_eq!(
        removed(&cache.expire(t0 + secs(25))),
        [("db.example.com.".into(), ip("10.0.0.1"))]
    );
    assert_eq!(cache.lookup_name(&n), [ip("10.0.0.2")]);
}

#[test]
fn min_ttl_raises_short_ttls() {
    let t0 = Instant::now();
    let config = CacheConfig {
        min_ttl: secs(3600),
        ..CacheConfig::default()
    };
    let mut cache = NameCache::new(config);
    let n = name("a.example.com");
    cache.learn(EP1, &n, &answer(&[("10.0.0.1", 0), ("10.0.0.2", 7200)]), t0);
    let expiries: Vec<Instant> = cache.entries().iter().map(|e| e.expires).collect();
    assert_eq!(expiries, [t0 + secs(3600), t0 + secs(7200)]);
    // Huge TTLs do not overflow.
    cache.learn(EP1, &n, &answer(&[("10.0.0.3", u32::MAX)]), t0);
    assert_eq!(cache.len(), 3);
}

#[test]
fn per_name_limit_keeps_the_newest() {
    let t0 = Instant::now();
    let config = CacheConfig {
        max_ips_per_name: 3,
        ..CacheConfig::default()
    };
    let mut cache = NameCache::new(config);
    let n = name("many.example.com");
    // One answer over the limit: its first addresses are kept.
    let big: Vec<LearnedIp> = (1..=5)
        .map(|i| LearnedIp {
            ip: ip(&format!("10.0.0.{i}")),
            ttl: 60,
        })
        .collect();
    let first = cache.learn(EP1, &n, &big, t0);
    assert_eq!(first.over_ip_limit, 2);
    assert_eq!(
        cache.lookup_name(&n),
        [ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")]
    );
    // Later answers push out what expires first.
    cache.mark_in_use(EP1, ip("10.0.0.1"));
    let later = cache.learn(
        EP1,
        &n,
        &answer(&[("10.0.1.1", 60), ("10.0.1.2", 60)]),
        t0 + secs(10),
    );
    assert_eq!(later.over_ip_limit, 2);
    assert_eq!(
        added(&later.diff),
        [
            ("many.example.com.".into(), ip("10.0.1.1")),
            ("many.example.com.".into(), ip("10.0.1.2"))
        ]
    );
    assert_eq!(
        removed(&later.diff),
        [
            ("many.example.com.".into(), ip("10.0.0.2")),
            ("many.example.com.".into(), ip("10.0.0.3"))
        ]
    );
    // The address in use stayed, though older.
    assert_eq!(
        cache.lookup_name(&n),
        [ip("10.0.0.1"), ip("10.0.1.1"), ip("10.0.1.2")]
    );
    // Another endpoint has its own limit.
    cache.learn(EP2, &n, &big[3..], t0);
    assert_eq!(cache.endpoint_entries(EP2).len(), 2);
}

#[test]
fn per_endpoint_name_limit_bounds_the_table() {
    let t0 = Instant::now();
    let config = CacheConfig {
        max_names_per_endpoint: 2,
        ..CacheConfig::default()
    };
    let mut cache = NameCache::new(config);
    cache.learn(EP1, &name("a.example"), &answer(&[("10.0.0.1", 100)]), t0);
    cache.learn(EP1, &name("b.example"), &answer(&[("10.0.0.2", 50)]), t0);
    // c pushes out b (expires first).
    let c = cache.learn(EP1, &name("c.example"), &answer(&[("10.0.0.3", 100)]), t0);
    assert_eq!(removed(&c.diff), [("b.example.".into(), ip("10.0.0.2"))]);
    assert_eq!(added(&c.diff), [("c.example.".into(), ip("10.0.0.3"))]);
    // With every name in use, a new name is not learned.
    cache.mark_in_use(EP1, ip("10.0.0.1"));
    cache.mark_in_use(EP1, ip("10.0.0.3"));
    let d = cache.learn(EP1, &name("d.example"), &answer(&[("10.0.0.4", 100)]), t0);
    assert!(d.over_name_limit && d.diff.is_empty());
    assert!(cache.lookup_name(&name("d.example")).is_empty());
    // A known name still learns.
    let a = cache.learn(EP1, &name("a.example"), &answer(&[("10.0.0.5", 100)]), t0);
    assert!(!a.over_name_limit);
    assert_eq!(added(&a.diff), [("a.example.".into(), ip("10.0.0.5"))]);
}

#[test]
fn addresses_in_use_outlive_their_ttl_until_released() {
    let t0 = Instant::now();
    let mut cache = NameCache::new(CacheConfig::default());
    let n = name("api.example.com");
    cache.learn(
        EP1,
        &n,
        &answer(&[("192.0.2.1", 10), ("192.0.2.2", 10)]),
        t0,
    );
    cache.mark_in_use(EP1, ip("192.0.2.1"));
    cache.mark_in_use(EP1, ip("192.0.2.1"));
    assert!(cache.is_in_use(EP1, ip("192.0.2.1")));
    assert_eq!(
        removed(&cache.expire(t0 + secs(10))),
        [("api.example.com.".into(), ip("192.0.2.2"))]
    );
    assert_eq!(cache.lookup_name(&n), [ip("192.0.2.1")]);
    assert!(cache.endpoint_entries(EP1)[0].in_use);
    assert_eq!(cache.next_expiry(), None, "nothing to expire while in use");
    assert!(cache.expire(t0 + secs(1000)).is_empty());
    // Released before its TTL: it stays to its TTL.
    cache.learn(EP1, &n, &answer(&[("192.0.2.3", 100)]), t0 + secs(20));
    cache.mark_in_use(EP1, ip("192.0.2.3"));
    assert!(
        cache
            .release(EP1, ip("192.0.2.3"), t0 + secs(30))
            .is_empty()
    );
    // Released after: it goes at once (a mark, not a count).
    let gone = cache.release(EP1, ip("192.0.2.1"), t0 + secs(1000));
    assert_eq!(
        removed(&gone),
        [("api.example.com.".into(), ip("192.0.2.1"))]
    );
    // A marked address of another endpoint does not keep this one's.
    cache.mark_in_use(EP2, ip("192.0.2.3"));
    assert_eq!(
        removed(&cache.expire(t0 + secs(120))),
        [("api.example.com.".into(), ip("192.0.2.3"))]
    );
}

#[test]
fn set_in_use_replaces_the_marks_of_an_endpoint() {
    let t0 = Instant::now();
    let mut cache = NameCache::new(CacheConfig::default());
    let n = name("x.example");
    cache.learn(EP1, &n, &answer(&[("10.0.0.1", 1), ("10.0.0.2", 1)]), t0);
    assert!(
        cache
            .set_in_use(EP1, [ip("10.0.0.1"), ip("10.0.0.2")], t0)
            .is_empty()
    );
    assert!(cache.expire(t0 + secs(5)).is_empty());
    let diff = cache.set_in_use(EP1, [ip("10.0.0.2")], t0 + secs(5));
    assert_eq!(removed(&diff), [("x.example.".into(), ip("10.0.0.1"))]);
    let diff = cache.set_in_use(EP1, [], t0 + secs(5));
    assert_eq!(removed(&diff), [("x.example.".into(), ip("10.0.0.2"))]);
}

#[test]
fn removing_an_endpoint_withdraws_what_only_it_learned() {
    let t0 = Instant::now();
    let mut cache = NameCache::new(CacheConfig::default());
    let n = name("x.example");
    cache.learn(EP1, &n, &answer(&[("10.0.0.1", 60), ("10.0.0.2", 60)]), t0);
    cache.learn(EP2, &n, &answer(&[("10.0.0.1", 60)]), t0);
    cache.mark_in_use(EP1, ip("10.0.0.2"));
    let diff = cache.remove_endpoint(EP1);
    assert_eq!(removed(&diff), [("x.example.".into(), ip("10.0.0.2"))]);
    assert_eq!(cache.lookup_name(&n), [ip("10.0.0.1")]);
    assert!(!cache.is_in_use(EP1, ip("10.0.0.2")));
}

#[test]
fn selectors_find_known_names() {
    let t0 = Instant::now();
    let mut cache = NameCache::new(CacheConfig::default());
    cache.learn(
        EP1,
        &name("eu.backup.example.net"),
        &answer(&[("10.0.0.1", 60)]),
        t0,
    );
    cache.learn(
        EP2,
        &name("us.backup.example.net"),
        &answer(&[("10.0.0.2", 60)]),
        t0,
    );
    cache.learn(
        EP2,
        &name("api.example.com"),
        &answer(&[("10.0.0.3", 60)]),
        t0,
    );
    let pattern = FqdnSelector::match_pattern("*.backup.example.net").unwrap();
    let selected = cache.select(&pattern);
    assert_eq!(
        selected.into_iter().collect::<Vec<_>>(),
        [
            (name("eu.backup.example.net"), vec![ip("10.0.0.1")]),
            (name("us.backup.example.net"), vec![ip("10.0.0.2")]),
        ]
    );
    let exact = FqdnSelector::match_name("API.example.com").unwrap();
    assert_eq!(cache.select(&exact).len(), 1);
}

#[test]
fn diffs_merge_and_cancel() {
    let n = name("x.example");
    let mut a = CacheDiff::default();
    a.add(&n, ip("10.0.0.1"));
    let mut b = CacheDiff::default();
    b.remove(&n, ip("10.0.0.1"));
    b.remove(&n, ip("10.0.0.2"));
    a.merge(b);
    assert_eq!(removed(&a), [("x.example.".into(), ip("10.0.0.2"))]);
    assert!(a.added().next().is_none());
    assert_eq!(a.get(&n).unwrap().removed.len(), 1);
}

#[test]
fn snapshots_restore_entries_expired_during_the_downtime() {
    let t0 = Instant::now();
    let wall = SystemTime::UNIX_EPOCH + secs(1_800_000_000);
    let mut cache = NameCache::new(CacheConfig::default());
    let n = name("api.example.com");
    cache.learn(
        EP1,
        &n,
        &answer(&[("192.0.2.1", 60), ("192.0.2.2", 600)]),
        t0,
    );
    cache.learn(EP2, &name("b.example"), &answer(&[("192.0.2.3", 30)]), t0);
    cache.mark_in_use(EP2, ip("192.0.2.3"));
    let snapshot = cache.snapshot(t0 + secs(10), wall + secs(10));
    assert_eq!(snapshot.version, SNAPSHOT_VERSION);
    assert_eq!(snapshot.entries.len(), 3);
    assert_eq!(snapshot.entries[0].expires_unix_ms, 1_800_000_060_000);

    // Through JSON, as in the state directory.
    let json = serde_json::to_string(&snapshot).unwrap();
    let read: CacheSnapshot<u32> = serde_json::from_str(&json).unwrap();
    assert_eq!(read, snapshot);

    // The agent comes back 100 s after the learning: 192.0.2.1 (60 s) and
    // 192.0.2.3 (30 s) expired meanwhile; all are restored and written.
    let t1 = Instant::now() + secs(5);
    let (mut restored, diff, report) =
        NameCache::<u32>::restore(CacheConfig::default(), &read, t1, wall + secs(100));
    assert_eq!(report, RestoreReport::default());
    assert_eq!(diff.added().count(), 3);
    assert_eq!(restored.lookup_name(&n), [ip("192.0.2.1"), ip("192.0.2.2")]);
    assert_eq!(restored.endpoint_entries(EP1)[1].expires, t1 + secs(500));
    assert!(restored.is_in_use(EP2, ip("192.0.2.3")));
    // The first expiry removes the expired entry not in use.
    assert_eq!(
        removed(&restored.expire(t1)),
        [("api.example.com.".into(), ip("192.0.2.1"))]
    );
    // The conntrack walk finds no connection: the held one goes too.
    let diff = restored.set_in_use(EP2, [], t1);
    assert_eq!(removed(&diff), [("b.example.".into(), ip("192.0.2.3"))]);
}

#[test]
fn restore_skips_bad_entries_and_other_versions() {
    let t0 = Instant::now();
    let wall = SystemTime::now();
    let json = r#"{"version":1,"entries":[
        {"endpoint":1,"name":"a..b","ip":"10.0.0.1","expires_unix_ms":0},
        {"endpoint":1,"name":"ok.example","ip":"10.0.0.2","expires_unix_ms":0},
        {"endpoint":1,"name":"ok.example","ip":"10.0.0.3","expires_unix_ms":0},
        {"endpoint":1,"name":"ok.example","ip":"10.0.0.4","expires_unix_ms":0}]}"#;
    let snapshot: CacheSnapshot<u32> = serde_json::from_str(json).unwrap();
    let config = CacheConfig {
        max_ips_per_name: 2,
        ..CacheConfig::default()
    };
    let (cache, diff, report) = NameCache::restore(config, &snapshot, t0, wall);
    assert_eq!(report.bad_names, 1);
    assert_eq!(report.over_limits, 1);
    assert_eq!(cache.len(), 2);
    assert_eq!(diff.added().count(), 2);
    let other = CacheSnapshot::<u32> {
        version: 7,
        entries: snapshot.entries,
    };
    let (cache, diff, report) = NameCache::restore(config, &other, t0, wall);
    assert_eq!(report.wrong_version, Some(7));
    assert!(cache.is_empty() && diff.is_empty());
}
