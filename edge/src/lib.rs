//! What every nsq-rs binary needs at its edges, in one place (NSQ keeps the same things in
//! `internal/`: `http_api`, `lg`, `app`), used by nsqd, nsqlookupd, nsqadmin and the tools:
//!
//! - [`http_api`]: NSQ's HTTP answers (`X-NSQ-Content-Type`, `{"message": ...}` errors),
//!   query parameters with percent decoding, the per-request log line;
//! - [`log`]: NSQ's level names and log line layout, a level changeable at runtime;
//! - [`signal`]: waiting for SIGINT / SIGTERM;
//! - [`clock`]: wall and monotonic time, and a [`clock::Clock`] tests can move by hand;
//! - [`hostname`]: this machine's name; [`resolve`]: a listen or connect address.

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

/// `host:port` as a socket address; `:port` means every interface (Go's convention, which
/// NSQ's flags use).
pub fn resolve(addr: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let a = match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_string(),
    };
    a.to_socket_addrs()
        .map_err(|e| format!("invalid address {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("address {addr:?} resolves to nothing"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn resolve_go_style_addresses() {
        assert_eq!(
            super::resolve(":4150").map(|a| a.to_string()).as_deref(),
            Ok("0.0.0.0:4150")
        );
        assert_eq!(super::resolve("127.0.0.1:1").map(|a| a.port()), Ok(1));
        assert!(super::resolve("no port").is_err());
    }
}
