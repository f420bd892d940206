//! `policy_recompute_ms`: a clusterwide rule admitting the 10,000
//! identities of a remote cluster to 1,000 endpoints (10 applications, each
//! with a policy of its own) moves to another port; timed from the change's
//! arrival in the agent's control loop to the last write into the pinned
//! BPF policy map (compile every endpoint's rules, group equal ones,
//! resolve, write the difference). Baseline `raw_policy_write_ms`: the same
//! number of entries inserted and deleted in the same map with batched
//! writes of precomputed keys, nothing computed.

use std::{path::Path, time::Instant};

use agent::bench_support::PolicyRecompute;
use anyhow::Result;
use bench_report::{Bench, Better};
use bpf::{L4Match, POLICY_MAP, PolicyAction, PolicyKey, PolicyMap, PolicyValue, Protocol};

const ENDPOINTS: usize = 1_000;
const APPS: usize = 10;
const IDENTITIES: usize = 10_000;
const ROUNDS: u16 = 5;

/// Runs the measurement with the datapath pinned in `bpffs_dir`.
pub(crate) fn run(bench: &Bench, bpffs_dir: &Path) -> Result<()> {
    eprintln!(
        "policy: {ENDPOINTS} endpoints in {APPS} applications, {IDENTITIES} remote identities"
    );
    let setup = Instant::now();
    let mut scene = PolicyRecompute::new(bpffs_dir, ENDPOINTS, APPS, IDENTITIES)?;
    eprintln!(
        "  set up in {:.1} s: {} policies",
        setup.elapsed().as_secs_f64(),
        scene.policies()
    );
    let mut agent_ms = Vec::new();
    let mut raw_ms = Vec::new();
    let map = PolicyMap::open_pinned(bpffs_dir, POLICY_MAP)?;
    for round in 0..ROUNDS {
        let r = scene.change(8081 + round)?;
        anyhow::ensure!(
            r.upserts >= APPS * IDENTITIES && r.deletes >= APPS * IDENTITIES,
            "round {round}: the change wrote {} and deleted {} entries, expected {} of each",
            r.upserts,
            r.deletes,
            APPS * IDENTITIES
        );
        agent_ms.push(r.elapsed.as_secs_f64() * 1e3);
        raw_ms.push(raw_write(&map, r.upserts, r.deletes, round)? * 1e3);
        eprintln!(
            "  round {round}: agent {:.1} ms ({} upserts, {} deletes, {} entries), raw {:.1} ms",
            agent_ms[round as usize], r.upserts, r.deletes, r.entries, raw_ms[round as usize]
        );
    }
    let (agent, raw) = (median(&agent_ms), median(&raw_ms));
    bench.emit(
        "policy_recompute_ms",
        agent,
        "ms",
        Better::Lower,
        Some(("raw_policy_write_ms", raw)),
    );
    bench.emit(
        "policy_recompute_policies",
        scene.policies() as f64,
        "policies",
        Better::Lower,
        None,
    );
    Ok(())
}

/// Inserts `upserts` precomputed entries under an unused policy id, then
/// deletes `deletes` of them: the writes the agent's change made, by the
/// plainest means. Returns seconds.
fn raw_write(map: &PolicyMap, upserts: usize, deletes: usize, round: u16) -> Result<f64> {
    let policy_id = 1_000_000 + u32::from(round);
    let entries: Vec<(PolicyKey, PolicyValue)> = (0..upserts)
        .map(|i| {
            let key = PolicyKey::ingress(
                policy_id,
                2 << 16 | (256 + (i % IDENTITIES) as u32),
                L4Match::Port(Protocol::Tcp, 10_000 + (i / IDENTITIES) as u16),
            );
            (key, PolicyValue::new(PolicyAction::Allow, &key, 1))
        })
        .collect();
    let keys: Vec<PolicyKey> = entries.iter().take(deletes).map(|(k, _)| *k).collect();
    let started = Instant::now();
    map.batch_upsert(&entries)?;
    map.batch_delete(&keys)?;
    let elapsed = started.elapsed().as_secs_f64();
    let rest: Vec<PolicyKey> = entries.iter().skip(deletes).map(|(k, _)| *k).collect();
    map.batch_delete(&rest)?;
    Ok(elapsed)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
