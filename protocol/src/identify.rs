//! IDENTIFY: what a client may send, and nsqd's feature-negotiation answer, with NSQ's JSON
//! field names. Unknown fields are ignored; missing ones take NSQ's "use the default" value
//! (0, or false).

use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;

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
