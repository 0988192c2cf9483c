//! Pieces shared by the command-line tools: NSQ's consumer flags, `--consumer-opt` /
//! `--producer-opt` pass-through; logging and signal handling come from `edge`.

#![forbid(unsafe_code)]

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

pub use protocol::cli::{normalize_args, parse_duration};

/// Parse the process arguments the way NSQ's Go tools accept them (`-topic=x` as well as
/// `--topic=x`).
pub fn parse_args<T: clap::Parser>() -> T {
    T::parse_from(normalize_args(std::env::args()))
}

/// Where a consumer finds nsqd, and how much it takes at once (NSQ's flag names).
#[derive(Args, Debug, Clone)]
pub struct Source {
    /// nsqd TCP address (may be given multiple times)
    #[arg(long = "nsqd-tcp-address")]
    pub nsqd_tcp_address: Vec<String>,
    /// lookupd HTTP address (may be given multiple times)
    #[arg(long = "lookupd-http-address")]
    pub lookupd_http_address: Vec<String>,
    /// max number of messages to allow in flight
    #[arg(long = "max-in-flight", default_value_t = 200)]
    pub max_in_flight: u32,
    /// option to pass through to the consumer, as NSQ's key,value (key=value also works;
    /// may be given multiple times;
    /// go-nsq's names: max_attempts, msg_timeout, heartbeat_interval, snappy, deflate,
    /// deflate_level, tls_v1, tls_insecure_skip_verify, tls_root_ca_file, sample_rate,
    /// lookupd_poll_interval, default_requeue_delay, max_backoff_duration,
    /// backoff_multiplier, auth_secret, user_agent, client_id)
    #[arg(long = "consumer-opt")]
    pub consumer_opt: Vec<String>,
    /// timeout for HTTP connect
    #[arg(long = "http-client-connect-timeout", value_parser = parse_duration, default_value = "2s")]
    pub http_connect_timeout: Duration,
    /// timeout for HTTP request
    #[arg(long = "http-client-request-timeout", value_parser = parse_duration, default_value = "5s")]
    pub http_request_timeout: Duration,
}

impl Source {
    pub fn check(&self) -> Result<()> {
        if self.nsqd_tcp_address.is_empty() == self.lookupd_http_address.is_empty() {
            bail!("use --nsqd-tcp-address or --lookupd-http-address (one of them, not both)");
        }
        Ok(())
    }

    pub fn config(&self) -> Result<client::Config> {
        let mut c = client::Config {
            max_in_flight: self.max_in_flight.max(1),
            ..client::Config::default()
        };
        for opt in &self.consumer_opt {
            apply_opt(&mut c, opt)?;
        }
        Ok(c)
    }

    pub fn http_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .connect_timeout(self.http_connect_timeout)
            .timeout(self.http_request_timeout)
            .build()
            .unwrap_or_default()
    }

    /// Connect a consumer to every source.
    pub async fn connect(&self, consumer: &client::Consumer) -> Result<()> {
        for a in &self.nsqd_tcp_address {
            consumer
                .connect_to_nsqd(a)
                .await
                .with_context(|| format!("connecting to nsqd {a}"))?;
        }
        for l in &self.lookupd_http_address {
            if let Err(e) = consumer.connect_to_lookupd(l).await {
                // Polling goes on; a lookupd that is down now may come back.
                tracing::warn!("{e}");
            }
        }
        Ok(())
    }
}

/// Apply one go-nsq style option to a client configuration: NSQ's `key,value` (as go-nsq's
/// ConfigFlag takes it), `key=value`, or a bare `key` meaning true.
pub fn apply_opt(c: &mut client::Config, opt: &str) -> Result<()> {
    let (k, v) = match opt.find([',', '=']) {
        Some(i) => (opt[..i].trim(), opt[i + 1..].trim()),
        None => (opt.trim(), "true"),
    };
    let bool_v = || -> Result<bool> {
        match v {
            "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok(true),
            "false" | "0" | "f" | "F" | "FALSE" | "False" => Ok(false),
            _ => bail!("option {k}: invalid boolean {v:?}"),
        }
    };
    let dur = || parse_duration(v).map_err(|e| anyhow::anyhow!("option {k}: {e}"));
    let int = || -> Result<u64> {
        v.parse()
            .with_context(|| format!("option {k}: invalid number {v:?}"))
    };
    match k {
        "max_attempts" => c.max_attempts = int()?.min(u16::MAX as u64) as u16,
        "max_in_flight" => c.max_in_flight = int()?.clamp(1, u32::MAX as u64) as u32,
        "msg_timeout" => c.msg_timeout = Some(dur()?),
        "heartbeat_interval" => c.heartbeat_interval = Some(dur()?),
        "read_timeout" | "write_timeout" | "dial_timeout" => c.dial_timeout = dur()?,
        "snappy" if bool_v()? => c.compression = client::Compression::Snappy,
        "deflate" if bool_v()? => c.compression = client::Compression::Deflate(6),
        "snappy" | "deflate" => c.compression = client::Compression::None,
        "deflate_level" => {
            c.compression = client::Compression::Deflate(int()?.clamp(1, 9) as u32);
        }
        "tls_v1" => {
            if bool_v()? {
                c.tls.get_or_insert_with(Default::default);
            } else {
                c.tls = None;
            }
        }
        "tls_insecure_skip_verify" => {
            c.tls
                .get_or_insert_with(Default::default)
                .insecure_skip_verify = bool_v()?
        }
        "tls_root_ca_file" => {
            c.tls.get_or_insert_with(Default::default).root_ca_file = Some(v.into())
        }
        "sample_rate" => c.sample_rate = int()?.min(99) as u8,
        "lookupd_poll_interval" => c.lookupd_poll_interval = dur()?,
        "default_requeue_delay" => c.default_requeue_delay = dur()?,
        "max_requeue_delay" => c.max_requeue_delay = dur()?,
        "max_backoff_duration" => c.max_backoff_duration = dur()?,
        "backoff_multiplier" => c.backoff_multiplier = dur()?,
        "auth_secret" => c.auth_secret = Some(v.to_string()),
        "user_agent" => c.user_agent = v.to_string(),
        "client_id" => c.client_id = v.to_string(),
        "hostname" => c.hostname = v.to_string(),
        "output_buffer_size" => c.output_buffer_size = Some(int()? as i64),
        "output_buffer_timeout" => c.output_buffer_timeout = Some(dur()?),
        _ => bail!("unknown option {k:?}"),
    }
    Ok(())
}

/// `tracing` to stderr at `level` (debug, info, warn, error, fatal), with the tool's name as
/// the prefix (`[nsq_tail] `), as NSQ's tools log.
pub fn init_logging(level: &str) {
    init_logging_with_prefix(level, &edge::log::program_prefix());
}

/// Like [`init_logging`] with an explicit `--log-prefix`. Lines look like NSQ's
/// (`[nsq_to_file] 2026/12/01 12:25:21.855673 INFO: ...`; see [`edge::log`]). A level NSQ
/// does not know logs at info.
pub fn init_logging_with_prefix(level: &str, prefix: &str) {
    if edge::log::init(level, prefix, "").is_err() {
        let _ = edge::log::init("info", prefix, "");
    }
}

/// End the process the way every tool does: on an error, print it prefixed with the
/// tool's name and exit with status 1.
pub fn exit_on_error(tool: &str, r: Result<()>) {
    if let Err(e) = r {
        eprintln!("{tool}: {e:#}");
        std::process::exit(1);
    }
}

/// Resolves on the first SIGINT or SIGTERM.
pub use edge::signal::shutdown_signal;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_opts() {
        let mut c = client::Config::default();
        apply_opt(&mut c, "max_attempts=7").unwrap();
        apply_opt(&mut c, "snappy=true").unwrap();
        apply_opt(&mut c, "msg_timeout=30s").unwrap();
        apply_opt(&mut c, "tls_insecure_skip_verify").unwrap();
        assert_eq!(c.max_attempts, 7);
        assert_eq!(c.compression, client::Compression::Snappy);
        assert_eq!(c.msg_timeout, Some(Duration::from_secs(30)));
        assert!(c.tls.as_ref().unwrap().insecure_skip_verify);
        assert!(apply_opt(&mut c, "bogus=1").is_err());
        assert!(apply_opt(&mut c, "max_attempts=x").is_err());
        assert!(apply_opt(&mut c, "snappy=maybe").is_err());
    }
}
