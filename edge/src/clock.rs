//! Time. [`unix_ms`] / [`unix_ns`] / [`unix_secs`] read the wall clock (0 if it is before
//! 1970). [`Clock`] is what timer logic (in-flight timeouts, deferred messages) reads, so
//! tests can move time by hand with [`ManualClock`] instead of sleeping.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    since_epoch().as_millis() as u64
}

/// Nanoseconds since the Unix epoch (NSQ's message timestamps).
pub fn unix_ns() -> i64 {
    since_epoch().as_nanos() as i64
}

/// Seconds since the Unix epoch.
pub fn unix_secs() -> i64 {
    since_epoch().as_secs() as i64
}

/// A source of time: monotonic for deadlines, wall clock for timestamps.
pub trait Clock: Send + Sync {
    /// Monotonic now, for deadlines and timeouts.
    fn now(&self) -> Instant;
    /// Wall-clock nanoseconds since the Unix epoch.
    fn unix_ns(&self) -> i64;
    /// Wall-clock milliseconds since the Unix epoch.
    fn unix_ms(&self) -> u64 {
        (self.unix_ns().max(0) / 1_000_000) as u64
    }
}

/// The real clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn unix_ns(&self) -> i64 {
        unix_ns()
    }
}

/// A clock that moves only when told to: both readings advance together.
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    start_unix_ns: i64,
    elapsed: Mutex<Duration>,
}

impl ManualClock {
    /// Starts at the real time of its creation.
    pub fn new() -> ManualClock {
        ManualClock {
            start: Instant::now(),
            start_unix_ns: unix_ns(),
            elapsed: Mutex::new(Duration::ZERO),
        }
    }

    pub fn advance(&self, by: Duration) {
        let mut e = self.elapsed.lock().unwrap_or_else(|p| p.into_inner());
        *e += by;
    }

    fn elapsed(&self) -> Duration {
        *self.elapsed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.elapsed()
    }
    fn unix_ns(&self) -> i64 {
        self.start_unix_ns + self.elapsed().as_nanos() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new();
        let (t0, w0) = (c.now(), c.unix_ms());
        assert_eq!(c.now(), t0);
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.now() - t0, Duration::from_millis(1500));
        assert_eq!(c.unix_ms() - w0, 1500);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.unix_ms() > 1_577_836_800_000);
        assert!(unix_secs() > 1_577_836_800);
    }
}
