//! IDENTIFY: what a client may send, and nsqd's feature-negotiation answer, with NSQ's JSON
//! field names. Unknown fields are ignored; missing ones take NSQ's "use the default" value
//! (0, or false).

use serde::{Deserialize, Serialize};

use crate::v2::ProtocolError;

/// NSQ's heartbeat interval when the client asks for the default (0).
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 30_000;
/// NSQ's output buffer size when the client asks for the default (0).
pub const DEFAULT_OUTPUT_BUFFER_SIZE: usize = 16 * 1024;
/// zlib's default level, used when the client asks for deflate without a level.
pub const DEFAULT_DEFLATE_LEVEL: i32 = 6;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct IdentifyData {
    pub client_id: String,
    pub hostname: String,
    pub user_agent: String,
    pub feature_negotiation: bool,
    /// Milliseconds; -1 disables, 0 means the server default.
    pub heartbeat_interval: i64,
    /// Bytes; -1 disables buffering, 0 means the default.
    pub output_buffer_size: i64,
    /// Milliseconds; -1 disables, 0 means the default.
    pub output_buffer_timeout: i64,
    pub tls_v1: bool,
    pub snappy: bool,
    pub deflate: bool,
    pub deflate_level: i32,
    /// Percentage of messages to receive, 0 (all) to 99.
    pub sample_rate: i32,
    /// Milliseconds; 0 means the server's --msg-timeout.
    pub msg_timeout: i64,
    /// Pre-1.0 clients sent these instead of client_id/hostname.
    pub short_id: String,
    pub long_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IdentifyResponse {
    pub max_rdy_count: i64,
    pub version: String,
    pub max_msg_timeout: i64,
    pub msg_timeout: i64,
    pub tls_v1: bool,
    pub deflate: bool,
    pub deflate_level: i64,
    pub max_deflate_level: i64,
    pub snappy: bool,
    pub sample_rate: i64,
    pub auth_required: bool,
    pub output_buffer_size: i64,
    pub output_buffer_timeout: i64,
}

/// AUTH's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuthResponse {
    pub identity: String,
    pub identity_url: String,
    pub permission_count: i64,
}

/// What the server allows, as IDENTIFY negotiation needs it (nsqd's options and features;
/// durations in milliseconds).
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub version: String,
    pub max_rdy_count: i64,
    pub max_heartbeat_interval_ms: u64,
    pub max_output_buffer_size: i64,
    pub min_output_buffer_timeout_ms: u64,
    pub max_output_buffer_timeout_ms: u64,
    /// `--output-buffer-timeout`: what a client asking for the default (0) gets.
    pub output_buffer_timeout_ms: u64,
    /// `--msg-timeout`: what a client asking for the default (0) gets.
    pub msg_timeout_ms: u64,
    pub max_msg_timeout_ms: u64,
    pub max_deflate_level: i32,
    /// TLS is configured, so `tls_v1` can be granted.
    pub tls: bool,
    pub snappy: bool,
    pub deflate: bool,
    pub auth_required: bool,
}

/// The outcome of IDENTIFY: the settings the connection applies, and (through
/// [`Negotiated::response`]) the answer a feature-negotiating client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// None: heartbeats disabled (the client sent -1).
    pub heartbeat_interval_ms: Option<u64>,
    /// 0: no buffering (the client sent -1).
    pub output_buffer_size: usize,
    /// As the client sent it (-1 disables, 0 means the server default).
    pub output_buffer_timeout_ms: i64,
    pub sample_rate: i32,
    pub msg_timeout_ms: u64,
    pub tls: bool,
    pub snappy: bool,
    pub deflate: bool,
    pub deflate_level: i32,
}

/// Check each IDENTIFY setting against the server's limits, in NSQ's order, and settle what
/// the connection gets (-1 disables, 0 means the server default). Every error is NSQ's fatal
/// `E_BAD_BODY` / `E_IDENTIFY_FAILED` with NSQ's text.
pub fn negotiate(
    data: &IdentifyData,
    server: &ServerSettings,
) -> Result<Negotiated, ProtocolError> {
    let bad = |what: &str, v: i64| {
        ProtocolError::fatal("E_BAD_BODY", format!("IDENTIFY {what} ({v}) is invalid"))
    };
    let heartbeat_interval_ms = match data.heartbeat_interval {
        -1 => None,
        0 => Some(DEFAULT_HEARTBEAT_INTERVAL_MS),
        ms if ms >= 1000 && ms as u64 <= server.max_heartbeat_interval_ms => Some(ms as u64),
        ms => return Err(bad("heartbeat interval", ms)),
    };
    let output_buffer_size = match data.output_buffer_size {
        -1 => 0,
        0 => DEFAULT_OUTPUT_BUFFER_SIZE,
        n if n >= 64 && n <= server.max_output_buffer_size => n as usize,
        n => return Err(bad("output buffer size", n)),
    };
    let obt = data.output_buffer_timeout;
    let obt_ok = obt == -1
        || obt == 0
        || (obt >= server.min_output_buffer_timeout_ms as i64
            && obt <= server.max_output_buffer_timeout_ms as i64);
    if !obt_ok {
        return Err(bad("output buffer timeout", obt));
    }
    if !(0..=99).contains(&data.sample_rate) {
        return Err(bad("sample rate", data.sample_rate as i64));
    }
    let msg_timeout_ms = match data.msg_timeout {
        0 => server.msg_timeout_ms,
        ms if ms >= 1000 && ms as u64 <= server.max_msg_timeout_ms => ms as u64,
        ms => return Err(bad("msg timeout", ms)),
    };
    let tls = data.tls_v1 && server.tls;
    let snappy = data.snappy && server.snappy;
    let deflate = data.deflate && server.deflate;
    if snappy && deflate {
        return Err(ProtocolError::fatal(
            "E_IDENTIFY_FAILED",
            "cannot enable both deflate and snappy compression",
        ));
    }
    let deflate_level = if data.deflate_level <= 0 {
        DEFAULT_DEFLATE_LEVEL
    } else {
        data.deflate_level
    }
    .min(server.max_deflate_level);
    Ok(Negotiated {
        heartbeat_interval_ms,
        output_buffer_size,
        output_buffer_timeout_ms: obt,
        sample_rate: data.sample_rate,
        msg_timeout_ms,
        tls,
        snappy,
        deflate,
        deflate_level,
    })
}

impl Negotiated {
    /// The JSON answer to a client that set `feature_negotiation`.
    pub fn response(&self, server: &ServerSettings) -> IdentifyResponse {
        IdentifyResponse {
            max_rdy_count: server.max_rdy_count,
            version: server.version.clone(),
            max_msg_timeout: server.max_msg_timeout_ms as i64,
            msg_timeout: self.msg_timeout_ms as i64,
            tls_v1: self.tls,
            deflate: self.deflate,
            deflate_level: self.deflate_level as i64,
            max_deflate_level: server.max_deflate_level as i64,
            snappy: self.snappy,
            sample_rate: self.sample_rate as i64,
            auth_required: server.auth_required,
            output_buffer_size: self.output_buffer_size as i64,
            output_buffer_timeout: if self.output_buffer_timeout_ms == 0 {
                server.output_buffer_timeout_ms as i64
            } else {
                self.output_buffer_timeout_ms
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nsqd's defaults (NSQ 1.3), with every feature available.
    fn server() -> ServerSettings {
        ServerSettings {
            version: "1.3.0".into(),
            max_rdy_count: 2500,
            max_heartbeat_interval_ms: 60_000,
            max_output_buffer_size: 64 * 1024,
            min_output_buffer_timeout_ms: 25,
            max_output_buffer_timeout_ms: 30_000,
            output_buffer_timeout_ms: 250,
            msg_timeout_ms: 60_000,
            max_msg_timeout_ms: 15 * 60_000,
            max_deflate_level: 6,
            tls: true,
            snappy: true,
            deflate: true,
            auth_required: false,
        }
    }

    fn parse(json: &str) -> IdentifyData {
        serde_json::from_str(json).unwrap()
    }

    fn err(json: &str) -> String {
        negotiate(&parse(json), &server()).unwrap_err().to_string()
    }

    #[test]
    fn defaults_when_the_client_asks_for_nothing() {
        let n = negotiate(&parse("{}"), &server()).unwrap();
        assert_eq!(n.heartbeat_interval_ms, Some(DEFAULT_HEARTBEAT_INTERVAL_MS));
        assert_eq!(n.output_buffer_size, DEFAULT_OUTPUT_BUFFER_SIZE);
        assert_eq!(n.msg_timeout_ms, 60_000);
        assert!(!n.tls && !n.snappy && !n.deflate);
        assert_eq!(n.deflate_level, DEFAULT_DEFLATE_LEVEL);
        let r = n.response(&server());
        assert_eq!(r.output_buffer_timeout, 250, "0 answers the server default");
        assert_eq!(r.msg_timeout, 60_000);
        assert_eq!(r.max_rdy_count, 2500);
        assert_eq!(r.version, "1.3.0");
    }

    #[test]
    fn minus_one_disables() {
        let n = negotiate(
            &parse(
                r#"{"heartbeat_interval":-1,"output_buffer_size":-1,"output_buffer_timeout":-1}"#,
            ),
            &server(),
        )
        .unwrap();
        assert_eq!(n.heartbeat_interval_ms, None);
        assert_eq!(n.output_buffer_size, 0);
        assert_eq!(n.response(&server()).output_buffer_timeout, -1);
    }

    #[test]
    fn values_in_range_are_granted() {
        let n = negotiate(
            &parse(r#"{"heartbeat_interval":1000,"output_buffer_size":64,"output_buffer_timeout":25,"sample_rate":99,"msg_timeout":1000}"#),
            &server(),
        )
        .unwrap();
        assert_eq!(n.heartbeat_interval_ms, Some(1000));
        assert_eq!(n.output_buffer_size, 64);
        assert_eq!(n.sample_rate, 99);
        assert_eq!(n.msg_timeout_ms, 1000);
        assert_eq!(n.response(&server()).output_buffer_timeout, 25);
    }

    #[test]
    fn out_of_range_values_are_fatal_bad_body() {
        for (json, text) in [
            (r#"{"heartbeat_interval":999}"#, "heartbeat interval (999)"),
            (
                r#"{"heartbeat_interval":60001}"#,
                "heartbeat interval (60001)",
            ),
            (r#"{"heartbeat_interval":-2}"#, "heartbeat interval (-2)"),
            (r#"{"output_buffer_size":63}"#, "output buffer size (63)"),
            (
                r#"{"output_buffer_size":65537}"#,
                "output buffer size (65537)",
            ),
            (
                r#"{"output_buffer_timeout":24}"#,
                "output buffer timeout (24)",
            ),
            (
                r#"{"output_buffer_timeout":30001}"#,
                "output buffer timeout (30001)",
            ),
            (r#"{"sample_rate":100}"#, "sample rate (100)"),
            (r#"{"sample_rate":-1}"#, "sample rate (-1)"),
            (r#"{"msg_timeout":999}"#, "msg timeout (999)"),
            (r#"{"msg_timeout":900001}"#, "msg timeout (900001)"),
        ] {
            let e = negotiate(&parse(json), &server()).unwrap_err();
            assert!(e.fatal, "{json}");
            assert_eq!(e.code, "E_BAD_BODY", "{json}");
            assert_eq!(
                e.to_string(),
                format!("E_BAD_BODY IDENTIFY {text} is invalid")
            );
        }
    }

    #[test]
    fn features_only_when_the_server_has_them() {
        let off = ServerSettings {
            tls: false,
            snappy: false,
            deflate: false,
            ..server()
        };
        let n = negotiate(&parse(r#"{"tls_v1":true,"snappy":true}"#), &off).unwrap();
        assert!(!n.tls && !n.snappy);
        let n = negotiate(&parse(r#"{"tls_v1":true,"snappy":true}"#), &server()).unwrap();
        assert!(n.tls && n.snappy);
        let r = n.response(&server());
        assert!(r.tls_v1 && r.snappy && !r.deflate);
    }

    #[test]
    fn deflate_level_defaults_and_is_capped() {
        let mut s = server();
        s.max_deflate_level = 4;
        let n = negotiate(&parse(r#"{"deflate":true}"#), &s).unwrap();
        assert_eq!(n.deflate_level, 4, "default 6 capped at the server's max");
        let n = negotiate(&parse(r#"{"deflate":true,"deflate_level":2}"#), &s).unwrap();
        assert_eq!(n.deflate_level, 2);
        let n = negotiate(&parse(r#"{"deflate":true,"deflate_level":9}"#), &s).unwrap();
        assert_eq!(n.deflate_level, 4);
        assert_eq!(n.response(&s).max_deflate_level, 4);
    }

    #[test]
    fn both_compressions_is_identify_failed() {
        assert_eq!(
            err(r#"{"snappy":true,"deflate":true}"#),
            "E_IDENTIFY_FAILED cannot enable both deflate and snappy compression"
        );
        // Only what the server grants counts: asking for both where deflate is off is fine.
        let s = ServerSettings {
            deflate: false,
            ..server()
        };
        let n = negotiate(&parse(r#"{"snappy":true,"deflate":true}"#), &s).unwrap();
        assert!(n.snappy && !n.deflate);
    }

    #[test]
    fn auth_required_is_reported() {
        let s = ServerSettings {
            auth_required: true,
            ..server()
        };
        let n = negotiate(&parse("{}"), &s).unwrap();
        assert!(n.response(&s).auth_required);
    }

    #[test]
    fn defaults_and_old_fields() {
        let d: IdentifyData =
            serde_json::from_str(r#"{"short_id":"a","long_id":"b","extra":1}"#).unwrap();
        assert_eq!(d.short_id, "a");
        assert_eq!(d.heartbeat_interval, 0);
        assert!(!d.feature_negotiation);
        assert!(serde_json::from_str::<IdentifyData>("{not json").is_err());
        assert!(serde_json::from_str::<IdentifyData>(r#"{"heartbeat_interval":"x"}"#).is_err());
    }
}
