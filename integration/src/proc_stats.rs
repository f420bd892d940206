//! What a process costs, read from `/proc`: CPU time, resident memory,
//! established TCP connections.

use std::{
    collections::HashSet,
    fs,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// User + system CPU seconds of a process so far.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name (which may contain spaces).
    let rest = stat.rsplit_once(')').context("malformed /proc/PID/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// Resident memory of a process, in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    Ok(kb * 1024)
}

/// Resident memory of a process once it settled: sampled every 100 ms
/// until it has not dropped for `quiet` (an agent gives freed memory back
/// a second after a sync), the lowest sample; after `deadline`, the lowest
/// so far.
pub async fn settled_rss_bytes(pid: u32, quiet: Duration, deadline: Duration) -> Result<u64> {
    let started = Instant::now();
    let mut lowest = rss_bytes(pid)?;
    let mut dropped = Instant::now();
    while dropped.elapsed() < quiet && started.elapsed() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = rss_bytes(pid)?;
        if now < lowest {
            lowest = now;
            dropped = Instant::now();
        }
    }
    Ok(lowest)
}

/// Established TCP connections a process holds (its sockets matched
/// against the host namespace's TCP tables).
pub fn tcp_connections(pid: u32) -> Result<usize> {
    let mut inodes = HashSet::new();
    for fd in fs::read_dir(format!("/proc/{pid}/fd"))? {
        if let Ok(link) = fs::read_link(fd?.path())
            && let Some(inode) = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
        {
            inodes.insert(inode.to_owned());
        }
    }
    let mut n = 0;
    for table in ["tcp", "tcp6"] {
        let text = fs::read_to_string(format!("/proc/{pid}/net/{table}"))?;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // st 01 = ESTABLISHED; field 9 is the inode.
            if f.len() > 9 && f[3] == "01" && inodes.contains(f[9]) {
                n += 1;
            }
        }
    }
    Ok(n)
}
