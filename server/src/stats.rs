//! End-to-end processing latency (publish to FIN) and the shapes /stats returns.
//!
//! NSQ keeps streaming quantile sketches over a sliding window. We keep a bounded sample
//! of recent latencies per channel/topic (the newest `MAX_SAMPLES` within the window) and
//! compute the requested percentiles on demand: exact for the sample, cheap to record
//! (one short lock, no allocation once warm), and bounded in memory.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

const MAX_SAMPLES: usize = 8192;

/// (when recorded, latency in ns), oldest first.
type Samples = Arc<Mutex<VecDeque<(Instant, u64)>>>;

#[derive(Clone)]
pub struct Quantiles {
    inner: Option<Samples>,
    window: Duration,
    /// Every latency since start, bucketed: /metrics exports it as a Prometheus histogram.
    /// Always on (a few atomic adds), whatever the percentile flags say.
    histogram: Arc<LatencyHistogram>,
}

/// Upper bounds (seconds) of the e2e latency histogram's buckets; a last bucket, +Inf,
/// takes the rest. From 1 ms (a consumer on the same host) to 5 min (a stuck one).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// [`LATENCY_BUCKETS`] in nanoseconds (compared as integers on the FIN path).
const LATENCY_BOUNDS_NS: [u64; LATENCY_BUCKETS.len()] = [
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
    300_000_000_000,
];

/// The bucket of a latency: the first bound it does not exceed, or the last (+Inf).
#[inline]
fn bucket_of(latency_ns: u64) -> usize {
    LATENCY_BOUNDS_NS.partition_point(|&b| b < latency_ns)
}

/// A cumulative latency histogram with atomic buckets (no lock on the FIN path).
#[derive(Default)]
pub struct LatencyHistogram {
    /// Per bucket, not cumulative; the last one is +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

/// A reading of a [`LatencyHistogram`], as /stats shows it (beyond NSQ) and /metrics
/// encodes it: `counts[i]` messages took at most `bounds[i]` seconds and more than the
/// bound before; the last count (one more than `bounds`) is the +Inf bucket.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct HistogramStats {
    pub count: u64,
    pub sum_seconds: f64,
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
}

impl LatencyHistogram {
    pub fn observe(&self, latency_ns: u64) {
        self.buckets[bucket_of(latency_ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(latency_ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Several latencies with one atomic add per bucket touched (a batch of FINs mostly
    /// lands in one bucket) instead of three per latency.
    pub fn observe_many(&self, latencies_ns: impl Iterator<Item = u64>) {
        let mut counts = [0u64; LATENCY_BUCKETS.len() + 1];
        let mut sum = 0u64;
        let mut n = 0u64;
        for l in latencies_ns {
            counts[bucket_of(l)] += 1;
            sum = sum.wrapping_add(l);
            n += 1;
        }
        if n == 0 {
            return;
        }
        for (b, c) in self.buckets.iter().zip(counts) {
            if c > 0 {
                b.fetch_add(c, Ordering::Relaxed);
            }
        }
        self.sum_ns.fetch_add(sum, Ordering::Relaxed);
        self.count.fetch_add(n, Ordering::Relaxed);
    }

    pub fn stats(&self) -> HistogramStats {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        HistogramStats {
            // The sum of the buckets, so count and buckets agree within one reading.
            count: counts.iter().sum(),
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            bounds: LATENCY_BUCKETS.to_vec(),
            counts,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Percentile {
    pub quantile: f64,
    pub value: u64,
}

/// NSQ's e2e_processing_latency object: `percentiles` is null when none are configured.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyStats {
    pub count: u64,
    pub percentiles: Option<Vec<Percentile>>,
}

impl Quantiles {
    /// `enabled` is false when no --e2e-processing-latency-percentile was given; recording
    /// then costs nothing.
    pub fn new(enabled: bool, window: Duration) -> Quantiles {
        Quantiles {
            inner: enabled.then(|| Arc::new(Mutex::new(VecDeque::with_capacity(1024)))),
            window,
            histogram: Arc::default(),
        }
    }

    /// Every latency recorded since start, bucketed.
    pub fn histogram(&self) -> HistogramStats {
        self.histogram.stats()
    }

    pub fn record(&self, latency_ns: u64) {
        self.record_many(std::iter::once(latency_ns));
    }

    /// Record several latencies (a batch of FINs): one histogram update, and when
    /// percentiles are on, one lock and one clock read for the sample.
    pub fn record_many(&self, latencies_ns: impl Iterator<Item = u64> + Clone) {
        self.histogram.observe_many(latencies_ns.clone());
        if let Some(inner) = &self.inner {
            let now = Instant::now();
            let mut q = inner.lock();
            for l in latencies_ns {
                if q.len() >= MAX_SAMPLES {
                    q.pop_front();
                }
                q.push_back((now, l));
            }
        }
    }

    pub fn stats(&self, percentiles: &[f64]) -> LatencyStats {
        let Some(inner) = &self.inner else {
            return LatencyStats {
                count: 0,
                percentiles: None,
            };
        };
        let mut values: Vec<u64> = {
            let mut q = inner.lock();
            let cutoff = Instant::now().checked_sub(self.window);
            if let Some(cutoff) = cutoff {
                while q.front().is_some_and(|(t, _)| *t < cutoff) {
                    q.pop_front();
                }
            }
            q.iter().map(|(_, v)| *v).collect()
        };
        values.sort_unstable();
        let count = values.len() as u64;
        let ps = if values.is_empty() {
            None
        } else {
            Some(
                percentiles
                    .iter()
                    .map(|&p| {
                        let idx = ((p * values.len() as f64).ceil() as usize)
                            .saturating_sub(1)
                            .min(values.len() - 1);
                        Percentile {
                            quantile: p,
                            value: values[idx],
                        }
                    })
                    .collect(),
            )
        };
        LatencyStats {
            count,
            percentiles: ps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_sample() {
        let q = Quantiles::new(true, Duration::from_secs(60));
        for v in 1..=100 {
            q.record(v);
        }
        let s = q.stats(&[0.5, 0.99, 1.0]);
        assert_eq!(s.count, 100);
        let p = s.percentiles.unwrap();
        assert_eq!(p[0].value, 50);
        assert_eq!(p[1].value, 99);
        assert_eq!(p[2].value, 100);
    }

    #[test]
    fn histogram_buckets_every_latency() {
        let q = Quantiles::new(false, Duration::from_secs(60));
        q.record(500_000); // 0.5 ms: first bucket
        q.record(1_000_000); // exactly 1 ms: still the first (le is inclusive)
        q.record(70_000_000); // 70 ms: the 0.1 s bucket
        q.record(400_000_000_000); // 400 s: +Inf
        let h = q.histogram();
        assert_eq!(h.count, 4);
        assert_eq!(h.counts.len(), LATENCY_BUCKETS.len() + 1);
        assert_eq!(h.counts[0], 2);
        assert_eq!(h.counts[6], 1);
        assert_eq!(h.counts[LATENCY_BUCKETS.len()], 1);
        assert!((h.sum_seconds - 400.0715).abs() < 1e-6);
    }

    #[test]
    fn integer_bounds_match_the_published_ones() {
        for (ns, secs) in LATENCY_BOUNDS_NS.iter().zip(LATENCY_BUCKETS) {
            assert_eq!(*ns as f64 / 1e9, secs);
        }
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1_000_000), 0);
        assert_eq!(bucket_of(1_000_001), 1);
        assert_eq!(bucket_of(300_000_000_000), LATENCY_BUCKETS.len() - 1);
        assert_eq!(bucket_of(300_000_000_001), LATENCY_BUCKETS.len());
    }

    #[test]
    fn record_many_equals_one_by_one() {
        let lat = [10, 2_000_000, 2_000_000, 70_000_000, 400_000_000_000, 0];
        let one = Quantiles::new(true, Duration::from_secs(60));
        for l in lat {
            one.record(l);
        }
        let many = Quantiles::new(true, Duration::from_secs(60));
        many.record_many(lat.iter().copied());
        many.record_many(std::iter::empty());
        assert_eq!(one.histogram(), many.histogram());
        let ps = [0.5, 0.9, 1.0];
        assert_eq!(
            format!("{:?}", one.stats(&ps)),
            format!("{:?}", many.stats(&ps))
        );
    }

    #[test]
    fn disabled_is_null() {
        let q = Quantiles::new(false, Duration::from_secs(60));
        q.record(5);
        let s = q.stats(&[0.5]);
        assert_eq!(s.count, 0);
        assert!(s.percentiles.is_none());
    }
}
