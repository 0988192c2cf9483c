//! AUTH against an NSQ-style auth HTTP server (`--auth-http-address`): nsqd asks
//! `/auth?remote_ip=&tls=&secret=&common_name=` and gets back an identity, a TTL and a list
//! of authorizations (permissions plus topic and channel regexes).

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::nsqd::Nsqd;
use crate::options::Options;

#[derive(Debug, Clone, Deserialize)]
pub struct Authorization {
    #[serde(default)]
    pub topic: String,
    #[serde(default)]
    pub channels: Vec<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct AuthResponse {
    #[serde(default)]
    ttl: i64,
    #[serde(default)]
    identity: String,
    #[serde(default)]
    identity_url: String,
    #[serde(default)]
    authorizations: Vec<Authorization>,
}

/// A client's authorizations, valid until `expires`.
#[derive(Debug, Clone)]
pub struct AuthState {
    pub identity: String,
    pub identity_url: String,
    pub authorizations: Vec<Authorization>,
    pub expires: Instant,
    /// Kept to refresh the authorizations when the TTL runs out.
    pub secret: String,
}

impl AuthState {
    pub fn expired(&self) -> bool {
        Instant::now() >= self.expires
    }

    /// Publishing (empty channel) needs "publish"; subscribing needs "subscribe". Topic and
    /// channel patterns are regular expressions, as in NSQ.
    pub fn is_authorized(&self, topic: &str, channel: &str) -> bool {
        self.authorizations
            .iter()
            .any(|a| allowed(a, topic, channel))
    }
}

fn allowed(a: &Authorization, topic: &str, channel: &str) -> bool {
    let needed = if channel.is_empty() {
        "publish"
    } else {
        "subscribe"
    };
    if !a.permissions.iter().any(|p| p == needed) {
        return false;
    }
    let Ok(t) = regex::Regex::new(&a.topic) else {
        return false;
    };
    if !t.is_match(topic) {
        return false;
    }
    a.channels
        .iter()
        .filter_map(|c| regex::Regex::new(c).ok())
        .any(|c| c.is_match(channel))
}

/// Ask the auth servers (each in turn until one answers).
pub async fn query(
    nsqd: &Nsqd,
    opts: &Options,
    remote_ip: &str,
    tls: bool,
    secret: &str,
) -> Result<AuthState, String> {
    let mut last = String::from("no auth server configured");
    for addr in &opts.auth_http_addresses {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.clone()
        } else {
            format!("http://{addr}")
        };
        let url = format!("{base}/auth");
        let params = [
            ("remote_ip", remote_ip.to_string()),
            ("tls", tls.to_string()),
            ("secret", secret.to_string()),
            ("common_name", String::new()),
        ];
        let req = if opts.auth_http_request_method.eq_ignore_ascii_case("post") {
            nsqd.http_client.post(&url).form(&params)
        } else {
            nsqd.http_client.get(&url).query(&params)
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                last = format!("{url}: {e}");
                continue;
            }
        };
        if !resp.status().is_success() {
            last = format!("{url}: status {}", resp.status());
            continue;
        }
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                last = format!("{url}: {e}");
                continue;
            }
        };
        let parsed: AuthResponse =
            serde_json::from_slice(&body).map_err(|e| format!("{url}: invalid JSON: {e}"))?;
        let ttl = Duration::from_secs(parsed.ttl.max(0) as u64);
        return Ok(AuthState {
            identity: parsed.identity,
            identity_url: parsed.identity_url,
            authorizations: parsed.authorizations,
            expires: Instant::now() + ttl,
            secret: secret.to_string(),
        });
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(perms: &[&str], topic: &str, channels: &[&str]) -> AuthState {
        AuthState {
            identity: "me".into(),
            identity_url: String::new(),
            authorizations: vec![Authorization {
                topic: topic.into(),
                channels: channels.iter().map(|s| s.to_string()).collect(),
                permissions: perms.iter().map(|s| s.to_string()).collect(),
            }],
            expires: Instant::now() + Duration::from_secs(60),
            secret: "s".into(),
        }
    }

    #[test]
    fn permissions_and_patterns() {
        let s = state(&["subscribe"], "^events$", &[".*"]);
        assert!(s.is_authorized("events", "ch"));
        assert!(
            !s.is_authorized("events", ""),
            "publish needs the publish permission"
        );
        assert!(!s.is_authorized("other", "ch"));
        let s = state(&["publish"], ".*", &[".*"]);
        assert!(s.is_authorized("anything", ""));
        let s = state(&["subscribe", "publish"], "[", &[".*"]);
        assert!(!s.is_authorized("x", ""), "a bad regex authorizes nothing");
    }
}
