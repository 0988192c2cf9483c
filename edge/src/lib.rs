//! What every nsq-rs binary needs at its edges, in one place (NSQ keeps the same things in
//! `internal/`: `http_api`, `lg`, `app`), used by nsqd, nsqlookupd, nsqadmin and the tools:
//!
//! - [`http_api`]: NSQ's HTTP answers (`X-NSQ-Content-Type`, `{"message": ...}` errors),
//!   query parameters with percent decoding, the per-request log line;
//! - [`log`]: NSQ's level names and log line layout, a level changeable at runtime;
//! - [`signal`]: waiting for SIGINT / SIGTERM;
//! - [`clock`]: wall and monotonic time, and a [`clock::Clock`] tests can move by hand;
//! - [`hostname`]: this machine's name.

#![forbid(unsafe_code)]

pub mod clock;
pub mod http_api;
pub mod log;
pub mod signal;

/// This machine's host name ("" if the OS will not say or it is not UTF-8).
pub fn hostname() -> String {
    ::hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}
