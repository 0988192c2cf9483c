//! Graphs without Graphite: a bounded in-memory history of each topic's and channel's depth
//! and message rate, one sample per poll of the cluster, per node and for the whole cluster
//! (node "*"). Each series is a ring buffer covering `--history-window`; series not seen
//! for a whole window are dropped, so memory follows what exists.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;

use crate::clusterinfo::TopicStats;

/// Which series: topic, channel ("" for the topic itself), node ("*" for the cluster).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub topic: String,
    pub channel: String,
    pub node: String,
}

impl Key {
    pub fn new(topic: &str, channel: &str, node: &str) -> Key {
        Key {
            topic: topic.into(),
            channel: channel.into(),
            node: node.into(),
        }
    }
}

/// The channel name of the series summing every channel of a topic (no real channel can
/// be called `*`).
pub const ALL_CHANNELS: &str = "*";

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Unix time in seconds.
    pub at: u64,
    pub depth: u64,
    pub message_count: u64,
    /// Messages per second since the previous sample (0 for the first).
    pub rate: f64,
}

pub struct History {
    capacity: usize,
    window_secs: u64,
    series: Mutex<HashMap<Key, VecDeque<Sample>>>,
}

impl History {
    pub fn new(interval: Duration, window: Duration) -> History {
        let capacity = (window.as_secs_f64() / interval.as_secs_f64().max(0.001)).ceil() as usize;
        History {
            capacity: capacity.clamp(2, 100_000),
            window_secs: window.as_secs().max(1),
            series: Mutex::new(HashMap::new()),
        }
    }

    /// Add one sample to a series; the rate comes from the previous sample's count.
    pub fn record(&self, key: Key, at: u64, depth: u64, message_count: u64) {
        let mut series = self.series.lock();
        let q = series.entry(key).or_default();
        let rate = match q.back() {
            Some(prev) if at > prev.at && message_count >= prev.message_count => {
                (message_count - prev.message_count) as f64 / (at - prev.at) as f64
            }
            _ => 0.0,
        };
        if q.back().is_some_and(|p| p.at == at) {
            q.pop_back();
        }
        q.push_back(Sample {
            at,
            depth,
            message_count,
            rate,
        });
        while q.len() > self.capacity {
            q.pop_front();
        }
    }

    /// Record one poll of the whole cluster (per-node stats) at time `at`.
    pub fn record_poll(&self, at: u64, node_stats: &[TopicStats]) {
        let mut totals: HashMap<Key, (u64, u64)> = HashMap::new();
        for t in node_stats {
            self.record(
                Key::new(&t.topic_name, "", &t.node),
                at,
                t.depth,
                t.message_count,
            );
            let e = totals.entry(Key::new(&t.topic_name, "", "*")).or_default();
            e.0 += t.depth;
            e.1 += t.message_count;
            for c in &t.channels {
                self.record(
                    Key::new(&t.topic_name, &c.channel_name, &t.node),
                    at,
                    c.depth,
                    c.message_count,
                );
                let e = totals
                    .entry(Key::new(&t.topic_name, &c.channel_name, "*"))
                    .or_default();
                e.0 += c.depth;
                e.1 += c.message_count;
                // All channels of the topic together (channel "*"): the topic's backlog.
                let e = totals
                    .entry(Key::new(&t.topic_name, ALL_CHANNELS, "*"))
                    .or_default();
                e.0 += c.depth;
                e.1 += c.message_count;
            }
        }
        for (k, (depth, count)) in totals {
            self.record(k, at, depth, count);
        }
        self.expire(at);
    }

    fn expire(&self, now: u64) {
        let cutoff = now.saturating_sub(self.window_secs);
        self.series.lock().retain(|_, q| {
            while q.front().is_some_and(|s| s.at < cutoff) {
                q.pop_front();
            }
            !q.is_empty()
        });
    }

    pub fn samples(&self, key: &Key) -> Vec<Sample> {
        self.series
            .lock()
            .get(key)
            .map(|q| q.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The latest rate of a series (0 if unknown).
    pub fn rate(&self, key: &Key) -> f64 {
        self.series
            .lock()
            .get(key)
            .and_then(|q| q.back().map(|s| s.rate))
            .unwrap_or(0.0)
    }

    pub fn series_count(&self) -> usize {
        self.series.lock().len()
    }
}

/// A small line chart as inline SVG (no script, scales to its values). `values` are
/// (unix seconds, value); the x axis spans from the first to the last sample.
pub fn svg_chart(title: &str, unit: &str, values: &[(u64, f64)]) -> String {
    const W: f64 = 360.0;
    const H: f64 = 90.0;
    const PAD: f64 = 4.0;
    let title = crate::pages::esc(title);
    let unit = crate::pages::esc(unit);
    if values.len() < 2 {
        return format!(
            "<figure class=\"chart\"><figcaption>{title}</figcaption>\
             <svg width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{title}: not enough samples yet\">\
             <rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#fafafa\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#888\" text-anchor=\"middle\">collecting samples…</text></svg></figure>",
            W / 2.0,
            H / 2.0
        );
    }
    let t0 = values[0].0;
    let t1 = values[values.len() - 1].0.max(t0 + 1);
    let max = values.iter().map(|v| v.1).fold(0.0f64, f64::max);
    let ymax = if max <= 0.0 { 1.0 } else { max };
    let x = |t: u64| PAD + (t - t0) as f64 / (t1 - t0) as f64 * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD - v / ymax * (H - 2.0 * PAD - 12.0);
    let points: Vec<String> = values
        .iter()
        .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
        .collect();
    let last = values[values.len() - 1].1;
    let span = t1 - t0;
    let span_text = if span >= 120 {
        format!("last {} min", span / 60)
    } else {
        format!("last {span} s")
    };
    format!(
        "<figure class=\"chart\"><figcaption>{title}: <b>{}</b> {unit} (max {} · {span_text})</figcaption>\
         <svg width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{title}\">\
         <rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#fafafa\" stroke=\"#ddd\"/>\
         <polyline fill=\"none\" stroke=\"#2a6ebb\" stroke-width=\"1.5\" points=\"{}\"/></svg></figure>",
        fmt_num(last),
        fmt_num(max),
        points.join(" ")
    )
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_buffer_rates_and_expiry() {
        let h = History::new(Duration::from_secs(10), Duration::from_secs(60));
        let k = Key::new("t", "", "*");
        for i in 0..10u64 {
            h.record(k.clone(), 100 + i * 10, i, i * 50);
        }
        let s = h.samples(&k);
        assert_eq!(s.len(), 6, "capacity is window / interval");
        assert_eq!(s.last().unwrap().depth, 9);
        assert_eq!(h.rate(&k), 5.0);
        // A counter that went down (nsqd restarted) gives rate 0, not garbage.
        h.record(k.clone(), 300, 0, 3);
        assert_eq!(h.rate(&k), 0.0);
        h.expire(1000);
        assert_eq!(h.series_count(), 0);
    }

    #[test]
    fn poll_records_nodes_cluster_and_all_channels() {
        use crate::clusterinfo::ChannelStats;
        let node = |name: &str, depth: u64, count: u64| TopicStats {
            node: name.into(),
            topic_name: "t".into(),
            depth,
            message_count: count,
            channels: ["a", "b"]
                .iter()
                .map(|c| ChannelStats {
                    channel_name: c.to_string(),
                    depth: depth + 1,
                    message_count: count,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let h = History::new(Duration::from_secs(1), Duration::from_secs(3600));
        h.record_poll(10, &[node("n1", 1, 10), node("n2", 2, 20)]);
        h.record_poll(12, &[node("n1", 3, 14), node("n2", 2, 24)]);
        let cluster = h.samples(&Key::new("t", "", "*"));
        assert_eq!(
            cluster.iter().map(|s| s.depth).collect::<Vec<_>>(),
            vec![3, 5]
        );
        assert_eq!(h.rate(&Key::new("t", "", "*")), 4.0);
        assert_eq!(h.rate(&Key::new("t", "", "n1")), 2.0);
        assert_eq!(h.samples(&Key::new("t", "a", "*"))[1].depth, 4 + 3);
        let all = h.samples(&Key::new("t", ALL_CHANNELS, "*"));
        assert_eq!(all[1].depth, 2 * (4 + 3));
    }

    #[test]
    fn chart_is_svg() {
        let svg = svg_chart("depth <t>", "msgs", &[(0, 1.0), (10, 3.0), (20, 2.0)]);
        assert!(svg.contains("<polyline"));
        assert!(svg.contains("depth &lt;t&gt;"));
        assert!(svg_chart("x", "", &[(0, 1.0)]).contains("collecting"));
    }
}
