//! Prometheus' standard process metrics, the names every Prometheus client library exports
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
//! `process_start_time_seconds`, `process_threads`), as a prometheus-client [`Collector`]
//! that reads /proc at each scrape. nsqd, nsqlookupd and nsqadmin register it on their
//! /metrics registry. Off Linux it exports nothing.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Reads this process' figures at each scrape.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// Register the process metrics on `reg`.
pub fn register(reg: &mut Registry) {
    reg.register_collector(Box::new(ProcessCollector));
}

/// One reading of the process; a figure /proc would not give is `None` and left out.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    pub threads: u64,
    pub open_fds: Option<u64>,
    /// The soft RLIMIT_NOFILE; `None` when unlimited.
    pub max_fds: Option<u64>,
    /// Unix seconds.
    pub start_time_seconds: Option<f64>,
}

#[cfg(target_os = "linux")]
pub fn snapshot() -> Option<Snapshot> {
    use procfs::process::{LimitValue, Process};
    let me = Process::myself().ok()?;
    let stat = me.stat().ok()?;
    let ticks = procfs::ticks_per_second() as f64;
    let max_fds = me
        .limits()
        .ok()
        .and_then(|l| match l.max_open_files.soft_limit {
            LimitValue::Value(v) => Some(v),
            LimitValue::Unlimited => None,
        });
    let start_time_seconds = procfs::boot_time_secs()
        .ok()
        .map(|boot| boot as f64 + stat.starttime as f64 / ticks);
    Some(Snapshot {
        cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
        resident_memory_bytes: stat.rss.saturating_mul(procfs::page_size()),
        virtual_memory_bytes: stat.vsize,
        threads: u64::try_from(stat.num_threads).unwrap_or(0),
        open_fds: me.fd_count().ok().map(|n| n as u64),
        max_fds,
        start_time_seconds,
    })
}

#[cfg(not(target_os = "linux"))]
pub fn snapshot() -> Option<Snapshot> {
    None
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: f64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = snapshot() else {
            return Ok(());
        };
        // The text encoder appends `_total` to counters.
        let cpu = ConstCounter::new(s.cpu_seconds);
        let m = enc.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            cpu.metric_type(),
        )?;
        cpu.encode(m)?;
        gauge(
            &mut enc,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            s.resident_memory_bytes as f64,
        )?;
        gauge(
            &mut enc,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            s.virtual_memory_bytes as f64,
        )?;
        gauge(
            &mut enc,
            "process_threads",
            "Number of OS threads in the process.",
            s.threads as f64,
        )?;
        if let Some(v) = s.open_fds {
            gauge(
                &mut enc,
                "process_open_fds",
                "Number of open file descriptors.",
                v as f64,
            )?;
        }
        if let Some(v) = s.max_fds {
            gauge(
                &mut enc,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                v as f64,
            )?;
        }
        if let Some(v) = s.start_time_seconds {
            gauge(
                &mut enc,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                v,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn snapshot_reads_this_process() {
        // Burn a little CPU so the counter has something to show.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert_ne!(x, 1);
        let s = snapshot().expect("/proc is readable on Linux");
        assert!(s.resident_memory_bytes > 0);
        assert!(s.virtual_memory_bytes >= s.resident_memory_bytes);
        assert!(s.threads >= 1);
        assert!(s.open_fds.is_some_and(|n| n >= 3));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let start = s.start_time_seconds.expect("boot time is known");
        assert!(start <= now + 1.0 && start > now - 86_400.0 * 365.0);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn encodes_standard_names() {
        let mut reg = Registry::default();
        register(&mut reg);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).expect("encodes");
        for name in [
            "# TYPE process_cpu_seconds counter",
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
            "process_threads ",
        ] {
            assert!(out.contains(name), "{name} missing in\n{out}");
        }
    }
}
