//! The standard `process_*` metrics and the machine's capacity, read from `/proc` and the cgroup
//! at scrape time (a few small file reads, no lock shared with inference).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Reports `process_*` for this process and `torchwatch_machine_{cpu_cores,memory_bytes}`.
#[derive(Debug)]
pub struct ProcessCollector {
    page_size: f64,
    clock_ticks: f64,
    boot_time: Option<f64>,
}

impl ProcessCollector {
    /// Reads the constants once.
    pub fn new() -> ProcessCollector {
        // SAFETY: sysconf has no preconditions.
        let (page_size, clock_ticks) = unsafe {
            (
                libc::sysconf(libc::_SC_PAGESIZE),
                libc::sysconf(libc::_SC_CLK_TCK),
            )
        };
        let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|stat| {
            stat.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse().ok())
        });
        ProcessCollector {
            page_size: page_size.max(1) as f64,
            clock_ticks: clock_ticks.max(1) as f64,
            boot_time,
        }
    }
}

impl Default for ProcessCollector {
    fn default() -> Self {
        ProcessCollector::new()
    }
}

/// Fields of `/proc/self/stat` after the command name, 0-based from field 3 (`state`).
struct Stat {
    utime: f64,
    stime: f64,
    threads: f64,
    start_ticks: f64,
    virtual_bytes: f64,
    resident_pages: f64,
}

fn read_stat() -> Option<Stat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |i: usize| -> Option<f64> { fields.get(i)?.parse().ok() };
    Some(Stat {
        utime: field(11)?,
        stime: field(12)?,
        threads: field(17)?,
        start_ticks: field(19)?,
        virtual_bytes: field(20)?,
        resident_pages: field(21)?,
    })
}

fn open_fds() -> Option<f64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as f64)
}

fn max_fds() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// CPU cores this process may use: its cgroup's quota (v2 or v1, its own group and the groups
/// above it) when one is set and lower, else the CPUs it may run on.
pub fn machine_cpu_cores() -> f64 {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    super::cgroup::own_limits()
        .cpu_cores
        .map_or(cpus, |q| q.min(cpus))
}

/// Memory this process may use: the machine's, or its cgroup's limit when lower.
pub fn machine_memory_bytes() -> Option<f64> {
    let total_kib: f64 = std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let total = total_kib * 1024.0;
    let limit = super::cgroup::own_limits().memory_bytes;
    Some(limit.map_or(total, |l| l.min(total)))
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> std::fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut encoder;
        if let Some(stat) = read_stat() {
            let cpu = ConstCounter::new((stat.utime + stat.stime) / self.clock_ticks);
            cpu.encode(e.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                MetricType::Counter,
            )?)?;
            gauge(
                e,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                stat.resident_pages * self.page_size,
            )?;
            gauge(
                e,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                stat.virtual_bytes,
            )?;
            gauge(
                e,
                "process_threads",
                "Number of OS threads in the process.",
                stat.threads,
            )?;
            if let Some(boot) = self.boot_time {
                gauge(
                    e,
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    boot + stat.start_ticks / self.clock_ticks,
                )?;
            }
        }
        if let Some(open) = open_fds() {
            gauge(
                e,
                "process_open_fds",
                "Number of open file descriptors.",
                open,
            )?;
        }
        if let Some(max) = max_fds() {
            gauge(
                e,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                max,
            )?;
        }
        gauge(
            e,
            "torchwatch_machine_cpu_cores",
            "CPU cores available to torchwatch (cgroup quota or online CPUs)",
            machine_cpu_cores(),
        )?;
        if let Some(memory) = machine_memory_bytes() {
            gauge(
                e,
                "torchwatch_machine_memory_bytes",
                "Memory available to torchwatch (cgroup limit or physical memory)",
                memory,
            )?;
        }
        ConstCounter::new(crate::state::write_failures()).encode(e.encode_descriptor(
            "torchwatch_state_write_failures",
            "Saves of alert state, the notification log, silences or policy history that failed",
            None,
            MetricType::Counter,
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn now_seconds() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    }

    #[test]
    fn reads_this_process() {
        let stat = read_stat().unwrap();
        assert!(stat.resident_pages > 0.0 && stat.threads >= 1.0);
        let collector = ProcessCollector::new();
        let start = collector.boot_time.unwrap() + stat.start_ticks / collector.clock_ticks;
        assert!(start <= now_seconds() + 1.0 && start > now_seconds() - 3600.0);
        assert!(open_fds().unwrap() >= 3.0);
        assert!(max_fds().unwrap() >= open_fds().unwrap());
        assert!(machine_cpu_cores() > 0.0);
        assert!(machine_memory_bytes().unwrap() > 1e8);
    }
}
