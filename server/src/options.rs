//! nsqd's options: one struct with NSQ's flag names, defaults and meanings, so a deployment
//! can swap binaries without touching its scripts. Durations take Go's syntax (`60s`, `1h`,
//! `250ms`) because that is what existing NSQ command lines and config files contain.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};

pub use protocol::cli::{normalize_args, parse_duration, ConfigSpec};

fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid boolean {s:?}")),
    }
}

fn default_hostname() -> String {
    let h = edge::hostname();
    if h.is_empty() {
        "localhost".to_string()
    } else {
        h
    }
}

/// nsqd's command line. Field docs are the flag help.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "nsqd",
    about = "nsqd: receives, queues and delivers messages (NSQ-compatible)",
    disable_version_flag = true,
    args_override_self = true
)]
pub struct Options {
    /// path to config file (NSQ's TOML keys: flag names with underscores, plus `id`,
    /// `nsqlookupd_tcp_addresses`, `auth_http_addresses`, `e2e_processing_latency_percentiles`)
    #[arg(long)]
    pub config: Option<PathBuf>,

    /// print version string
    #[arg(long, action = ArgAction::SetTrue)]
    pub version: bool,

    /// log level: debug, info, warn, error, or fatal
    #[arg(long, default_value = "info")]
    pub log_level: String,

    /// log message prefix
    #[arg(long, default_value = "[nsqd] ")]
    pub log_prefix: String,

    /// [deprecated] has no effect, use --log-level
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub verbose: Option<String>,

    /// unique part for message IDs, (int) in range [0,1024) (default is hash of hostname)
    #[arg(long, default_value_t = default_node_id(), allow_negative_numbers = true)]
    pub node_id: i64,

    /// [deprecated] use --node-id
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub worker_id: Option<String>,

    /// <addr>:<port> to listen on for HTTPS clients (served when --tls-cert/--tls-key are set)
    #[arg(long, default_value = "0.0.0.0:4152")]
    pub https_address: String,

    /// <addr>:<port> to listen on for HTTP clients
    #[arg(long, default_value = "0.0.0.0:4151")]
    pub http_address: String,

    /// <addr>:<port> to listen on for TCP clients
    #[arg(long, default_value = "0.0.0.0:4150")]
    pub tcp_address: String,

    /// address that will be registered with lookupd (defaults to the OS hostname)
    #[arg(long, default_value_t = default_hostname())]
    pub broadcast_address: String,

    /// TCP port that will be registered with lookupd (defaults to the TCP port that this nsqd is listening on)
    #[arg(long, default_value_t = 0)]
    pub broadcast_tcp_port: u16,

    /// HTTP port that will be registered with lookupd (defaults to the HTTP port that this nsqd is listening on)
    #[arg(long, default_value_t = 0)]
    pub broadcast_http_port: u16,

    /// lookupd TCP address (may be given multiple times)
    #[arg(long = "lookupd-tcp-address")]
    pub lookupd_tcp_addresses: Vec<String>,

    /// timeout for HTTP connect
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub http_client_connect_timeout: Duration,

    /// timeout for HTTP request (e.g. to the auth server)
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub http_client_request_timeout: Duration,

    /// path to store disk-backed messages
    #[arg(long, default_value = "")]
    pub data_path: String,

    /// number of messages to keep in memory (per topic)
    #[arg(long, default_value_t = 10000)]
    pub mem_queue_size: i64,

    /// number of bytes per diskqueue file before rolling
    #[arg(long, default_value_t = 104857600)]
    pub max_bytes_per_file: i64,

    /// refuse publishes to a topic whose log holds this many bytes on disk (0 = no bound;
    /// beyond NSQ: backpressure instead of filling the disk)
    #[arg(long, default_value_t = 0)]
    pub max_bytes_per_topic: i64,

    /// keep finished messages this long for replay (/channel/rewind); 0 = delete a segment
    /// as soon as every channel has finished it (beyond NSQ)
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub retention_time: Duration,

    /// keep at least the newest this many bytes of finished messages per topic for replay
    /// (0 = none; beyond NSQ)
    #[arg(long, default_value_t = 0)]
    pub retention_bytes: i64,

    /// number of messages per diskqueue fsync
    #[arg(long, default_value_t = 2500)]
    pub sync_every: i64,

    /// duration of time per diskqueue fsync
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub sync_timeout: Duration,

    /// max concurrency for checking in-flight and deferred message timeouts (accepted;
    /// nsq-rs checks every channel's timers on one timer, so it has no effect)
    #[arg(long, default_value_t = 4)]
    pub queue_scan_worker_pool_max: i64,

    /// number of channels to check per cycle (every 100ms) for in-flight and deferred
    /// timeouts (accepted; nsq-rs checks every channel each cycle, so it has no effect)
    #[arg(long, default_value_t = 20)]
    pub queue_scan_selection_count: i64,

    /// duration to wait before auto-requeing a message
    #[arg(long, value_parser = parse_duration, default_value = "1m0s")]
    pub msg_timeout: Duration,

    /// maximum duration before a message will timeout
    #[arg(long, value_parser = parse_duration, default_value = "15m0s")]
    pub max_msg_timeout: Duration,

    /// maximum size of a single message in bytes
    #[arg(long, default_value_t = 1048576)]
    pub max_msg_size: i64,

    /// maximum requeuing timeout
    #[arg(long, value_parser = parse_duration, default_value = "1h0m0s")]
    pub max_req_timeout: Duration,

    /// maximum size of a single command body
    #[arg(long, default_value_t = 5242880)]
    pub max_body_size: i64,

    /// maximum client configurable duration of time between client heartbeats
    #[arg(long, value_parser = parse_duration, default_value = "1m0s")]
    pub max_heartbeat_interval: Duration,

    /// maximum RDY count for a client
    #[arg(long, default_value_t = 2500)]
    pub max_rdy_count: i64,

    /// maximum client configurable size (in bytes) for a client output buffer
    #[arg(long, default_value_t = 65536)]
    pub max_output_buffer_size: i64,

    /// maximum client configurable duration of time between flushing to a client
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub max_output_buffer_timeout: Duration,

    /// minimum client configurable duration of time between flushing to a client
    #[arg(long, value_parser = parse_duration, default_value = "25ms")]
    pub min_output_buffer_timeout: Duration,

    /// duration of time between flushing to a client (default for clients that don't say)
    #[arg(long, value_parser = parse_duration, default_value = "250ms")]
    pub output_buffer_timeout: Duration,

    /// maximum channel consumer connection count per nsqd instance (default 0, i.e., unlimited)
    #[arg(long, default_value_t = 0)]
    pub max_channel_consumers: i64,

    /// message processing time percentiles (as float (0, 1.0]) to track (can be specified
    /// multiple times or comma separated '1.0,0.99,0.95', default none)
    #[arg(long = "e2e-processing-latency-percentile", value_delimiter = ',')]
    pub e2e_processing_latency_percentiles: Vec<f64>,

    /// calculate end to end latency quantiles for this duration of time
    #[arg(long, value_parser = parse_duration, default_value = "10m0s")]
    pub e2e_processing_latency_window_time: Duration,

    /// enable deflate feature negotiation (client compression)
    #[arg(long, default_value = "true", value_parser = parse_bool, num_args = 0..=1, default_missing_value = "true")]
    pub deflate: bool,

    /// max deflate compression level a client can negotiate (> values == > nsqd CPU usage)
    #[arg(long, default_value_t = 6)]
    pub max_deflate_level: i32,

    /// enable snappy feature negotiation (client compression)
    #[arg(long, default_value = "true", value_parser = parse_bool, num_args = 0..=1, default_missing_value = "true")]
    pub snappy: bool,

    /// path to certificate file
    #[arg(long, default_value = "")]
    pub tls_cert: String,

    /// path to key file
    #[arg(long, default_value = "")]
    pub tls_key: String,

    /// client certificate auth policy ('require' or 'require-verify')
    #[arg(long, default_value = "")]
    pub tls_client_auth_policy: String,

    /// path to certificate authority file
    #[arg(long, default_value = "")]
    pub tls_root_ca_file: String,

    /// require TLS for client connections (true, false, tcp-https)
    #[arg(long, default_value = "false", num_args = 0..=1, default_missing_value = "true")]
    pub tls_required: String,

    /// minimum SSL/TLS version acceptable ('ssl3.0', 'tls1.0', 'tls1.1', 'tls1.2' or 'tls1.3')
    #[arg(long, default_value = "tls1.0")]
    pub tls_min_version: String,

    /// <addr>:<port> of an HTTP auth server (may be given multiple times)
    #[arg(long = "auth-http-address")]
    pub auth_http_addresses: Vec<String>,

    /// HTTP method to use for the auth server request (get or post)
    #[arg(long, default_value = "get")]
    pub auth_http_request_method: String,

    /// UDP <addr>:<port> of a statsd daemon for pushing stats
    #[arg(long, default_value = "")]
    pub statsd_address: String,

    /// prefix used for keys sent to statsd (%s for host replacement)
    #[arg(long, default_value = "nsq.%s")]
    pub statsd_prefix: String,

    /// duration between pushing to statsd
    #[arg(long, value_parser = parse_duration, default_value = "1m0s")]
    pub statsd_interval: Duration,

    /// toggle sending memory and GC stats to statsd
    #[arg(long, default_value = "true", value_parser = parse_bool, num_args = 0..=1, default_missing_value = "true")]
    pub statsd_mem_stats: bool,

    /// skip ephemeral topics and channels when sending stats to statsd
    #[arg(long, default_value = "false", value_parser = parse_bool, num_args = 0..=1, default_missing_value = "true")]
    pub statsd_exclude_ephemeral: bool,

    /// the size in bytes of statsd UDP packets
    #[arg(long, default_value_t = 508)]
    pub statsd_udp_packet_size: i64,
}

/// NSQ's default node id: a hash of the hostname (CRC-32 of its MD5 digest, mod 1024), so a
/// host keeps its id across restarts and NSQ and nsq-rs pick the same one.
pub fn default_node_id() -> i64 {
    let digest = crate::md5::digest(default_hostname().as_bytes());
    i64::from(crc32fast::hash(&digest) % 1024)
}

/// NSQ's config-file names for nsqd's flags.
pub fn config_spec() -> ConfigSpec<'static> {
    use clap::CommandFactory;
    ConfigSpec {
        flags: Options::command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(String::from))
            .collect(),
        renames: &[
            ("id", "node-id"),
            ("nsqlookupd_tcp_addresses", "lookupd-tcp-address"),
            ("auth_http_addresses", "auth-http-address"),
            (
                "e2e_processing_latency_percentiles",
                "e2e-processing-latency-percentile",
            ),
        ],
        durations: &[
            "http-client-connect-timeout",
            "http-client-request-timeout",
            "sync-timeout",
            "msg-timeout",
            "max-msg-timeout",
            "max-req-timeout",
            "max-heartbeat-interval",
            "max-output-buffer-timeout",
            "min-output-buffer-timeout",
            "output-buffer-timeout",
            "e2e-processing-latency-window-time",
            "statsd-interval",
        ],
    }
}

/// Warnings for the startup log: deprecated flags, and flags that are accepted for NSQ's
/// sake but cannot do here what they do in NSQ. `explicit` says whether a flag was given
/// (on the command line or in the config file).
pub fn startup_warnings(o: &Options, explicit: impl Fn(&str) -> bool) -> Vec<String> {
    let mut w = Vec::new();
    if o.verbose.is_some() {
        w.push("--verbose is deprecated and has no effect; use --log-level".to_string());
    }
    if o.worker_id.is_some() {
        w.push("--worker-id is deprecated and has no effect; use --node-id".to_string());
    }
    for flag in ["queue_scan_worker_pool_max", "queue_scan_selection_count"] {
        if explicit(flag) {
            w.push(format!(
                "--{} has no effect: nsq-rs checks every channel's in-flight and deferred timers on one timer",
                flag.replace('_', "-")
            ));
        }
    }
    if o.tls_enabled()
        && matches!(
            o.tls_min_version.to_ascii_lowercase().as_str(),
            "ssl3.0" | "tls1.0" | "tls1.1"
        )
    {
        w.push(format!(
            "--tls-min-version={}: only TLS 1.2 and 1.3 are supported, so the minimum is TLS 1.2",
            o.tls_min_version
        ));
    }
    if o.e2e_processing_latency_percentiles
        .iter()
        .any(|p| *p > 1.0 && *p <= 100.0)
    {
        w.push(
            "e2e processing latency percentiles above 1 are read as percentages (99 = 0.99)"
                .to_string(),
        );
    }
    w
}

/// Process-level errors in option values, reported before anything starts.
pub fn validate(o: &Options) -> Result<(), String> {
    let nonneg = [
        ("--mem-queue-size", o.mem_queue_size),
        ("--max-bytes-per-file", o.max_bytes_per_file),
        ("--max-bytes-per-topic", o.max_bytes_per_topic),
        ("--retention-bytes", o.retention_bytes),
        ("--sync-every", o.sync_every),
        ("--max-msg-size", o.max_msg_size),
        ("--max-body-size", o.max_body_size),
        ("--max-rdy-count", o.max_rdy_count),
        ("--max-output-buffer-size", o.max_output_buffer_size),
        ("--max-channel-consumers", o.max_channel_consumers),
    ];
    for (name, v) in nonneg {
        if v < 0 {
            return Err(format!("{name} must be >= 0 (got {v})"));
        }
    }
    if o.max_bytes_per_file < 1024 {
        return Err(format!(
            "--max-bytes-per-file must be at least 1024 (got {})",
            o.max_bytes_per_file
        ));
    }
    if o.max_msg_size < 1 || o.max_body_size < 1 {
        return Err("--max-msg-size and --max-body-size must be > 0".into());
    }
    if !(1..=9).contains(&o.max_deflate_level) {
        return Err(format!(
            "--max-deflate-level must be in [1,9] (got {})",
            o.max_deflate_level
        ));
    }
    match o.tls_required.as_str() {
        "true" | "false" | "tcp-https" | "1" | "0" | "t" | "f" | "TRUE" | "FALSE" | "True"
        | "False" | "T" | "F" => {}
        other => return Err(format!("invalid --tls-required {other:?}")),
    }
    if o.tls_required() && (o.tls_cert.is_empty() || o.tls_key.is_empty()) {
        return Err("--tls-required needs --tls-cert and --tls-key".into());
    }
    if o.tls_cert.is_empty() != o.tls_key.is_empty() {
        return Err("--tls-cert and --tls-key must be given together".into());
    }
    if !(0..1024).contains(&o.node_id) {
        return Err(format!("--node-id must be [0,1024) (got {})", o.node_id));
    }
    match o.tls_min_version.to_ascii_lowercase().as_str() {
        "" | "ssl3.0" | "tls1.0" | "tls1.1" | "tls1.2" | "tls1.3" => {}
        other => return Err(format!("unknown --tls-min-version {other:?}")),
    }
    if o.statsd_udp_packet_size < 1 {
        return Err("--statsd-udp-packet-size must be > 0".into());
    }
    if !o.statsd_address.is_empty() && o.statsd_interval < Duration::from_millis(1) {
        return Err("--statsd-interval must be > 0".into());
    }
    for p in &o.e2e_processing_latency_percentiles {
        if !(*p > 0.0 && *p <= 100.0) {
            return Err(format!(
                "--e2e-processing-latency-percentile must be in (0, 1.0] (got {p})"
            ));
        }
    }
    for a in o.lookupd_tcp_addresses.iter().chain(&o.auth_http_addresses) {
        if a.rsplit_once(':').is_none() {
            return Err(format!("invalid address {a:?} (want host:port)"));
        }
    }
    Ok(())
}

impl Options {
    /// `--tls-required` as in force: as NSQ does, a `--tls-client-auth-policy` without
    /// `--tls-required` requires TLS everywhere (a client certificate policy means nothing
    /// for clients that may skip TLS).
    fn tls_required_mode(&self) -> String {
        let given = self.tls_required.to_ascii_lowercase();
        let not_required = matches!(given.as_str(), "" | "false" | "0" | "f");
        if not_required && !self.tls_client_auth_policy.is_empty() {
            "true".to_string()
        } else {
            given
        }
    }

    pub fn tls_required(&self) -> bool {
        matches!(
            self.tls_required_mode().as_str(),
            "true" | "1" | "t" | "tcp-https"
        )
    }

    /// `--tls-required=true` also refuses plain HTTP (NSQ's TLSRequired); `tcp-https`
    /// only requires TLS on TCP (NSQ's TLSRequiredExceptHTTP).
    pub fn tls_required_on_http(&self) -> bool {
        matches!(self.tls_required_mode().as_str(), "true" | "1" | "t")
    }

    /// NSQ's numeric tls_required as /config reports it: 0 not required, 1 except HTTP,
    /// 2 required everywhere.
    pub fn tls_required_code(&self) -> i64 {
        if self.tls_required_on_http() {
            2
        } else if self.tls_required() {
            1
        } else {
            0
        }
    }

    /// Percentiles as fractions: values above 1 are percentages (from old config files).
    pub fn percentiles(&self) -> Vec<f64> {
        self.e2e_processing_latency_percentiles
            .iter()
            .map(|p| if *p > 1.0 { p / 100.0 } else { *p })
            .collect()
    }

    pub fn tls_enabled(&self) -> bool {
        !self.tls_cert.is_empty() && !self.tls_key.is_empty()
    }

    pub fn data_dir(&self) -> PathBuf {
        if self.data_path.is_empty() {
            std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
        } else {
            PathBuf::from(&self.data_path)
        }
    }

    pub fn tcp_socket_addr(&self) -> Result<SocketAddr, String> {
        resolve(&self.tcp_address)
    }

    pub fn http_socket_addr(&self) -> Result<SocketAddr, String> {
        resolve(&self.http_address)
    }
}

pub use edge::resolve;

/// Expand `--config FILE` with nsqd's key names (see [`protocol::cli::with_config_file`]).
pub fn with_config_file(args: Vec<String>) -> Result<(Vec<String>, Vec<String>), String> {
    protocol::cli::with_config_file(args, &config_spec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_auth_policy_requires_tls_as_in_nsq() {
        let mut o = Options::parse_from(["nsqd", "--tls-client-auth-policy=require"]);
        assert!(o.tls_required() && o.tls_required_on_http());
        assert_eq!(o.tls_required_code(), 2);
        o.tls_required = "tcp-https".into(); // an explicit setting is kept
        assert!(o.tls_required() && !o.tls_required_on_http());
        o.tls_client_auth_policy.clear();
        o.tls_required = "false".into();
        assert!(!o.tls_required());
        assert_eq!(o.tls_required_code(), 0);
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1m0s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("100").is_err(), "Go needs a unit");
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn defaults_match_nsq() {
        let o = Options::parse_from(["nsqd"]);
        assert_eq!(o.tcp_address, "0.0.0.0:4150");
        assert_eq!(o.http_address, "0.0.0.0:4151");
        assert_eq!(o.mem_queue_size, 10000);
        assert_eq!(o.max_bytes_per_file, 104857600);
        assert_eq!(o.sync_every, 2500);
        assert_eq!(o.sync_timeout, Duration::from_secs(2));
        assert_eq!(o.msg_timeout, Duration::from_secs(60));
        assert_eq!(o.max_msg_timeout, Duration::from_secs(900));
        assert_eq!(o.max_msg_size, 1048576);
        assert_eq!(o.max_body_size, 5242880);
        assert_eq!(o.max_rdy_count, 2500);
        assert_eq!(o.max_req_timeout, Duration::from_secs(3600));
        assert!(o.snappy && o.deflate);
        assert!(validate(&o).is_ok());
    }

    #[test]
    fn single_dash_and_bools() {
        let args = normalize_args(
            [
                "nsqd",
                "-mem-queue-size=0",
                "--snappy=false",
                "-deflate",
                "false",
            ]
            .map(String::from),
        );
        let o = Options::try_parse_from(args).unwrap();
        assert_eq!(o.mem_queue_size, 0);
        assert!(!o.snappy);
        assert!(!o.deflate);
    }

    #[test]
    fn bad_values_rejected() {
        let o = Options::parse_from(["nsqd", "--mem-queue-size=-1"]);
        assert!(validate(&o).is_err());
        assert!(Options::try_parse_from(["nsqd", "--msg-timeout=banana"]).is_err());
        let o = Options::parse_from(["nsqd", "--tls-required=true"]);
        assert!(validate(&o).is_err());
    }

    #[test]
    fn config_file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nsqd.toml");
        std::fs::write(
            &p,
            "mem_queue_size = 5\nmsg_timeout = \"10s\"\nnsqlookupd_tcp_addresses = [\"127.0.0.1:4160\"]\nid = 7\n",
        )
        .unwrap();
        let (args, _) = with_config_file(vec![
            "nsqd".into(),
            format!("--config={}", p.display()),
            "--mem-queue-size=7".into(),
        ])
        .unwrap();
        let o = Options::try_parse_from(args).unwrap();
        assert_eq!(o.mem_queue_size, 7);
        assert_eq!(o.msg_timeout, Duration::from_secs(10));
        assert_eq!(o.lookupd_tcp_addresses, vec!["127.0.0.1:4160".to_string()]);
        assert_eq!(o.node_id, 7);
    }
}
