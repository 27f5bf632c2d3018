//! Process metrics an operator alerts on (memory, file descriptors, CPU), read from
//! `/proc/self` at each scrape. `prometheus-client` has no process collector, and the few
//! numbers needed do not justify a crate: the files are read with bounded sizes and parsed
//! here. Names are the ones every Prometheus client library uses (`process_*`), so stock
//! dashboards and alerts work unchanged.

use std::borrow::Cow;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

pub(crate) const RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
pub(crate) const VIRTUAL_MEMORY: &str = "process_virtual_memory_bytes";
pub(crate) const OPEN_FDS: &str = "process_open_fds";
pub(crate) const MAX_FDS: &str = "process_max_fds";
pub(crate) const CPU_SECONDS: &str = "process_cpu_seconds";
pub(crate) const START_TIME: &str = "process_start_time_seconds";

/// Every family this collector serves.
pub const ALL: &[&str] = &[
    RESIDENT_MEMORY,
    VIRTUAL_MEMORY,
    OPEN_FDS,
    MAX_FDS,
    CPU_SECONDS,
    START_TIME,
];

/// Clock ticks per second of `/proc/PID/stat` times: USER_HZ, 100 on every architecture Linux
/// runs a BNG on (x86, arm, arm64, ppc, s390, riscv); reading it needs `sysconf`, which is unsafe.
const USER_HZ: f64 = 100.0;
/// `/proc/self/stat` and `/proc/self/status` are a few KB; more is not believed.
const MAX_PROC_FILE: u64 = 64 * 1024;

/// One reading of the process's numbers; a field is `None` when its source could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ProcessStats {
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub start_time_seconds: Option<f64>,
}

/// `(utime + stime) / USER_HZ` and the start time in ticks after boot, from `/proc/PID/stat`.
/// Fields are counted after the last `)` (the command name may contain spaces and parentheses).
pub(crate) fn parse_stat(stat: &str) -> Option<(f64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ")": field 3 (state) is f[0]; utime is field 14, stime 15, starttime 22.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let start: u64 = f.get(19)?.parse().ok()?;
    Some(((utime + stime) as f64 / USER_HZ, start))
}

/// A `kB` line of `/proc/PID/status` (`VmRSS:    1234 kB`) in bytes.
pub(crate) fn status_kb(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..]
        .trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// The soft limit of `Max open files` in `/proc/PID/limits` (`unlimited` is `u64::MAX`).
pub(crate) fn limits_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

/// `btime` (boot time, Unix seconds) from `/proc/stat`.
pub(crate) fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

fn read(path: &str) -> Option<String> {
    use std::io::Read;
    let mut s = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_PROC_FILE)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

impl ProcessStats {
    /// Read this process's numbers now.
    pub(crate) fn read() -> ProcessStats {
        let status = read("/proc/self/status");
        let stat = read("/proc/self/stat").and_then(|s| parse_stat(&s));
        let btime = read("/proc/stat").and_then(|s| boot_time(&s));
        ProcessStats {
            resident_bytes: status.as_deref().and_then(|s| status_kb(s, "VmRSS")),
            virtual_bytes: status.as_deref().and_then(|s| status_kb(s, "VmSize")),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
            max_fds: read("/proc/self/limits").and_then(|s| limits_max_fds(&s)),
            cpu_seconds: stat.map(|(cpu, _)| cpu),
            start_time_seconds: stat
                .zip(btime)
                .map(|((_, start), bt)| bt as f64 + start as f64 / USER_HZ),
        }
    }
}

/// Serves [`ProcessStats::read`] at each scrape.
#[derive(Debug, Default)]
pub(crate) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let p = ProcessStats::read();
        let none: [(Cow<'static, str>, Cow<'static, str>); 0] = [];
        let gauges: [(&str, &str, Option<f64>); 5] = [
            (
                RESIDENT_MEMORY,
                "Resident memory size in bytes",
                p.resident_bytes.map(|v| v as f64),
            ),
            (
                VIRTUAL_MEMORY,
                "Virtual memory size in bytes",
                p.virtual_bytes.map(|v| v as f64),
            ),
            (
                OPEN_FDS,
                "Number of open file descriptors",
                p.open_fds.map(|v| v as f64),
            ),
            (
                MAX_FDS,
                "Maximum number of open file descriptors (soft limit)",
                p.max_fds.map(|v| v as f64),
            ),
            (
                START_TIME,
                "Start time of the process since the Unix epoch in seconds",
                p.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let mut f = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                ConstGauge::new(v).encode(f.encode_family(&none)?)?;
            }
        }
        if let Some(cpu) = p.cpu_seconds {
            let mut f = encoder.encode_descriptor(
                CPU_SECONDS,
                "Total user and system CPU time spent in seconds",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(cpu).encode(f.encode_family(&none)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_name_with_spaces_and_parens() {
        let stat = "4242 (lq (agent) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 12345 1000 200 18446744073709551615";
        let (cpu, start) = parse_stat(stat).unwrap();
        assert_eq!(cpu, 3.0);
        assert_eq!(start, 12345);
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None, "short line");
    }

    #[test]
    fn status_limits_and_btime_lines() {
        let status = "Name:\tlqagent\nVmSize:\t  20480 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(status_kb(status, "VmRSS"), Some(1024 * 1024));
        assert_eq!(status_kb(status, "VmSize"), Some(20480 * 1024));
        assert_eq!(status_kb(status, "VmSwap"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(limits_max_fds(limits), Some(1024));
        assert_eq!(
            limits_max_fds("Max open files unlimited unlimited files\n"),
            Some(u64::MAX)
        );
        assert_eq!(
            boot_time("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn this_process_reads_sensibly() {
        let p = ProcessStats::read();
        assert!(p.resident_bytes.unwrap() > 1024 * 1024, "{p:?}");
        assert!(p.open_fds.unwrap() >= 3, "{p:?}");
        assert!(p.max_fds.unwrap() >= p.open_fds.unwrap());
        assert!(p.cpu_seconds.unwrap() >= 0.0);
        let now = crate::time::SystemTime::now()
            .duration_since(crate::time::SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = p.start_time_seconds.unwrap();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start}"
        );
    }
}
