//! Connection settings shared by [`crate::Producer`] and [`crate::Consumer`], with the
//! defaults NSQ's official clients use.

use std::path::PathBuf;
use std::time::Duration;

/// TLS for the `tls_v1` upgrade negotiated in IDENTIFY.
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    /// PEM file with the certificate authorities to trust. Without it (and without
    /// `insecure_skip_verify`) the connection is refused: this library carries no roots.
    pub root_ca_file: Option<PathBuf>,
    /// Accept any certificate (test setups with self-signed certificates only).
    pub insecure_skip_verify: bool,
    /// Name to check the certificate against; default: the host part of the address.
    pub server_name: Option<String>,
}

/// Stream compression negotiated in IDENTIFY (at most one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    #[default]
    None,
    Snappy,
    /// Raw deflate with a level 1..=9 (nsqd caps it at its --max-deflate-level).
    Deflate(u32),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub client_id: String,
    pub hostname: String,
    pub user_agent: String,
    /// Time allowed for the TCP connect and the IDENTIFY exchange.
    pub dial_timeout: Duration,
    /// How often nsqd should send heartbeats (`None`: nsqd's default, 30 s).
    pub heartbeat_interval: Option<Duration>,
    /// Server-side in-flight timeout for this connection (`None`: nsqd's --msg-timeout).
    pub msg_timeout: Option<Duration>,
    pub output_buffer_size: Option<i64>,
    pub output_buffer_timeout: Option<Duration>,
    /// Percentage (1..=99) of the channel's messages this client wants; 0: all.
    pub sample_rate: u8,
    pub compression: Compression,
    pub tls: Option<TlsConfig>,
    /// Secret for AUTH, sent when nsqd says auth_required.
    pub auth_secret: Option<String>,
    /// Largest frame accepted from nsqd.
    pub max_frame_size: usize,

    // Consumer settings.
    /// Total RDY across all connections of a consumer.
    pub max_in_flight: u32,
    /// Messages delivered more often than this are handed to the give-up hook and FINed;
    /// 0: never give up.
    pub max_attempts: u16,
    /// How many handler calls run at once.
    pub concurrency: usize,
    /// Requeue delay for a failed message is this times its attempts...
    pub default_requeue_delay: Duration,
    /// ... capped at this.
    pub max_requeue_delay: Duration,
    /// Back-off after failures: `multiplier * 2^(level-1)`, capped at `max_backoff_duration`.
    pub backoff_multiplier: Duration,
    pub max_backoff_duration: Duration,
    /// How often to ask nsqlookupd for the topic's producers.
    pub lookupd_poll_interval: Duration,
    /// Wait between reconnect attempts to an nsqd given by address.
    pub reconnect_interval: Duration,
    /// How long `Consumer::stop` waits for in-flight handlers.
    pub stop_timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        let hostname = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        Config {
            client_id: hostname.split('.').next().unwrap_or("client").to_string(),
            hostname,
            user_agent: format!("nsq-rs-client/{}", env!("CARGO_PKG_VERSION")),
            dial_timeout: Duration::from_secs(5),
            heartbeat_interval: None,
            msg_timeout: None,
            output_buffer_size: None,
            output_buffer_timeout: None,
            sample_rate: 0,
            compression: Compression::None,
            tls: None,
            auth_secret: None,
            max_frame_size: 64 << 20,
            max_in_flight: 1,
            max_attempts: 5,
            concurrency: 1,
            default_requeue_delay: Duration::from_secs(90),
            max_requeue_delay: Duration::from_secs(15 * 60),
            backoff_multiplier: Duration::from_secs(1),
            max_backoff_duration: Duration::from_secs(2 * 60),
            lookupd_poll_interval: Duration::from_secs(60),
            reconnect_interval: Duration::from_secs(15),
            stop_timeout: Duration::from_secs(30),
        }
    }
}

impl Config {
    pub(crate) fn identify_json(&self) -> serde_json::Value {
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as i64).unwrap_or(0);
        let (snappy, deflate, level) = match self.compression {
            Compression::None => (false, false, 0),
            Compression::Snappy => (true, false, 0),
            Compression::Deflate(l) => (false, true, l.clamp(1, 9)),
        };
        serde_json::json!({
            "client_id": self.client_id,
            "hostname": self.hostname,
            "user_agent": self.user_agent,
            "feature_negotiation": true,
            "heartbeat_interval": ms(self.heartbeat_interval),
            "msg_timeout": ms(self.msg_timeout),
            "output_buffer_size": self.output_buffer_size.unwrap_or(0),
            "output_buffer_timeout": ms(self.output_buffer_timeout),
            "sample_rate": self.sample_rate,
            "tls_v1": self.tls.is_some(),
            "snappy": snappy,
            "deflate": deflate,
            "deflate_level": level,
        })
    }

    /// The requeue delay for a message that failed on its `attempts`-th delivery.
    pub fn requeue_delay(&self, attempts: u16) -> Duration {
        self.default_requeue_delay
            .saturating_mul(attempts.max(1) as u32)
            .min(self.max_requeue_delay)
    }

    /// The back-off at `level` consecutive failures (0: none).
    pub fn backoff_duration(&self, level: u32) -> Duration {
        if level == 0 {
            return Duration::ZERO;
        }
        self.backoff_multiplier
            .saturating_mul(1u32 << (level - 1).min(20))
            .min(self.max_backoff_duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_are_capped() {
        let c = Config {
            default_requeue_delay: Duration::from_secs(10),
            max_requeue_delay: Duration::from_secs(25),
            backoff_multiplier: Duration::from_millis(100),
            max_backoff_duration: Duration::from_secs(1),
            ..Config::default()
        };
        assert_eq!(c.requeue_delay(0), Duration::from_secs(10));
        assert_eq!(c.requeue_delay(2), Duration::from_secs(20));
        assert_eq!(c.requeue_delay(9), Duration::from_secs(25));
        assert_eq!(c.backoff_duration(0), Duration::ZERO);
        assert_eq!(c.backoff_duration(1), Duration::from_millis(100));
        assert_eq!(c.backoff_duration(3), Duration::from_millis(400));
        assert_eq!(c.backoff_duration(30), Duration::from_secs(1));
        let j = c.identify_json();
        assert_eq!(j["feature_negotiation"], true);
        assert_eq!(j["tls_v1"], false);
    }
}
