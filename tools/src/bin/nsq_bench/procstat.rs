//! The server's CPU time and resident memory, read from /proc (`--server-pid`).
//!
//! CPU: fields 14 and 15 of /proc/PID/stat (utime, stime) in clock ticks. The tick is
//! `sysconf(_SC_CLK_TCK)`, which is 100 on every Linux architecture this runs on; we assume
//! 100 rather than link libc for one call (`getconf CLK_TCK` prints it).
//! Memory: VmHWM (peak resident set over the process's life) and VmRSS from
//! /proc/PID/status, in KiB.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Clock ticks per second of /proc/PID/stat's utime and stime (`getconf CLK_TCK`).
pub const CLK_TCK: u64 = 100;

/// One reading of the server process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// utime + stime, in clock ticks
    pub cpu_ticks: u64,
    /// VmHWM, KiB
    pub hwm_kib: u64,
    /// VmRSS, KiB
    pub rss_kib: u64,
}

/// utime + stime from the text of /proc/PID/stat. The command name (field 2) is in
/// parentheses and may contain spaces or parentheses, so fields are counted after the
/// last ')'.
pub fn parse_stat_cpu_ticks(stat: &str) -> Result<u64> {
    let close = stat
        .rfind(')')
        .context("/proc/PID/stat: no ')' after the command name")?;
    // After ')': field 3 (state) is the first; utime is field 14, stime field 15.
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    if fields.len() < 13 {
        bail!(
            "/proc/PID/stat: {} fields after the command name, need 13",
            fields.len()
        );
    }
    let utime: u64 = fields[11]
        .parse()
        .with_context(|| format!("/proc/PID/stat: utime {:?}", fields[11]))?;
    let stime: u64 = fields[12]
        .parse()
        .with_context(|| format!("/proc/PID/stat: stime {:?}", fields[12]))?;
    Ok(utime + stime)
}

/// A `Key:   123 kB` line's value in KiB from the text of /proc/PID/status.
pub fn parse_status_kib(status: &str, key: &str) -> Result<u64> {
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix(key).and_then(|r| r.strip_prefix(':')) {
            let num = rest.split_whitespace().next().unwrap_or("");
            return num
                .parse()
                .with_context(|| format!("/proc/PID/status: {key} value {num:?}"));
        }
    }
    bail!("/proc/PID/status: no {key} line")
}

pub fn sample(pid: u32) -> Result<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat (is --server-pid right?)"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    Ok(Sample {
        cpu_ticks: parse_stat_cpu_ticks(&stat)?,
        hwm_kib: parse_status_kib(&status, "VmHWM")?,
        rss_kib: parse_status_kib(&status, "VmRSS")?,
    })
}

/// Server CPU seconds between two samples.
pub fn cpu_secs(before: &Sample, after: &Sample) -> f64 {
    after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / CLK_TCK as f64
}

/// CPU microseconds per message; 0 when there were no messages.
pub fn cpu_us_per_msg(cpu_secs: f64, msgs: u64) -> f64 {
    if msgs == 0 {
        0.0
    } else {
        cpu_secs * 1e6 / msgs as f64
    }
}

/// Watches the server for one run: a sample at start, optionally VmRSS every `interval`
/// on a thread (the peak RSS within the run, which VmHWM cannot give once the process
/// has had a larger peak before), and a report at the end.
pub struct Watch {
    pid: u32,
    start: Sample,
    peak_rss: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    pub fn start(pid: u32, interval: Option<Duration>) -> Result<Watch> {
        let start = sample(pid)?;
        let peak_rss = Arc::new(AtomicU64::new(start.rss_kib));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = interval.map(|every| {
            let (peak, stop) = (peak_rss.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    if let Ok(s) = sample(pid) {
                        peak.fetch_max(s.rss_kib, Ordering::Relaxed);
                    }
                    std::thread::sleep(every);
                }
            })
        });
        Ok(Watch {
            pid,
            start,
            peak_rss,
            stop,
            sampler,
        })
    }

    /// Prints the `server:` line; `msgs` is what the run published or delivered.
    /// With `rss_after`, waits that long and prints the server's VmRSS then as well.
    pub fn finish(mut self, msgs: u64, rss_after: Option<Duration>) -> Result<()> {
        let end = sample(self.pid)?;
        self.stop.store(true, Ordering::Release);
        let sampled = self.sampler.is_some();
        if let Some(h) = self.sampler.take() {
            let _ = h.join();
        }
        let peak = self.peak_rss.load(Ordering::Relaxed).max(end.rss_kib);
        let cpu = cpu_secs(&self.start, &end);
        let mut line = format!(
            "server: pid {} cpu {cpu:.2}s (user+sys, {CLK_TCK} ticks/s) = {:.3} us/msg over {msgs} msgs; VmHWM {} KiB, VmRSS {} KiB",
            self.pid,
            cpu_us_per_msg(cpu, msgs),
            end.hwm_kib,
            end.rss_kib,
        );
        if sampled {
            line.push_str(&format!(", sampled peak VmRSS {peak} KiB"));
        }
        println!("{line}");
        if let Some(wait) = rss_after {
            std::thread::sleep(wait);
            let later = sample(self.pid)?;
            println!(
                "server: VmRSS {} KiB {:.0}s after the end",
                later.rss_kib,
                wait.as_secs_f64()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (nsqd (x) y) S 1 4242 4242 0 -1 4194560 2101 0 0 0 1234 567 0 0 20 0 9 0 1000 123456 789 18446744073709551615";

    #[test]
    fn stat_cpu_is_utime_plus_stime_after_the_command_name() {
        assert_eq!(parse_stat_cpu_ticks(STAT).unwrap(), 1234 + 567);
    }

    #[test]
    fn stat_errors_are_clear() {
        assert!(parse_stat_cpu_ticks("4242 nsqd S 1").is_err());
        assert!(parse_stat_cpu_ticks("4242 (nsqd) S 1 2 3").is_err());
        let bad = STAT.replace(" 1234 ", " x ");
        let e = parse_stat_cpu_ticks(&bad).unwrap_err().to_string();
        assert!(e.contains("utime"), "{e}");
    }

    #[test]
    fn status_values_in_kib() {
        let status = "Name:\tnsqd\nVmPeak:\t  900 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM").unwrap(), 51200);
        assert_eq!(parse_status_kib(status, "VmRSS").unwrap(), 40960);
        assert!(parse_status_kib(status, "VmSwap").is_err());
        assert!(parse_status_kib("VmRSS:\tlots kB\n", "VmRSS").is_err());
    }

    #[test]
    fn cpu_arithmetic() {
        let a = Sample {
            cpu_ticks: 100,
            hwm_kib: 0,
            rss_kib: 0,
        };
        let b = Sample {
            cpu_ticks: 350,
            ..a
        };
        assert!((cpu_secs(&a, &b) - 2.5).abs() < 1e-9);
        assert!((cpu_us_per_msg(2.5, 1_000_000) - 2.5).abs() < 1e-9);
        assert_eq!(cpu_us_per_msg(2.5, 0), 0.0);
        assert_eq!(cpu_secs(&b, &a), 0.0);
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
    }
}
