//! End-to-end processing latency (publish to FIN) and the shapes /stats returns.
//!
//! NSQ keeps streaming quantile sketches over a sliding window. We keep a bounded sample
//! of recent latencies per channel/topic (the newest `MAX_SAMPLES` within the window) and
//! compute the requested percentiles on demand: exact for the sample, cheap to record
//! (one short lock, no allocation once warm), and bounded in memory.

use std::collections::VecDeque;
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
        }
    }

    pub fn record(&self, latency_ns: u64) {
        if let Some(inner) = &self.inner {
            let mut q = inner.lock();
            if q.len() >= MAX_SAMPLES {
                q.pop_front();
            }
            q.push_back((Instant::now(), latency_ns));
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
    fn disabled_is_null() {
        let q = Quantiles::new(false, Duration::from_secs(60));
        q.record(5);
        let s = q.stats(&[0.5]);
        assert_eq!(s.count, 0);
        assert!(s.percentiles.is_none());
    }
}
