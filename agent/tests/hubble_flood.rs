//! A flood of flow events larger than both the kernel's ring buffer and
//! Hubble's: the agent's flow reader reports what the kernel had no room
//! for as a lost event, readers of the Hubble buffer learn what they
//! missed, and nothing stalls. Real datapath programs and maps, events
//! from `BPF_PROG_TEST_RUN` (no interfaces needed).

use std::{net::Ipv4Addr, path::PathBuf};

use agent::FlowIngestor;
use anyhow::{Context, Result, ensure};
use bpf::{Datapath, DatapathConfig, EndpointInfo, EndpointKey, Program};
use hubble::ring::Capacity;
use hubble_api::flow::{DropReason, Verdict};

/// The smallest ring the kernel allows (one page): room for ~56 events.
const SMALL_RING_BYTES: u32 = 4096;
/// Drops sent in one go: far more than the ring holds.
const FLOOD: u32 = 10_000;
/// Hubble's buffer: fewer flows than the ring delivers.
const HUBBLE_CAPACITY: usize = 15;

struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = Datapath::remove_pins(&self.0);
    }
}

#[test]
fn a_flood_yields_lost_events_and_no_stall() -> Result<()> {
    if !netns::root_or_skip("a_flood_yields_lost_events_and_no_stall") {
        return Ok(());
    }
    let pins = Pins(PathBuf::from("/sys/fs/bpf").join(netns::unique_name("cmflood-")));
    let dp = Datapath::open(DatapathConfig {
        bpffs_dir: pins.0.clone(),
        flow_ring_bytes: SMALL_RING_BYTES,
        ..DatapathConfig::default()
    })
    .context("open the datapath")?;
    // Test runs use the loopback device (ifindex 1): make it an endpoint
    // that enforces policy and allows nothing, so every SYN is dropped.
    dp.endpoints().upsert(
        &EndpointKey { ifindex: 1 },
        &EndpointInfo::new(9, 3000, bpf::EndpointPolicy::ingress(9)),
    )?;
    let mut reader = dp.flow_reader()?;
    let mut ingest = FlowIngestor::new(Capacity::new(HUBBLE_CAPACITY)?, "c1", "n1");
    ingest.check_lost(&reader);
    ensure!(ingest.lost_events() == 0, "nothing lost before the flood");

    let syn = bpf::tcp_syn_frame(Ipv4Addr::new(10, 9, 0, 1), Ipv4Addr::new(10, 9, 0, 2), 80);
    let run = dp.test_run(Program::ToEndpoint, &syn, FLOOD)?;
    ensure!(run.retval == 2, "dropped (TC_ACT_SHOT), got {}", run.retval);

    let read = ingest.drain(&mut reader) as u64;
    ingest.check_lost(&reader);
    ensure!(
        read > 0 && read < u64::from(FLOOD),
        "the ring held part of the flood: {read}"
    );
    assert_eq!(
        read + ingest.lost_events(),
        u64::from(FLOOD),
        "every event was either read or reported lost"
    );
    assert_eq!(ingest.seen_flows(), read);
    let newest = ingest.newest_flow().context("a buffered flow")?;
    assert_eq!(newest.verdict, Verdict::Dropped as i32);
    assert_eq!(newest.drop_reason_desc, DropReason::PolicyDenied as i32);
    assert_eq!(newest.node_name, "c1/n1");

    // The reader keeps going: the next events arrive as flows again.
    let run = dp.test_run(Program::ToEndpoint, &syn, 3)?;
    ensure!(run.retval == 2);
    assert_eq!(ingest.drain(&mut reader), 3);
    ingest.check_lost(&reader);
    assert_eq!(read + 3 + ingest.lost_events(), u64::from(FLOOD) + 3);
    drop(pins);
    Ok(())
}
