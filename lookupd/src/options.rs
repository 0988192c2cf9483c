//! nsqlookupd's flags, with NSQ's names and defaults (nsqlookupd/options.go).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

pub use protocol::cli::parse_duration;

/// This host's name, as the default `--broadcast-address`.
pub(crate) fn default_hostname() -> String {
    let h = edge::hostname();
    if h.is_empty() {
        "localhost".into()
    } else {
        h
    }
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "nsqlookupd",
    about = "nsqlookupd: NSQ-compatible directory service",
    disable_version_flag = true,
    args_override_self = true
)]
pub struct Options {
    /// path to config file (NSQ's TOML keys: flag names with underscores)
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// print version string
    #[arg(long)]
    pub version: bool,
    /// [deprecated] has no effect, use --log-level
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub verbose: Option<String>,
    /// log level: debug, info, warn, error, or fatal
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// log message prefix
    #[arg(long, default_value = "[nsqlookupd] ")]
    pub log_prefix: String,
    /// <addr>:<port> to listen on for TCP clients
    #[arg(long, default_value = "0.0.0.0:4160")]
    pub tcp_address: String,
    /// <addr>:<port> to listen on for HTTP clients
    #[arg(long, default_value = "0.0.0.0:4161")]
    pub http_address: String,
    /// address of this lookupd node (default: hostname)
    #[arg(long, default_value_t = default_hostname())]
    pub broadcast_address: String,
    /// duration of time a producer will remain in the active list since its last ping
    #[arg(long, value_parser = parse_duration, default_value = "5m0s")]
    pub inactive_producer_timeout: Duration,
    /// duration of time a producer will remain tombstoned if registration remains
    #[arg(long, value_parser = parse_duration, default_value = "45s")]
    pub tombstone_lifetime: Duration,
}

/// NSQ's config-file names for nsqlookupd's flags.
pub fn config_spec() -> protocol::cli::ConfigSpec<'static> {
    use clap::CommandFactory;
    protocol::cli::ConfigSpec {
        flags: Options::command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(String::from))
            .collect(),
        renames: &[],
        durations: &["inactive-producer-timeout", "tombstone-lifetime"],
    }
}

pub(crate) fn resolve(a: &str) -> anyhow::Result<SocketAddr> {
    edge::resolve(a).map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m0s").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("x").is_err());
        assert!(resolve(":0").is_ok());
    }
}
