use std::fmt;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{
        MetricType,
        counter::ConstCounter,
        gauge::{ConstGauge, Gauge},
    },
    registry::Registry,
};

/// Registers `clustermesh_build_info{binary, version}` (always 1) and the
/// `process_*` metrics of this process into `registry` (use an unprefixed
/// registry or sub-registry so that the names stay the standard ones).
pub fn register_process_metrics(registry: &mut Registry, binary: &str, version: &str) {
    let info = Gauge::<i64>::default();
    info.set(1);
    registry
        .sub_registry_with_label(("binary".into(), binary.to_string().into()))
        .sub_registry_with_label(("version".into(), version.to_string().into()))
        .register(
            "clustermesh_build_info",
            "The binary and version of this daemon (always 1)",
            info,
        );
    registry.register_collector(Box::new(ProcessCollector));
}

/// Reads `/proc/self` at every scrape.
#[derive(Debug)]
struct ProcessCollector;

/// What `/proc/self` says, or `None` fields where it could not be read.
#[derive(Debug, Default, PartialEq)]
struct ProcessStats {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    threads: Option<u64>,
    start_time_seconds: Option<f64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

impl ProcessStats {
    fn read() -> Self {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
        });
        let mut stats = parse_stat(&stat, ticks, page, boot_time);
        stats.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            stats.max_fds = Some(limit.rlim_cur);
        }
        stats
    }
}

/// Fields of `/proc/self/stat` after the command name (which may contain
/// spaces and parentheses, hence the split at the last `)`).
fn parse_stat(stat: &str, ticks: f64, page: u64, boot_time: Option<f64>) -> ProcessStats {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return ProcessStats::default();
    };
    // rest[0] is field 3 (state); field N is rest[N - 3].
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    ProcessStats {
        cpu_seconds: field(14)
            .zip(field(15))
            .map(|(u, s)| (u + s) as f64 / ticks),
        threads: field(20),
        start_time_seconds: field(22)
            .zip(boot_time)
            .map(|(start, boot)| boot + start as f64 / ticks),
        virtual_bytes: field(23),
        resident_bytes: field(24).map(|pages| pages * page),
        open_fds: None,
        max_fds: None,
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let s = ProcessStats::read();
        if let Some(v) = s.cpu_seconds {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                None,
                c.metric_type(),
            )?)?;
        }
        let gauges: [(&str, &str, Option<f64>); 6] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                s.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                s.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_threads",
                "Threads of the process",
                s.threads.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds",
                s.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                s.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Limit of open file descriptors",
                s.max_fds.map(|v| v as f64),
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                ConstGauge::new(v).encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    MetricType::Gauge,
                )?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn stat_fields_after_a_command_name_with_spaces() {
        // pid (comm) state ppid … utime(14) stime(15) … threads(20) …
        // starttime(22) vsize(23) rss(24)
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 7 0 1000 123456789 300 18446744073709551615";
        let s = parse_stat(stat, 100.0, 4096, Some(1_700_000_000.0));
        assert_eq!(s.cpu_seconds, Some(4.0));
        assert_eq!(s.threads, Some(7));
        assert_eq!(s.start_time_seconds, Some(1_700_000_010.0));
        assert_eq!(s.virtual_bytes, Some(123_456_789));
        assert_eq!(s.resident_bytes, Some(300 * 4096));
        assert_eq!(
            parse_stat("garbage", 100.0, 4096, None),
            ProcessStats::default()
        );
    }

    #[test]
    fn this_process_is_exported() {
        let mut registry = Registry::default();
        register_process_metrics(&mut registry, "test-binary", "1.2.3");
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("clustermesh_build_info{binary=\"test-binary\",version=\"1.2.3\"} 1"),
            "{text}"
        );
        let rss = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("rss");
        assert!(
            rss > 1_000_000.0,
            "a test binary uses more than 1 MB: {rss}"
        );
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
        assert!(text.contains("process_open_fds "), "{text}");
    }
}
