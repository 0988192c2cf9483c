//! nsqadmin's options: one struct with NSQ nsqadmin's flag names and defaults, plus the few
//! of our own (history, basic auth). `--config` reads a TOML file with NSQ's key names.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

pub use protocol::cli::{normalize_args, parse_duration};

fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid boolean {s:?}")),
    }
}

/// nsqadmin's command line. Field docs are the flag help.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "nsqadmin",
    about = "nsqadmin: web UI and JSON API over an NSQ cluster",
    disable_version_flag = true,
    args_override_self = true
)]
pub struct Options {
    /// path to a TOML config file (NSQ's nsqadmin key names)
    #[arg(long)]
    pub config: Option<PathBuf>,

    /// print version string
    #[arg(long, value_parser = parse_bool, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub version: bool,

    /// log level: debug, info, warn, error, or fatal
    #[arg(long, default_value = "info")]
    pub log_level: String,

    /// log message prefix
    #[arg(long, default_value = "[nsqadmin] ")]
    pub log_prefix: String,

    /// [deprecated] has no effect, use --log-level
    #[arg(long, value_parser = parse_bool, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub verbose: bool,

    /// <addr>:<port> to listen on for HTTP clients
    #[arg(long, default_value = "0.0.0.0:4171")]
    pub http_address: String,

    /// URL base path
    #[arg(long, default_value = "/")]
    pub base_path: String,

    /// nsqlookupd HTTP address (may be given multiple times)
    #[arg(long = "lookupd-http-address")]
    pub lookupd_http_addresses: Vec<String>,

    /// nsqd HTTP address (may be given multiple times)
    #[arg(long = "nsqd-http-address")]
    pub nsqd_http_addresses: Vec<String>,

    /// graphite HTTP address (accepted for compatibility; graphs come from nsqadmin's own history)
    #[arg(long, default_value = "")]
    pub graphite_url: String,

    /// proxy HTTP requests to graphite (accepted for compatibility, not used)
    #[arg(long, value_parser = parse_bool, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub proxy_graphite: bool,

    /// prefix used for keys sent to statsd (%s for host replacement, must match nsqd)
    #[arg(long, default_value = "nsq.%s")]
    pub statsd_prefix: String,

    /// the counter stats key formatting applied by the implementation of statsd
    #[arg(long, default_value = "stats.counters.%s.count")]
    pub statsd_counter_format: String,

    /// the gauge stats key formatting applied by the implementation of statsd
    #[arg(long, default_value = "stats.gauges.%s")]
    pub statsd_gauge_format: String,

    /// time interval nsqd is configured to push to statsd (must match nsqd)
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub statsd_interval: Duration,

    /// timeout for HTTP connect
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub http_client_connect_timeout: Duration,

    /// timeout for HTTP request
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub http_client_request_timeout: Duration,

    /// configure the HTTP client to skip verification of TLS certificates
    #[arg(long, value_parser = parse_bool, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub http_client_tls_insecure_skip_verify: bool,

    /// CA file to use when connecting over HTTPS
    #[arg(long, default_value = "")]
    pub http_client_tls_root_ca_file: String,

    /// client certificate file (PEM) presented to nsqd/nsqlookupd over HTTPS
    #[arg(long, default_value = "")]
    pub http_client_tls_cert: String,

    /// client key file (PEM) for --http-client-tls-cert
    #[arg(long, default_value = "")]
    pub http_client_tls_key: String,

    /// A CIDR from which to allow HTTP requests to the /config endpoint
    #[arg(long, default_value = "127.0.0.1/8")]
    pub allow_config_from_cidr: String,

    /// HTTP endpoint (fully qualified) to which POST notifications of admin actions will be sent
    #[arg(long, default_value = "")]
    pub notification_http_endpoint: String,

    /// HTTP header to check for authenticated admin users
    #[arg(long, default_value = "X-Forwarded-User")]
    pub acl_http_header: String,

    /// admin user (may be given multiple times; if none, every user may act)
    #[arg(long = "admin-user")]
    pub admin_users: Vec<String>,

    /// file of `user:bcrypt-hash` lines; when given, every page and API call needs HTTP basic auth
    #[arg(long)]
    pub basic_auth_file: Option<PathBuf>,

    /// how often nsqadmin polls the cluster for its graphs (depth and rate history)
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub history_interval: Duration,

    /// how much history the graphs keep and show
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    pub history_window: Duration,
}

impl Options {
    /// The base path without a trailing slash: "" for "/", "/admin" for "/admin/".
    pub fn base(&self) -> String {
        let b = self.base_path.trim().trim_end_matches('/');
        if b.is_empty() {
            String::new()
        } else if b.starts_with('/') {
            b.to_string()
        } else {
            format!("/{b}")
        }
    }
}

/// Checks NSQ's nsqadmin makes at startup, plus ours.
pub fn validate(o: &Options) -> Result<(), String> {
    if o.lookupd_http_addresses.is_empty() && o.nsqd_http_addresses.is_empty() {
        return Err("--nsqd-http-address or --lookupd-http-address required".into());
    }
    if !o.lookupd_http_addresses.is_empty() && !o.nsqd_http_addresses.is_empty() {
        return Err("use --nsqd-http-address or --lookupd-http-address not both".into());
    }
    if !o.allow_config_from_cidr.is_empty() {
        Cidr::parse(&o.allow_config_from_cidr)?;
    }
    if o.http_client_tls_cert.is_empty() != o.http_client_tls_key.is_empty() {
        return Err("--http-client-tls-cert and --http-client-tls-key go together".into());
    }
    if o.history_interval.is_zero() {
        return Err("--history-interval must be positive".into());
    }
    let endpoint = &o.notification_http_endpoint;
    if !(endpoint.is_empty() || endpoint.starts_with("http://") || endpoint.starts_with("https://"))
    {
        return Err("--notification-http-endpoint must be a fully qualified http(s) URL".into());
    }
    Ok(())
}

/// An IP network (`10.0.0.0/8`, `::1/128`) for --allow-config-from-cidr.
#[derive(Debug, Clone, Copy)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, bits) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid CIDR {s:?}"))?;
        let net: IpAddr = ip.parse().map_err(|_| format!("invalid CIDR {s:?}"))?;
        let bits: u8 = bits.parse().map_err(|_| format!("invalid CIDR {s:?}"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        if bits > max {
            return Err(format!("invalid CIDR {s:?}"));
        }
        Ok(Cidr { net, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        fn prefix(a: &[u8], b: &[u8], bits: u8) -> bool {
            let full = (bits / 8) as usize;
            let rest = bits % 8;
            if a[..full] != b[..full] {
                return false;
            }
            if rest == 0 {
                return true;
            }
            let mask = 0xffu8 << (8 - rest);
            (a[full] & mask) == (b[full] & mask)
        }
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => prefix(&n.octets(), &i.octets(), self.bits),
            (IpAddr::V6(n), IpAddr::V6(i)) => prefix(&n.octets(), &i.octets(), self.bits),
            _ => false,
        }
    }
}

/// NSQ's config-file names for nsqadmin's flags (where a key is not simply the flag name
/// with underscores) and which flags are durations (an integer in the file is milliseconds).
pub fn config_spec() -> protocol::cli::ConfigSpec<'static> {
    use clap::CommandFactory;
    protocol::cli::ConfigSpec {
        flags: Options::command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(String::from))
            .collect(),
        renames: &[
            ("nsqlookupd_http_addresses", "lookupd-http-address"),
            ("nsqd_http_addresses", "nsqd-http-address"),
            ("admin_users", "admin-user"),
        ],
        durations: &[
            "statsd-interval",
            "http-client-connect-timeout",
            "http-client-request-timeout",
            "history-interval",
            "history-window",
        ],
    }
}

/// Expand `--config FILE` into flags placed before the command line's own, so flags given
/// on the command line win over the file (as in NSQ). Unknown keys are skipped; the binary
/// uses `protocol::cli::with_config_file` directly to log them.
pub fn with_config_file(args: Vec<String>) -> Result<Vec<String>, String> {
    protocol::cli::with_config_file(args, &config_spec()).map(|(args, _)| args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Options {
        let mut v = vec!["nsqadmin".to_string()];
        v.extend(args.iter().map(|s| s.to_string()));
        Options::try_parse_from(normalize_args(v)).unwrap()
    }

    #[test]
    fn defaults_match_nsq() {
        let o = parse(&["-lookupd-http-address=127.0.0.1:4161"]);
        assert_eq!(o.http_address, "0.0.0.0:4171");
        assert_eq!(o.acl_http_header, "X-Forwarded-User");
        assert_eq!(o.allow_config_from_cidr, "127.0.0.1/8");
        assert_eq!(o.http_client_connect_timeout, Duration::from_secs(2));
        assert_eq!(o.http_client_request_timeout, Duration::from_secs(5));
        assert_eq!(o.statsd_interval, Duration::from_secs(60));
        assert_eq!(o.base(), "");
        assert!(validate(&o).is_ok());
    }

    #[test]
    fn repeatable_and_exclusive() {
        let o = parse(&[
            "--nsqd-http-address=a:1",
            "--nsqd-http-address=b:2",
            "--admin-user=alice",
            "--admin-user=bob",
            "--base-path=/admin/",
        ]);
        assert_eq!(o.nsqd_http_addresses, vec!["a:1", "b:2"]);
        assert_eq!(o.admin_users, vec!["alice", "bob"]);
        assert_eq!(o.base(), "/admin");
        let both = parse(&["--nsqd-http-address=a:1", "--lookupd-http-address=b:2"]);
        assert!(validate(&both).is_err());
        assert!(validate(&parse(&[])).is_err());
    }

    #[test]
    fn cidr() {
        let c = Cidr::parse("127.0.0.1/8").unwrap();
        assert!(c.contains("127.9.9.9".parse().unwrap()));
        assert!(!c.contains("10.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:127.0.0.1".parse().unwrap()));
        let c = Cidr::parse("10.1.0.0/17").unwrap();
        assert!(c.contains("10.1.127.1".parse().unwrap()));
        assert!(!c.contains("10.1.128.1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nonsense").is_err());
    }

    #[test]
    fn config_file_uses_nsq_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nsqadmin.toml");
        std::fs::write(
            &p,
            "nsqlookupd_http_addresses = [\"l1:4161\", \"l2:4161\"]\nadmin_users = [\"root\"]\nhttp_address = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let args = with_config_file(vec![
            "nsqadmin".into(),
            format!("--config={}", p.display()),
            "--http-address=127.0.0.1:2".into(),
        ])
        .unwrap();
        let o = Options::try_parse_from(args).unwrap();
        assert_eq!(o.lookupd_http_addresses, vec!["l1:4161", "l2:4161"]);
        assert_eq!(o.admin_users, vec!["root"]);
        assert_eq!(o.http_address, "127.0.0.1:2", "command line wins");
    }
}
