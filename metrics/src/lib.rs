//! Prometheus helpers shared by nsqd, nsqlookupd and nsqadmin. Each daemon builds a fresh
//! prometheus-client [`Registry`] at every scrape from its own snapshot (/stats, the
//! lookup registry, the cluster's nodes); what they have in common lives here:
//!
//! - [`process`]: Prometheus' standard `process_*` metrics read from /proc;
//! - [`gauge_family`] / [`counter_family`]: a labelled family registered in one call;
//! - [`HistogramFamily`]: histogram series whose buckets were counted elsewhere (nsqd's
//!   atomic e2e-latency buckets, or the same buckets read back from a node's /stats).

use std::fmt::Debug;
use std::hash::Hash;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

pub mod process;

pub use process::register as register_process;

/// What a label set must be to key a [`Family`].
pub trait Labels: Clone + Hash + Eq + EncodeLabelSet + Debug + Send + Sync + 'static {}
impl<T: Clone + Hash + Eq + EncodeLabelSet + Debug + Send + Sync + 'static> Labels for T {}

/// Register a family of integer gauges keyed by `L` and return a handle to fill it.
pub fn gauge_family<L: Labels>(reg: &mut Registry, name: &str, help: &str) -> Family<L, Gauge> {
    let f = Family::<L, Gauge>::default();
    reg.register(name, help, f.clone());
    f
}

/// Register a family of counters keyed by `L` (the text encoder adds `_total`).
pub fn counter_family<L: Labels>(reg: &mut Registry, name: &str, help: &str) -> Family<L, Counter> {
    let f = Family::<L, Counter>::default();
    reg.register(name, help, f.clone());
    f
}

/// A u64 figure as a Prometheus integer gauge value (saturating).
pub fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One histogram series: `counts[i]` observations fell at or below `bounds[i]` and above
/// the bound before it; `counts` has one more entry than `bounds`, the +Inf bucket.
#[derive(Debug, Clone, Default, PartialEq)]
struct Series {
    count: u64,
    sum: f64,
    buckets: Vec<(f64, u64)>,
}

/// A histogram family whose buckets were counted elsewhere. prometheus-client's own
/// `Histogram` cannot be read back (for /stats) or filled from another process' reading
/// (nsqadmin), so the daemons hand their readings to this collector at scrape time.
#[derive(Debug)]
pub struct HistogramFamily<L> {
    name: &'static str,
    help: &'static str,
    series: Vec<(L, Series)>,
}

impl<L: Labels> HistogramFamily<L> {
    pub fn new(name: &'static str, help: &'static str) -> Self {
        HistogramFamily {
            name,
            help,
            series: Vec::new(),
        }
    }

    /// Add one series. A reading whose `counts` is not one longer than `bounds` is padded
    /// or cut to fit (the last count is +Inf); `count` and `sum` are taken as given.
    pub fn push(&mut self, labels: L, bounds: &[f64], counts: &[u64], sum: f64, count: u64) {
        let buckets = bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX)) // the encoder writes this bound as +Inf
            .zip(counts.iter().copied().chain(std::iter::repeat(0)))
            .collect();
        self.series.push((
            labels,
            Series {
                count,
                sum,
                buckets,
            },
        ));
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Register on `reg`; an empty family still gets its `# TYPE` line.
    pub fn register(self, reg: &mut Registry) {
        reg.register_collector(Box::new(self));
    }
}

impl<L: Labels> Collector for HistogramFamily<L> {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut m = enc.encode_descriptor(self.name, self.help, None, MetricType::Histogram)?;
        for (labels, s) in &self.series {
            m.encode_family(labels)?
                .encode_histogram::<NoLabelSet>(s.sum, s.count, &s.buckets, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct L {
        topic: String,
    }

    fn text(reg: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, reg).expect("encodes");
        out
    }

    #[test]
    fn histogram_series_are_cumulative_with_inf() {
        let mut reg = Registry::default();
        let mut h = HistogramFamily::<L>::new("lat_seconds", "latency");
        h.push(L { topic: "t".into() }, &[0.001, 0.01], &[2, 3, 1], 0.05, 6);
        h.register(&mut reg);
        let out = text(&reg);
        assert!(out.contains("# TYPE lat_seconds histogram"), "{out}");
        assert!(out.contains("lat_seconds_count{topic=\"t\"} 6"), "{out}");
        assert!(out.contains("lat_seconds_sum{topic=\"t\"} 0.05"), "{out}");
        // prometheus buckets are cumulative: 2, 2+3, 2+3+1
        for (le, n) in [("0.001", 2), ("0.01", 5), ("+Inf", 6)] {
            let line = out
                .lines()
                .find(|l| {
                    l.starts_with("lat_seconds_bucket") && l.contains(&format!("le=\"{le}\""))
                })
                .unwrap_or_else(|| panic!("bucket {le} missing in\n{out}"));
            assert!(line.ends_with(&format!(" {n}")), "{line}");
        }
    }

    #[test]
    fn short_counts_are_padded() {
        let mut reg = Registry::default();
        let mut h = HistogramFamily::<L>::new("x_seconds", "x");
        h.push(L { topic: "a".into() }, &[1.0, 2.0], &[1], 0.5, 1);
        assert!(!h.is_empty());
        h.register(&mut reg);
        let out = text(&reg);
        let inf = out
            .lines()
            .find(|l| l.contains("le=\"+Inf\""))
            .unwrap_or_else(|| panic!("no +Inf bucket in\n{out}"));
        assert!(inf.ends_with(" 1"), "{inf}");
    }

    #[test]
    fn families_register_and_encode() {
        let mut reg = Registry::default();
        let g = gauge_family::<L>(&mut reg, "depth", "d");
        let c = counter_family::<L>(&mut reg, "msgs", "m");
        let l = L { topic: "t".into() };
        g.get_or_create(&l).set(gauge_value(u64::MAX));
        c.get_or_create(&l).inc_by(3);
        let out = text(&reg);
        assert!(
            out.contains(&format!("depth{{topic=\"t\"}} {}", i64::MAX)),
            "{out}"
        );
        assert!(out.contains("msgs_total{topic=\"t\"} 3"), "{out}");
    }
}
