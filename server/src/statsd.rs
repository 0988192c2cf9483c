//! Pushing stats to statsd (`--statsd-address`), with NSQ's metric names, types and prefix,
//! so existing dashboards keep working: every `--statsd-interval`, counters (`|c`, the
//! increase since the last push) and gauges (`|g`) per topic and channel, plus `mem.*`
//! with `--statsd-mem-stats`. Lines are `<prefix><name>:<value>|<type>\n`, packed into UDP
//! packets of at most `--statsd-udp-packet-size` bytes.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::nsqd::Nsqd;
use crate::options::Options;

/// NSQ's prefix expansion: `%s` becomes `<broadcast_address>_<http_port>` with `.` and `:`
/// turned into `_`, and the prefix always ends with a `.`.
pub fn expanded_prefix(o: &Options, http_port: u16) -> String {
    if o.statsd_prefix.is_empty() {
        return String::new();
    }
    let host_key = format!("{}:{}", o.broadcast_address, http_port).replace(['.', ':'], "_");
    let mut p = o.statsd_prefix.replace("%s", &host_key);
    if !p.ends_with('.') {
        p.push('.');
    }
    p
}

/// Collects metric lines and cuts them into packets without splitting a line.
struct Packets {
    prefix: String,
    max: usize,
    current: String,
    done: Vec<String>,
}

impl Packets {
    fn push(&mut self, name: &str, value: i64, kind: &str) {
        let line = format!("{}{}:{}|{}\n", self.prefix, name, value, kind);
        if !self.current.is_empty() && self.current.len() + line.len() > self.max {
            self.done.push(std::mem::take(&mut self.current));
        }
        self.current.push_str(&line);
    }

    fn counter(&mut self, name: &str, delta: u64) {
        self.push(name, delta as i64, "c");
    }

    fn gauge(&mut self, name: &str, value: u64) {
        self.push(name, value as i64, "g");
    }

    fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}

/// Counter values at the last push, so each push sends the increase.
#[derive(Default)]
struct Last {
    counters: HashMap<String, u64>,
}

impl Last {
    fn delta(&mut self, name: &str, now: u64) -> u64 {
        let prev = self.counters.insert(name.to_string(), now).unwrap_or(0);
        now.saturating_sub(prev)
    }
}

fn is_ephemeral(name: &str) -> bool {
    name.ends_with("#ephemeral")
}

/// One push worth of metric lines.
fn collect(nsqd: &Nsqd, last: &mut Last, prefix: String) -> Vec<String> {
    let o = nsqd.opts();
    let mut p = Packets {
        prefix,
        max: o.statsd_udp_packet_size.max(1) as usize,
        current: String::new(),
        done: Vec::new(),
    };
    let percentiles = o.percentiles();
    for t in nsqd.topics() {
        if o.statsd_exclude_ephemeral && t.is_ephemeral() {
            continue;
        }
        let ts = t.stats(None, false, &percentiles);
        let base = format!("topic.{}", ts.topic_name);
        let mut counter = |p: &mut Packets, name: String, v: u64| {
            let d = last.delta(&name, v);
            p.counter(&name, d);
        };
        counter(&mut p, format!("{base}.message_count"), ts.message_count);
        counter(&mut p, format!("{base}.message_bytes"), ts.message_bytes);
        p.gauge(&format!("{base}.depth"), ts.depth);
        p.gauge(&format!("{base}.backend_depth"), ts.backend_depth);
        for q in ts.e2e_processing_latency.percentiles.iter().flatten() {
            p.gauge(
                &format!("{base}.e2e_processing_latency_{:.0}", q.quantile * 100.0),
                q.value,
            );
        }
        for c in &ts.channels {
            if o.statsd_exclude_ephemeral && is_ephemeral(&c.channel_name) {
                continue;
            }
            let cb = format!("{base}.channel.{}", c.channel_name);
            counter(&mut p, format!("{cb}.message_count"), c.message_count);
            p.gauge(&format!("{cb}.depth"), c.depth);
            p.gauge(&format!("{cb}.backend_depth"), c.backend_depth);
            p.gauge(&format!("{cb}.in_flight_count"), c.in_flight_count);
            p.gauge(&format!("{cb}.deferred_count"), c.deferred_count);
            counter(&mut p, format!("{cb}.requeue_count"), c.requeue_count);
            counter(&mut p, format!("{cb}.timeout_count"), c.timeout_count);
            p.gauge(&format!("{cb}.clients"), c.client_count as u64);
            for q in c.e2e_processing_latency.percentiles.iter().flatten() {
                p.gauge(
                    &format!("{cb}.e2e_processing_latency_{:.0}", q.quantile * 100.0),
                    q.value,
                );
            }
        }
    }
    if o.statsd_mem_stats {
        let mem = crate::http::memory_stats();
        let field = |k: &str| mem.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        for k in [
            "heap_objects",
            "heap_idle_bytes",
            "heap_in_use_bytes",
            "heap_released_bytes",
            "gc_pause_usec_100",
            "gc_pause_usec_99",
            "gc_pause_usec_95",
            "next_gc_bytes",
        ] {
            p.gauge(&format!("mem.{k}"), field(k));
        }
        let runs = last.delta("mem.gc_runs", field("gc_total_runs"));
        p.counter("mem.gc_runs", runs);
    }
    p.finish()
}

/// Push every `--statsd-interval` until shutdown. Errors are logged and the next push is
/// tried as usual, as NSQ does.
pub async fn run(nsqd: Arc<Nsqd>, mut shutdown: watch::Receiver<bool>) {
    let interval = nsqd.opts().statsd_interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let mut last = Last::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|v| *v) => break,
        }
        let o = nsqd.opts();
        let addr = o.statsd_address.clone();
        let http_port = nsqd.http_addr.get().map(|a| a.port()).unwrap_or(0);
        let packets = collect(&nsqd, &mut last, expanded_prefix(&o, http_port));
        tracing::info!("STATSD: pushing stats to {addr}");
        if let Err(e) = send(&addr, &packets).await {
            tracing::error!("STATSD: failed to push stats to {addr}: {e}");
        }
    }
    tracing::info!("STATSD: closing");
}

async fn send(addr: &str, packets: &[String]) -> std::io::Result<()> {
    let target = tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other("address resolves to nothing"))?;
    let local = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(target).await?;
    for p in packets {
        // A statsd that is down refuses with ICMP; the next push tries again.
        sock.send(p.as_bytes()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn prefix_expansion_and_packets() {
        let o = Options::parse_from(["nsqd", "--broadcast-address=127.0.0.1"]);
        assert_eq!(expanded_prefix(&o, 4151), "nsq.127_0_0_1_4151.");
        let o = Options::parse_from(["nsqd", "--statsd-prefix=x"]);
        assert_eq!(expanded_prefix(&o, 1), "x.");
        let mut p = Packets {
            prefix: "nsq.".into(),
            max: 30,
            current: String::new(),
            done: Vec::new(),
        };
        p.gauge("a.depth", 5);
        p.counter("b.message_count", 2);
        let packets = p.finish();
        assert_eq!(
            packets,
            vec!["nsq.a.depth:5|g\n", "nsq.b.message_count:2|c\n"]
        );
        let mut last = Last::default();
        assert_eq!(last.delta("x", 5), 5);
        assert_eq!(last.delta("x", 7), 2);
    }
}
