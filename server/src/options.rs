//! nsqd's options: one struct with NSQ's flag names, defaults and meanings, so a deployment
//! can swap binaries without touching its scripts. Durations take Go's syntax (`60s`, `1h`,
//! `250ms`) because that is what existing NSQ command lines and config files contain.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};

pub use protocol::cli::{normalize_args, parse_duration};

fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid boolean {s:?}")),
    }
}

fn default_hostname() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
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
    /// path to a TOML config file (keys are flag names with underscores)
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

    /// unique part for message IDs, (int) in range [0,1024) (default is hash of hostname)
    #[arg(long, alias = "worker-id")]
    pub node_id: Option<u16>,

    /// <addr>:<port> to listen on for HTTPS clients
    #[arg(long)]
    pub https_address: Option<String>,

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

    /// Deprecated. Use --http-client-request-timeout instead. (accepted and ignored)
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

    /// message processing time percentiles (as float (0, 1.0]) to track (can be specified multiple times)
    #[arg(long = "e2e-processing-latency-percentile")]
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

    /// UDP <addr>:<port> of a statsd daemon for pushing stats (accepted; statsd output is not implemented)
    #[arg(long, default_value = "")]
    pub statsd_address: String,

    /// prefix used for keys sent to statsd (accepted, unused)
    #[arg(long, default_value = "nsq.%s")]
    pub statsd_prefix: String,

    /// duration between pushing to statsd (accepted, unused)
    #[arg(long, value_parser = parse_duration, default_value = "1m0s")]
    pub statsd_interval: Duration,

    /// toggle sending memory and GC stats to statsd (accepted, unused)
    #[arg(long, default_value = "true", value_parser = parse_bool, num_args = 0..=1, default_missing_value = "true")]
    pub statsd_mem_stats: bool,

    /// the size of the UDP packets sent to statsd (accepted, unused)
    #[arg(long, default_value_t = 508)]
    pub statsd_udp_packet_size: i64,
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
        "true" | "false" | "tcp-https" | "1" | "0" => {}
        other => return Err(format!("invalid --tls-required {other:?}")),
    }
    if o.tls_required() && (o.tls_cert.is_empty() || o.tls_key.is_empty()) {
        return Err("--tls-required needs --tls-cert and --tls-key".into());
    }
    if o.tls_cert.is_empty() != o.tls_key.is_empty() {
        return Err("--tls-cert and --tls-key must be given together".into());
    }
    for p in &o.e2e_processing_latency_percentiles {
        if !(*p > 0.0 && *p <= 1.0) {
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
    pub fn tls_required(&self) -> bool {
        matches!(self.tls_required.as_str(), "true" | "1" | "tcp-https")
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

pub fn resolve(addr: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let a = if let Some(port) = addr.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else {
        addr.to_string()
    };
    a.to_socket_addrs()
        .map_err(|e| format!("invalid address {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("address {addr:?} resolves to nothing"))
}

/// Expand `--config FILE` into flags placed before the command line's own, so flags given
/// on the command line win over the file (as in NSQ).
pub fn with_config_file(args: Vec<String>) -> Result<Vec<String>, String> {
    let mut path = None;
    let mut it = args.iter().enumerate();
    while let Some((i, a)) = it.next() {
        if let Some(p) = a.strip_prefix("--config=") {
            path = Some(p.to_string());
        } else if a == "--config" {
            path = args.get(i + 1).cloned();
            it.next();
        }
    }
    let Some(path) = path else {
        return Ok(args);
    };
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read config {path}: {e}"))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("invalid config {path}: {e}"))?;
    let mut flags = Vec::new();
    for (key, value) in table {
        let flag = format!("--{}", key.replace('_', "-"));
        let mut push = |v: &toml::Value| -> Result<(), String> {
            let s = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => return Err(format!("config key {key}: unsupported value {other}")),
            };
            flags.push(format!("{flag}={s}"));
            Ok(())
        };
        match &value {
            toml::Value::Array(items) => {
                for v in items {
                    push(v)?;
                }
            }
            v => push(v)?,
        }
    }
    let mut out = Vec::with_capacity(args.len() + flags.len());
    let mut args = args.into_iter();
    if let Some(prog) = args.next() {
        out.push(prog);
    }
    out.extend(flags);
    out.extend(args);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1m0s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("100").unwrap(), Duration::from_millis(100));
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
            "mem_queue_size = 5\nmsg_timeout = \"10s\"\nlookupd_tcp_address = [\"127.0.0.1:4160\"]\n",
        )
        .unwrap();
        let args = with_config_file(vec![
            "nsqd".into(),
            format!("--config={}", p.display()),
            "--mem-queue-size=7".into(),
        ])
        .unwrap();
        let o = Options::try_parse_from(args).unwrap();
        assert_eq!(o.mem_queue_size, 7);
        assert_eq!(o.msg_timeout, Duration::from_secs(10));
        assert_eq!(o.lookupd_tcp_addresses, vec!["127.0.0.1:4160".to_string()]);
    }
}
